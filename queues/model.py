"""The records the pipeline keeps: messages, their parts, status transitions, consent, OTP.

Plain frozen dataclasses with no behaviour beyond small derived properties. Times are Unix
epoch seconds (``float``, UTC): the store persists them as such and policies compare them with
an injected wall clock. Phone numbers are E.164 with the leading ``+``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from protocols.frozen import fast_init

__all__ = [
    "FINAL_STATUSES",
    "FINAL_STATUSES_SQL",
    "AcceptOutcome",
    "AcceptResult",
    "ConsentRecord",
    "MessageClass",
    "MessageRecord",
    "MessageView",
    "NewMessage",
    "OtpRecord",
    "PartRef",
    "PartView",
    "Status",
    "StatusEvent",
    "Transition",
    "worst_status",
]


class MessageClass(enum.StrEnum):
    """Traffic class, in priority order (OTP first)."""

    OTP = "otp"
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"

    @property
    def priority(self) -> int:
        """0 for OTP, 1 transactional, 2 marketing (lower is served first)."""
        return _PRIORITY[self]


_PRIORITY = {MessageClass.OTP: 0, MessageClass.TRANSACTIONAL: 1, MessageClass.MARKETING: 2}


class Status(enum.StrEnum):
    """A message's (or a part's) status; DESIGN §2 gives the life cycle."""

    ACCEPTED = "accepted"
    DEFERRED = "deferred"
    QUEUED = "queued"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {Status.DELIVERED, Status.UNDELIVERABLE, Status.EXPIRED, Status.REJECTED, Status.FAILED}
)

FINAL_STATUSES_SQL = "(" + ", ".join(sorted(f"'{s.value}'" for s in FINAL_STATUSES)) + ")"
"""The final statuses as an SQL list, for ``status IN ...`` in both stores."""

# Worst first: a multipart message takes the worst status among its parts.
_SEVERITY = {
    Status.FAILED: 0,
    Status.REJECTED: 1,
    Status.UNDELIVERABLE: 2,
    Status.EXPIRED: 3,
    Status.ACCEPTED: 4,
    Status.DEFERRED: 5,
    Status.QUEUED: 6,
    Status.SUBMITTED: 7,
    Status.DELIVERED: 8,
}


def worst_status(statuses: list[Status] | tuple[Status, ...]) -> Status:
    """The status of a multipart message: final only when every part is final, then the worst
    part's; otherwise the least advanced non-final part's."""
    pending = [s for s in statuses if not s.is_final]
    pool = pending or list(statuses)
    return min(pool, key=_SEVERITY.__getitem__)


@fast_init
@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message the pipeline has validated and encoded, ready for the durable accept."""

    id: str
    tenant: str
    klass: MessageClass
    to: str
    sender: str | None
    text: str
    encoding: str
    parts: int
    created_at: float
    valid_until: float
    not_before: float | None = None
    reference: str | None = None
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    """Hash of the request body: the same key with another body is a conflict (HTTP 409)."""
    status: Status = Status.ACCEPTED
    concat_ref: int | None = None
    """The concatenation reference of a multipart message's parts (UDH or SAR), kept so that
    parts sent after a restart carry the same one as those sent before."""


MessageRecord = NewMessage
"""A stored message as loaded back (same fields; ``status`` is its current status)."""


class AcceptOutcome(enum.StrEnum):
    CREATED = "created"
    REPLAYED = "replayed"
    """The idempotency key was seen with the same body: ``id`` is the original message."""
    CONFLICT = "conflict"
    """The idempotency key was seen with a different body: nothing stored."""


@fast_init
@dataclass(frozen=True, slots=True)
class AcceptResult:
    id: str
    outcome: AcceptOutcome


@fast_init
@dataclass(frozen=True, slots=True)
class Transition:
    """One status change, of a whole message (``part`` None) or of one part (0-based index).

    ``smsc_id`` is set with SUBMITTED (the id of the submit_sm_resp); ``error`` carries the
    command_status or the receipt's error code as text.
    """

    message_id: str
    status: Status
    at: float
    part: int | None = None
    smsc_id: str | None = None
    error: str | None = None
    whole: bool = False
    """Set on a part of a one-part message: the change is the message's too. The store
    updates both rows from it and keeps one history row, read back as both events."""


@fast_init
@dataclass(frozen=True, slots=True)
class PartRef:
    """A stored part found by its SMSC message id."""

    message_id: str
    part: int
    parts: int
    tenant: str
    status: Status


@dataclass(frozen=True, slots=True)
class StatusEvent:
    status: Status
    at: float
    part: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PartView:
    index: int
    status: Status
    smsc_id: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class MessageView:
    """Everything ``GET /v1/messages/{id}`` shows."""

    message: MessageRecord
    parts: tuple[PartView, ...]
    history: tuple[StatusEvent, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """The latest consent entry of (tenant, msisdn); the ledger keeps every entry."""

    tenant: str
    msisdn: str
    opted_in: bool
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class OtpRecord:
    """An OTP request: the code only as a keyed hash."""

    request_id: str
    tenant: str
    msisdn: str
    code_hash: bytes
    created_at: float
    expires_at: float
    attempts: int = 0
    used_at: float | None = None
    message_id: str | None = None
