"""Layout of the SMS user data: UDH information elements, part capacity and splitting.

TS 23.040 §9.2.3.24: when UDHI is set (SMPP ``esm_class`` bit 0x40) the user data starts with a
User Data Header: one octet UDHL (length of what follows), then information elements, each
``IEI, IEDL, data``. A short message carries at most 140 octets of user data, header included;
7-bit text after a header starts on a septet boundary, so fill bits are counted too.

This module knows nothing about characters beyond where a character may not be cut: an escape
pair in 7-bit text and a surrogate pair in UTF-16 must stay in one part.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from protocols.errors import RemoteProtocolError
from protocols.gsm import ESCAPE

__all__ = [
    "IEI_CONCAT_8BIT",
    "IEI_CONCAT_16BIT",
    "IEI_NATIONAL_LOCKING_SHIFT",
    "IEI_NATIONAL_SINGLE_SHIFT",
    "MAX_PARTS",
    "MAX_USER_DATA_OCTETS",
    "ConcatInfo",
    "InformationElement",
    "MalformedUserDataError",
    "SegmentationMethod",
    "UnitKind",
    "build_udh",
    "capacity",
    "concat_ie",
    "concat_info",
    "multipart_udh_octets",
    "national_shift_ies",
    "parse_udh",
    "split_units",
    "udh_octets",
]

IEI_CONCAT_8BIT = 0x00
"""Concatenated short messages, 8-bit reference (TS 23.040 §9.2.3.24.1)."""
IEI_CONCAT_16BIT = 0x08
"""Concatenated short messages, 16-bit reference (TS 23.040 §9.2.3.24.8)."""
IEI_NATIONAL_SINGLE_SHIFT = 0x24
"""National language single shift (TS 23.040 §9.2.3.24.15)."""
IEI_NATIONAL_LOCKING_SHIFT = 0x25
"""National language locking shift (TS 23.040 §9.2.3.24.16)."""

MAX_USER_DATA_OCTETS = 140
"""TP-User-Data of one SMS, header included (TS 23.040 §9.2.3.24)."""
MAX_PARTS = 255
"""The concatenation IEs and ``sar_total_segments`` count parts in one octet."""

# SMPP 3.4 §5.1.3 ESME_RX_P_APPN: "ESME Receiver Permanent App Error". A deliver_sm whose UDH
# contradicts its own length will not get better on retry.
_ESME_RX_P_APPN = 0x65


class MalformedUserDataError(RemoteProtocolError, ValueError):
    """The peer sent user data that does not parse (TS 23.040 §9.2.3.24).

    ``command_status`` is what to answer the deliver_sm with (ESME_RX_P_APPN).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, command_status=_ESME_RX_P_APPN)


class SegmentationMethod(StrEnum):
    """How a message longer than one SMS travels over SMPP.

    * ``UDH``: one submit_sm per part, each with a concatenation IE (8-bit reference).
    * ``UDH16``: the same with the 16-bit reference IE.
    * ``SAR``: one submit_sm per part with the SMPP 3.4 ``sar_*`` TLVs (§5.3.2.22-24) and no
      concatenation IE; the SMSC adds one on the air interface, so parts are sized as for
      ``UDH`` (leaving room for an 8-bit concatenation IE).
    * ``PAYLOAD``: one submit_sm with everything in ``message_payload`` (§5.3.2.32); the SMSC
      splits it. The part count reported is the count the SMSC will need with ``UDH`` sizing.
    """

    UDH = "udh"
    UDH16 = "udh16"
    SAR = "sar"
    PAYLOAD = "payload"


class UnitKind(StrEnum):
    """What one unit of encoded text is, for capacity and splitting."""

    SEPTET = "septet"  # unpacked 7-bit: one septet per octet, 0x1B starts a two-septet pair
    UCS2 = "ucs2"  # two octets big endian, a surrogate pair is one character
    OCTET = "octet"  # Latin-1 and other 8-bit codings


@dataclass(frozen=True, slots=True)
class InformationElement:
    """One UDH information element: identifier and data (TS 23.040 §9.2.3.24)."""

    iei: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.iei <= 0xFF:
            raise ValueError(f"IEI must be one octet, not {self.iei}")
        if len(self.data) > MAX_USER_DATA_OCTETS - 3:
            raise ValueError(f"IE data of {len(self.data)} octets cannot fit a UDH")

    def to_bytes(self) -> bytes:
        """The encoded IE: ``IEI, IEDL, data``."""
        return bytes((self.iei, len(self.data))) + self.data


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """Where one part sits in a concatenated message.

    Attributes:
        reference: the message reference, same in every part (8 or 16 bits).
        total: number of parts, 1-255.
        seqnum: this part's number, 1-based.
    """

    reference: int
    total: int
    seqnum: int

    def __post_init__(self) -> None:
        if not 0 <= self.reference <= 0xFFFF:
            raise ValueError(f"reference must fit 16 bits, not {self.reference}")
        if not 1 <= self.seqnum <= self.total <= MAX_PARTS:
            raise ValueError(f"need 1 <= seqnum <= total <= 255, not {self.seqnum}/{self.total}")


def concat_ie(info: ConcatInfo, *, sixteen_bit: bool) -> InformationElement:
    """The concatenation IE for ``info``: IEI 0x00 (8-bit reference) or 0x08 (16-bit)."""
    if sixteen_bit:
        data = info.reference.to_bytes(2, "big") + bytes((info.total, info.seqnum))
        return InformationElement(IEI_CONCAT_16BIT, data)
    if info.reference > 0xFF:
        raise ValueError(f"8-bit concatenation reference must be 0-255, not {info.reference}")
    return InformationElement(IEI_CONCAT_8BIT, bytes((info.reference, info.total, info.seqnum)))


@functools.cache  # a handful of table pairs; IEs are immutable, so one tuple serves all
def national_shift_ies(
    locking_shift: int | None, single_shift: int | None
) -> tuple[InformationElement, ...]:
    """The national language IEs for a table pair, single shift first."""
    ies: list[InformationElement] = []
    if single_shift is not None:
        ies.append(InformationElement(IEI_NATIONAL_SINGLE_SHIFT, bytes((single_shift,))))
    if locking_shift is not None:
        ies.append(InformationElement(IEI_NATIONAL_LOCKING_SHIFT, bytes((locking_shift,))))
    return tuple(ies)


def udh_octets(ies: Iterable[InformationElement]) -> int:
    """Size of the UDH holding ``ies``, UDHL included; 0 when there are none."""
    body = sum(2 + len(ie.data) for ie in ies)
    return 1 + body if body else 0


def build_udh(ies: Sequence[InformationElement]) -> bytes:
    """Encode a UDH (UDHL + IEs); ``b""`` for no IEs."""
    if not ies:
        return b""
    body = b"".join(ie.to_bytes() for ie in ies)
    if len(body) > MAX_USER_DATA_OCTETS - 1:
        raise ValueError(f"UDH of {len(body) + 1} octets does not fit a short message")
    return bytes((len(body),)) + body


def parse_udh(user_data: bytes) -> tuple[tuple[InformationElement, ...], bytes]:
    """Split user data that starts with a UDH into its IEs and the rest.

    Returns:
        ``(ies, rest)``; unknown IEs are kept as they are.

    Raises:
        MalformedUserDataError: UDHL or an IEDL runs past the data.
    """
    if not user_data:
        raise MalformedUserDataError("UDHI set but the user data is empty")
    udhl = user_data[0]
    if udhl + 1 > len(user_data):
        raise MalformedUserDataError(f"UDHL {udhl} exceeds the {len(user_data)}-octet data")
    header, rest = user_data[1 : udhl + 1], user_data[udhl + 1 :]
    ies: list[InformationElement] = []
    pos = 0
    while pos < len(header):
        if pos + 2 > len(header):
            raise MalformedUserDataError("truncated information element in UDH")
        iei, length = header[pos], header[pos + 1]
        end = pos + 2 + length
        if end > len(header):
            raise MalformedUserDataError(f"IE 0x{iei:02X} length {length} runs past the UDH")
        ies.append(InformationElement(iei, header[pos + 2 : end]))
        pos = end
    return tuple(ies), rest


def concat_info(ies: Iterable[InformationElement]) -> ConcatInfo | None:
    """The concatenation details in ``ies``, if any valid concatenation IE is there.

    TS 23.040 §9.2.3.24.1: an IE whose total is 0, or whose sequence number is 0 or above the
    total, "shall be ignored", so the message is treated as a single one. The last valid IE
    wins (§9.2.3.24: a repeated IE overrides the earlier one).
    """
    found: ConcatInfo | None = None
    for ie in ies:
        if ie.iei == IEI_CONCAT_8BIT and len(ie.data) == 3:
            reference, total, seqnum = ie.data
        elif ie.iei == IEI_CONCAT_16BIT and len(ie.data) == 4:
            reference = int.from_bytes(ie.data[:2], "big")
            total, seqnum = ie.data[2], ie.data[3]
        else:
            continue
        if 1 <= seqnum <= total:
            found = ConcatInfo(reference, total, seqnum)
    return found


def capacity(kind: UnitKind, udh_length: int) -> int:
    """How many units fit one short message after a UDH of ``udh_length`` octets.

    7-bit text counts the UDH and its fill bits in septets: ``floor((140 - udh) * 8 / 7)``
    (160 alone, 153 after an 8-bit concatenation UDH, 152 after the 16-bit one).
    """
    free = MAX_USER_DATA_OCTETS - udh_length
    if free < 0:
        raise ValueError(f"a UDH of {udh_length} octets leaves no room")
    if kind is UnitKind.SEPTET:
        return free * 8 // 7
    if kind is UnitKind.UCS2:
        return free // 2
    return free


def multipart_udh_octets(
    method: SegmentationMethod, national_ies: Sequence[InformationElement]
) -> int:
    """UDH octets each part of a multipart message must leave room for.

    The concatenation IE is 5 octets (8-bit reference) or 6 (16-bit). ``SAR`` and ``PAYLOAD``
    send no concatenation IE themselves, but the SMSC adds one before the air interface.
    """
    concat = 6 if method is SegmentationMethod.UDH16 else 5
    return 1 + concat + sum(2 + len(ie.data) for ie in national_ies)


def _char_widths(units: bytes, kind: UnitKind) -> list[int]:
    """Width in units of each character of ``units``, in order."""
    widths: list[int] = []
    if kind is UnitKind.SEPTET:
        i, n = 0, len(units)
        while i < n:
            width = 2 if units[i] == ESCAPE and i + 1 < n else 1
            widths.append(width)
            i += width
    elif kind is UnitKind.UCS2:
        if len(units) % 2:
            raise ValueError("UCS-2 data must be an even number of octets")
        i, n = 0, len(units) // 2
        while i < n:
            high = 0xD8 <= units[2 * i] <= 0xDB
            width = 2 if high and i + 1 < n and 0xDC <= units[2 * i + 2] <= 0xDF else 1
            widths.append(width)
            i += width
    else:
        widths = [1] * len(units)
    return widths


def split_units(units: bytes, kind: UnitKind, per_part: int) -> list[bytes]:
    """Cut encoded text into parts of at most ``per_part`` units, never inside a character.

    Greedy filling is optimal here: with a contiguous split and one capacity for every part,
    putting as much as fits into each part never needs more parts than any other split.

    Returns:
        At least one part (``[b""]`` for empty text).
    """
    if per_part < 2:
        raise ValueError("a part must hold at least one two-unit character")
    octets_per_unit = 2 if kind is UnitKind.UCS2 else 1
    parts: list[bytes] = []
    start = 0  # in units
    used = 0
    pos = 0
    for width in _char_widths(units, kind):
        if used + width > per_part:
            parts.append(units[start * octets_per_unit : pos * octets_per_unit])
            start, used = pos, 0
        used += width
        pos += width
    parts.append(units[start * octets_per_unit : pos * octets_per_unit])
    return parts
