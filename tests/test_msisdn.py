"""gateway.msisdn.is_valid gives phonenumbers' answer on numbers near real ones."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from gateway.msisdn import is_valid

_TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.VOIP,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)


def _examples() -> list[str]:
    """Example numbers of every region (each type it has) and of the non-geographic codes."""
    found: set[str] = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in _TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                found.add(phonenumbers.format_number(example, 0))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            found.add(phonenumbers.format_number(example, 0))
    return sorted(found)


EXAMPLES = _examples()


@st.composite
def near_real_numbers(draw: st.DrawFn) -> str:
    """An example number, with some digits changed, dropped or added: valid and invalid
    numbers of every type, length and region, including those sharing a calling code."""
    digits = list(draw(st.sampled_from(EXAMPLES)).removeprefix("+"))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(1, len(digits) - 1))
        what = draw(st.sampled_from(["change", "drop", "add"]))
        if what == "change":
            digits[at] = draw(st.sampled_from("0123456789"))
        elif what == "drop" and len(digits) > 3:
            del digits[at]
        elif what == "add":
            digits.insert(at, draw(st.sampled_from("0123456789")))
    return "+" + "".join(digits)


def test_the_examples_cover_many_regions_and_shared_codes() -> None:
    assert len(EXAMPLES) > 800
    codes = {phonenumbers.parse(n).country_code for n in EXAMPLES}
    assert {1, 7, 44, 90, 800} <= codes


def test_every_example_number_is_valid() -> None:
    for number in EXAMPLES:
        assert is_valid(phonenumbers.parse(number)), number


@settings(max_examples=1000)
@given(near_real_numbers())
def test_validity_agrees_with_phonenumbers(number: str) -> None:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return
    assert is_valid(parsed) == phonenumbers.is_valid_number(parsed)


def test_unknown_calling_codes_are_invalid() -> None:
    assert not is_valid(phonenumbers.PhoneNumber(country_code=999, national_number=12345678))
