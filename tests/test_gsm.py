"""GSM 7-bit tables and septet codecs (protocols.gsm).

The tables are checked against a second transcription of TS 23.038 written here as code points,
so a typo in either shows up as a mismatch.
"""

from __future__ import annotations

import pytest
import smpplib.gsm
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.gsm import (
    CR,
    DEFAULT_ALPHABET,
    DEFAULT_EXTENSION,
    ESCAPE,
    TURKISH,
    TURKISH_LOCKING_SHIFT,
    TURKISH_SINGLE_SHIFT,
    GsmCharset,
    LocalEncodingError,
    UnencodableTextError,
    UnsupportedLanguageError,
    fill_bits,
    pack_septets,
    unpack_septets,
)

# TS 23.038 §6.2.1, as Unicode code points, septet 0x00 upwards; 0x1B (escape) is None.
DEFAULT_CODE_POINTS = [
    0x40, 0xA3, 0x24, 0xA5, 0xE8, 0xE9, 0xF9, 0xEC, 0xF2, 0xC7, 0x0A, 0xD8, 0xF8, 0x0D, 0xC5, 0xE5,
    0x394, 0x5F, 0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8, 0x3A3, 0x398, 0x39E, None, 0xC6, 0xE6,
    0xDF, 0xC9,
    0x20, 0x21, 0x22, 0x23, 0xA4, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2E, 0x2F,
    *range(0x30, 0x40),
    0xA1, *range(0x41, 0x5B), 0xC4, 0xD6, 0xD1, 0xDC, 0xA7,
    0xBF, *range(0x61, 0x7B), 0xE4, 0xF6, 0xF1, 0xFC, 0xE0,
]  # fmt: skip

# Annex A.3.1: the cells where the Turkish locking shift table differs from the default one.
TURKISH_LOCKING_DIFFERENCES = {
    0x04: 0x20AC,  # € (default: è)
    0x07: 0x131,  # ı (default: ì)
    0x0B: 0x11E,  # Ğ (default: Ø)
    0x0C: 0x11F,  # ğ (default: ø)
    0x1C: 0x15E,  # Ş (default: Æ)
    0x1D: 0x15F,  # ş (default: æ)
    0x40: 0x130,  # İ (default: ¡)
    0x60: 0xE7,  # ç (default: ¿)
}

# §6.2.1.1 and Annex A.2.1, code -> code point.
EXTENSION_CODE_POINTS = {
    0x0A: 0x0C, 0x14: 0x5E, 0x28: 0x7B, 0x29: 0x7D, 0x2F: 0x5C,
    0x3C: 0x5B, 0x3D: 0x7E, 0x3E: 0x5D, 0x40: 0x7C, 0x65: 0x20AC,
}  # fmt: skip
TURKISH_SINGLE_EXTRA = {
    0x47: 0x11E, 0x49: 0x130, 0x53: 0x15E, 0x63: 0xE7, 0x67: 0x11F, 0x69: 0x131, 0x73: 0x15F,
}  # fmt: skip

DEFAULT = GsmCharset()
TR_SINGLE = GsmCharset(single_shift=TURKISH)
TR_LOCKING = GsmCharset(locking_shift=TURKISH, single_shift=TURKISH)

BASIC_CHARS = "".join(c for i, c in enumerate(DEFAULT_ALPHABET) if i != ESCAPE)
EXTENSION_CHARS = "".join(DEFAULT_EXTENSION.values())
TURKISH_EXTRA_CHARS = "ĞğİıŞşç"


def _chars_of(charset: GsmCharset) -> str:
    main = TURKISH_LOCKING_SHIFT if charset.locking_shift == TURKISH else DEFAULT_ALPHABET
    extension = TURKISH_SINGLE_SHIFT if charset.single_shift == TURKISH else DEFAULT_EXTENSION
    return "".join({c for i, c in enumerate(main) if i != ESCAPE} | set(extension.values()))


# --- tables -----------------------------------------------------------------------------------


def test_default_alphabet_matches_spec() -> None:
    assert len(DEFAULT_ALPHABET) == 128
    for code, expected in enumerate(DEFAULT_CODE_POINTS):
        if expected is not None:
            assert ord(DEFAULT_ALPHABET[code]) == expected, hex(code)


def test_turkish_locking_shift_matches_spec() -> None:
    assert len(TURKISH_LOCKING_SHIFT) == 128
    for code in range(128):
        if code == ESCAPE:
            continue
        expected = TURKISH_LOCKING_DIFFERENCES.get(code, DEFAULT_CODE_POINTS[code])
        assert ord(TURKISH_LOCKING_SHIFT[code]) == expected, hex(code)


def test_extension_tables_match_spec() -> None:
    assert {k: ord(v) for k, v in DEFAULT_EXTENSION.items()} == EXTENSION_CODE_POINTS
    expected = EXTENSION_CODE_POINTS | TURKISH_SINGLE_EXTRA
    assert {k: ord(v) for k, v in TURKISH_SINGLE_SHIFT.items()} == expected


@pytest.mark.parametrize("table", [DEFAULT_ALPHABET, TURKISH_LOCKING_SHIFT])
def test_no_character_twice_in_a_table(table: str) -> None:
    chars = [c for i, c in enumerate(table) if i != ESCAPE]
    assert len(set(chars)) == len(chars) == 127


# --- Ç / ç and the Turkish letters ------------------------------------------------------------


def test_c_cedilla_mapping() -> None:
    # 0x09 is Ç in TS 23.038; we map exactly that and nothing else.
    assert DEFAULT.encode("Ç") == b"\x09"
    assert DEFAULT.decode(b"\x09") == "Ç"
    with pytest.raises(UnencodableTextError) as info:
        DEFAULT.encode("ç")
    assert info.value.characters == "ç"
    # The Turkish tables have ç properly.
    assert TR_SINGLE.encode("çÇ") == b"\x1b\x63\x09"
    assert TR_LOCKING.encode("çÇ") == b"\x60\x09"


def test_turkish_letters_are_never_substituted() -> None:
    with pytest.raises(UnencodableTextError) as info:
        DEFAULT.encode("ğüşİıöĞŞ")
    assert info.value.characters == "ğşİıĞŞ"  # ü and ö are in the default table
    assert isinstance(info.value, LocalEncodingError)
    assert isinstance(info.value, ValueError)
    assert DEFAULT.septet_length("ğ") is None
    assert not DEFAULT.can_encode("ı")


def test_turkish_single_and_locking_codes() -> None:
    assert TR_SINGLE.encode("ğĞıİşŞ") == bytes.fromhex("1b671b471b691b491b731b53")
    assert TR_LOCKING.encode("ğĞıİşŞ") == bytes.fromhex("0c0b07401d1c")
    # The locking table lost è, ì, Ø, ø, Æ, æ, ¡, ¿ to make room.
    for char in "èìØøÆæ¡¿":
        assert not TR_LOCKING.can_encode(char)
        assert TR_SINGLE.can_encode(char)


def test_extension_characters_cost_two_septets() -> None:
    for char in "^{}\\[~]|€\f":
        assert DEFAULT.septet_length(char) == 2
        assert DEFAULT.encode(char)[0] == ESCAPE
    assert DEFAULT.encode("€") == b"\x1b\x65"
    assert DEFAULT.encode("{") == b"\x1b\x28"
    # ... but € is a plain cell of the Turkish locking shift table.
    assert TR_LOCKING.encode("€") == b"\x04"
    assert TR_LOCKING.septet_length("€{") == 3


def test_unsupported_language_encode_raises_decode_falls_back() -> None:
    spanish = GsmCharset(single_shift=0x02)
    with pytest.raises(UnsupportedLanguageError):
        spanish.encode("a")
    assert spanish.decode(b"a\x1b\x65") == "a€"


def test_decode_escape_edge_cases() -> None:
    # §6.2.1.1: escape + a code not in the table shows the main-table character ...
    assert DEFAULT.decode(b"\x1b\x41") == "A"
    # ... and 0x1B 0x1B (reserved) shows a space.
    assert DEFAULT.decode(b"a\x1b\x1bb") == "a b"
    # A lone trailing escape (split by a careless sender) yields nothing.
    assert DEFAULT.decode(b"ab\x1b") == "ab"
    with pytest.raises(ValueError):
        DEFAULT.decode(b"\x80")


@settings(deadline=None, max_examples=200)
@given(st.sampled_from([DEFAULT, TR_SINGLE, TR_LOCKING]), st.data())
def test_charset_round_trip(charset: GsmCharset, data: st.DataObject) -> None:
    text = data.draw(st.text(st.sampled_from(_chars_of(charset)), max_size=200))
    septets = charset.encode(text)
    assert all(s < 0x80 for s in septets)
    assert len(septets) == charset.septet_length(text)
    assert charset.decode(septets) == text


@settings(deadline=None, max_examples=200)
@given(st.sampled_from([DEFAULT, TR_SINGLE, TR_LOCKING]), st.data())
def test_length_check_and_encode_agree_on_any_text(
    charset: GsmCharset, data: st.DataObject
) -> None:
    alphabet = st.sampled_from(_chars_of(charset)) | st.characters()
    text = data.draw(st.text(alphabet, max_size=100))
    missing = "".join(dict.fromkeys(c for c in text if c not in _chars_of(charset)))
    assert charset.can_encode(text) is (not missing)
    if missing:
        assert charset.septet_length(text) is None
        with pytest.raises(UnencodableTextError) as caught:
            charset.encode(text)
        assert caught.value.characters == missing
    else:
        assert charset.septet_length(text) == len(charset.encode(text))


# --- packing ----------------------------------------------------------------------------------


def test_pack_hellohello_golden() -> None:
    # The classic TS 23.038 §6.1.2.1.1 illustration: 10 septets -> 9 octets.
    assert pack_septets(DEFAULT.encode("hellohello")).hex() == "e8329bfd4697d9ec37"


def test_pack_with_one_fill_bit_after_a_six_octet_udh() -> None:
    # After a 6-octet UDH (48 bits) the text starts at bit 49, a septet boundary: 1 fill bit.
    # The packed stream is then the one above shifted left by one bit, octet by octet
    # (e8 -> d0 carry 1; 32 -> 65; 9b -> 36 carry 1; fd -> fb carry 1; 46 -> 8d; 97 -> 2e
    # carry 1; d9 -> b3 carry 1; ec -> d9 carry 1; 37 -> 6f). 71 bits -> 9 octets.
    assert fill_bits(6) == 1
    packed = pack_septets(DEFAULT.encode("hellohello"), fill=1)
    assert packed.hex() == "d06536fb8d2eb3d96f"
    assert unpack_septets(packed, fill=1) == b"hellohello"


def test_pack_pads_seven_spare_bits_with_cr() -> None:
    # 7 septets = 49 bits in 7 octets: 7 bits spare. TS 23.038 §6.1.2.3.1: pad with CR, or a
    # receiver that only knows the octet count reads a trailing "@".
    packed = pack_septets(b"1234567")
    assert len(packed) == 7
    assert packed[-1] >> 1 == CR
    assert unpack_septets(packed) == b"1234567"
    assert unpack_septets(packed, count=8) == b"1234567\r"


def test_fill_bits_per_udh_length() -> None:
    assert [fill_bits(n) for n in (0, 4, 6, 7, 9, 12)] == [0, 3, 1, 0, 5, 2]


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pack_septets(b"\x80")
    with pytest.raises(ValueError):
        pack_septets(b"a", fill=7)
    with pytest.raises(ValueError):
        unpack_septets(b"a", count=2)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=170).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_round_trip(septets: bytes, fill: int) -> None:
    packed = pack_septets(septets, fill)
    assert len(packed) == (fill + 7 * len(septets) + 7) // 8
    assert unpack_septets(packed, fill, count=len(septets)) == septets
    if not septets.endswith(b"\r"):  # a genuine final CR is ambiguous without the count
        assert unpack_septets(packed, fill) == septets


# --- differential against smpplib -------------------------------------------------------------

# smpplib 2.2.4's table has "`" where TS 23.038 has "§" (0x5F) and lacks the page break (\f) of
# the extension table; everything else it covers must encode identically.
SMPPLIB_COVERED = [c for c in BASIC_CHARS + EXTENSION_CHARS if c not in "§\f"]


def test_smpplib_known_deviations() -> None:
    assert DEFAULT.encode("§") == b"\x5f"
    assert smpplib.gsm.gsm_encode("`") == b"\x5f"  # smpplib's mistake, not ours
    assert not DEFAULT.can_encode("`")


@settings(deadline=None, max_examples=300)
@given(st.text(st.sampled_from(SMPPLIB_COVERED), max_size=300))
def test_default_alphabet_matches_smpplib(text: str) -> None:
    assert DEFAULT.encode(text) == smpplib.gsm.gsm_encode(text)
