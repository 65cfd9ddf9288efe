"""An in-memory :class:`~gateway.parts.PartSource` and :class:`~gateway.parts.PartSink`.

The simplest thing that honours the supervisor's contract, for tests, the ``bench binds``
benchmark and the demo until the scheduler and the durable store take over: one FIFO per route,
one deferral heap per route for "retry after a delay", and a record of every outcome.

Deferred parts need no timer task: ``get``/``get_nowait`` move the parts that are due to the
front of their FIFO (they are older than what waits behind), and a waiting ``get`` sleeps no
later than the earliest due time. ``get`` is cancel-safe: a part is only taken by the
synchronous ``get_nowait`` right before ``get`` returns.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from gateway.parts import OutboundPart, PartId
from protocols.frozen import fast_init
from protocols.pdu import DataSm, DeliverSm

__all__ = ["Delivery", "Retry", "Submission", "WorkQueue"]


@fast_init
@dataclass(frozen=True, slots=True)
class Submission:
    """One ``on_submitted``: the SMSC took the part under ``message_id``."""

    part_id: PartId
    message_id: str
    bind_name: str
    at: float


@fast_init
@dataclass(frozen=True, slots=True)
class Retry:
    """One ``on_retry``."""

    part_id: PartId
    reason: str
    delay_s: float
    at: float


@fast_init
@dataclass(frozen=True, slots=True)
class Delivery:
    """One ``on_deliver`` and the status it answered."""

    pdu: DeliverSm | DataSm
    bind_name: str
    status: int


class WorkQueue:
    """FIFO per route, deferral heap per route, outcome records.

    Args:
        record: keep a record of every outcome (``submissions``, ``retries``, ``rejections``,
            ``deliveries``) and of the parts taken and not yet resolved (``outstanding``).
            Without it (benchmarks) only the counters are kept.
        deliver_status: the command_status ``on_deliver`` answers with.
        clock: the monotonic clock (``trio.current_time`` by default).
    """

    def __init__(
        self,
        *,
        record: bool = True,
        deliver_status: int = 0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._record = record
        self.deliver_status = deliver_status
        self._clock = clock
        self._queues: dict[str, deque[OutboundPart]] = {}
        self._deferred: dict[str, list[tuple[float, int, OutboundPart]]] = {}
        self._order = itertools.count()
        self._lots: dict[str, trio.lowlevel.ParkingLot] = {}
        self._resolved = trio.Event()
        self.counts: Counter[str] = Counter()
        """``taken``, ``submitted``, ``rejected``, ``retried``, ``retried:<reason>``,
        ``delivered``."""
        self.submissions: dict[PartId, list[Submission]] = {}
        self.retries: list[Retry] = []
        self.rejections: dict[PartId, int] = {}
        self.deliveries: list[Delivery] = []
        self.outstanding: dict[PartId, OutboundPart] = {}
        """Parts taken by a bind and not yet resolved (``record`` only)."""
        self._out = 0

    # --- feeding ----------------------------------------------------------------------------

    def put(self, part: OutboundPart) -> None:
        """Queue a part at the back of its route's FIFO."""
        self._queue(part.route).append(part)
        self._wake(part.route)

    def put_many(self, parts: Iterable[OutboundPart]) -> None:
        touched: set[str] = set()
        for part in parts:
            self._queue(part.route).append(part)
            touched.add(part.route)
        for route in touched:
            self._wake(route)

    def pending(self, route: str | None = None) -> int:
        """Parts queued or deferred (of one route, or of all)."""
        routes = self._queues.keys() | self._deferred.keys() if route is None else {route}
        return sum(len(self._queues.get(r, ())) + len(self._deferred.get(r, ())) for r in routes)

    @property
    def taken_unresolved(self) -> int:
        """Parts a bind has taken that have no outcome yet."""
        return self._out

    async def wait_idle(self) -> None:
        """Return once nothing is queued, deferred or awaiting an outcome."""
        while self._out or self.pending():
            self._resolved = trio.Event()
            await self._resolved.wait()

    # --- PartSource -------------------------------------------------------------------------

    async def get(self, route: str) -> OutboundPart:
        """Wait for a ready part of ``route`` and take it (cancel-safe)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            part = self.get_nowait(route)
            if part is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return part
            heap = self._deferred.get(route)
            due = heap[0][0] if heap else math.inf
            lot = self._lots.get(route)
            if lot is None:
                lot = self._lots[route] = trio.lowlevel.ParkingLot()
            with trio.move_on_at(due):
                await lot.park()

    def get_nowait(self, route: str) -> OutboundPart | None:
        """Take a ready part of ``route``, or None."""
        heap = self._deferred.get(route)
        if heap and heap[0][0] <= self._clock():
            self._promote(route, heap)
        queue = self._queues.get(route)
        if not queue:
            return None
        part = queue.popleft()
        self._out += 1
        self.counts["taken"] += 1
        if self._record:
            self.outstanding[part.part_id] = part
        return part

    # --- PartSink ---------------------------------------------------------------------------

    def on_submitted(
        self, part: OutboundPart, smsc_message_id: str, bind_name: str, now: float
    ) -> None:
        self.counts["submitted"] += 1
        if self._record:
            submission = Submission(part.part_id, smsc_message_id, bind_name, now)
            self.submissions.setdefault(part.part_id, []).append(submission)
        self._resolve(part)

    def on_rejected(self, part: OutboundPart, command_status: int, now: float) -> None:
        self.counts["rejected"] += 1
        if self._record:
            self.rejections[part.part_id] = command_status
        self._resolve(part)

    def on_retry(self, part: OutboundPart, delay_s: float, reason: str, now: float) -> None:
        self.counts["retried"] += 1
        self.counts[f"retried:{reason}"] += 1
        if self._record:
            self.retries.append(Retry(part.part_id, reason, delay_s, now))
        self._resolve(part)
        route = part.route
        if delay_s <= 0:
            self._queue(route).appendleft(part)
            self._wake(route)
            return
        heap = self._deferred.setdefault(route, [])
        due = now + delay_s
        earliest = not heap or due < heap[0][0]
        heapq.heappush(heap, (due, next(self._order), part))
        if earliest:
            self._wake(route)  # waiting gets sleep until the earliest due time

    async def on_deliver(self, pdu: DeliverSm | DataSm, bind_name: str) -> int:
        self.counts["delivered"] += 1
        status = self.deliver_status
        if self._record:
            self.deliveries.append(Delivery(pdu, bind_name, status))
        await trio.lowlevel.checkpoint()
        return status

    def deliver_now(self, pdu: DeliverSm | DataSm, bind_name: str) -> tuple[int, int] | None:
        return None  # every deliver_sm goes through on_deliver, which tests can watch

    async def wait_committed(self, ticket: int) -> None:
        await trio.lowlevel.checkpoint()

    # --- internals --------------------------------------------------------------------------

    def _queue(self, route: str) -> deque[OutboundPart]:
        queue = self._queues.get(route)
        if queue is None:
            queue = self._queues[route] = deque()
        return queue

    def _wake(self, route: str) -> None:
        lot = self._lots.get(route)
        if lot is not None and lot:
            lot.unpark_all()

    def _promote(self, route: str, heap: list[tuple[float, int, OutboundPart]]) -> None:
        """Move the due deferred parts to the front of the FIFO, earliest first."""
        now = self._clock()
        due: list[OutboundPart] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        self._queue(route).extendleft(reversed(due))

    def _resolve(self, part: OutboundPart) -> None:
        self._out -= 1
        if self._record:
            self.outstanding.pop(part.part_id, None)
        self._resolved.set()
