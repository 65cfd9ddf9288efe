"""The durable store's interface. Two implementations: :mod:`queues.sqlite` (embedded default)
and :mod:`queues.postgres` (asyncpg under trio-asyncio). One contract suite
(``tests/store_contract.py``) runs against both.

Every method is a plain trio coroutine function: whatever the implementation does underneath
(a writer thread, an asyncio loop) stays inside its module.

**Group commit.** ``accept`` and ``record`` may be called by many tasks at once; the store joins
what they hand it into few transactions (one commit for everything waiting when the previous
commit ended) and each call returns only after the commit that holds its rows. A crash before
that return may lose the call's rows, never rows of a call that returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from queues.model import (
    AcceptOutcome,
    AcceptResult,
    ConsentRecord,
    MessageRecord,
    MessageView,
    NewMessage,
    OtpRecord,
    PartRef,
    Status,
    StatusEvent,
    Transition,
)

__all__ = [
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoredWebhook",
    "TotpEnrollment",
    "history",
    "stored_outcome",
]


class StoreError(Exception):
    """The store cannot do what was asked (unreachable, schema newer than this code, ...)."""


class StoreClosedError(StoreError):
    """The store was closed: unlike other store errors, asking again will never help."""


@dataclass(frozen=True, slots=True)
class TotpEnrollment:
    """One user's authenticator-app enrollment (``gateway.totp`` seals and reads the secret).

    The store never sees the secret in the clear: ``secret_enc`` is opaque bytes to it.
    ``last_step`` is the last accepted TOTP time step (replay protection), None before the
    first verification.
    """

    tenant: str
    user: str
    secret_enc: bytes = field(repr=False)
    last_step: int | None = None


@dataclass(frozen=True, slots=True)
class HeldReceipt:
    """An early delivery receipt that was answered before any part claimed it: kept so that a
    restart does not lose it (the SMSC will not send it again).

    ``smsc_id`` is the id as the receipt gave it (the store indexes its canonical form);
    ``state`` the receipt's message state (``protocols.constants.MessageState``).
    """

    smsc_id: str
    state: int
    err: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A webhook event not yet delivered (nor given up): kept so that a restart sends it.

    No secret is kept: the event is signed at each attempt with its tenant's
    ``webhook_secret`` from the configuration of the day.
    """

    event_id: str
    tenant: str
    url: str
    body: bytes
    created_at: float


class Store(Protocol):
    """What the pipeline needs from durable storage."""

    async def accept(self, messages: Sequence[NewMessage]) -> list[AcceptResult]:
        """Store new messages durably (status ``accepted`` or ``deferred`` as given, one row per
        part with the same status, and the first transition) and return one result per input,
        in order. A message whose ``(tenant, idempotency_key)`` is already stored is not stored
        again: REPLAYED with the stored id when ``request_hash`` matches, else CONFLICT."""
        ...

    async def stored_outcomes(self, messages: Sequence[NewMessage]) -> list[AcceptResult | None]:
        """What :meth:`accept` would answer, without storing anything, for each message whose
        ``(tenant, idempotency_key)`` is stored already (REPLAYED or CONFLICT); None for the
        others (no key, or a new one)."""
        ...

    async def record(
        self,
        transitions: Sequence[Transition],
        on_committed: Callable[[], None] | None = None,
        *,
        again: bool = False,
    ) -> None:
        """Store status transitions, each with its time, in one group commit.

        ``on_committed``, if given, is called (in the trio thread) once they are committed,
        before this returns: a caller that acts on the commit saves a trip through the
        scheduler, which under load is milliseconds.

        A part transition updates the part (and its ``smsc_id`` when given, indexed by its
        canonical form for :meth:`find_part`); a message transition updates the message, and
        so does a part transition marked ``whole`` (a one-part message's: recorded once for
        both, and read back by :func:`history` as both events). Every transition is also
        appended to the history. Transitions of unknown messages are ignored.

        ``again`` marks a call made again after it failed. Its transitions may be older than
        those stored meanwhile, so none of them replaces a final status with a non-final one;
        and they may be stored already (the call can have committed all the same, the
        connection dropping after the server's commit), so each history row is added only if
        the same event is not there yet. Calls not made again are applied as they come, in
        order.
        """
        ...

    async def hold_receipt(self, receipt: HeldReceipt) -> None:
        """Keep an early receipt durably, replacing one held under the same canonical id."""
        ...

    async def held_receipts(self) -> list[HeldReceipt]:
        """Every receipt kept by :meth:`hold_receipt` and not dropped, oldest first."""
        ...

    async def drop_held_receipts(self, smsc_ids: Sequence[str], received_before: float) -> None:
        """Drop the held receipts with any of these ids (compared canonically) and those
        received before ``received_before``."""
        ...

    async def put_webhooks(self, hooks: Sequence[StoredWebhook]) -> None:
        """Keep webhook events until :meth:`drop_webhooks`; one already kept stays as it is."""
        ...

    async def drop_webhooks(self, event_ids: Sequence[str]) -> None:
        """Forget these webhook events (delivered or given up); unknown ids are ignored."""
        ...

    async def pending_webhooks(self) -> list[StoredWebhook]:
        """Every webhook event kept and not dropped, oldest first."""
        ...

    async def find_part(self, smsc_id_keys: Sequence[str]) -> PartRef | None:
        """The part whose canonical SMSC id is any of ``smsc_id_keys``
        (``protocols.receipts.message_id_keys``), or None."""
        ...

    async def get_message(self, tenant: str, message_id: str) -> MessageView | None:
        """A tenant's message with its parts and history (None for another tenant's)."""
        ...

    async def callback_targets(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, str, int]]:
        """For each known id: ``(tenant, callback_url, to, parts)`` — what a status webhook
        needs to know of its message, for many messages in one read."""
        ...

    def unfinished(self, batch: int = 10_000) -> AsyncIterator[list[MessageRecord]]:
        """Every message not yet final, oldest first, in batches (the queues are rebuilt from
        this at start). Parts already submitted are left to their receipts: the record's
        ``status`` is the message's, and :meth:`parts_to_send` says which parts still go out."""
        ...

    async def parts_to_send(self, message_id: str) -> list[int]:
        """Indices of a message's parts not yet submitted (all of them for a new message)."""
        ...

    async def marketing_sends_since(self, since: float) -> list[tuple[str, str, float]]:
        """``(tenant, msisdn, submitted_at)`` of marketing messages submitted at or after
        ``since``: the frequency-cap counters are rebuilt from this at start."""
        ...

    async def set_consent(self, record: ConsentRecord) -> None:
        """Append to the consent ledger; the latest entry per (tenant, msisdn) is in force."""
        ...

    async def get_consent(self, tenant: str, msisdn: str) -> ConsentRecord | None:
        """The entry in force, or None when the number has no record."""
        ...

    async def consents_of(self, tenant: str, msisdns: Sequence[str]) -> dict[str, ConsentRecord]:
        """:meth:`get_consent` for many numbers in one read: the entry in force by number,
        numbers with no record left out."""
        ...

    async def consent_history(self, tenant: str, msisdn: str) -> list[ConsentRecord]:
        """Every ledger entry of (tenant, msisdn), oldest first."""
        ...

    async def put_otp(self, record: OtpRecord) -> None:
        """Store a new OTP request."""
        ...

    async def get_otp(self, tenant: str, request_id: str) -> OtpRecord | None:
        """A tenant's OTP request (None for another tenant's)."""
        ...

    async def update_otp(self, record: OtpRecord) -> None:
        """Store the attempts and ``used_at`` of an existing OTP request."""
        ...

    async def get_totp(self, tenant: str, user: str) -> TotpEnrollment | None:
        """A tenant's user's TOTP enrollment (None when not enrolled, or another tenant's)."""
        ...

    async def put_totp(self, record: TotpEnrollment) -> None:
        """Insert or replace the enrollment of ``(record.tenant, record.user)``."""
        ...

    async def aclose(self) -> None:
        """Commit what is pending and release the connection(s)."""
        ...


def stored_outcome(
    message: NewMessage, stored: Mapping[tuple[str, str], tuple[str, str | None]]
) -> AcceptResult | None:
    """The answer to ``message`` when its ``(tenant, idempotency_key)`` is in ``stored`` (as
    id, request hash): REPLAYED with the stored id when the hashes match, else CONFLICT; None
    when it has no key or the key is not there."""
    if message.idempotency_key is None:
        return None
    found = stored.get((message.tenant, message.idempotency_key))
    if found is None:
        return None
    stored_id, stored_hash = found
    if stored_hash == message.request_hash:
        return AcceptResult(stored_id, AcceptOutcome.REPLAYED)
    return AcceptResult(stored_id, AcceptOutcome.CONFLICT)


def history(
    rows: Iterable[tuple[str, float, int | None, str | None]], parts: int
) -> tuple[StatusEvent, ...]:
    """A message's history from its stored rows (status, at, part, error), in order.

    A one-part message's part and the message change together, so one row is kept for both
    (:attr:`Transition.whole`): each row of its part stands for the part's event and then the
    message's, as a message of several parts has them in two rows.
    """
    events: list[StatusEvent] = []
    for status, at, part, error in rows:
        events.append(StatusEvent(Status(status), at, part, error))
        if part is not None and parts == 1:
            events.append(StatusEvent(Status(status), at, None, error))
    return tuple(events)
