"""Choosing an encoding for outgoing text, and decoding incoming short messages.

Outgoing (:func:`choose_encoding`, :func:`encode_text`): a text becomes units in one of the SMPP
codings, together with the national language IEs it needs and the number of SMS it will cost.
The chooser minimises the number of parts, because that is what the operator bills.

Incoming (:func:`decode_short_message`): a deliver_sm's ``data_coding``, ``esm_class`` and
``short_message`` become text, concatenation details and the raw UDH.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from protocols.frozen import fast_init
from protocols.gsm import (
    TURKISH,
    GsmCharset,
    LocalEncodingError,
    UnencodableTextError,
    fill_bits,
    unpack_septets,
)
from protocols.userdata import (
    IEI_NATIONAL_LOCKING_SHIFT,
    IEI_NATIONAL_SINGLE_SHIFT,
    MAX_PARTS,
    ConcatInfo,
    InformationElement,
    MalformedUserDataError,
    SegmentationMethod,
    UnitKind,
    capacity,
    concat_info,
    multipart_udh_octets,
    national_shift_ies,
    parse_udh,
    split_units,
    udh_octets,
)

__all__ = [
    "DATA_CODING_BINARY",
    "DATA_CODING_BINARY_ALT",
    "DATA_CODING_DEFAULT",
    "DATA_CODING_IA5",
    "DATA_CODING_LATIN1",
    "DATA_CODING_UCS2",
    "ESM_CLASS_UDHI",
    "MAX_PAYLOAD_OCTETS",
    "DecodedMessage",
    "EncodedText",
    "GsmPacking",
    "MessageTooLongError",
    "NationalShift",
    "TextEncoding",
    "UnencodableTextError",
    "choose_encoding",
    "decode_short_message",
    "encode_text",
    "join_part_texts",
]

# SMPP 3.4 §5.2.19 data_coding values this module produces or reads.
DATA_CODING_DEFAULT = 0x00  # SMSC default alphabet: GSM 03.38 for almost every operator
DATA_CODING_IA5 = 0x01  # IA5 (CCITT T.50) / ASCII
DATA_CODING_BINARY = 0x02  # octet unspecified (8-bit binary)
DATA_CODING_LATIN1 = 0x03  # ISO-8859-1
DATA_CODING_BINARY_ALT = 0x04  # octet unspecified (8-bit binary), the second code point
DATA_CODING_UCS2 = 0x08  # UCS-2, big endian; UTF-16 in practice

ESM_CLASS_UDHI = 0x40
"""SMPP 3.4 §5.2.12 esm_class bit 6: the short message starts with a UDH."""

MAX_PAYLOAD_OCTETS = 0xFFFF
"""A TLV length is two octets (SMPP 3.4 §3.2.4), so message_payload holds at most this."""


class MessageTooLongError(LocalEncodingError):
    """The text needs more parts than concatenation can number (255), or more than one
    message_payload can carry."""


class TextEncoding(StrEnum):
    """The encodings the chooser considers, in tie-break order, plus Latin-1 on request."""

    GSM7 = "gsm7"  # default alphabet + default extension table
    GSM7_TR_SINGLE = "gsm7-tr-single"  # default alphabet + Turkish single shift (IE 0x24)
    GSM7_TR_LOCKING = "gsm7-tr-locking"  # Turkish locking shift (IE 0x25) + single shift
    UCS2 = "ucs2"  # UTF-16-BE
    LATIN1 = "latin1"  # ISO-8859-1, only when asked for


class NationalShift(StrEnum):
    """Which national language tables a route allows (config ``national_shift``).

    ``TURKISH_SINGLE`` is for handsets known to mishandle the locking shift table.
    """

    TURKISH = "turkish"
    TURKISH_SINGLE = "turkish-single"
    NONE = "none"


class GsmPacking(StrEnum):
    """How 7-bit user data in an incoming message is laid out."""

    AUTO = "auto"  # unpacked, unless an octet has its high bit set (see decode_short_message)
    UNPACKED = "unpacked"
    PACKED = "packed"


_CHARSETS: dict[TextEncoding, GsmCharset] = {
    TextEncoding.GSM7: GsmCharset(),
    TextEncoding.GSM7_TR_SINGLE: GsmCharset(single_shift=TURKISH),
    TextEncoding.GSM7_TR_LOCKING: GsmCharset(locking_shift=TURKISH, single_shift=TURKISH),
}

_DATA_CODING = {
    TextEncoding.GSM7: DATA_CODING_DEFAULT,
    TextEncoding.GSM7_TR_SINGLE: DATA_CODING_DEFAULT,
    TextEncoding.GSM7_TR_LOCKING: DATA_CODING_DEFAULT,
    TextEncoding.UCS2: DATA_CODING_UCS2,
    TextEncoding.LATIN1: DATA_CODING_LATIN1,
}


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedText:
    """A text encoded for sending, with what segmentation needs.

    Attributes:
        encoding: the encoding used.
        data_coding: the SMPP ``data_coding`` to send it with.
        units: the encoded text: unpacked septets (7-bit), UTF-16-BE octets (UCS-2) or Latin-1
            octets.
        unit_kind: what one unit is (septet, UCS-2 code unit, octet).
        national_ies: the national language UDH IEs the encoding requires (every part carries
            them), empty for the default alphabet, UCS-2 and Latin-1.
        method: the segmentation method the part count was computed for.
        chunks: the units of each SMS on the air, cut at character boundaries.
    """

    encoding: TextEncoding
    data_coding: int
    units: bytes
    unit_kind: UnitKind
    national_ies: tuple[InformationElement, ...]
    method: SegmentationMethod
    chunks: tuple[bytes, ...]

    @property
    def parts(self) -> int:
        """Number of SMS the handset receives (and the operator bills). With ``PAYLOAD`` one
        submit_sm is sent and the SMSC makes this many parts."""
        return len(self.chunks)

    @property
    def unit_count(self) -> int:
        """Length of the text in units (septets, UCS-2 code units, octets)."""
        return len(self.units) // 2 if self.unit_kind is UnitKind.UCS2 else len(self.units)

    @property
    def needs_reference(self) -> bool:
        """Whether segmentation needs a concatenation reference (several submit_sm)."""
        return self.parts > 1 and self.method is not SegmentationMethod.PAYLOAD


def _plan(
    units: bytes,
    kind: UnitKind,
    national_ies: tuple[InformationElement, ...],
    method: SegmentationMethod,
) -> tuple[bytes, ...]:
    """Cut ``units`` into air-interface parts: one if it fits with the national IEs alone."""
    count = len(units) // 2 if kind is UnitKind.UCS2 else len(units)
    alone, per_part = _capacities(kind, national_ies, method)
    if count <= alone:
        return (units,)
    return tuple(split_units(units, kind, per_part))


@functools.cache  # few combinations; asked for every message
def _capacities(
    kind: UnitKind, national_ies: tuple[InformationElement, ...], method: SegmentationMethod
) -> tuple[int, int]:
    """Units that fit one message alone, and each part of a multipart message."""
    return (
        capacity(kind, udh_octets(national_ies)),
        capacity(kind, multipart_udh_octets(method, national_ies)),
    )


def _encode(text: str, encoding: TextEncoding, method: SegmentationMethod) -> EncodedText:
    """Encode without the length checks; raises UnencodableTextError."""
    charset = _CHARSETS.get(encoding)
    if charset is not None:
        units = charset.encode(text)
        kind = UnitKind.SEPTET
        ies = national_shift_ies(charset.locking_shift, charset.single_shift)
    elif encoding is TextEncoding.UCS2:
        # "surrogatepass" is deliberately absent: a lone surrogate in a str is not a character
        # and must not reach a handset.
        try:
            units = text.encode("utf-16-be")
        except UnicodeEncodeError as exc:
            raise UnencodableTextError(encoding.value, exc.object[exc.start : exc.end]) from None
        kind = UnitKind.UCS2
        ies = ()
    else:
        try:
            units = text.encode("latin-1")
        except UnicodeEncodeError:
            missing = dict.fromkeys(c for c in text if ord(c) > 0xFF)
            raise UnencodableTextError(encoding.value, "".join(missing)) from None
        kind = UnitKind.OCTET
        ies = ()
    return EncodedText(
        encoding=encoding,
        data_coding=_DATA_CODING[encoding],
        units=units,
        unit_kind=kind,
        national_ies=ies,
        method=method,
        chunks=_plan(units, kind, ies, method),
    )


def _check_length(encoded: EncodedText) -> EncodedText:
    if encoded.parts > MAX_PARTS:
        raise MessageTooLongError(
            f"text needs {encoded.parts} parts in {encoded.encoding.value}; at most 255"
        )
    if encoded.method is SegmentationMethod.PAYLOAD:
        size = udh_octets(encoded.national_ies) + len(encoded.units)
        if size > MAX_PAYLOAD_OCTETS:
            raise MessageTooLongError(f"message_payload of {size} octets; at most 65535")
    return encoded


def encode_text(
    text: str,
    encoding: TextEncoding | str,
    *,
    method: SegmentationMethod | str = SegmentationMethod.UDH,
) -> EncodedText:
    """Encode ``text`` in the encoding asked for.

    Args:
        text: the message.
        encoding: a :class:`TextEncoding` (or its value, e.g. ``"latin1"``).
        method: the segmentation method the part count is for.

    Raises:
        UnencodableTextError: ``text`` has characters the encoding lacks (never substituted).
        MessageTooLongError: more than 255 parts, or more than one message_payload holds.
    """
    return _check_length(_encode(text, TextEncoding(encoding), SegmentationMethod(method)))


def choose_encoding(
    text: str,
    *,
    method: SegmentationMethod | str = SegmentationMethod.UDH,
    national_shift: NationalShift | str = NationalShift.TURKISH,
) -> EncodedText:
    """Pick the encoding that sends ``text`` in the fewest parts.

    Candidates, in tie-break order: GSM default alphabet; GSM + Turkish single shift; Turkish
    locking + single shift; UCS-2. A national table wins only when it saves a part, so text the
    default alphabet carries in as many parts never depends on a handset knowing the national
    tables. Latin-1 is never chosen here (request it with :func:`encode_text`).

    Args:
        text: the message.
        method: segmentation method; capacities per part depend on it.
        national_shift: which national tables the route allows (``"none"`` disables them).

    Raises:
        MessageTooLongError: even the best encoding needs more than 255 parts.
    """
    method = SegmentationMethod(method)
    national_shift = NationalShift(national_shift)
    best: EncodedText | None = None
    chars = set(text)
    for encoding in _CANDIDATES[national_shift]:
        charset = _CHARSETS.get(encoding)
        if charset is not None and not charset.can_encode_all(chars):
            continue
        encoded = _encode(text, encoding, method)
        if best is None or encoded.parts < best.parts:
            best = encoded
            if best.parts == 1:
                break  # nothing later can have fewer parts, and ties go to the earlier one
    if best is None:  # UCS-2 only fails on lone surrogates, which no encoding carries
        raise UnencodableTextError(TextEncoding.UCS2.value, _lone_surrogates(text))
    return _check_length(best)


_CANDIDATES = {
    NationalShift.NONE: (TextEncoding.GSM7, TextEncoding.UCS2),
    NationalShift.TURKISH_SINGLE: (
        TextEncoding.GSM7,
        TextEncoding.GSM7_TR_SINGLE,
        TextEncoding.UCS2,
    ),
    NationalShift.TURKISH: (
        TextEncoding.GSM7,
        TextEncoding.GSM7_TR_SINGLE,
        TextEncoding.GSM7_TR_LOCKING,
        TextEncoding.UCS2,
    ),
}
"""choose_encoding's candidates for each national_shift, in tie-break order."""


def _lone_surrogates(text: str) -> str:
    return "".join(dict.fromkeys(c for c in text if 0xD800 <= ord(c) <= 0xDFFF))


# ---------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedMessage:
    """An incoming short message, decoded.

    Attributes:
        text: the text, or None for binary data and codings this module does not read.
            For a part of a concatenated UCS-2 message, a surrogate pair cut by the sender
            leaves a lone surrogate at the edge; :func:`join_part_texts` mends it.
        data_coding: as received.
        user_data: the octets after the UDH (still packed, if they were).
        concat: concatenation details from the UDH, or None.
        locking_shift / single_shift: national language identifiers from IEs 0x25 / 0x24.
        ies: every UDH IE as received, in order, unknown ones included.
    """

    text: str | None
    data_coding: int
    user_data: bytes
    concat: ConcatInfo | None
    locking_shift: int | None
    single_shift: int | None
    ies: tuple[InformationElement, ...]


def _alphabet(data_coding: int) -> str:
    """The alphabet a data_coding value names: "gsm7", "ucs2", "binary" or a codec name.

    0x00-0x0F follow SMPP 3.4 §5.2.19; the rest follow the TS 23.038 §4 data coding scheme,
    which SMPP passes through.
    """
    smpp = {
        0x00: "gsm7",
        0x01: "ascii",
        0x03: "latin-1",
        0x06: "iso8859-5",
        0x07: "iso8859-8",
        0x08: "ucs2",
    }
    if data_coding <= 0x0F:
        return smpp.get(data_coding, "binary")
    group = data_coding >> 4
    if group <= 0x7:  # general data coding (0x) and automatic deletion (01xx) groups
        if data_coding & 0x20:  # compressed (TS 23.042): not text we can read
            return "binary"
        return ("gsm7", "binary", "ucs2", "binary")[(data_coding >> 2) & 0x3]
    if group in (0xC, 0xD):  # message waiting indication, default alphabet
        return "gsm7"
    if group == 0xE:  # message waiting indication, UCS-2
        return "ucs2"
    if group == 0xF:  # data coding / message class: bit 2 picks 8-bit data
        return "binary" if data_coding & 0x04 else "gsm7"
    return "binary"  # reserved groups 1000-1011


def _national_language(ies: Iterable[InformationElement], iei: int) -> int | None:
    found: int | None = None
    for ie in ies:
        if ie.iei == iei and len(ie.data) == 1:
            found = ie.data[0]
    return found


def _mend_surrogates(text: str) -> str:
    """Pair adjacent surrogates into characters; lone ones become U+FFFD."""
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def join_part_texts(texts: Iterable[str]) -> str:
    """Join the texts of a concatenated message's parts, in order.

    A surrogate pair that the sender split between two parts decodes as two lone surrogates;
    joined they make the character again. Any still alone become U+FFFD.
    """
    return _mend_surrogates("".join(texts))


def decode_short_message(
    data_coding: int,
    esm_class: int,
    short_message: bytes,
    *,
    gsm_packing: GsmPacking | str = GsmPacking.AUTO,
) -> DecodedMessage:
    """Decode an incoming short message (or a message_payload, passed as ``short_message``).

    7-bit data (``data_coding`` 0x00 and the TS 23.038 7-bit DCS values) is one septet per
    octet over SMPP. ``GsmPacking.AUTO`` also accepts packed data when it is unmistakable: an
    unpacked septet never has its high bit set, so data with such an octet is read as packed
    (with fill bits after a UDH). Packed data whose octets are all below 0x80 cannot be told
    apart; a route known to deliver packed 7-bit should say ``GsmPacking.PACKED``.

    ASCII decodes a stray high-bit octet as U+FFFD; UCS-2 (UTF-16-BE) decodes an odd trailing
    octet as U+FFFD. Binary codings (0x02, 0x04, 8-bit DCS) and codings not read here give
    ``text=None`` with the octets in ``user_data``.

    Raises:
        MalformedUserDataError: UDHI is set and the UDH does not parse, or data said to be
            unpacked 7-bit has an octet above 0x7F (its ``command_status``, ESME_RX_P_APPN,
            is the answer for the deliver_sm_resp).
    """
    packing = GsmPacking(gsm_packing)
    ies: tuple[InformationElement, ...] = ()
    user_data = short_message
    header_octets = 0
    if esm_class & ESM_CLASS_UDHI:
        ies, user_data = parse_udh(short_message)
        header_octets = len(short_message) - len(user_data)
    concat = concat_info(ies)
    locking = _national_language(ies, IEI_NATIONAL_LOCKING_SHIFT)
    single = _national_language(ies, IEI_NATIONAL_SINGLE_SHIFT)
    alphabet = _alphabet(data_coding)
    text: str | None
    if alphabet == "gsm7":
        packed = packing is GsmPacking.PACKED or (
            packing is GsmPacking.AUTO and any(octet > 0x7F for octet in user_data)
        )
        septets = unpack_septets(user_data, fill_bits(header_octets)) if packed else user_data
        if any(septet > 0x7F for septet in septets):
            raise MalformedUserDataError("octet above 0x7F in unpacked 7-bit user data")
        text = GsmCharset(locking_shift=locking, single_shift=single).decode(septets)
    elif alphabet == "ucs2":
        # Lone surrogates survive this step on purpose: in a concatenated part they may be
        # half of a character the sender split (join_part_texts mends them).
        text = user_data[: len(user_data) & ~1].decode("utf-16-be", "surrogatepass")
        if len(user_data) % 2:
            text += "\ufffd"
        if concat is None:
            text = _mend_surrogates(text)
    elif alphabet == "binary":
        text = None
    else:
        text = codecs.decode(user_data, alphabet, "replace")
    return DecodedMessage(
        text=text,
        data_coding=data_coding,
        user_data=user_data,
        concat=concat,
        locking_shift=locking,
        single_shift=single,
        ies=ies,
    )
