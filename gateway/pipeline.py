"""The message pipeline: durable accept, the class queues, send-time policies, outcomes.

DESIGN §2 in code. :meth:`Pipeline.accept` validates and encodes a batch of requests, stores
it (one group commit) and only then queues the parts: an accepted message is durable. The bind
supervisor takes parts through :class:`Pipeline` as its :class:`~gateway.parts.PartSource`
(send-time policies are checked here, on the first part of a message) and reports outcomes to
it as its :class:`~gateway.parts.PartSink`: every status change becomes a
:class:`~queues.model.Transition`, written by one recorder task in groups. A receipt or MO
message is answered only after its transitions are committed, so a crash before then makes the
SMSC deliver it again.

The pipeline keeps no per-message state for queued messages (a million may wait): only for
multipart messages with parts in flight, and for messages whose first part was deferred.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from gateway.backoff import Backoff
from gateway.compose import (
    Composed,
    ComposeError,
    MessageRequest,
    PduBuilder,
    compose,
    id_accepted_at,
    id_class,
    part_count,
    part_msisdn,
    part_sender,
    part_tenant,
    queued_parts,
)
from gateway.config import RouteConfig, Settings, TenantConfig
from gateway.correlator import PartKey, ReceiptCorrelator
from gateway.metrics import Metrics
from gateway.parts import OutboundPart, RetryReason
from gateway.policies import Policies, Verdict, is_stop_message
from gateway.router import NoRouteError, RouteEntry, Router
from gateway.scheduler import Scheduler
from protocols.constants import CommandStatus, EsmClass, MessageState
from protocols.encoding import choose_encoding, decode_short_message
from protocols.frozen import fast_init
from protocols.pdu import DataSm, DeliverSm
from protocols.receipts import Receipt, ReceiptParseError, message_id_keys, parse_receipt
from protocols.segmentation import ReferenceAllocator
from protocols.userdata import MalformedUserDataError
from queues.classqueue import ClassQueues, QueuedPart
from queues.model import (
    AcceptOutcome,
    AcceptResult,
    ConsentRecord,
    MessageClass,
    MessageRecord,
    NewMessage,
    Status,
    Transition,
    worst_status,
)
from queues.store import HeldReceipt, Store, StoreClosedError, StoreError

__all__ = ["AcceptItem", "Pipeline"]

logger = logging.getLogger(__name__)

_RECEIPT_STATUS = {
    MessageState.DELIVERED: Status.DELIVERED,
    MessageState.UNDELIVERABLE: Status.UNDELIVERABLE,
    MessageState.EXPIRED: Status.EXPIRED,
    MessageState.REJECTED: Status.REJECTED,
    MessageState.DELETED: Status.UNDELIVERABLE,
}
_ESME_ROK = 0
_RECORDS_IN_FLIGHT = 8
_RECORD_RETRY_FIRST_S = 0.05  # a batch the store could not take is tried again after this,
_RECORD_RETRY_MAX_S = 5.0  # doubling up to this
_COMPOSE_SLICE = 64  # requests handled between two checkpoints of a batch accept
_RESTORE_SLICE = 64  # messages queued between two checkpoints of restore()
_ESME_RSYSERR = 0x08
_RECEIPT_TYPES = frozenset(
    {
        EsmClass.TYPE_SMSC_DELIVERY_RECEIPT,
        EsmClass.TYPE_ESME_DELIVERY_ACK,
        EsmClass.TYPE_ESME_MANUAL_ACK,
        EsmClass.TYPE_INTERMEDIATE_NOTIFICATION,
    }
)


@fast_init
@dataclass(frozen=True, slots=True)
class AcceptItem:
    """The answer for one request of a batch: accepted (``result``) or refused (``error``)."""

    result: AcceptResult | None = None
    status: Status | None = None
    parts: int = 0
    encoding: str = ""
    error: ComposeError | None = None


def _lookup_keys(receipt_id: str) -> tuple[str, ...]:
    """Keys to find a stored part by a receipt's id. The store indexes each submitted id by its
    canonical form only, so a decimal submit id ("12107289") is found from a hex receipt id
    ("B8BE19") by adding the decimal reading of each hex key."""
    keys = message_id_keys(receipt_id)
    extra = []
    for key in keys:
        try:
            extra.append(str(int(key, 16)))
        except ValueError:
            continue
    return tuple(dict.fromkeys((*keys, *extra)))


class Pipeline:
    """Accept, queue, dispatch and track messages. Run :meth:`run` in a nursery."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        wall: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.wall = wall
        self.metrics = metrics
        self.status_listeners: list[Callable[[Transition], None]] = []
        """Called with every message-level transition (not parts), e.g. to publish events."""
        self.mo_listeners: list[Callable[[TenantConfig, dict[str, Any]], None]] = []
        """Called with each MO message and the tenant whose sender address it went to."""
        self.routes: dict[str, RouteConfig] = {r.name: r for r in settings.routes}
        self.tenants: dict[str, TenantConfig] = {t.name: t for t in settings.tenants}
        self.router = Router(
            RouteEntry(r.name, tuple(r.prefixes), r.backup) for r in settings.routes
        )
        # Whether a route has a bind up (the bind supervisor's is_up): a new message goes to
        # its primary route if up, else to the first backup up along the chain (see _enqueue);
        # queued parts of a route down for [pipeline] reroute_after_s move to its backup (see
        # _reroute_loop).
        self.route_up: Callable[[str], bool] = lambda route: True
        self.policies = Policies.from_settings(settings)
        classes = settings.classes
        self.queues = ClassQueues()
        self.scheduler = Scheduler(
            self.queues,
            PduBuilder(self.routes),
            min_shares={
                MessageClass.TRANSACTIONAL: classes.transactional_min_share,
                MessageClass.MARKETING: classes.marketing_min_share,
            },
            clock=wall,
            on_expired=self._on_expired,
        )
        self.correlator = ReceiptCorrelator(hold_s=settings.pipeline.early_receipt_hold_s)
        # Routes asking a receipt for every outcome (registered_delivery bits 1-0 = 01): their
        # receipts find the part in memory, and free it. On the others (none, or failures
        # only) most parts never get one: remembered, they would stay for an hour, ~250 bytes
        # each; their rare receipts are matched through the store.
        self._every_receipt = {r.name: r.registered_delivery & 0x03 == 1 for r in settings.routes}
        self._references = {
            r.name: ReferenceAllocator(8 if r.segmentation == "udh" else 16)
            for r in settings.routes
        }
        self._pending: list[Transition] = []
        # Batches of transitions handed to the store and not committed yet (at most
        # _RECORDS_IN_FLIGHT), and whether a task to hand over the next one is started.
        self._records_in_flight = 0
        self._record_started = False
        self._nursery: trio.Nursery | None = None  # run()'s, once it runs
        self._generation = 0  # transitions appended now go out with this generation
        self._committed = -1  # every generation up to this one is committed
        self._done_generations: set[int] = set()
        self._committed_event = trio.Event()
        self._multi: dict[str, list[Status]] = {}
        self._deferred: dict[str, float] = {}  # message id -> until, while its first part waits
        # A multipart message whose first part a send-time policy refused, or one part of
        # which the SMSC rejected: message id -> the reason, how many of its other parts may
        # still be queued (each is dropped, unsent, as it comes up), and whether the message
        # is still open (its parts' outcomes decide it; a refused one was ended at once).
        self._refused: dict[str, tuple[str, int, bool]] = {}
        # Parts handed to a bind whose outcome is not committed yet, per route, at most the
        # route's binds x window: after a kill -9, the parts the SMSC may have taken without
        # the store knowing (and so sent again at restart) are never more than one window per
        # bind, even while the submitted transitions wait for their group commit.
        self._unconfirmed: dict[str, int] = {}
        self._unconfirmed_limit = {r.name: r.binds * r.window for r in settings.routes}
        self._confirmed = trio.Event()
        self._submitted_routes: list[str] = []
        self.counts: dict[str, int] = {}
        self._accepted_while_restoring: set[str] | None = None  # see restore()
        self._early_waiters: dict[int, trio.Event] = {}  # id(held receipt) -> set when matched
        # When each receipt kept in the store by _answer_when_matched came, oldest first: the
        # store's copies are dropped once older than early_receipt_hold_s (see _expire_loop).
        self._stored_holds: collections.deque[float] = collections.deque()

    # --- accept -----------------------------------------------------------------------------

    async def accept(
        self,
        tenant: TenantConfig,
        requests: Sequence[MessageRequest],
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[AcceptItem]:
        """Validate, store durably, then queue. One answer per request, in order."""
        now = self.wall()
        p = self.settings.pipeline
        items: list[AcceptItem | None] = [None] * len(requests)
        composed: list[tuple[int, Composed]] = []
        for i, request in enumerate(requests):
            if i and i % _COMPOSE_SLICE == 0:
                # Let the binds' responses and receipts in: a batch of 1000 takes tens of
                # milliseconds to compose, and every part in flight would wait that long.
                await trio.lowlevel.checkpoint()
            key = idempotency_keys[i] if idempotency_keys else None
            try:
                c = compose(
                    request,
                    tenant=tenant,
                    route_for=self._route_now,
                    now=now,
                    default_valid_for_s=p.default_valid_for_s,
                    max_valid_for_s=p.max_valid_for_s,
                    max_parts=p.max_parts,
                    idempotency_key=key,
                )
            except ComposeError as exc:
                items[i] = AcceptItem(error=exc)
                continue
            except NoRouteError as exc:
                items[i] = AcceptItem(error=ComposeError("to", str(exc), "no_route"))
                continue
            composed.append((i, c))
        await self._load_consents(
            tenant.name,
            [c.message.to for _, c in composed if c.message.klass is MessageClass.MARKETING],
        )
        allowed: list[tuple[int, Composed]] = []
        refused: list[tuple[int, Composed]] = []
        for n, (i, c) in enumerate(composed):
            if n and n % _COMPOSE_SLICE == 0:
                await trio.lowlevel.checkpoint()
            message = c.message
            verdict = self.policies.at_accept(
                tenant, message.klass, message.to, message.sender, now
            )
            if verdict.action == "reject":
                refusal = ComposeError("to", verdict.reason, verdict.code, verdict.until)
                items[i] = AcceptItem(error=refusal)
                if message.idempotency_key is not None:
                    refused.append((i, c))
            else:
                allowed.append((i, c))
        composed = [(i, self._with_reference(c)) for i, c in allowed]
        if refused:
            # A replay of a stored Idempotency-Key sends nothing new: the original answers it
            # (or a conflict does), whatever the policies say now, e.g. an OTP's cooldown.
            outcomes = await self.store.stored_outcomes([c.message for _, c in refused])
            for (i, c), outcome in zip(refused, outcomes, strict=True):
                if outcome is not None:
                    items[i] = self._stored_item(c.message, outcome)
        if composed:
            # A caller cancelled by now (a client that hung up) stores nothing. Past this
            # point the store call is shielded: once handed to the store the messages commit
            # whatever the caller does, and what commits must be queued, not left for a
            # restart. (No schedule point here: an OTP would wait a round for nothing.)
            await trio.lowlevel.checkpoint_if_cancelled()
            with trio.CancelScope(shield=True):
                if self._accepted_while_restoring is not None:
                    # Before the commit: a restore reading them once committed must leave
                    # them to this loop, which queues them (and yields to others meanwhile).
                    self._accepted_while_restoring.update(c.message.id for _, c in composed)
                started = time.perf_counter()
                results = await self.store.accept([c.message for _, c in composed])
                if self.metrics is not None:
                    self.metrics.store_commit(time.perf_counter() - started)
                for n, ((i, c), result) in enumerate(zip(composed, results, strict=True)):
                    if n and n % _COMPOSE_SLICE == 0:
                        await trio.lowlevel.checkpoint()  # the binds' traffic goes on meanwhile
                    message = c.message
                    items[i] = self._stored_item(message, result)
                    if result.outcome is AcceptOutcome.CREATED:
                        if message.klass is MessageClass.OTP:
                            self.policies.note_accepted(tenant.name, message.klass, message.to, now)
                        self._enqueue(c, None, now)
        else:
            await trio.lowlevel.checkpoint()  # nothing reached the store: a checkpoint still
        return [item if item is not None else AcceptItem() for item in items]

    @staticmethod
    def _stored_item(message: NewMessage, result: AcceptResult) -> AcceptItem:
        if result.outcome is AcceptOutcome.CONFLICT:
            error = ComposeError(
                "Idempotency-Key", "was used before with a different body", "conflict"
            )
            return AcceptItem(error=error)
        return AcceptItem(result, message.status, message.parts, message.encoding)

    def _route_now(self, to: str) -> RouteConfig:
        """The route a new message to ``to`` is encoded for and queued on: its primary route if
        up, else the first route up along its backup chain, else its primary (it waits)."""
        entry = self.router.select(to, self.route_up) or self.router.primary(to)
        return self.routes[entry.name]

    async def _load_consents(self, tenant: str, msisdns: Sequence[str]) -> None:
        """Make the consent policy's view of these numbers the store's, in one read (the
        ledger is the truth; the policy keeps only numbers seen since start). No checkpoint
        when there is nothing to read: an OTP's accept would wait a scheduler round for
        nothing (milliseconds under load); :meth:`accept` has its own."""
        consent = self.policies.consent
        unknown = [m for m in msisdns if consent.get(tenant, m) is None]
        if unknown:
            for record in (await self.store.consents_of(tenant, unknown)).values():
                consent.update(record)

    def _with_reference(self, c: Composed) -> Composed:
        """``c`` with the concatenation reference its parts need (if they need one), chosen at
        accept and stored with the message: parts sent after a restart carry the reference of
        those sent before it, so the handset can still join them."""
        if not c.encoded.needs_reference:
            return c
        references = self._references[c.route.name]
        reference = references.allocate(c.message.to)
        # Freed at once: 256 (or 65536) references per number rotate, which is what the
        # handset needs (two messages in flight together never share one).
        references.release(c.message.to, reference)
        return dataclasses.replace(c, message=dataclasses.replace(c.message, concat_ref=reference))

    def _enqueue(self, c: Composed, indices: list[int] | None, now: float) -> None:
        message = c.message
        route = c.route.name  # the route it was encoded for (_route_now, _recompose)
        if message.concat_ref is None:
            c = self._with_reference(c)  # stored before references were kept (schema 2)
        parts = queued_parts(c, indices, route, c.message.concat_ref)
        for part in parts:
            if message.not_before is not None and message.not_before > now:
                self.scheduler.defer(part, message.not_before)
            else:
                self.scheduler.put(part)
        if message.klass is MessageClass.OTP:
            self._confirmed.set()  # a bind waiting for room may take an OTP from the reserve
            self._confirmed = trio.Event()

    # --- restart ----------------------------------------------------------------------------

    async def restore(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> int:
        """Queue again every message the store holds unfinished; return how many.

        Made to run beside the binds and the front doors, so that a restart with a large
        backlog starts sending at once: ``task_status.started()`` comes once the frequency
        counters are loaded (before that, a marketing send could pass a cap it has reached),
        the messages follow in the background with a checkpoint every ``_RESTORE_SLICE``, and
        the messages accepted meanwhile, queued by ``accept`` already, are skipped. Messages of
        one class then go out restored and new interleaved, each in its own order.
        """
        now = self.wall()
        for tenant, msisdn, at in await self.store.marketing_sends_since(now - 366 * 86400):
            self.policies.note_marketing_sent(tenant, msisdn, at)
        await self._restore_held_receipts(now)
        accepted_since = self._accepted_while_restoring = set()
        task_status.started()
        count = 0
        try:
            async for batch in self.store.unfinished(self.settings.pipeline.fetch_batch):
                # An opt-out since the accept must stop a restored campaign message as it does
                # a queued one: the policy learns these numbers' consent before they queue.
                marketing: dict[str, list[str]] = {}
                for message in batch:
                    if message.klass is MessageClass.MARKETING:
                        marketing.setdefault(message.tenant, []).append(message.to)
                for tenant_name, numbers in marketing.items():
                    await self._load_consents(tenant_name, numbers)
                for i, message in enumerate(batch):
                    if i % _RESTORE_SLICE == 0:
                        await trio.lowlevel.checkpoint()
                    if message.id in accepted_since:
                        continue
                    indices = None
                    if message.parts > 1 or message.status is Status.SUBMITTED:
                        indices = await self.store.parts_to_send(message.id)
                        if len(indices) < message.parts:  # some went out before the stop
                            await self._load_part_statuses(message.tenant, message.id)
                            if self._reject_unsent(message, indices, now):
                                continue
                        if not indices:
                            continue  # every part is out: only receipts are awaited
                    self._enqueue(self._recompose(message), indices, now)
                    count += 1
        finally:
            self._accepted_while_restoring = None
        return count

    async def _restore_held_receipts(self, now: float) -> None:
        """Take back the early receipts answered before the last stop without a part to claim
        them (:meth:`_answer_when_matched`): one whose part the store now knows is applied
        (unless the part is final already) and dropped; the others are held again, until
        ``early_receipt_hold_s`` after they came."""
        hold_s = self.settings.pipeline.early_receipt_hold_s
        resolved: list[str] = []
        for held in await self.store.held_receipts():
            if now - held.received_at >= hold_s:
                continue  # dropped below
            receipt = Receipt(message_id=held.smsc_id, state=MessageState(held.state), err=held.err)
            ref = await self.store.find_part(_lookup_keys(held.smsc_id))
            if ref is None:
                self.correlator.hold(receipt, held.received_at)
                self._stored_holds.append(held.received_at)
                continue
            resolved.append(held.smsc_id)
            if not ref.status.is_final:
                self._apply_receipt((ref.message_id, ref.part), ref.parts, receipt, now)
        await self.store.drop_held_receipts(resolved, now - hold_s)

    def _reject_unsent(self, message: MessageRecord, indices: list[int], wall: float) -> bool:
        """At restore: a multipart message of which the SMSC rejected a part before the stop
        sends none of the parts it had left (as :meth:`on_rejected` would have dropped them);
        they are marked rejected. True if so."""
        statuses = self._multi.get(message.id)
        if statuses is None or Status.REJECTED not in statuses:
            return False
        reason = f"part {statuses.index(Status.REJECTED) + 1} rejected by the SMSC"
        for index in indices:
            self._part_final(message.id, index, message.parts, Status.REJECTED, wall, reason)
        return True

    async def _load_part_statuses(self, tenant: str, message_id: str) -> None:
        """Learn a multipart message's part statuses from the store, unless known: after a
        restart the pipeline knows none, and the message is final only once the pipeline
        sees every part final (a part delivered before the stop counted as not sent, and the
        message never ended)."""
        if message_id in self._multi:
            return
        view = await self.store.get_message(tenant, message_id)
        if view is not None and len(view.parts) > 1:
            self._multi.setdefault(message_id, [part.status for part in view.parts])

    def _recompose(self, message: MessageRecord) -> Composed:
        """A stored message encoded again for its primary route, or, while that is down, for
        the first backup up that encodes alike (as a reroute would move it: a part sent
        before the stop fixed how the rest must look); else it waits for its primary."""
        name = self.router.primary(message.to).name
        if not self.route_up(name):
            name = self._backup_for(name) or name
        route = self.routes[name]
        encoded = choose_encoding(
            message.text, method=route.segmentation, national_shift=route.national_shift
        )
        return Composed(message, encoded, route)

    # --- PartSource -------------------------------------------------------------------------

    def _room(self, route: str, klass: MessageClass | None) -> bool:
        """Whether a part of ``klass`` (None: of any class) may go out on ``route`` now: the
        last tenth of the route's unconfirmed allowance is kept for OTP, so a flood of other
        classes waiting for their commit never holds an OTP back."""
        used = self._unconfirmed.get(route, 0)
        limit = self._unconfirmed_limit[route]
        if used >= limit:
            return False
        if used < limit - max(1, limit // 10):
            return True
        if klass is None:
            return self.queues.pending(MessageClass.OTP, route) > 0
        return klass is MessageClass.OTP

    def get_nowait(self, route: str) -> OutboundPart | None:
        if not self._room(route, None):
            return None
        scheduler = self.scheduler
        while True:
            part = scheduler.get_nowait(route)
            if part is None:
                return None
            queued: QueuedPart = part.part_id  # type: ignore[assignment]
            if not self._room(route, queued.klass):
                scheduler.retry(queued, 0.0, self.wall())
                return None
            if self._admit(part):
                return self._hand_out(part, route)

    async def get(self, route: str) -> OutboundPart:
        while True:
            while not self._room(route, None):
                await self._confirmed.wait()
            part = await self.scheduler.get(route)
            queued: QueuedPart = part.part_id  # type: ignore[assignment]
            if not self._room(route, queued.klass):
                self.scheduler.retry(queued, 0.0, self.wall())
                continue  # another bind took the room meanwhile, or only OTP may go now
            if self._admit(part):
                return self._hand_out(part, route)

    def _hand_out(self, op: OutboundPart, route: str) -> OutboundPart:
        """Count a part as unconfirmed until its outcome is committed (see ``_unconfirmed``)."""
        self._unconfirmed[route] = self._unconfirmed.get(route, 0) + 1
        return op

    def _settle(self, route: str) -> None:
        self._unconfirmed[route] -= 1
        self._confirmed.set()
        self._confirmed = trio.Event()

    def _admit(self, op: OutboundPart) -> bool:
        """Send-time policies; False when the part went back (deferred) or was refused."""
        part: QueuedPart = op.part_id  # type: ignore[assignment]
        now = self.wall()
        if part.index > 0:
            if self._drop_refused(part, now):
                return False
            until = self._deferred.get(part.message_id)
            if until is not None:
                self.scheduler.defer(part, until)
                return False
            return True
        verdict: Verdict = self.policies.at_send(
            part_tenant(part), part.klass, part_msisdn(part), part_sender(part), part.route, now
        )
        if verdict.action == "send":
            self._deferred.pop(part.message_id, None)
            if part.klass is MessageClass.MARKETING:
                # Counted now, not at the resp: two queued messages to one number must not
                # both pass the cap while the first is in flight.
                self.policies.note_marketing_sent(part_tenant(part), part_msisdn(part), now)
            return True
        if verdict.action == "defer":
            assert verdict.until is not None
            if part_count(part) > 1:
                self._deferred[part.message_id] = verdict.until
            self.scheduler.defer(part, verdict.until)
            if not verdict.is_rate_limit:
                self._transition(
                    Transition(part.message_id, Status.DEFERRED, now, error=verdict.code)
                )
            return False
        error = f"{verdict.code}: {verdict.reason}"
        self._transition(Transition(part.message_id, Status.REJECTED, now, error=error))
        if part_count(part) > 1:
            # The rest of the message must not go either (an opted-out number would get the
            # tail of a campaign); its first part is marked as its other parts will be.
            self._deferred.pop(part.message_id, None)
            self._transition(Transition(part.message_id, Status.REJECTED, now, part=0, error=error))
            self._refused[part.message_id] = (error, part_count(part) - 1, False)
        self._count("rejected")
        return False

    def _drop_refused(self, part: QueuedPart, now: float) -> bool:
        """If ``part`` belongs to a message whose first part was refused (or one of whose
        parts the SMSC rejected), mark it rejected as well, unsent, and return True."""
        message_id = part.message_id
        refused = self._refused.pop(message_id, None)
        if refused is None:
            return False
        error, left, open_message = refused
        if open_message:
            self._part_final(message_id, part.index, part_count(part), Status.REJECTED, now, error)
            more = message_id in self._multi  # else that was its last open part
        else:
            self._transition(
                Transition(message_id, Status.REJECTED, now, part=part.index, error=error)
            )
            more = True
        if left > 1 and more:
            self._refused[message_id] = (error, left - 1, open_message)
        return True

    # --- PartSink ---------------------------------------------------------------------------

    def on_submitted(
        self, op: OutboundPart, smsc_message_id: str, bind_name: str, now: float
    ) -> None:
        part: QueuedPart = op.part_id  # type: ignore[assignment]
        wall = self.wall()
        parts = part_count(part)
        self._submitted_routes.append(op.route)
        if parts == 1:
            self._transition(
                Transition(
                    part.message_id,
                    Status.SUBMITTED,
                    wall,
                    part=0,
                    smsc_id=smsc_message_id,
                    whole=True,
                )
            )
        else:
            self._transition(
                Transition(
                    part.message_id,
                    Status.SUBMITTED,
                    wall,
                    part=part.index,
                    smsc_id=smsc_message_id,
                )
            )
            statuses = self._multi.setdefault(part.message_id, [Status.QUEUED] * parts)
            statuses[part.index] = Status.SUBMITTED
            if all(s is Status.SUBMITTED or s.is_final for s in statuses):
                self._transition(Transition(part.message_id, worst_status(statuses), wall))
        self._count("submitted")
        early = self.correlator.submitted(
            smsc_message_id,
            (part.message_id, part.index),
            wall,
            remember=self._every_receipt[op.route],
        )
        if early is not None:
            self._apply_receipt((part.message_id, part.index), parts, early, wall)
            waiting = self._early_waiters.get(id(early))
            if waiting is not None:
                waiting.set()  # its deliver_sm_resp goes once this is committed

    def on_rejected(self, op: OutboundPart, command_status: int, now: float) -> None:
        part: QueuedPart = op.part_id  # type: ignore[assignment]
        self._settle(op.route)
        wall = self.wall()
        error = f"command_status 0x{command_status:08X}"
        parts = part_count(part)
        self._part_final(part.message_id, part.index, parts, Status.REJECTED, wall, error)
        self._count("rejected")
        if part.message_id in self._multi and part.index + 1 < parts:
            # Its later parts, those not sent yet, stay unsent: the handset could never join
            # the message, and each would be paid for. (Parts sent already cannot be helped.)
            reason = f"part {part.index + 1} rejected by the SMSC ({error})"
            self._refused.setdefault(part.message_id, (reason, parts - part.index - 1, True))

    def on_retry(self, op: OutboundPart, delay_s: float, reason: str, now: float) -> None:
        part: QueuedPart = op.part_id  # type: ignore[assignment]
        self._settle(op.route)
        if RetryReason(reason).duplicate_risk:
            self._count("duplicate_risk")
        part.attempts = op.attempts
        self.scheduler.retry(part, delay_s, self.wall())

    def _on_expired(self, part: QueuedPart) -> None:
        wall = self.wall()
        if self._drop_refused(part, wall):
            return  # its message is rejected already
        self._part_final(
            part.message_id,
            part.index,
            part_count(part),
            Status.FAILED,
            wall,
            "validity ended before it could be sent",
        )
        self._count("expired_in_queue")

    async def on_deliver(self, pdu: DeliverSm | DataSm, bind_name: str) -> int:
        """Store what a deliver_sm says (a receipt's outcome, an MO's opt-out), then give the
        status to answer it with. When the store fails, ESME_RX_T_APPN: the SMSC delivers it
        again later, and the bind, with the submissions in its window, stays up."""
        try:
            return await self._on_deliver(pdu, bind_name)
        except StoreError as exc:
            logger.warning("%s: deliver_sm not stored, answered for a retry: %s", bind_name, exc)
            self._count("deliver_store_errors")
            return CommandStatus.ESME_RX_T_APPN

    async def _on_deliver(self, pdu: DeliverSm | DataSm, bind_name: str) -> int:
        wall = self.wall()
        if pdu.esm_class & EsmClass.TYPE_MASK in _RECEIPT_TYPES:
            receipt = self._parse_receipt(pdu, bind_name)
            if receipt is None:
                return _ESME_ROK  # answering an error would only make the SMSC send it again
            target = self.correlator.match(receipt)
            parts = 1
            if target is None:
                ref = await self.store.find_part(_lookup_keys(receipt.message_id))
                if ref is None:
                    self.correlator.hold(receipt, wall)
                    self._count("receipts_held")
                    return await self._answer_when_matched(receipt, wall)
                target, parts = (ref.message_id, ref.part), ref.parts
                if parts > 1:
                    await self._load_part_statuses(ref.tenant, ref.message_id)
            else:
                parts = self._parts_of(target)
            self._apply_receipt(target, parts, receipt, wall)
            return await self._committed_now()
        return await self._on_mo(pdu, wall)

    def deliver_now(self, pdu: DeliverSm | DataSm, bind_name: str) -> tuple[int, int] | None:
        """A receipt whose part the correlator knows (the common case: its submit_sm_resp came
        in this run) is applied here, in the bind's reader: its answer then waits only for
        the commit, never for a deliver worker. Receipts for parts sent before a restart,
        early receipts and MO messages go to :meth:`on_deliver`."""
        if pdu.esm_class & EsmClass.TYPE_MASK not in _RECEIPT_TYPES:
            return None
        receipt = self._parse_receipt(pdu, bind_name)
        if receipt is None:
            return _ESME_ROK, -1  # nothing to store: answered at once
        target = self.correlator.match(receipt)
        if target is None:
            return None  # the store is asked, or it is held (on_deliver parses it again)
        self._apply_receipt(target, self._parts_of(target), receipt, self.wall())
        return _ESME_ROK, self._commit_ticket()

    def _parse_receipt(self, pdu: DeliverSm | DataSm, bind_name: str) -> Receipt | None:
        try:
            return parse_receipt(
                pdu.short_message if isinstance(pdu, DeliverSm) else b"",
                receipted_message_id=pdu.tlvs.receipted_message_id,
                message_state=pdu.tlvs.message_state,
                esm_class=pdu.esm_class,
                data_coding=pdu.data_coding,
            )
        except ReceiptParseError as exc:
            logger.warning("%s: unreadable receipt: %s", bind_name, exc)
            self._count("receipts_unreadable")
            return None

    async def _answer_when_matched(self, receipt: Receipt, wall: float) -> int:
        """The answer to a receipt that came before its part's submit_sm_resp: given once the
        resp has come and the receipt's transitions are committed, so that a crash in between
        leaves the SMSC to deliver it again. After ``early_receipt_wait_s`` it is answered
        anyway (ESME_ROK), once the store keeps it too: it stays held for a later match, and a
        restart takes it back (:meth:`_restore_held_receipts`)."""
        matched = self._early_waiters[id(receipt)] = trio.Event()
        try:
            with trio.move_on_after(self.settings.pipeline.early_receipt_wait_s):
                await matched.wait()
        finally:
            del self._early_waiters[id(receipt)]
        if not matched.is_set():
            held = HeldReceipt(receipt.message_id, int(receipt.state), receipt.err, wall)
            await self.store.hold_receipt(held)
            self._stored_holds.append(wall)
            self._count("receipts_answered_unmatched")
            return _ESME_ROK
        return await self._committed_now()

    def _parts_of(self, target: PartKey) -> int:
        statuses = self._multi.get(target[0])
        return 1 if statuses is None else len(statuses)

    def _apply_receipt(self, target: PartKey, parts: int, receipt: Receipt, wall: float) -> None:
        status = _RECEIPT_STATUS.get(receipt.state)
        self._count(f"receipt_{receipt.state.name.lower()}")
        if self.metrics is not None:
            self.metrics.receipt(receipt.state)
        if status is None:
            return  # ENROUTE, ACCEPTED, UNKNOWN: not an outcome
        self.correlator.forget(receipt)
        self._part_final(target[0], target[1], parts, status, wall, receipt.err)

    def _part_final(
        self,
        message_id: str,
        index: int,
        parts: int,
        status: Status,
        wall: float,
        error: str | None,
    ) -> None:
        if parts == 1:
            self._transition(
                Transition(message_id, status, wall, part=index, error=error, whole=True)
            )
            self._count(status.value)
            return
        self._transition(Transition(message_id, status, wall, part=index, error=error))
        statuses = self._multi.setdefault(message_id, [Status.SUBMITTED] * parts)
        statuses[index] = status
        if all(s.is_final for s in statuses):
            final = worst_status(statuses)
            self._transition(Transition(message_id, final, wall))
            self._count(final.value)
            del self._multi[message_id]
            self._deferred.pop(message_id, None)  # expired while deferred, say
            self._refused.pop(message_id, None)  # its other parts were in flight

    async def _on_mo(self, pdu: DeliverSm | DataSm, wall: float) -> int:
        data = pdu.short_message if isinstance(pdu, DeliverSm) else b""
        if not data and pdu.tlvs.message_payload is not None:
            data = pdu.tlvs.message_payload
        try:
            text = decode_short_message(pdu.data_coding, pdu.esm_class, data).text
        except MalformedUserDataError as exc:
            self._count("mo_undecodable")
            return exc.command_status
        if text is None:
            self._count("mo_binary")
            return _ESME_ROK
        self._count("mo")
        msisdn = "+" + pdu.source_addr.lstrip("+")
        # The MO went to a tenant's sender address; one we cannot place concerns every tenant
        # for an opt-out (the safe side), and nobody's webhook.
        tenants = [
            t
            for t in self.settings.tenants
            if pdu.destination_addr in (t.default_sender, *t.allowed_senders)
        ]
        consent = self.settings.consent
        stop = is_stop_message(text, consent.stop_keywords, consent.stop_match)
        if stop:
            for tenant in tenants or self.settings.tenants:
                record = ConsentRecord(tenant.name, msisdn, False, f"mo:{text.strip()[:20]}", wall)
                await self.store.set_consent(record)
                self.policies.consent.update(record)
            self._count("opt_outs")
        event = {
            "from": msisdn,
            "to": pdu.destination_addr,
            "text": text,
            "opt_out": stop,
            "at": wall,
        }
        for tenant in tenants:
            for listener in self.mo_listeners:
                listener(tenant, event)
        return _ESME_ROK

    # --- transitions ------------------------------------------------------------------------

    def _transition(self, transition: Transition) -> None:
        self._pending.append(transition)
        self._start_record()
        if transition.part is None or transition.whole:  # the message's status changed
            metrics = self.metrics
            if metrics is not None:
                klass = id_class(transition.message_id)
                metrics.message_status(klass, transition.status)
                if transition.status is Status.SUBMITTED:
                    accepted = id_accepted_at(transition.message_id)
                    metrics.accept_to_submit(klass, max(0.0, transition.at - accepted))
            for listener in self.status_listeners:
                listener(transition)

    def refresh_metrics(self) -> None:
        """Set the gauges that are read rather than counted (queue depths, deferred) and bring
        the pipeline events counter up to date."""
        if self.metrics is not None:
            self.metrics.set_queue_depths(self.scheduler.depths())
            self.metrics.set_deferred(self.scheduler.deferred_count())
            self.metrics.pipeline_events(self.counts)

    def _commit_ticket(self) -> int:
        """The record batch whose commit covers every transition appended so far: the current
        generation if any are pending, else the one being written (if any)."""
        return self._generation if self._pending else self._generation - 1

    async def wait_committed(self, ticket: int) -> None:
        while self._committed < ticket:
            await self._committed_event.wait()

    async def _committed_now(self) -> int:
        """Wait until every transition appended so far is committed; the status to answer."""
        await self.wait_committed(self._commit_ticket())
        return _ESME_ROK

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The recorder (transitions to the store, in groups) and the scheduler's timer."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.scheduler.run)
                nursery.start_soon(self._expire_loop)
                if self.settings.pipeline.reroute_after_s > 0:
                    nursery.start_soon(self._reroute_loop)
                self._nursery = nursery  # the record tasks' (see _start_record)
                self._start_record()  # for what was appended before
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def _expire_loop(self) -> None:
        """Now and then, :meth:`expire_receipts`: often enough that a held receipt outlives
        ``early_receipt_hold_s`` by at most a quarter of it (and never by more than a minute).
        The store's copies go at the same age, claimed or not (a restart applies a claimed
        one only to a part not final yet)."""
        hold_s = self.settings.pipeline.early_receipt_hold_s
        period = min(hold_s / 4, 60.0)
        while True:
            await trio.sleep(period)
            self.expire_receipts()
            cutoff = self.wall() - hold_s
            stored = self._stored_holds
            if stored and stored[0] < cutoff:
                while stored and stored[0] < cutoff:
                    stored.popleft()
                try:
                    await self.store.drop_held_receipts([], cutoff)
                except StoreError as exc:  # the next restart drops them by age all the same
                    logger.warning("could not drop expired held receipts: %s", exc)

    def expire_receipts(self) -> None:
        """Drop the early receipts held longer than ``early_receipt_hold_s`` (counted as
        ``receipts_expired``: no part ever claimed them) and let the correlator forget old
        submissions (their receipts are then matched through the store)."""
        dropped = self.correlator.expire(self.wall())
        if dropped:
            self._count("receipts_expired", len(dropped))
            logger.warning(
                "%d early receipts matched no submission within %g s and were dropped",
                len(dropped),
                self.settings.pipeline.early_receipt_hold_s,
            )

    async def _reroute_loop(self) -> None:
        """Move the queued parts of a route that has been down for ``reroute_after_s`` to the
        first backup along its chain that is up and encodes alike (same segmentation and
        national shift, so the parts are valid there as they are). New messages fail over
        when they are accepted; this takes care of those queued before the route went down,
        an OTP among them, which would otherwise wait for the route to come back."""
        after = self.settings.pipeline.reroute_after_s
        down_since: dict[str, float] = {}
        while True:
            await trio.sleep(min(1.0, after / 2))
            now = trio.current_time()
            for name in self.routes:
                if self.route_up(name):
                    down_since.pop(name, None)
                    continue
                since = down_since.setdefault(name, now)
                if now - since < after or not self.queues.pending(route=name):
                    continue
                target = self._backup_for(name)
                if target is not None:
                    moved = self.scheduler.reroute(name, target)
                    self._count("parts_rerouted", moved)
                    logger.warning(
                        "route %s down for %.0f s: %d queued parts moved to %s",
                        name,
                        now - since,
                        moved,
                        target,
                    )

    def _backup_for(self, name: str) -> str | None:
        """The first route up along ``name``'s backup chain that encodes as ``name`` does."""
        route = self.routes[name]
        for entry in itertools.islice(self.router.chain(name), 1, None):
            candidate = self.routes[entry.name]
            if (
                self.route_up(entry.name)
                and candidate.segmentation == route.segmentation
                and candidate.national_shift == route.national_shift
            ):
                return entry.name
        return None

    def _start_record(self) -> None:
        """Start a task to hand the pending transitions to the store, if there is room for
        another batch in flight (up to ``_RECORDS_IN_FLIGHT``; the next waits in the store's
        queue while one commits, or joins it just before its commit). Called as transitions
        are appended and as batches commit, so a transition reaches the store's queue one
        scheduler round after it was made; every transition appended before the task runs
        goes in its batch."""
        if (
            self._record_started
            or not self._pending
            or self._records_in_flight >= _RECORDS_IN_FLIGHT
            or self._nursery is None
        ):
            return
        self._record_started = True
        self._records_in_flight += 1
        self._nursery.start_soon(self._record)

    async def _record(self) -> None:
        self._record_started = False
        batch, self._pending = self._pending, []
        settled, self._submitted_routes = self._submitted_routes, []
        generation = self._generation
        self._generation += 1
        released = False

        def committed() -> None:
            # Run by the store's writer task the moment the batch is committed: the room for
            # the next batch and the binds' allowance come back one scheduler round sooner
            # than if this task had to wake first (rounds are milliseconds under load).
            nonlocal released
            released = True
            self._records_in_flight -= 1
            for route in settled:
                self._settle(route)
            # Batches may finish in any order: `_committed` only moves past contiguous ones.
            self._done_generations.add(generation)
            while self._committed + 1 in self._done_generations:
                self._committed += 1
                self._done_generations.discard(self._committed)
            self._committed_event.set()
            self._committed_event = trio.Event()
            self._start_record()

        try:
            started = time.perf_counter()
            await self._record_until_stored(batch, committed)
            if self.metrics is not None:
                self.metrics.store_commit(time.perf_counter() - started)
        finally:
            if not released:
                self._records_in_flight -= 1

    async def _record_until_stored(
        self, batch: list[Transition], committed: Callable[[], None]
    ) -> None:
        """Store ``batch``, trying again (with backoff) for as long as the store fails.

        The transitions are only in memory until then, so they are never dropped, and the
        daemon does not stop: a database restart or a dropped connection pauses the sending
        instead. The parts the batch confirms keep their window slots until it is stored, so
        the binds stop once the allowance is used up, and the receipts waiting for it are not
        answered (the SMSC delivers them again). Counted as ``record_retries``. Only a store
        closed for good (shutdown) ends the attempts."""
        backoff = Backoff(_RECORD_RETRY_FIRST_S, _RECORD_RETRY_MAX_S, jitter=0.0)
        again = False
        while True:
            try:
                await self.store.record(batch, on_committed=committed, again=again)
                return
            except StoreClosedError:
                raise
            except StoreError as exc:
                self._count("record_retries")
                delay = backoff.next_delay()
                logger.error(
                    "could not store %d status changes (trying again in %.2f s): %s",
                    len(batch),
                    delay,
                    exc,
                )
                await trio.sleep(delay)
                again = True  # the failed call may have committed after all

    async def flush(self) -> None:
        """Wait until every transition so far is committed (shutdown, tests)."""
        await self._committed_now()

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n
