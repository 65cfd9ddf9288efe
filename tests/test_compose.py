"""Composing a message: number validation, sender rules, encoding per route, compact parts."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.compose import (
    ComposeError,
    MessageRequest,
    PduBuilder,
    compose,
    id_accepted_at,
    id_class,
    new_message_id,
    normalise_msisdn,
    part_count,
    part_msisdn,
    part_tenant,
    queued_parts,
)
from gateway.config import RouteConfig, Settings, parse_config
from protocols.constants import EsmClass
from queues.model import MessageClass, Status
from tests.test_msisdn import near_real_numbers

NOW = 1_790_000_000.0


def _settings(**route: Any) -> Settings:
    data = {
        "tenants": [{"name": "shop", "api_key_sha256": "a" * 64, "allowed_senders": ["SHOP"]}],
        "routes": [
            {
                "name": "r",
                "prefixes": [""],
                "host": "127.0.0.1",
                "system_id": "u",
                "password": "p",
                **route,
            }
        ],
    }
    return parse_config(data, {})


def _compose(request: MessageRequest, **route: Any) -> Any:
    s = _settings(**route)
    r: RouteConfig = s.routes[0]
    return compose(
        request,
        tenant=s.tenants[0],
        route_for=lambda to: r,
        now=NOW,
        default_valid_for_s=86_400,
        max_valid_for_s=172_800,
        max_parts=4,
    )


def _reference(number: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@given(st.from_regex(r"\+[0-9]{1,16}", fullmatch=True))
def test_the_fast_path_agrees_with_phonenumbers(number: str) -> None:
    expected = _reference(number)
    try:
        got: str | None = normalise_msisdn(number)
    except ComposeError:
        got = None
    assert got == expected


@settings(max_examples=1000)
@given(near_real_numbers(), st.booleans())
def test_numbers_near_real_ones_agree_with_phonenumbers(number: str, spaced: bool) -> None:
    """Valid and invalid numbers of every region (Italian leading zeros among them), on the
    canonical path and, spaced out, on the full parse."""
    asked = f"{number[:3]} {number[3:]}" if spaced else number
    try:
        got: str | None = normalise_msisdn(asked)
    except ComposeError:
        got = None
    assert got == _reference(number)


def test_a_national_prefix_written_after_the_country_code_is_dropped_as_phonenumbers_does() -> None:
    assert normalise_msisdn("+9005321234567") == "+905321234567"
    assert normalise_msisdn("+400211234567") == "+40211234567"
    assert normalise_msisdn("+390612345678") == "+390612345678"  # Italy keeps its 0
    assert normalise_msisdn("+2618201234") == "+261208201234"  # Madagascar's old numbering


@pytest.mark.parametrize(
    "number",
    ["+905321234567", "+14155550123", "+442071838750", "+390612345678", "+8613800138000"],
)
def test_valid_numbers_of_several_countries(number: str) -> None:
    assert normalise_msisdn(number) == number
    assert normalise_msisdn(f" {number[:4]} {number[4:]} ") == number  # the slow path


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("905321234567", "E.164"),
        ("+905321234", "not a valid number"),
        ("+99912345678", "no known country"),
        ("+90abc", "not a phone number"),
    ],
)
def test_invalid_numbers_say_why(number: str, why: str) -> None:
    with pytest.raises(ComposeError) as info:
        normalise_msisdn(number)
    assert info.value.field == "to"
    assert why in info.value.detail


def test_a_turkish_otp_is_one_gsm7_part_with_the_single_shift() -> None:
    c = _compose(
        MessageRequest(
            "+905321234567",
            "Doğrulama kodunuz 482915. Kimseyle paylaşmayın.",
            MessageClass.OTP,
            sender="SHOP",
        ),
        national_shift="turkish",
    )
    assert (c.message.parts, c.message.encoding) == (1, "gsm7-tr-single")
    assert c.message.status is Status.ACCEPTED
    [part] = queued_parts(c, None, "r", None)
    pdu = PduBuilder({"r": c.route})(part)
    assert pdu.destination_addr == "905321234567"
    assert (pdu.source_addr, pdu.source_addr_ton) == ("SHOP", 5)
    assert pdu.esm_class & EsmClass.UDHI  # the national language IE travels in a UDH
    assert (part_count(part), part_tenant(part), part_msisdn(part)) == (1, "shop", "+905321234567")


def test_long_text_gets_parts_with_one_reference_and_sar_when_asked() -> None:
    request = MessageRequest("+905321234567", "x" * 300, MessageClass.MARKETING, sender="SHOP")
    c = _compose(request, segmentation="sar")
    parts = queued_parts(c, None, "r", 77)
    pdus = [PduBuilder({"r": c.route})(p) for p in parts]
    assert [(p.tlvs.sar_msg_ref_num, p.tlvs.sar_segment_seqnum) for p in pdus] == [(77, 1), (77, 2)]
    assert {p.tlvs.sar_total_segments for p in pdus} == {2}
    assert [p.index for p in queued_parts(c, [1], "r", 77)] == [1]  # only the unsent part


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({"sender": "OTHER"}, "from"),
        ({"text": "code\x00 1234"}, "text"),
        ({"text": ""}, "text"),
        ({"valid_for_s": 10}, "valid_for_s"),
        ({"text": "y" * 1000}, "text"),
        ({"not_before": NOW + 200_000}, "not_before"),
    ],
)
def test_bad_requests_name_their_field(request_kw: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {
        "to": "+905321234567",
        "text": "hi",
        "klass": MessageClass.TRANSACTIONAL,
        "sender": "SHOP",
    }
    values.update(request_kw)
    with pytest.raises(ComposeError) as info:
        _compose(MessageRequest(**values))
    assert info.value.field == field


def test_a_future_not_before_is_deferred() -> None:
    c = _compose(
        MessageRequest(
            "+905321234567", "hi", MessageClass.TRANSACTIONAL, sender="SHOP", not_before=NOW + 600
        )
    )
    assert c.message.status is Status.DEFERRED


def test_ids_are_time_ordered_unique_and_carry_time_and_class() -> None:
    ids = [new_message_id(NOW + i / 1000, MessageClass.MARKETING) for i in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 for i in ids)
    for klass in MessageClass:
        message_id = new_message_id(NOW + 0.5, klass)
        assert id_class(message_id) is klass
        assert id_accepted_at(message_id) == NOW + 0.5


_OPTIONAL_TEXT = st.none() | st.text()


@given(
    to=st.text(),
    text=st.text(),
    klass=st.sampled_from(MessageClass),
    sender=_OPTIONAL_TEXT,
    reference=_OPTIONAL_TEXT,
    not_before=st.none() | st.floats(allow_nan=False) | st.integers(),
    valid_for_s=st.none() | st.integers(),
    callback_url=_OPTIONAL_TEXT,
)
def test_fingerprint_is_the_hash_of_the_sorted_json_body(
    to: str,
    text: str,
    klass: MessageClass,
    sender: str | None,
    reference: str | None,
    not_before: float | None,
    valid_for_s: int | None,
    callback_url: str | None,
) -> None:
    """The idempotency fingerprint is written out by hand for speed; it must stay the hash
    of ``json.dumps(body, sort_keys=True)``, which earlier versions stored."""
    import hashlib
    import json

    request = MessageRequest(
        to=to,
        text=text,
        klass=klass,
        sender=sender,
        reference=reference,
        not_before=not_before,
        valid_for_s=valid_for_s,
        callback_url=callback_url,
    )
    body = {
        "to": to,
        "text": text,
        "class": klass.value,
        "from": sender,
        "reference": reference,
        "not_before": not_before,
        "valid_for_s": valid_for_s,
        "callback_url": callback_url,
    }
    expected = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    assert request.fingerprint() == expected
