"""Delivery receipts: the receipt text, the receipt TLVs, and message-id matching keys.

An SMSC delivery receipt is a deliver_sm (or data_sm) whose esm_class message type (bits 5-2,
SMPP 3.4 §5.2.12) is 0001, "SMSC Delivery Receipt", or 1000, "Intermediate delivery
notification". Appendix B calls its text format "SMSC vendor specific" and gives the typical
example::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
    err:E Text: ...

Real SMSCs vary it (PROTOCOL-NOTES "Delivery receipts"): keys in any case, fields missing,
reordered or unknown, dates with seconds (12 digits), ``text:`` absent, several spaces or line
breaks between fields. The parser therefore reads every ``key:value`` pair it finds (a key is a
word preceded by whitespace or the start), and takes everything after the first ``text:`` as the
quoted text, colons and spaces included.

The TLVs receipted_message_id (0x001E, §5.3.2.12), message_state (0x0427, §5.3.2.35) and
network_error_code (0x0423, §5.3.2.31) win over the text when present: they are typed fields
defined by the protocol, while the text is a vendor convention that SMSCs reformat (decimal ids
for hex ones), truncate and localise.

Message ids are matched through :func:`message_id_keys`, which absorbs the differences in form
seen between submit_sm_resp and receipt (hex vs decimal, leading zeros, case).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from .constants import EsmClass, MessageState
from .errors import LocalProtocolError
from .frozen import fast_init

__all__ = [
    "FINAL_STATES",
    "STAT_CODES",
    "NetworkError",
    "Receipt",
    "ReceiptParseError",
    "canonical_message_id",
    "format_receipt_text",
    "is_receipt_esm_class",
    "message_id_keys",
    "parse_receipt",
    "state_from_stat",
]

#: States after which the SMSC reports nothing more for the message (§5.2.28: all but
#: ENROUTE). Some SMSCs send ACCEPTD as "accepted for delivery", but the spec makes it final.
FINAL_STATES: Final = frozenset(state for state in MessageState if state != MessageState.ENROUTE)

#: The seven-character ``stat:`` code of each state (Appendix B, Table B-2).
STAT_CODES: Final[Mapping[MessageState, str]] = MappingProxyType(
    {
        MessageState.ENROUTE: "ENROUTE",
        MessageState.DELIVERED: "DELIVRD",
        MessageState.EXPIRED: "EXPIRED",
        MessageState.DELETED: "DELETED",
        MessageState.UNDELIVERABLE: "UNDELIV",
        MessageState.ACCEPTED: "ACCEPTD",
        MessageState.UNKNOWN: "UNKNOWN",
        MessageState.REJECTED: "REJECTD",
    }
)

# Stat words as SMSCs write them, upper-cased and without separators: the Appendix B codes, the
# spelled-out state names of §5.2.28, and the misspellings seen in the field.
_STAT_WORDS: Final[Mapping[str, MessageState]] = MappingProxyType(
    {
        **{code: state for state, code in STAT_CODES.items()},
        **{state.name: state for state in MessageState},
        "DELIVERD": MessageState.DELIVERED,
        "EXPIRD": MessageState.EXPIRED,
        "DELETD": MessageState.DELETED,
        "UNDELIVERED": MessageState.UNDELIVERABLE,
        "UNDELIVRD": MessageState.UNDELIVERABLE,
        "UNKNWN": MessageState.UNKNOWN,
    }
)

_STATES: Final = frozenset(MessageState)
_KNOWN_FIELDS: Final = frozenset({"id", "sub", "dlvrd", "submitdate", "donedate", "stat", "err"})
# A key is a word at the start or after whitespace, directly followed by ':'. The date keys are
# two words, joined by spaces, a line break (Appendix B wraps "done\ndate"), '_', '-', or 0x11
# (the GSM 03.38 code of '_', read as latin-1). A colon inside a value ("a:b") starts no key.
_KEY: Final = re.compile(
    r"(?<!\S)((?:submit|done)[\s_\x11-]*date|[a-z][\w-]*):", re.IGNORECASE | re.ASCII
)
_KEY_SEPARATORS: Final = re.compile(r"[\s_\x11-]+")
# Appendix B's layout, as nearly every SMSC writes it, read with one match. Anything else
# (another order, more fields, other spacing, a value with a character outside printable
# ASCII) takes the general reading, which gives the same fields on this layout.
_STANDARD: Final = re.compile(
    r"id:([!-~]+) sub:([!-~]+) dlvrd:([!-~]+) submit date:([!-~]+) done date:([!-~]+)"
    r" stat:([!-~]+) err:([!-~]+)(?: text:(.*))?",
    re.IGNORECASE | re.DOTALL,
)
_STAT_SEPARATORS: Final = re.compile(r"[^A-Z0-9]+")
_DECIMAL: Final = re.compile(r"[0-9]+", re.ASCII)
# SMPP 3.4 §5.2.23: message_id is a C-octet string of at most 65 octets, i.e. 64 characters.
# Longer ids get no decimal reading (which also bounds int()'s quadratic decimal conversion).
_MAX_MESSAGE_ID: Final = 64
_ID_JUNK: Final = " \t\r\n\x00"
_DATA_CODING_UCS2: Final = 0x08
_QUOTED_TEXT: Final = 20  # Appendix B: "the first 20 characters of the short message"


class ReceiptParseError(ValueError):
    """The data is not a usable delivery receipt.

    Not a :class:`~protocols.errors.RemoteProtocolError`: the PDU itself is valid SMPP (the
    receipt text format is vendor specific), so the session must not fail over it. The gateway
    decides whether to log, park, or answer the deliver_sm with an error status.

    Attributes:
        short_message: the data that was given, for the log.
    """

    def __init__(self, message: str, *, short_message: bytes | str = b"") -> None:
        super().__init__(message)
        self.short_message = short_message


class NetworkError(NamedTuple):
    """The network_error_code TLV (§5.3.2.31): 3 octets."""

    #: 1 ANSI-136, 2 IS-95, 3 GSM, 4 ANSI-136 cause, 5 IS-95 cause, 6 ANSI-41, 7 SMPP error,
    #: 8 message center specific.
    network_type: int
    #: the 2-octet error code, meaning defined by the network type.
    error_code: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """One delivery receipt, from its TLVs and its text.

    Attributes:
        message_id: the SMSC message id as the receipt carries it (receipted_message_id, else
            the text's ``id:``), whitespace trimmed. Match it with :func:`message_id_keys`.
        state: the message state: from message_state, else from ``stat:``; UNKNOWN when
            neither gives a known state.
        stat: the ``stat:`` word as received (upper-cased), or None. Kept when the TLV wins,
            so that a disagreement stays visible.
        err: the ``err:`` value as received (vendor-specific, often 3 decimal digits), or None.
        network_error: the network_error_code TLV, or None.
        submitted: ``submit date:`` (10 or 12 digits), in the ``tz`` given to
            :func:`parse_receipt` or naive (the SMSC's local time); None if absent or invalid.
        done: ``done date:``, likewise.
        sub: the ``sub:`` value as received (messages submitted), or None.
        dlvrd: the ``dlvrd:`` value as received (messages delivered), or None.
        text: everything after ``text:`` (the start of the original message), or None. Octets
            are latin-1 decoded, which is lossless: ``text.encode("latin-1")`` gives them back
            for a GSM 03.38 decoder.
        extra: the ``key:value`` pairs that Appendix B does not define, keys lower-cased and
            without separators, in the order received.
    """

    message_id: str
    state: MessageState
    stat: str | None = None
    err: str | None = None
    network_error: NetworkError | None = None
    submitted: dt.datetime | None = None
    done: dt.datetime | None = None
    sub: str | None = None
    dlvrd: str | None = None
    text: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def is_final(self) -> bool:
        """Whether the state is final (§5.2.28): no further receipt will come."""
        return self.state in FINAL_STATES

    @property
    def match_keys(self) -> tuple[str, ...]:
        """:func:`message_id_keys` of :attr:`message_id`."""
        return message_id_keys(self.message_id)


def is_receipt_esm_class(esm_class: int) -> bool:
    """Whether a deliver_sm / data_sm esm_class marks a delivery receipt (§5.2.12).

    Bits 5-2 are an enumerated message type, not flags: 0001 is an SMSC delivery receipt and
    1000 an intermediate delivery notification (a receipt of a non-final state). SME
    acknowledgements (0010, 0100) are not SMSC receipts.
    """
    kind = esm_class & EsmClass.TYPE_MASK
    return kind in (EsmClass.TYPE_SMSC_DELIVERY_RECEIPT, EsmClass.TYPE_INTERMEDIATE_NOTIFICATION)


def state_from_stat(stat: str) -> MessageState | None:
    """The state a ``stat:`` word names, or None when it names none we know.

    Case and separators are ignored; the Appendix B codes (DELIVRD, UNDELIV, ...), the
    §5.2.28 names (DELIVERED, UNDELIVERABLE, ...), common misspellings, and the numeric
    message_state values ("2") are understood.
    """
    word = _STAT_SEPARATORS.sub("", stat.upper())
    if word.isdigit() and word.isascii():
        value = int(word)
        return MessageState(value) if value in _STATES else None
    return _STAT_WORDS.get(word)


@functools.lru_cache(maxsize=256)
def _parse_date(value: str | None, tz: dt.tzinfo | None) -> dt.datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss (2000 + YY); anything else is ignored, not fatal: the date
    is informational and a bad one must not cost us the receipt's state. Cached: receipts of
    one minute share their dates (and a datetime is immutable)."""
    if value is None or len(value) not in (10, 12) or not (value.isascii() and value.isdigit()):
        return None
    try:
        return dt.datetime(
            2000 + int(value[0:2]),
            int(value[2:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[8:10]),
            int(value[10:12] or 0),
            tzinfo=tz,
        )
    except ValueError:
        return None


def _decode(data: bytes | str, data_coding: int | None) -> str:
    if isinstance(data, str):
        text = data
    elif data_coding == _DATA_CODING_UCS2:
        text = data.decode("utf-16-be", "replace")
    else:
        # The fields are ASCII, which GSM 03.38 (unpacked, data_coding 0), IA5 and latin-1 all
        # agree on; latin-1 never fails and keeps every octet of the text.
        text = data.decode("latin-1")
    # Some SMSCs put the C-string NUL into short_message too.
    return text.rstrip("\x00")


@functools.lru_cache(maxsize=64)
def _key_name(key: str) -> str:
    """``Submit_Date`` -> ``submitdate``. Cached: SMSCs repeat the same few spellings."""
    return _KEY_SEPARATORS.sub("", key.lower())


def _split_fields(
    data: str,
) -> tuple[dict[str, str], str | None, tuple[tuple[str, str], ...]]:
    """The known fields, the ``text:`` value, and the unknown fields."""
    standard = _STANDARD.fullmatch(data)
    if standard is None:
        return _split_any(data)
    id_, sub, dlvrd, submit_date, done_date, stat, err, text = standard.groups()
    known = {
        "id": id_,
        "sub": sub,
        "dlvrd": dlvrd,
        "submitdate": submit_date,
        "donedate": done_date,
        "stat": stat,
        "err": err,
    }
    return known, text, ()


def _split_any(
    data: str,
) -> tuple[dict[str, str], str | None, tuple[tuple[str, str], ...]]:
    """:func:`_split_fields` for any layout, in one pass over its keys."""
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    seen: set[str] = set()
    keys = list(_KEY.finditer(data))
    for index, match in enumerate(keys):
        name = _key_name(match.group(1))
        if name == "text":
            # Appendix B: the text comes last and runs to the end, whatever it holds.
            return known, data[match.end() :], tuple(extra)
        end = keys[index + 1].start() if index + 1 < len(keys) else len(data)
        # The value is the first word before the next key: tolerates "id: 123" and drops
        # stray words; an empty value counts as absent.
        words = data[match.end() : end].split(None, 1)
        if not words or name in seen:
            continue  # the first occurrence wins
        seen.add(name)
        if name in _KNOWN_FIELDS:
            known[name] = words[0]
        else:
            extra.append((name, words[0]))
    return known, None, tuple(extra)


def _network_error(value: bytes | None) -> NetworkError | None:
    # §5.3.2.31 fixes the length at 3; another length cannot be read reliably, and the state
    # does not depend on it, so it is ignored rather than fatal.
    if value is None or len(value) != 3:
        return None
    return NetworkError(value[0], int.from_bytes(value[1:3], "big"))


def parse_receipt(
    short_message: bytes | str,
    *,
    receipted_message_id: str | None = None,
    message_state: int | None = None,
    network_error_code: bytes | None = None,
    esm_class: int | None = None,
    data_coding: int | None = None,
    tz: dt.tzinfo | None = None,
) -> Receipt:
    """Read a delivery receipt from a deliver_sm / data_sm's text and receipt TLVs.

    Args:
        short_message: the receipt text (short_message, or message_payload when that carries
            it); may be empty when the TLVs carry everything.
        receipted_message_id: the 0x001E TLV. Wins over the text's ``id:``.
        message_state: the 0x0427 TLV. Wins over ``stat:``; a value §5.2.28 does not define
            is ignored (the text decides).
        network_error_code: the 0x0423 TLV, 3 octets (network type, 2-octet error code).
        esm_class: the PDU's esm_class. When given, it decides (:func:`is_receipt_esm_class`):
            a PDU not flagged as a receipt is refused whatever its text says (a handset could
            otherwise forge one by sending such a text as an MO message), and a flagged one
            needs only a message id. When None, the data is sniffed: it must also carry a
            receipt TLV or a ``stat:`` word naming a known state.
        data_coding: the PDU's data_coding; 0x08 (UCS-2) text is decoded as UTF-16BE,
            anything else as latin-1.
        tz: the zone of the SMSC's ``submit date``/``done date`` (Appendix B dates carry
            none); None leaves them naive.

    Returns:
        The receipt. Unknown fields, unparseable dates and unknown ``stat:`` words do not fail
        the parse: they end up in ``extra``, as None, and as state UNKNOWN.

    Raises:
        ReceiptParseError: esm_class marks no receipt, no message id in the TLV nor the text,
            or (sniffing) nothing that only a receipt carries.
    """
    if esm_class is not None and not is_receipt_esm_class(esm_class):
        raise ReceiptParseError(
            f"esm_class 0x{esm_class:02X} does not mark a delivery receipt",
            short_message=short_message,
        )
    known, text, extra = _split_fields(_decode(short_message, data_coding))
    message_id = (receipted_message_id or "").strip(_ID_JUNK) or known.get("id", "")
    if not message_id:
        raise ReceiptParseError(
            "no message id in receipted_message_id or the text", short_message=short_message
        )
    stat = known.get("stat")
    if stat is not None:
        stat = stat.upper()
    tlv_state = MessageState(message_state) if message_state in _STATES else None
    text_state = state_from_stat(stat) if stat is not None else None
    sniffed = receipted_message_id is not None or tlv_state is not None or text_state is not None
    if esm_class is None and not sniffed:
        raise ReceiptParseError(
            "not flagged as a receipt, and neither a receipt TLV nor a known stat: word",
            short_message=short_message,
        )
    if tlv_state is not None:
        state = tlv_state
    elif text_state is not None:
        state = text_state
    else:
        state = MessageState.UNKNOWN
    return Receipt(
        message_id=message_id,
        state=state,
        stat=stat,
        err=known.get("err"),
        network_error=_network_error(network_error_code),
        submitted=_parse_date(known.get("submitdate"), tz),
        done=_parse_date(known.get("donedate"), tz),
        sub=known.get("sub"),
        dlvrd=known.get("dlvrd"),
        text=text,
        extra=extra,
    )


def canonical_message_id(raw: str) -> str:
    """The id as compared: trimmed (whitespace, NULs), case-folded, and without leading
    zeros (an all-zero id becomes ``"0"``; an empty one stays empty). Always the first of
    :func:`message_id_keys`."""
    folded = raw.strip(_ID_JUNK).casefold()
    stripped = folded.lstrip("0")
    if not stripped and folded:
        return "0"
    return stripped


def message_id_keys(raw: str) -> tuple[str, ...]:
    """The keys under which an SMSC message id is stored and looked up.

    A submit_sm_resp id and a receipt id refer to the same message iff their key sets
    intersect. SMSCs write the id in hex in one and decimal in the other, strip or add leading
    zeros, and change case (PROTOCOL-NOTES; Jasmin issues 423, 535, 643, 916, 1034). Keys are
    lower-case hex numbers without leading zeros:

    - the first key is always :func:`canonical_message_id`; for hex digits it is the hex
      reading itself (``"00B8BE19"`` -> ``"b8be19"``);
    - an id of decimal digits only (up to 64) adds its decimal reading written in hex
      (``"0972660181"`` -> ``"972660181"``, ``"39f99dd5"``), since it may be either;
    - any other id (dashes, letters beyond f) has only its canonical form, which holds a
      non-hex character and so never equals a numeric key.

    At most two keys: the store indexes every key of each submitted id.

    The price is a small false-match risk: a decimal-looking id's second key is the hex form
    of another number, so two *different* live ids can share a key, e.g. hex ids ``"10"`` and
    ``"a"`` both have key ``"a"``. With one SMSC's ids of one length, the two readings of an id
    lie far apart ((16/10)^k for k digits), so a collision needs two ids in flight at once
    whose values differ by that factor; scoping lookups to the SMSC connection makes it
    negligible. A store that finds several candidates should prefer one whose first key equals
    the receipt's first key (same form).

    Returns:
        ``()`` for an empty id.
    """
    canonical = canonical_message_id(raw)
    if not canonical:
        return ()
    if len(canonical) <= _MAX_MESSAGE_ID and _DECIMAL.fullmatch(canonical):
        as_hex = format(int(canonical), "x")
        if as_hex != canonical:
            return (canonical, as_hex)
    return (canonical,)


def _receipt_id(message_id: str, id_format: str) -> str:
    try:
        if id_format == "decimal":
            return str(int(message_id, 16))
        if id_format == "hex":
            return format(int(message_id, 10), "X")
    except ValueError:
        base = "hex" if id_format == "decimal" else "decimal"
        raise LocalProtocolError(
            f"message id {message_id!r} is not {base} digits, cannot write it in {id_format}"
        ) from None
    return message_id


def format_receipt_text(
    *,
    message_id: str,
    state: MessageState | str,
    submitted: dt.datetime,
    done: dt.datetime,
    err: int | str = 0,
    text: bytes | str = b"",
    sub: int = 1,
    dlvrd: int | None = None,
    id_format: Literal["as_is", "decimal", "hex"] = "as_is",
    seconds: bool = False,
) -> bytes:
    """The receipt text of Appendix B, as an SMSC (the simulator) sends it.

    Args:
        message_id: the id given in submit_sm_resp.
        state: the state, written as its Appendix B code; a ``str`` is written as given (to
            send variants such as ``"delivered"``).
        submitted: written as ``submit date:``, its wall clock as is (YYMMDDhhmm).
        done: written as ``done date:``.
        err: an int is written as 3 digits; a str as given.
        text: the original message; its first 20 octets (bytes) or characters (str, written
            in latin-1, '?' for what latin-1 lacks) are quoted.
        sub: messages submitted, 3 digits.
        dlvrd: messages delivered, 3 digits; by default 1 if ``state`` is DELIVERED, else 0.
        id_format: ``"as_is"``; ``"decimal"`` writes a hex id in decimal, ``"hex"`` a decimal
            id in upper-case hex (the id mismatches receipts show in the field).
        seconds: 12-digit dates (YYMMDDhhmmss), as some SMSCs send.

    Raises:
        LocalProtocolError: an empty id or one with whitespace (the receipt could not be read
            back), an id not in the base ``id_format`` converts from, or a negative count.
    """
    if not message_id or any(c.isspace() for c in message_id):
        raise LocalProtocolError(f"message id {message_id!r} cannot go into a receipt text")
    if isinstance(state, MessageState):
        if dlvrd is None:
            dlvrd = 1 if state == MessageState.DELIVERED else 0
        stat = STAT_CODES[state]
    else:
        if dlvrd is None:
            dlvrd = 1 if state_from_stat(state) == MessageState.DELIVERED else 0
        stat = state
    if min(sub, dlvrd) < 0 or (isinstance(err, int) and err < 0):
        raise LocalProtocolError(f"sub={sub}, dlvrd={dlvrd}, err={err}: counts cannot be < 0")
    stamp = "%y%m%d%H%M%S" if seconds else "%y%m%d%H%M"
    err_text = f"{err:03d}" if isinstance(err, int) else err
    quoted = (
        text[:_QUOTED_TEXT]
        if isinstance(text, bytes)
        else text[:_QUOTED_TEXT].encode("latin-1", "replace")
    )
    head = (
        f"id:{_receipt_id(message_id, id_format)} sub:{sub:03d} dlvrd:{dlvrd:03d} "
        f"submit date:{submitted.strftime(stamp)} done date:{done.strftime(stamp)} "
        f"stat:{stat} err:{err_text} text:"
    )
    return head.encode("latin-1", "replace") + quoted
