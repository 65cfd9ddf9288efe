"""SMPP 3.4 optional parameters (TLVs, §3.2.4 and §5.3): the typed :class:`Tlvs` value and its
wire codec.

Each TLV is a 2-octet tag, a 2-octet length and ``length`` octets of value (§3.2.4.1). §5.3.2
types every standard value: an integer of 1, 2 or 4 octets, a C-octet string (the NUL counts in
the length), or an octet string with fixed bounds. A peer may send tags we do not know; §3.2.4
lets a receiver skip them, and we keep them so a relayed PDU loses nothing.

Speed, which is why this is not a plain dataclass inside:

- only the parameters that are present are stored, in the instance ``__dict__``; absent ones
  fall back to the class default ``None``. A PDU carries 0 to 3 of the 45.
- the wire form is built once, by ``__init__`` while it checks the values (packing an integer
  checks its range for free) or by the decoder (a slice of the PDU), and kept in the ``_wire``
  slot. Encoding a PDU then just appends it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from operator import attrgetter
from typing import Any, Final

from .constants import CommandStatus, TlvTag
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = ["NO_TLVS", "Tlvs", "decode_tlvs", "encode_tlvs"]


@dataclass(frozen=True, kw_only=True, repr=False)
class Tlvs:
    """The optional parameters of one PDU, one typed attribute per SMPP 3.4 TLV (§5.3.2).

    ``None`` means absent. Integers are 1, 2 or 4 octets as the spec types them, C-octet strings
    are ``str`` (latin-1, without the NUL), octet strings are ``bytes``. Tags this module does
    not know are kept in ``unknown`` as ``(tag, value)`` pairs and re-encoded unchanged.

    Encoding follows the order of the keyword arguments; a decoded ``Tlvs`` re-encodes to the
    very octets it was decoded from (order, unknown tags and all), so a relayed PDU is intact.
    Equality compares the values only.

    Raises:
        LocalProtocolError: a value the spec's type cannot carry (out of range, wrong length).
    """

    dest_addr_subunit: int | None = None  # 0x0005, 1 octet
    dest_network_type: int | None = None  # 0x0006, 1 octet
    dest_bearer_type: int | None = None  # 0x0007, 1 octet
    dest_telematics_id: int | None = None  # 0x0008, 2 octets
    source_addr_subunit: int | None = None  # 0x000D, 1 octet
    source_network_type: int | None = None  # 0x000E, 1 octet
    source_bearer_type: int | None = None  # 0x000F, 1 octet
    source_telematics_id: int | None = None  # 0x0010, 1 octet (§5.3.2.8; dest_ is 2)
    qos_time_to_live: int | None = None  # 0x0017, 4 octets
    payload_type: int | None = None  # 0x0019, 1 octet
    additional_status_info_text: str | None = None  # 0x001D, C-octet string, max 256
    receipted_message_id: str | None = None  # 0x001E, C-octet string, max 65
    ms_msg_wait_facilities: int | None = None  # 0x0030, 1 octet
    privacy_indicator: int | None = None  # 0x0201, 1 octet
    source_subaddress: bytes | None = None  # 0x0202, 2-23 octets
    dest_subaddress: bytes | None = None  # 0x0203, 2-23 octets
    user_message_reference: int | None = None  # 0x0204, 2 octets
    user_response_code: int | None = None  # 0x0205, 1 octet
    source_port: int | None = None  # 0x020A, 2 octets
    destination_port: int | None = None  # 0x020B, 2 octets
    sar_msg_ref_num: int | None = None  # 0x020C, 2 octets
    language_indicator: int | None = None  # 0x020D, 1 octet
    sar_total_segments: int | None = None  # 0x020E, 1 octet
    sar_segment_seqnum: int | None = None  # 0x020F, 1 octet
    sc_interface_version: int | None = None  # 0x0210, 1 octet
    callback_num_pres_ind: int | None = None  # 0x0302, 1 octet
    callback_num_atag: bytes | None = None  # 0x0303, octet string, max 65
    number_of_messages: int | None = None  # 0x0304, 1 octet
    callback_num: bytes | None = None  # 0x0381, 4-19 octets
    dpf_result: int | None = None  # 0x0420, 1 octet
    set_dpf: int | None = None  # 0x0421, 1 octet
    ms_availability_status: int | None = None  # 0x0422, 1 octet
    network_error_code: bytes | None = None  # 0x0423, 3 octets: type, then 2-octet error
    message_payload: bytes | None = None  # 0x0424, up to 65535 octets
    delivery_failure_reason: int | None = None  # 0x0425, 1 octet
    more_messages_to_send: int | None = None  # 0x0426, 1 octet
    message_state: int | None = None  # 0x0427, 1 octet
    ussd_service_op: int | None = None  # 0x0501, 1 octet
    display_time: int | None = None  # 0x1201, 1 octet
    sms_signal: int | None = None  # 0x1203, 2 octets
    ms_validity: int | None = None  # 0x1204, 1 octet
    alert_on_message_delivery: bool | None = None  # 0x130C, no value: True when present
    its_reply_type: int | None = None  # 0x1380, 1 octet
    its_session_info: bytes | None = None  # 0x1383, 2 octets
    unknown: tuple[tuple[int, bytes], ...] = field(default=())

    # The present values live in __dict__; _wire holds their encoding (see the module doc).
    __slots__ = ("__dict__", "_wire")

    def __repr__(self) -> str:
        # Only what is present: 45 "None"s would bury the one value that matters.
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"Tlvs({inner})"

    def __reduce__(self) -> tuple[Any, tuple[tuple[tuple[str, object], ...]]]:
        # copy and pickle rebuild through __init__, which recomputes _wire.
        return _restore, (tuple(self.__dict__.items()),)


# Value kinds. For integers the kind is also the size in octets.
_U8: Final = 1
_U16: Final = 2
_U32: Final = 4
_CSTR: Final = 5
_OCTETS: Final = 6
_FLAG: Final = 7

# tag -> (kind, minimum length, maximum length) from §5.3.2. A C-octet string's maximum counts
# its NUL, as the spec's "Var. max N" does.
_SPEC: Final[dict[TlvTag, tuple[int, int, int]]] = {
    TlvTag.DEST_ADDR_SUBUNIT: (_U8, 1, 1),
    TlvTag.DEST_NETWORK_TYPE: (_U8, 1, 1),
    TlvTag.DEST_BEARER_TYPE: (_U8, 1, 1),
    TlvTag.DEST_TELEMATICS_ID: (_U16, 2, 2),
    TlvTag.SOURCE_ADDR_SUBUNIT: (_U8, 1, 1),
    TlvTag.SOURCE_NETWORK_TYPE: (_U8, 1, 1),
    TlvTag.SOURCE_BEARER_TYPE: (_U8, 1, 1),
    TlvTag.SOURCE_TELEMATICS_ID: (_U8, 1, 1),
    TlvTag.QOS_TIME_TO_LIVE: (_U32, 4, 4),
    TlvTag.PAYLOAD_TYPE: (_U8, 1, 1),
    TlvTag.ADDITIONAL_STATUS_INFO_TEXT: (_CSTR, 0, 256),
    TlvTag.RECEIPTED_MESSAGE_ID: (_CSTR, 0, 65),
    TlvTag.MS_MSG_WAIT_FACILITIES: (_U8, 1, 1),
    TlvTag.PRIVACY_INDICATOR: (_U8, 1, 1),
    TlvTag.SOURCE_SUBADDRESS: (_OCTETS, 2, 23),
    TlvTag.DEST_SUBADDRESS: (_OCTETS, 2, 23),
    TlvTag.USER_MESSAGE_REFERENCE: (_U16, 2, 2),
    TlvTag.USER_RESPONSE_CODE: (_U8, 1, 1),
    TlvTag.SOURCE_PORT: (_U16, 2, 2),
    TlvTag.DESTINATION_PORT: (_U16, 2, 2),
    TlvTag.SAR_MSG_REF_NUM: (_U16, 2, 2),
    TlvTag.LANGUAGE_INDICATOR: (_U8, 1, 1),
    TlvTag.SAR_TOTAL_SEGMENTS: (_U8, 1, 1),
    TlvTag.SAR_SEGMENT_SEQNUM: (_U8, 1, 1),
    TlvTag.SC_INTERFACE_VERSION: (_U8, 1, 1),
    TlvTag.CALLBACK_NUM_PRES_IND: (_U8, 1, 1),
    TlvTag.CALLBACK_NUM_ATAG: (_OCTETS, 0, 65),
    TlvTag.NUMBER_OF_MESSAGES: (_U8, 1, 1),
    TlvTag.CALLBACK_NUM: (_OCTETS, 4, 19),
    TlvTag.DPF_RESULT: (_U8, 1, 1),
    TlvTag.SET_DPF: (_U8, 1, 1),
    TlvTag.MS_AVAILABILITY_STATUS: (_U8, 1, 1),
    TlvTag.NETWORK_ERROR_CODE: (_OCTETS, 3, 3),
    TlvTag.MESSAGE_PAYLOAD: (_OCTETS, 0, 0xFFFF),
    TlvTag.DELIVERY_FAILURE_REASON: (_U8, 1, 1),
    TlvTag.MORE_MESSAGES_TO_SEND: (_U8, 1, 1),
    TlvTag.MESSAGE_STATE: (_U8, 1, 1),
    TlvTag.USSD_SERVICE_OP: (_U8, 1, 1),
    TlvTag.DISPLAY_TIME: (_U8, 1, 1),
    TlvTag.SMS_SIGNAL: (_U16, 2, 2),
    TlvTag.MS_VALIDITY: (_U8, 1, 1),
    TlvTag.ALERT_ON_MESSAGE_DELIVERY: (_FLAG, 0, 0),
    TlvTag.ITS_REPLY_TYPE: (_U8, 1, 1),
    TlvTag.ITS_SESSION_INFO: (_OCTETS, 2, 2),
}

# The attribute name is the tag's name in lower case, the spec's spelling.
_DECODE_TABLE: Final[dict[int, tuple[str, int, int, int]]] = {
    int(tag): (tag.name.lower(), kind, lo, hi) for tag, (kind, lo, hi) in _SPEC.items()
}
_ENCODE_TABLE: Final[dict[str, tuple[int, int, int, int]]] = {
    name: (tag, kind, lo, hi) for tag, (name, kind, lo, hi) in _DECODE_TABLE.items()
}
_NAMES: Final = tuple(f.name for f in fields(Tlvs) if f.name != "unknown")
if set(_NAMES) != set(_ENCODE_TABLE):  # pragma: no cover - a typo in this module
    raise AssertionError("Tlvs fields and the TLV table disagree")

_TL: Final = struct.Struct(">HH")
_PACK_H: Final = struct.Struct(">H").pack
_HEAD: Final = struct.Struct(">I").unpack_from  # tag and length as one int: one lookup below
_new = object.__new__
_set_wire: Final = Tlvs.__dict__["_wire"].__set__
_wire_of: Final[Callable[[Tlvs], bytes]] = attrgetter("_wire")

# Integers: the struct that packs tag, length and value at once (and rejects a value out of
# range), and the one that reads the value straight after a TLV header.
_INT_FORMATS: Final = {_U8: "B", _U16: "H", _U32: "I"}
_INT_PACKERS: Final[dict[str, Callable[[int], bytes]]] = {
    name: partial(struct.Struct(">HH" + _INT_FORMATS[kind]).pack, tag, kind)
    for name, (tag, kind, _lo, _hi) in _ENCODE_TABLE.items()
    if kind in _INT_FORMATS
}
_INT_READERS: Final = {
    kind: struct.Struct(">4x" + f).unpack_from for kind, f in _INT_FORMATS.items()
}

# (tag << 16 | length) -> (name, integer reader or None, whole TLV size) for every valid
# length but message_payload's (any length): a TLV is found, and its length checked, in one
# dict lookup.
_EXACT: Final[dict[int, tuple[str, Any, int]]] = {
    tag << 16 | length: (name, _INT_READERS.get(kind), 4 + length)
    for tag, (name, kind, lo, hi) in _DECODE_TABLE.items()
    if tag != TlvTag.MESSAGE_PAYLOAD
    for length in range(lo, hi + 1)
}


def _check(name: str, value: object) -> None:
    """Raise LocalProtocolError unless ``value`` fits TLV ``name``'s type (§5.3.2)."""
    if name == "unknown":
        if not isinstance(value, tuple):
            raise LocalProtocolError("Tlvs.unknown must be a tuple of (tag, bytes) pairs")
        for item in value:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise LocalProtocolError(f"Tlvs.unknown: {item!r} is not a (tag, bytes) pair")
            tag, raw = item
            if not (isinstance(tag, int) and 0 <= tag <= 0xFFFF):
                raise LocalProtocolError(f"Tlvs.unknown: tag {tag!r} is not 0..0xFFFF")
            if tag in _DECODE_TABLE:
                raise LocalProtocolError(
                    f"Tlvs.unknown: tag 0x{tag:04X} is {_DECODE_TABLE[tag][0]}; set that field"
                )
            if not (isinstance(raw, bytes) and len(raw) <= 0xFFFF):
                raise LocalProtocolError(f"Tlvs.unknown: value of 0x{tag:04X} must be bytes")
        return
    _tag, kind, lo, hi = _ENCODE_TABLE[name]
    if kind <= _U32:
        if not (isinstance(value, int) and 0 <= value < 1 << (8 * kind)):
            raise LocalProtocolError(f"Tlvs.{name}={value!r}: not a {kind}-octet integer")
    elif kind == _CSTR:
        if not isinstance(value, str) or "\0" in value or len(value) > hi - 1:
            raise LocalProtocolError(
                f"Tlvs.{name}={value!r}: not a C-octet string of at most {hi - 1} characters"
            )
        if not value.isascii():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise LocalProtocolError(f"Tlvs.{name}={value!r}: not latin-1") from None
    elif kind == _OCTETS:
        if not (isinstance(value, bytes) and lo <= len(value) <= hi):
            raise LocalProtocolError(f"Tlvs.{name}={value!r}: not {lo}..{hi} octets")
    elif value is not True:
        raise LocalProtocolError(f"Tlvs.{name}: a flag without value; only True (or None)")


class _SkipError(Exception):
    """Raised by a parameter encoder for ``None`` (or no unknown TLVs): leave it out."""


def _encoder(name: str) -> Callable[[Any], bytes]:
    """The function that checks a value of ``name`` and encodes it whole: tag, length, value.

    Integers use a ``struct`` pack, which raises struct.error for a value out of range (and
    for ``None``). The others raise _SkipError for ``None`` and LocalProtocolError for a bad value.
    """
    if name in _INT_PACKERS:
        return _INT_PACKERS[name]
    if name == "unknown":

        def encode_unknown(pairs: Any) -> bytes:
            if pairs is None or pairs == ():
                raise _SkipError
            _check(name, pairs)
            return b"".join([_TL.pack(tag, len(raw)) + raw for tag, raw in pairs])

        return encode_unknown
    tag, kind, lo, hi = _ENCODE_TABLE[name]
    prefix = _PACK_H(tag)
    if kind == _CSTR:

        def encode_text(text: Any) -> bytes:
            # receipted_message_id is in every receipt: the valid case first, no call to _check.
            if text.__class__ is str and len(text) < hi and "\0" not in text:
                try:
                    raw = text.encode("latin-1")
                except UnicodeEncodeError:
                    pass
                else:
                    return prefix + _PACK_H(len(raw) + 1) + raw + b"\0"
            return _refuse(name, text)

        return encode_text
    if kind == _OCTETS:

        def encode_octets(raw: Any) -> bytes:
            if raw.__class__ is bytes and lo <= len(raw) <= hi:
                return prefix + _PACK_H(len(raw)) + raw
            return _refuse(name, raw)

        return encode_octets
    flag = _TL.pack(tag, 0)

    def encode_flag(value: Any) -> bytes:
        return flag if value is True else _refuse(name, value)

    return encode_flag


def _refuse(name: str, value: object) -> bytes:
    if value is None:
        raise _SkipError
    _check(name, value)
    raise LocalProtocolError(f"Tlvs.{name}={value!r}: invalid")  # pragma: no cover


_ENCODERS: Final = {name: _encoder(name) for name in (*_NAMES, "unknown")}


def _init(self: Tlvs, **params: Any) -> None:
    """``Tlvs.__init__``: keep the parameters given (not ``None``), checked and encoded.

    One loop over what the caller passed, one encoder call per parameter; the rare cases
    (``None``, a bad value, an unknown keyword) leave through exceptions.

    Raises:
        LocalProtocolError: a value the TLV's type cannot carry.
    """
    d = self.__dict__
    wire = b""
    encoders = _ENCODERS
    for name, value in params.items():
        try:
            wire += encoders[name](value)
        except _SkipError:
            continue
        except struct.error:
            if value is None:
                continue
            _check(name, value)
            raise LocalProtocolError(f"Tlvs.{name}={value!r}: invalid") from None
        except KeyError:
            raise TypeError(f"Tlvs() got an unexpected keyword argument {name!r}") from None
        d[name] = value
    _set_wire(self, wire)


def _restore(items: tuple[tuple[str, Any], ...]) -> Tlvs:
    return Tlvs(**dict(items))


# Replaces the dataclass-generated one (same keyword-only signature, which mypy keeps seeing).
setattr(Tlvs, "__init__", _init)  # noqa: B010

#: The shared "no optional parameters" value: the default of every ``tlvs`` field.
NO_TLVS: Final = Tlvs()


def encode_tlvs(tlvs: Tlvs) -> bytes:
    """The encoded TLVs (§3.2.4.1), computed when ``tlvs`` was built or decoded."""
    return _wire_of(tlvs)


def decode_tlvs(data: bytes, pos: int, sequence_number: int, command_id: int) -> Tlvs:
    """Decode the TLVs in ``data[pos:]``: the rest of a PDU that ends where ``data`` ends.

    Raises:
        RemoteProtocolError: ``ESME_RINVOPTPARSTREAM`` for a TLV header or value cut short by
            the end of the PDU or a standard tag given twice; ``ESME_RINVPARLEN`` for a length
            that does not fit the tag's type; ``ESME_RINVOPTPARAMVAL`` for a C-octet string
            with a NUL inside.
    """
    tlvs: Tlvs = _new(Tlvs)
    _set_wire(tlvs, data[pos:])
    d = tlvs.__dict__
    unknown: list[tuple[int, bytes]] | None = None
    exact = _EXACT
    head = _HEAD
    end = len(data)
    try:
        while pos < end:
            key = head(data, pos)[0]
            spec = exact.get(key)
            if spec is None:
                if unknown is None:
                    unknown = []
                pos = _decode_other(data, key, pos, d, unknown, sequence_number, command_id)
                continue
            name, read, size = spec
            if name in d:
                raise _error(
                    f"TLV {name} given twice",
                    CommandStatus.ESME_RINVOPTPARSTREAM,
                    sequence_number,
                    command_id,
                )
            if read is not None:
                # data ends with the PDU, so a value cut short raises struct.error here.
                d[name] = read(data, pos)[0]
            else:
                d[name] = _value(data, pos + 4, pos + size, name, sequence_number, command_id)
            pos += size
    except struct.error:
        raise _error(
            "TLV cut short by the end of the PDU",
            CommandStatus.ESME_RINVOPTPARSTREAM,
            sequence_number,
            command_id,
        ) from None
    if unknown:
        d["unknown"] = tuple(unknown)
    return tlvs


def _value(
    data: bytes, start: int, stop: int, name: str, sequence_number: int, command_id: int
) -> object:
    """The value of a C-octet string, octet string or flag TLV of a valid length."""
    if stop > len(data):
        raise struct.error  # reported by decode_tlvs
    kind = _ENCODE_TABLE[name][1]
    if kind == _OCTETS:
        return data[start:stop]
    if kind == _FLAG:
        return True
    raw = data[start:stop]
    # §5.3.2 requires the NUL, but SMSCs are known to leave it off receipted_message_id: a
    # missing NUL is accepted when the text still fits.
    if raw and raw[-1] == 0:
        raw = raw[:-1]
    elif len(raw) == _ENCODE_TABLE[name][3]:
        raise _error(
            f"TLV {name} has no NUL within {len(raw)} octets",
            CommandStatus.ESME_RINVPARLEN,
            sequence_number,
            command_id,
        )
    if 0 in raw:
        raise _error(
            f"TLV {name} has a NUL inside",
            CommandStatus.ESME_RINVOPTPARAMVAL,
            sequence_number,
            command_id,
        )
    return raw.decode("latin-1")


def _decode_other(
    data: bytes,
    key: int,
    pos: int,
    d: dict[str, object],
    unknown: list[tuple[int, bytes]],
    sequence_number: int,
    command_id: int,
) -> int:
    """The rare TLVs: message_payload, unknown tags, bad lengths. Returns the next position."""
    tag = key >> 16
    start = pos + 4
    stop = start + (key & 0xFFFF)
    if stop > len(data):
        raise struct.error  # reported by decode_tlvs
    spec = _DECODE_TABLE.get(tag)
    if spec is None:
        unknown.append((tag, data[start:stop]))
        return stop
    name, _kind, lo, hi = spec
    if tag != TlvTag.MESSAGE_PAYLOAD:
        raise _error(
            f"TLV {name} has length {key & 0xFFFF}, expected {lo}..{hi}",
            CommandStatus.ESME_RINVPARLEN,
            sequence_number,
            command_id,
        )
    if name in d:
        raise _error(
            f"TLV {name} given twice",
            CommandStatus.ESME_RINVOPTPARSTREAM,
            sequence_number,
            command_id,
        )
    d[name] = data[start:stop]
    return stop


def _error(message: str, status: int, sequence_number: int, command_id: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        message, command_status=status, sequence_number=sequence_number, command_id=command_id
    )
