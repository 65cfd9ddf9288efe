"""Choosing encodings and decoding incoming messages (protocols.encoding, protocols.userdata)."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocols.encoding import (
    DecodedMessage,
    EncodedText,
    MessageTooLongError,
    TextEncoding,
    UnencodableTextError,
    choose_encoding,
    decode_short_message,
    encode_text,
    join_part_texts,
)
from protocols.gsm import LocalEncodingError, pack_septets
from protocols.userdata import (
    ConcatInfo,
    InformationElement,
    MalformedUserDataError,
    UnitKind,
    build_udh,
    capacity,
    concat_ie,
    concat_info,
    national_shift_ies,
    parse_udh,
    udh_octets,
)

OTP = "Doğrulama kodunuz 482915. Kimseyle paylaşmayın."

# --- capacities -------------------------------------------------------------------------------

CONCAT_8 = concat_ie(ConcatInfo(1, 2, 1), sixteen_bit=False)
CONCAT_16 = concat_ie(ConcatInfo(1, 2, 1), sixteen_bit=True)
SINGLE, LOCKING = national_shift_ies(locking_shift=1, single_shift=1)


@pytest.mark.parametrize(
    ("ies", "octets", "septets", "ucs2"),
    [
        ((), 0, 160, 70),
        ((CONCAT_8,), 6, 153, 67),
        ((CONCAT_16,), 7, 152, 66),
        ((SINGLE,), 4, 155, 68),
        ((CONCAT_8, SINGLE), 9, 149, 65),
        ((CONCAT_8, SINGLE, LOCKING), 12, 146, 64),
    ],
)
def test_capacity_from_udh_length(
    ies: tuple[InformationElement, ...], octets: int, septets: int, ucs2: int
) -> None:
    # PROTOCOL-NOTES "Encoding and length": capacities follow from the UDH size alone.
    assert udh_octets(ies) == octets == len(build_udh(ies))
    assert capacity(UnitKind.SEPTET, octets) == septets
    assert capacity(UnitKind.UCS2, octets) == ucs2
    assert capacity(UnitKind.OCTET, octets) == 140 - octets


# --- the chooser ------------------------------------------------------------------------------


def test_turkish_otp_is_one_gsm7_part_with_single_shift() -> None:
    encoded = choose_encoding(OTP)
    assert encoded.encoding is TextEncoding.GSM7_TR_SINGLE
    assert str(encoded.encoding) == "gsm7-tr-single"
    assert encoded.data_coding == 0x00
    assert encoded.parts == 1
    # 47 characters, of which ğ, ş, ı take two septets each.
    assert encoded.unit_count == 50
    assert encoded.national_ies == (InformationElement(0x24, b"\x01"),)
    assert not encoded.needs_reference


def test_c_cedilla_choice() -> None:
    # 0x09 is Ç in TS 23.038, so "Çok" stays in the default alphabet; "çok" needs ç, which only
    # the Turkish tables hold (single shift 0x1B 0x63), never a silent ç -> Ç or c.
    assert choose_encoding("Çok güzel").encoding is TextEncoding.GSM7
    lower = choose_encoding("çok güzel")
    assert lower.encoding is TextEncoding.GSM7_TR_SINGLE
    assert lower.units.startswith(b"\x1b\x63ok")
    assert choose_encoding("çok güzel", national_shift="none").encoding is TextEncoding.UCS2


def test_otp_without_national_shift_goes_ucs2() -> None:
    encoded = choose_encoding(OTP, national_shift="none")
    assert encoded.encoding is TextEncoding.UCS2
    assert encoded.data_coding == 0x08
    assert encoded.parts == 1
    assert encoded.national_ies == ()


def test_national_table_chosen_for_default_text_only_when_it_saves_a_part() -> None:
    # 150 "€" are 300 septets in the default alphabet (2 parts) but 150 with the Turkish locking
    # table, where € is a single septet (1 part of 152): fewest parts wins.
    encoded = choose_encoding("€" * 150)
    assert encoded.encoding is TextEncoding.GSM7_TR_LOCKING
    assert encoded.parts == 1
    # The same characters in a text that fits either way keep the default alphabet.
    encoded = choose_encoding("€" * 20)
    assert encoded.encoding is TextEncoding.GSM7
    assert encoded.national_ies == ()
    assert choose_encoding("€" * 150, national_shift="none").parts == 2


def test_locking_shift_wins_when_it_saves_a_part() -> None:
    # 100 × ş: single shift 200 septets -> 2 parts of 149; locking 100 septets -> 1 part (152
    # with both IEs, 7-octet UDH); UCS-2 100 units -> 2 parts of 67.
    encoded = choose_encoding("ş" * 100)
    assert encoded.encoding is TextEncoding.GSM7_TR_LOCKING
    assert encoded.parts == 1
    assert {ie.iei for ie in encoded.national_ies} == {0x24, 0x25}
    # A route limited to the single shift table pays a part more.
    assert choose_encoding("ş" * 100, national_shift="turkish-single").parts == 2


def test_locking_shift_unusable_when_text_has_characters_it_lost() -> None:
    encoded = choose_encoding("è" + "ş" * 100)
    assert encoded.encoding is TextEncoding.GSM7_TR_SINGLE
    assert encoded.parts == 2


def test_emoji_goes_ucs2() -> None:
    encoded = choose_encoding("Tebrikler 🎉")
    assert encoded.encoding is TextEncoding.UCS2
    assert encoded.units == "Tebrikler 🎉".encode("utf-16-be")
    assert encoded.unit_count == 12  # the emoji is a surrogate pair


def test_ties_prefer_the_earlier_option() -> None:
    # Short pure-ASCII text fits one part in every encoding: GSM 7-bit comes first.
    assert choose_encoding("hello").encoding is TextEncoding.GSM7


def test_latin1_only_on_request() -> None:
    encoded = encode_text("café ÿ", "latin1")
    assert encoded.data_coding == 0x03
    assert encoded.units == "café ÿ".encode("latin-1")
    assert choose_encoding("café ÿ").encoding is TextEncoding.UCS2  # ÿ is not in GSM
    with pytest.raises(UnencodableTextError) as info:
        encode_text("ğ€", TextEncoding.LATIN1)
    assert info.value.characters == "ğ€"


def test_invalid_text_for_requested_encoding_is_a_local_error() -> None:
    with pytest.raises(UnencodableTextError) as info:
        encode_text("Doğru", TextEncoding.GSM7)
    assert isinstance(info.value, LocalEncodingError)
    assert info.value.encoding == "gsm7"
    with pytest.raises(UnencodableTextError):
        encode_text("x\ud800", TextEncoding.UCS2)  # a lone surrogate is not a character
    with pytest.raises(UnencodableTextError):
        choose_encoding("x\ud800")


def test_too_long() -> None:
    assert encode_text("a" * 153 * 255, "gsm7").parts == 255
    with pytest.raises(MessageTooLongError):
        encode_text("a" * (153 * 255 + 1), "gsm7")
    with pytest.raises(MessageTooLongError):
        choose_encoding("😀" * 20_000)
    assert isinstance(MessageTooLongError("x"), LocalEncodingError)


def test_part_counts_per_method() -> None:
    text = "a" * 153 * 2  # exactly two 8-bit-concat parts, three with the 16-bit IE
    assert encode_text(text, "gsm7", method="udh").parts == 2
    assert encode_text(text, "gsm7", method="udh16").parts == 3
    assert encode_text(text, "gsm7", method="sar").parts == 2
    payload = encode_text(text, "gsm7", method="payload")
    assert payload.parts == 2
    assert not payload.needs_reference


# --- minimum part count, against an independent count -----------------------------------------

# Characters per table, written out again here rather than taken from protocols.gsm.
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "\f^{}\\[~]|€"
TURKISH_SHIFT = EXTENSION + "ĞİŞçğış"
LOCKING_BASIC = "".join(c for c in BASIC if c not in "èìØøÆæ¡¿") + "€ıĞğŞşİç"

# Units per part by (encoding, method): (alone, in a multipart message). From the UDH sizes:
# concat 8-bit IE 5 octets, 16-bit 6, each national IE 3, plus UDHL; 7-bit capacity is
# floor((140 - udh) * 8 / 7). tr-single + udh16: udh 10 -> 148; tr-locking alone: udh 7 -> 152;
# tr-locking + udh16: udh 13 -> 145. SAR and payload leave room for the SMSC's 8-bit IE.
CAPACITY = {
    "gsm7": {"udh": (160, 153), "udh16": (160, 152), "sar": (160, 153), "payload": (160, 153)},
    "gsm7-tr-single": {
        "udh": (155, 149),
        "udh16": (155, 148),
        "sar": (155, 149),
        "payload": (155, 149),
    },
    "gsm7-tr-locking": {
        "udh": (152, 146),
        "udh16": (152, 145),
        "sar": (152, 146),
        "payload": (152, 146),
    },
    "ucs2": {"udh": (70, 67), "udh16": (70, 66), "sar": (70, 67), "payload": (70, 67)},
}


def costs(text: str, encoding: str) -> list[int] | None:
    """Units per character, or None when the encoding cannot carry the text."""
    out: list[int] = []
    for c in text:
        if encoding == "ucs2":
            out.append(2 if ord(c) > 0xFFFF else 1)
        elif encoding == "gsm7":
            out.append(1 if c in BASIC else 2 if c in EXTENSION else 0)
        elif encoding == "gsm7-tr-single":
            out.append(1 if c in BASIC else 2 if c in TURKISH_SHIFT else 0)
        else:
            out.append(1 if c in LOCKING_BASIC else 2 if c in TURKISH_SHIFT else 0)
    return None if 0 in out else out


def fewest_parts(units: list[int], alone: int, per_part: int) -> int:
    """Minimum parts by dynamic programming over every split point (no greedy shortcut)."""
    if sum(units) <= alone:
        return 1
    best = [0] + [10**9] * len(units)
    for end in range(1, len(units) + 1):
        size = 0
        for start in range(end - 1, -1, -1):
            size += units[start]
            if size > per_part:
                break
            best[end] = min(best[end], best[start] + 1)
    return best[-1]


def expected_parts(text: str, method: str) -> tuple[int, str]:
    # Fewest parts among all four options; ties go to the earlier one in this order.
    options = ["gsm7", "gsm7-tr-single", "gsm7-tr-locking", "ucs2"]
    found: list[tuple[int, int, str]] = []
    for rank, encoding in enumerate(options):
        units = costs(text, encoding)
        if units is not None:
            found.append((fewest_parts(units, *CAPACITY[encoding][method]), rank, encoding))
    parts, _, encoding = min(found)
    return parts, encoding


@st.composite
def long_texts(draw: st.DrawFn, alphabet: st.SearchStrategy[str]) -> str:
    """Texts of up to ~800 characters: a repeated seed with a random insertion, so that parts
    and part boundaries (escapes, surrogate pairs) get exercised, not just short texts."""
    seed = draw(st.text(alphabet, min_size=1, max_size=30))
    length = draw(st.one_of(st.integers(0, 800), st.integers(140, 170), st.integers(290, 320)))
    body = (seed * (length // len(seed) + 1))[:length]
    extra = draw(st.text(alphabet, max_size=12))
    cut = draw(st.integers(0, len(body)))
    return body[:cut] + extra + body[cut:]


GSM_CHAR = st.sampled_from(BASIC + EXTENSION)
TURKISH_CHAR = st.sampled_from("abcxyz ,.èì{€ĞğİıŞşçÇöüÖÜ")
ANY_CHAR = st.one_of(
    st.sampled_from(BASIC + EXTENSION + "ĞİŞçğış"),
    st.characters(codec="utf-8"),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
)
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=100),
    long_texts(GSM_CHAR),
    long_texts(TURKISH_CHAR),
    long_texts(ANY_CHAR),
)
METHODS = st.sampled_from(["udh", "udh16", "sar", "payload"])


@settings(deadline=None, max_examples=300)
@given(TEXTS, METHODS)
def test_chooser_finds_the_fewest_parts(text: str, method: str) -> None:
    encoded = choose_encoding(text, method=method)
    parts, encoding = expected_parts(text, method)
    event(f"{encoding}, {'multipart' if parts > 1 else 'single part'}")
    assert (encoded.parts, encoded.encoding.value) == (parts, encoding)
    # The chunks are exactly the text's units, in order.
    assert b"".join(encoded.chunks) == encoded.units


# --- UDH --------------------------------------------------------------------------------------


def test_udh_parse_keeps_unknown_ies() -> None:
    # UDHL 12 | IE 00 len 3: ref 0x42, 3 parts, part 1 | IE 0a len 2: aa bb | IE 24 len 1: 01
    data = bytes.fromhex("0c" + "0003420301" + "0a02aabb" + "240101") + b"rest"
    ies, rest = parse_udh(data)
    assert rest == b"rest"
    assert ies == (
        InformationElement(0x00, bytes.fromhex("420301")),
        InformationElement(0x0A, b"\xaa\xbb"),
        InformationElement(0x24, b"\x01"),
    )
    assert build_udh(ies) + rest == data
    assert concat_info(ies) == ConcatInfo(0x42, 3, 1)


@pytest.mark.parametrize("data", ["", "05000342", "0300", "0400050102"])
def test_udh_malformed(data: str) -> None:
    with pytest.raises(MalformedUserDataError) as info:
        parse_udh(bytes.fromhex(data))
    assert info.value.command_status == 0x65  # ESME_RX_P_APPN


def test_concat_ie_ignored_when_inconsistent() -> None:
    # TS 23.040 §9.2.3.24.1: sequence 0, or above the total, means "ignore the IE".
    assert concat_info([InformationElement(0, bytes((7, 3, 0)))]) is None
    assert concat_info([InformationElement(0, bytes((7, 3, 4)))]) is None
    assert concat_info([InformationElement(8, bytes((1, 2, 3, 1)))]) == ConcatInfo(0x102, 3, 1)


@settings(deadline=None, max_examples=200)
@given(
    st.lists(
        st.builds(InformationElement, st.integers(0, 255), st.binary(max_size=20)), max_size=5
    ),
    st.binary(max_size=30),
)
def test_udh_round_trip(ies: list[InformationElement], rest: bytes) -> None:
    udh = build_udh(ies)
    if ies:
        assert parse_udh(udh + rest) == (tuple(ies), rest)


# --- decoding ---------------------------------------------------------------------------------


def test_decode_codings() -> None:
    assert decode_short_message(0x00, 0, b"Hello \x1b\x65").text == "Hello €"
    assert decode_short_message(0x01, 0, b"Hi!").text == "Hi!"
    assert decode_short_message(0x01, 0, b"\xff").text == "\ufffd"
    assert decode_short_message(0x03, 0, "Über".encode("latin-1")).text == "Über"
    assert decode_short_message(0x08, 0, "Şu 🎉".encode("utf-16-be")).text == "Şu 🎉"
    assert decode_short_message(0x08, 0, b"\x00a\x00").text == "a\ufffd"
    for binary in (0x02, 0x04, 0xF4, 0xF5):
        decoded = decode_short_message(binary, 0, b"\x01\x02")
        assert decoded.text is None
        assert decoded.user_data == b"\x01\x02"
    # TS 23.038 §4 data coding schemes that SMPP passes through.
    assert decode_short_message(0xF0, 0, b"ok").text == "ok"  # 7-bit, class 0
    assert decode_short_message(0x18, 0, "ğ".encode("utf-16-be")).text == "ğ"
    assert decode_short_message(0x11, 0, b"ok").text == "ok"
    assert decode_short_message(0x2C, 0, b"zz").text is None  # compressed


def test_decode_turkish_otp_with_udh() -> None:
    short_message = bytes.fromhex("03240101") + "Doğru".encode().replace(b"\xc4\x9f", b"\x1bg")
    decoded = decode_short_message(0x00, 0x40, short_message)
    assert decoded.text == "Doğru"
    assert decoded.single_shift == 1
    assert decoded.locking_shift is None
    assert decoded.concat is None


def test_decode_locking_shift() -> None:
    short_message = build_udh(national_shift_ies(1, 1)) + bytes.fromhex("1c0c0740601b65")
    decoded = decode_short_message(0x00, 0x40, short_message)
    assert decoded.text == "Şğıİç€"
    assert decoded.locking_shift == 1


def test_decode_packed_gsm() -> None:
    packed = bytes.fromhex("e8329bfd4697d9ec37")
    # Auto: octets above 0x7F cannot be unpacked septets, so this is packed.
    assert decode_short_message(0x00, 0, packed).text == "hellohello"
    # With a 6-octet UDH: one fill bit.
    udh = bytes.fromhex("050003070201")
    sm = udh + pack_septets(b"hellohello", fill=1)
    decoded = decode_short_message(0x00, 0x40, sm, gsm_packing="packed")
    assert decoded.text == "hellohello"
    assert decoded.concat == ConcatInfo(7, 2, 1)
    # Explicitly unpacked data with a high bit set is the peer's error.
    with pytest.raises(MalformedUserDataError):
        decode_short_message(0x00, 0, packed, gsm_packing="unpacked")


def test_decode_concat_parts_and_mend_split_surrogates() -> None:
    emoji = "🎉".encode("utf-16-be")
    first = decode_short_message(0x08, 0x40, bytes.fromhex("050003090201") + b"\x00a" + emoji[:2])
    second = decode_short_message(0x08, 0x40, bytes.fromhex("050003090202") + emoji[2:])
    assert first.concat == ConcatInfo(9, 2, 1)
    assert second.concat == ConcatInfo(9, 2, 2)
    assert first.text is not None and second.text is not None
    assert join_part_texts([first.text, second.text]) == "a🎉"
    # Not concatenated: a lone surrogate becomes U+FFFD at once.
    assert decode_short_message(0x08, 0, emoji[:2]).text == "\ufffd"


@settings(deadline=None, max_examples=300)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=160))
def test_decode_never_crashes(data_coding: int, esm_class: int, data: bytes) -> None:
    # The h11 fuzz invariant: peer garbage gives a result or the typed remote error.
    try:
        decoded = decode_short_message(data_coding, esm_class, data)
    except MalformedUserDataError:
        return
    assert isinstance(decoded, DecodedMessage)


def test_encoded_text_is_frozen() -> None:
    encoded = choose_encoding("x")
    assert isinstance(encoded, EncodedText)
    with pytest.raises(AttributeError):
        encoded.units = b""  # type: ignore[misc]
