"""Delivery receipts: the receipt text, the receipt TLVs, and message-id matching.

SMPP 3.4 Appendix B gives the usual receipt text::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
    err:E text:...

Real SMSCs vary it (PROTOCOL-NOTES "Delivery receipts"): keys in upper case, fields missing,
reordered or extra, dates with seconds (12 digits), ``text:`` absent. The parser reads every
``key:value`` pair it finds and takes ``text:`` as the rest of the line, whatever it holds.

The TLVs receipted_message_id (0x001E), message_state (0x0427) and network_error_code (0x0423)
win over the text when present: they are structured fields, while the text is a convention that
SMSCs truncate and localise.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .constants import MessageState

__all__ = [
    "FINAL_STATES",
    "Receipt",
    "ReceiptParseError",
    "canonical_message_id",
    "format_receipt_text",
    "message_id_keys",
    "parse_receipt",
]

FINAL_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.ACCEPTED,
        MessageState.UNKNOWN,
        MessageState.REJECTED,
    }
)

# The seven-character stat codes of Appendix B, and the spelled-out forms some SMSCs send.
_STAT_STATES: dict[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "DELIVERED": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "UNDELIVERABLE": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "ACCEPTED": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
    "REJECTED": MessageState.REJECTED,
}
_STATE_STATS: dict[MessageState, str] = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}

# A key is a word, or the two-word date keys; keys are matched case-insensitively. ``text`` is
# matched separately because its value runs to the end.
_FIELD = re.compile(r"(?i)(submit\s+date|done\s+date|[a-z_]+)\s*:\s*(\S*)")
_TEXT = re.compile(r"(?i)(?:^|\s)text\s*:(.*)\Z", re.DOTALL)
_HEX = re.compile(r"[0-9a-f]+")


class ReceiptParseError(ValueError):
    """The data is not a delivery receipt (no message id in the TLVs or the text)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """One delivery receipt, from its TLVs and text.

    Attributes:
        message_id: the SMSC message id as the receipt carries it (match it with
            :func:`message_id_keys`).
        state: the message state; UNKNOWN when neither TLV nor text tells.
        stat: the stat code as received (upper-cased), or None.
        err: the ``err:`` value as received, or None.
        network_error: (network type, error code) from network_error_code, or None.
        submitted, done: the ``submit date`` / ``done date`` (naive; SMSC local time).
        sub, dlvrd: the ``sub:`` / ``dlvrd:`` counters as received, or None.
        text: the ``text:`` value (the start of the original message), or None.
    """

    message_id: str
    state: MessageState
    stat: str | None = None
    err: str | None = None
    network_error: tuple[int, int] | None = None
    submitted: dt.datetime | None = None
    done: dt.datetime | None = None
    sub: str | None = None
    dlvrd: str | None = None
    text: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


def _parse_date(value: str | None) -> dt.datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss; anything else is ignored rather than fatal."""
    if value is None or not value.isdigit() or len(value) not in (10, 12):
        return None
    try:
        return dt.datetime(
            2000 + int(value[0:2]),
            int(value[2:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[8:10]),
            int(value[10:12]) if len(value) == 12 else 0,
        )
    except ValueError:
        return None


def _fields(text: str) -> tuple[dict[str, str], str | None]:
    body = text
    receipt_text = None
    match = _TEXT.search(text)
    if match is not None:
        receipt_text = match.group(1)
        body = text[: match.start()]
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(body):
        fields.setdefault(" ".join(key.lower().split()), value)
    return fields, receipt_text


def parse_receipt(
    short_message: bytes,
    *,
    receipted_message_id: str | None = None,
    message_state: int | None = None,
    network_error_code: bytes | None = None,
) -> Receipt:
    """Read a delivery receipt from a deliver_sm's short_message and receipt TLVs.

    Args:
        short_message: the receipt text (may be empty when the TLVs carry everything).
        receipted_message_id: the 0x001E TLV.
        message_state: the 0x0427 TLV.
        network_error_code: the 0x0423 TLV, 3 octets (network type, 2-octet error code).

    Raises:
        ReceiptParseError: no message id in the TLVs or the text.
    """
    # latin-1 never fails; receipt texts are ASCII in practice.
    fields, receipt_text = _fields(short_message.decode("latin-1"))
    message_id = (receipted_message_id or "").strip() or fields.get("id", "")
    if not message_id:
        raise ReceiptParseError("no message id in receipted_message_id or the receipt text")
    stat = fields.get("stat")
    stat = stat.upper() if stat else None
    state = MessageState.UNKNOWN
    if message_state is not None and message_state in MessageState._value2member_map_:
        state = MessageState(message_state)
    elif stat is not None:
        state = _STAT_STATES.get(stat, MessageState.UNKNOWN)
    network_error = None
    if network_error_code is not None and len(network_error_code) == 3:
        network_error = (network_error_code[0], int.from_bytes(network_error_code[1:], "big"))
    return Receipt(
        message_id=message_id,
        state=state,
        stat=stat,
        err=fields.get("err"),
        network_error=network_error,
        submitted=_parse_date(fields.get("submit date")),
        done=_parse_date(fields.get("done date")),
        sub=fields.get("sub"),
        dlvrd=fields.get("dlvrd"),
        text=receipt_text,
    )


def canonical_message_id(raw: str) -> str:
    """The id case-folded, trimmed, and without leading zeros (``"0"`` stays ``"0"``)."""
    folded = raw.strip().lower()
    return folded.lstrip("0") or ("0" if folded else "")


def message_id_keys(raw: str) -> tuple[str, ...]:
    """Keys under which an SMSC message id is indexed and looked up.

    A submit_sm_resp id and a receipt id refer to the same message iff their key sets meet.
    SMSCs send the id in hex in one place and in decimal in the other, strip leading zeros, or
    change case (PROTOCOL-NOTES; Jasmin issues 916, 643, 423). So an id of hex digits is keyed
    by its integer value read as hex, and an all-decimal id also by its value read as decimal;
    any other id by its canonical text. At most two keys: the store indexes each.

    The price is a small false-match risk: decimal id ``"10"`` and hex id ``"a"`` share a key.
    SMSC ids are long and unique per bind, and the match is also scoped to the account, so two
    live messages colliding this way is negligible.
    """
    canonical = canonical_message_id(raw)
    if not canonical:
        return ()
    if canonical.isdigit():
        return (f"n:{int(canonical, 16)}", f"n:{int(canonical, 10)}")
    if _HEX.fullmatch(canonical):
        return (f"n:{int(canonical, 16)}",)
    return (f"s:{canonical}",)


def format_receipt_text(
    *,
    message_id: str,
    state: MessageState,
    submitted: dt.datetime,
    done: dt.datetime,
    err: int = 0,
    text: str = "",
    sub: int = 1,
    dlvrd: int | None = None,
) -> bytes:
    """The Appendix B receipt text, with 10-digit dates (YYMMDDhhmm).

    ``dlvrd`` defaults to 1 for DELIVERED and 0 otherwise; ``text`` is cut to 20 characters as
    Appendix B shows.
    """
    if dlvrd is None:
        dlvrd = 1 if state is MessageState.DELIVERED else 0
    stamp = "%y%m%d%H%M"
    return (
        f"id:{message_id} sub:{sub:03d} dlvrd:{dlvrd:03d} "
        f"submit date:{submitted.strftime(stamp)} done date:{done.strftime(stamp)} "
        f"stat:{_STATE_STATS[state]} err:{err:03d} text:{text[:20]}"
    ).encode("latin-1", "replace")
