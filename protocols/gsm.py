"""GSM 7-bit alphabets (3GPP TS 23.038) and the septet codecs.

Two representations of 7-bit text exist on an SMPP link:

* **unpacked** — one septet per octet, high bit clear. This is what ``data_coding`` 0x00 means
  over SMPP for almost every SMSC: the SMSC packs the septets for the air interface itself.
* **packed** — septets packed LSB first into octets (TS 23.038 §6.1.2.1.1), optionally preceded
  by fill bits so that the first septet starts on a septet boundary after a User Data Header
  (TS 23.040 §9.2.3.24). Some SMSCs want it, and some deliver MO messages that way.

The tables below are facts from TS 23.038: §6.2.1 (default alphabet), §6.2.1.1 (default
alphabet extension table), Annex A.2.1 (Turkish national language single shift table) and
Annex A.3.1 (Turkish national language locking shift table). They were written from the
specification and cross-checked cell by cell against three independent transcriptions: the
Android telephony ``GsmAlphabet`` tables (TS 23.038 V9.1.1), the Mozilla B2G RIL constants and
GCHQ CyberChef's ``Gsm7`` tables (TS 23.038 V16.0.0).

Ç and ç: code 0x09 of the default alphabet is shown as Ç (capital C cedilla) in TS 23.038; early
GSM 03.38 printings showed ç, and handsets disagree. We map only what the table really holds:
0x09 <-> "Ç". A lowercase "ç" is therefore *not* representable in the default alphabet; the Turkish
tables carry it properly (single shift 0x1B 0x63, locking shift 0x60), and the encoder chooses them
(or UCS-2) when the text needs it. Nothing is ever replaced by a look-alike (ğ -> g, ı -> i, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

from protocols.errors import LocalProtocolError

__all__ = [
    "CR",
    "DEFAULT_ALPHABET",
    "DEFAULT_EXTENSION",
    "ESCAPE",
    "SUPPORTED_LANGUAGES",
    "TURKISH",
    "TURKISH_LOCKING_SHIFT",
    "TURKISH_SINGLE_SHIFT",
    "GsmCharset",
    "LocalEncodingError",
    "UnencodableTextError",
    "UnsupportedLanguageError",
    "fill_bits",
    "pack_septets",
    "unpack_septets",
]

ESCAPE = 0x1B
"""Escape to the extension (single shift) table, TS 23.038 §6.2.1."""

CR = 0x0D
"""Carriage return, also the padding septet of TS 23.038 §6.1.2.3.1."""

TURKISH = 0x01
"""National language identifier of Turkish, TS 23.038 §6.2.1.2.4."""

# One string per column of the TS 23.038 table, i.e. per 16 consecutive code points: index
# ``row * 16 + n`` is the septet value. 0x1B is the escape and holds "\x1b" only as a
# placeholder; it never encodes or decodes as a character. Greek capitals are spelled as escapes
# because several look-alikes exist (U+2126 OHM SIGN, U+2206 INCREMENT, ...).
_DEFAULT_ROWS = (
    "@£$¥èéùìòÇ\nØø\rÅå",  # 0x00-0x0F
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1bÆæßÉ",  # 0x10-0x1F
    " !\"#¤%&'()*+,-./",  # 0x20-0x2F (0x24 is the currency sign ¤, not $)
    "0123456789:;<=>?",  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO",  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§",  # 0x50-0x5F
    "¿abcdefghijklmno",  # 0x60-0x6F
    "pqrstuvwxyzäöñüà",  # 0x70-0x7F
)

# Annex A.3.1 differs from the default alphabet in 14 cells: 0x04 €, 0x07 ı, 0x0B Ğ, 0x0C ğ,
# 0x1C Ş, 0x1D ş, 0x40 İ, 0x60 ç (replacing è, ì, Ø, ø, Æ, æ, ¡, ¿).
_TURKISH_LOCKING_ROWS = (
    "@£$¥€éùıòÇ\nĞğ\rÅå",  # 0x00-0x0F
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1bŞşßÉ",  # 0x10-0x1F
    " !\"#¤%&'()*+,-./",  # 0x20-0x2F
    "0123456789:;<=>?",  # 0x30-0x3F
    "İABCDEFGHIJKLMNO",  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§",  # 0x50-0x5F
    "çabcdefghijklmno",  # 0x60-0x6F
    "pqrstuvwxyzäöñüà",  # 0x70-0x7F
)

DEFAULT_ALPHABET = "".join(_DEFAULT_ROWS)
"""The GSM 7-bit default alphabet, indexed by septet (TS 23.038 §6.2.1)."""

TURKISH_LOCKING_SHIFT = "".join(_TURKISH_LOCKING_ROWS)
"""The Turkish national language locking shift table, indexed by septet (Annex A.3.1)."""

DEFAULT_EXTENSION: Mapping[int, str] = MappingProxyType(
    {
        0x0A: "\f",  # page break, shown as FORM FEED
        0x14: "^",
        0x28: "{",
        0x29: "}",
        0x2F: "\\",
        0x3C: "[",
        0x3D: "~",
        0x3E: "]",
        0x40: "|",
        0x65: "€",
    }
)
"""The default alphabet extension table, reached with 0x1B (TS 23.038 §6.2.1.1)."""

TURKISH_SINGLE_SHIFT: Mapping[int, str] = MappingProxyType(
    {
        **DEFAULT_EXTENSION,
        0x47: "Ğ",
        0x49: "İ",
        0x53: "Ş",
        0x63: "ç",
        0x67: "ğ",
        0x69: "ı",
        0x73: "ş",
    }
)
"""The Turkish national language single shift table (Annex A.2.1): the default extension
table plus Ğ İ Ş ç ğ ı ş."""

_LOCKING_TABLES: Mapping[int, str] = MappingProxyType({TURKISH: TURKISH_LOCKING_SHIFT})
_SINGLE_SHIFT_TABLES: Mapping[int, Mapping[int, str]] = MappingProxyType(
    {TURKISH: TURKISH_SINGLE_SHIFT}
)

SUPPORTED_LANGUAGES = frozenset(_LOCKING_TABLES) | frozenset(_SINGLE_SHIFT_TABLES)
"""National language identifiers whose tables this module knows."""


class LocalEncodingError(LocalProtocolError, ValueError):
    """Base of the errors the text modules (gsm, userdata, encoding, segmentation) raise when
    the caller asks for something impossible: the "we misused the API" side.

    It is also a ``ValueError`` so callers validating user text can catch it as one.
    """


class UnencodableTextError(LocalEncodingError):
    """The text holds characters the requested encoding cannot represent.

    Attributes:
        encoding: name of the encoding that was asked for.
        characters: the offending characters, in order of first appearance, without repeats.
    """

    def __init__(self, encoding: str, characters: str) -> None:
        self.encoding = encoding
        self.characters = characters
        shown = ", ".join(f"U+{ord(c):04X} {c!r}" for c in characters[:10])
        super().__init__(f"text not representable in {encoding}: {shown}")


class UnsupportedLanguageError(LocalEncodingError):
    """A national language shift table was asked for that this module does not have."""

    def __init__(self, language: int) -> None:
        self.language = language
        super().__init__(f"no GSM 7-bit shift table for national language 0x{language:02X}")


@dataclass(frozen=True, slots=True)
class GsmCharset:
    """A GSM 7-bit character set: a locking shift table plus a single shift table.

    ``locking_shift`` / ``single_shift`` are national language identifiers (as carried in UDH IEs
    0x25 / 0x24, TS 23.040 §9.2.3.24.15-16), or None for the default alphabet / default
    extension table.

    Decoding never fails: per TS 23.038 §6.2.1.1, an escape followed by a code the single shift
    table lacks shows the main-table character, and 0x1B 0x1B (reserved for a further extension
    table) shows a space. A language this module has no table for decodes with the default
    table (the IE stays visible to the caller in the UDH). Encoding needs known tables.
    """

    locking_shift: int | None = None
    single_shift: int | None = None

    @property
    def name(self) -> str:
        """Short human-readable name, used in error messages."""
        parts = ["gsm7"]
        if self.locking_shift is not None:
            parts.append(f"locking-0x{self.locking_shift:02X}")
        if self.single_shift is not None:
            parts.append(f"single-0x{self.single_shift:02X}")
        return "/".join(parts)

    def septet_length(self, text: str) -> int | None:
        """Number of septets ``text`` needs, or None when some character is unrepresentable."""
        known, escaped, _ = _fast_tables(self.locking_shift, self.single_shift)
        chars = set(text)
        if not chars <= known:
            return None
        # Set operations and str.count run in C: a per-character loop cost ~1 µs a character.
        return len(text) + sum(text.count(c) for c in chars & escaped)

    def can_encode(self, text: str) -> bool:
        """Whether every character of ``text`` is in this charset."""
        return self.can_encode_all(set(text))

    def can_encode_all(self, chars: AbstractSet[str]) -> bool:
        """Whether every character of ``chars`` (a text's set of characters) is in this
        charset: one set made for several charsets asked about one text."""
        return chars <= _fast_tables(self.locking_shift, self.single_shift)[0]

    def encode(self, text: str) -> bytes:
        """Encode to unpacked septets (one per octet); extension characters take two.

        Raises:
            UnencodableTextError: some character is in neither table.
            UnsupportedLanguageError: a shift table this module does not have was asked for.
        """
        known, _, translation = _fast_tables(self.locking_shift, self.single_shift)
        if not set(text) <= known:
            missing = dict.fromkeys(c for c in text if c not in known)
            raise UnencodableTextError(self.name, "".join(missing))
        return text.translate(translation).encode("latin-1")

    def decode(self, septets: bytes) -> str:
        """Decode unpacked septets. Octets must be < 0x80 (see :func:`unpack_septets`).

        A lone escape as the very last septet (a sender that split an escape pair across two
        parts) decodes to nothing rather than to a guess.

        Raises:
            ValueError: an octet has its high bit set, so this is not unpacked 7-bit data.
        """
        main = _LOCKING_TABLES.get(self.locking_shift or 0, DEFAULT_ALPHABET)
        extension = _SINGLE_SHIFT_TABLES.get(self.single_shift or 0, DEFAULT_EXTENSION)
        out: list[str] = []
        escaped = False
        for septet in septets:
            if septet > 0x7F:
                raise ValueError(f"octet 0x{septet:02X} is not a septet")
            if escaped:
                escaped = False
                if septet == ESCAPE:
                    out.append(" ")  # §6.2.1.1: reserved, "display a space"
                else:
                    out.append(extension.get(septet, main[septet]))
            elif septet == ESCAPE:
                escaped = True
            else:
                out.append(main[septet])
        return "".join(out)


@cache
def _encode_table(locking_shift: int | None, single_shift: int | None) -> Mapping[str, bytes]:
    """Character -> septet(s) for one table pair; the shortest form wins."""
    if locking_shift is None:
        main = DEFAULT_ALPHABET
    elif locking_shift in _LOCKING_TABLES:
        main = _LOCKING_TABLES[locking_shift]
    else:
        raise UnsupportedLanguageError(locking_shift)
    if single_shift is None:
        extension = DEFAULT_EXTENSION
    elif single_shift in _SINGLE_SHIFT_TABLES:
        extension = _SINGLE_SHIFT_TABLES[single_shift]
    else:
        raise UnsupportedLanguageError(single_shift)
    table: dict[str, bytes] = {}
    # Two-septet forms first, so that a character present in both tables (ç, Ğ, € with the
    # Turkish locking + single shift pair) is overwritten by its one-septet form.
    for code, char in extension.items():
        table[char] = bytes((ESCAPE, code))
    for code, char in enumerate(main):
        if code != ESCAPE:
            table[char] = bytes((code,))
    return MappingProxyType(table)


@cache
def _fast_tables(
    locking_shift: int | None, single_shift: int | None
) -> tuple[frozenset[str], frozenset[str], dict[int, str]]:
    """:func:`_encode_table` for C-speed use: the characters it has, those that take two
    septets, and a ``str.translate`` table to the septets (as code points below 0x80)."""
    table = _encode_table(locking_shift, single_shift)
    return (
        frozenset(table),
        frozenset(c for c, code in table.items() if len(code) == 2),
        {ord(c): code.decode("latin-1") for c, code in table.items()},
    )


def fill_bits(udh_octets: int) -> int:
    """Fill bits after a UDH of ``udh_octets`` octets (UDHL included) in 7-bit user data.

    TS 23.040 §9.2.3.24: the first septet of the text starts on a septet boundary counted from
    the start of the user data, so 0-6 zero bits follow the header.
    """
    return (7 - (udh_octets * 8) % 7) % 7


def pack_septets(septets: bytes, fill: int = 0) -> bytes:
    """Pack septets LSB first (TS 23.038 §6.1.2.1.1), after ``fill`` zero bits.

    When the last octet would end in exactly 7 unused bits, they are set to CR rather than
    zero (TS 23.038 §6.1.2.3.1): over SMPP only the octet count travels, and seven zero bits
    would read back as a trailing "@". :func:`unpack_septets` drops that pad again.

    Args:
        septets: unpacked septets, each < 0x80.
        fill: number of leading fill bits, 0-6 (see :func:`fill_bits`).

    Returns:
        ``ceil((fill + 7 * len(septets)) / 8)`` octets.
    """
    if not 0 <= fill <= 6:
        raise ValueError(f"fill bits must be 0-6, not {fill}")
    if any(s > 0x7F for s in septets):
        raise ValueError("septets must be < 0x80")
    count = len(septets)
    n_bits = fill + 7 * count
    n_octets = (n_bits + 7) // 8
    if n_octets * 8 - n_bits == 7:
        septets = septets + bytes((CR,))
    acc = 0
    for index, septet in enumerate(septets):
        acc |= septet << (fill + 7 * index)
    return acc.to_bytes(n_octets, "little")


def unpack_septets(data: bytes, fill: int = 0, count: int | None = None) -> bytes:
    """Unpack packed 7-bit data to one septet per octet.

    Args:
        data: packed user data, without the UDH.
        fill: fill bits at the start of ``data`` (see :func:`fill_bits`).
        count: number of septets, when known (TS 23.040 TP-UDL). When None, every whole septet
            in ``data`` is returned, except that a CR filling exactly the last 7 bits is taken
            for the pad of TS 23.038 §6.1.2.3.1 and dropped. That rule cannot tell it from a
            genuine CR ending a text which exactly fills its octets; pass ``count`` where known.

    Raises:
        ValueError: ``fill`` out of range, or ``count`` larger than ``data`` holds.
    """
    if not 0 <= fill <= 6:
        raise ValueError(f"fill bits must be 0-6, not {fill}")
    n_bits = len(data) * 8 - fill
    available = max(n_bits, 0) // 7
    if count is None:
        count = available
        strip_pad = available > 0 and n_bits % 7 == 0
    else:
        if count > available:
            raise ValueError(f"{len(data)} octets hold {available} septets, not {count}")
        strip_pad = False
    acc = int.from_bytes(data, "little") >> fill
    out = bytes((acc >> (7 * i)) & 0x7F for i in range(count))
    if strip_pad and out[-1] == CR:
        out = out[:-1]
    return out
