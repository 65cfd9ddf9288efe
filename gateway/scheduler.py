"""The scheduler: which queued part each bind sends next (DESIGN §2 "Priority").

It implements :class:`~gateway.parts.PartSource` over :class:`~queues.classqueue.ClassQueues`.
A bind's send loop calls ``get_nowait(route)`` to fill a batch and ``await get(route)`` when
nothing is ready, so every decision is made per part, at the moment a window slot and a token
are free: a marketing backlog already sitting in a deque costs an OTP nothing.

**The rule, per route, for each part handed out** (classes indexed by priority: 0 OTP,
1 transactional, 2 marketing; ``share[c]`` is the configured minimum share of class ``c``):

1. Expired heads (``valid_until <= now``) are removed from every class of the route and passed
   to ``on_expired``; they are never handed out. A class "has work" when its head is then live.
2. *Accrue*: each lower class ``c`` (1 and 2) that has work gains ``share[c]`` credit, capped at
   ``_CREDIT_CAP`` so a long starvation (only possible when the shares cannot all be honoured)
   does not turn into a long burst later.
3. *Choose*: by default the highest class that has work (strict priority). But a class ``c``
   below it that has work and at least 1 credit takes the slot instead — a *share slot* —
   unless the previous slot on this route was already a share slot while an OTP waits. Among
   several such classes the one with the most credit wins (the higher class on a tie).
4. *Charge*: the chosen class, if a lower class, loses 1 credit, floored at 0 (being served by
   plain priority builds no debt to repay later).

The credits are the "sliding count": floored at 0 and capped, they remember only the recent
dispatches. Counting the ``n`` dispatches on a route at which class ``c`` had work, ``c`` gets at
least ``floor(share[c]·n) − 1`` of them whenever the shares sum to at most 1/2, and never more
than ``share[c]·n`` share slots (strict priority is bent no further than the shares ask). An OTP
waits behind at most one other part: the next slot is either the OTP or a share slot, and a
share slot is never followed by another while an OTP waits. (With shares summing above 1/2 the
OTP bound still holds; the shares are then honoured as far as every other slot allows.) The
tests check all three bounds on generated workloads.

Deferred parts (``not_before``, quiet hours, retry delays) sit in the queues' heap. ``get`` and
``get_nowait`` promote what is due first; :meth:`Scheduler.run`, a background task, sleeps until
the next due time and wakes the routes that have work, so a waiting ``get`` notices a part that
becomes due without anyone putting anything.

Times: ``clock()`` is wall time in epoch seconds (valid_until, not_before and quiet hours are
wall times); ``run`` converts "ready at" into a ``trio`` sleep as ``ready_at - clock()``, which
also works under ``trio.testing.MockClock`` when ``clock`` is derived from
``trio.current_time()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import trio

from gateway.parts import OutboundPart
from protocols.pdu import SubmitSm
from queues.classqueue import CLASSES, ClassQueues, Lanes, QueuedPart
from queues.model import MessageClass

__all__ = ["Scheduler"]

_CREDIT_CAP = 4.0
"""Most credit a class can bank: enough to ride out the contention of several lower classes
when the shares are feasible, small enough to bound a catch-up burst when they are not."""

_OTP = 0


_PRIORITIES = range(len(CLASSES))


class _Route:
    """Per-route scheduling state: its ready deques, credits per class, the last slot's kind
    and the waiting ``get`` calls."""

    __slots__ = ("after_share", "credits", "has", "lanes", "lot")

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.credits = [0.0] * len(CLASSES)
        self.has = [False] * len(CLASSES)
        self.after_share = False
        self.lot = trio.lowlevel.ParkingLot()


class Scheduler:
    """Strict class priority with minimum shares, over :class:`ClassQueues`.

    Args:
        queues: the class queues to take from (the scheduler's ``put``/``defer``/``retry``
            should be used to feed them, so that waiting binds wake up).
        build: turns a queued part into its submit_sm (the pipeline's encoder).
        min_shares: minimum share of each route's dispatches per lower class, e.g.
            ``{TRANSACTIONAL: 0.10, MARKETING: 0.05}``; an OTP entry is ignored (OTP is first
            anyway). Each share in [0, 1), their sum below 1.
        clock: wall time in epoch seconds.
        on_expired: called, synchronously, with each part found expired instead of sending it.

    Raises:
        ValueError: a share outside [0, 1), or shares summing to 1 or more.
    """

    def __init__(
        self,
        queues: ClassQueues,
        build: Callable[[QueuedPart], SubmitSm],
        *,
        min_shares: Mapping[MessageClass, float],
        clock: Callable[[], float],
        on_expired: Callable[[QueuedPart], None],
    ) -> None:
        shares = [0.0] * len(CLASSES)
        for klass, share in min_shares.items():
            if not 0 <= share < 1:
                raise ValueError(f"min share of {klass.value} must be in [0, 1), got {share:g}")
            if klass.priority != _OTP:
                shares[klass.priority] = float(share)
        if sum(shares) >= 1:
            raise ValueError(f"min shares must sum below 1, got {sum(shares):g}")
        self._queues = queues
        self._build = build
        self._shares = shares
        self._lower = tuple(c for c in range(1, len(CLASSES)) if shares[c] > 0)
        self._clock = clock
        self._on_expired = on_expired
        self._routes: dict[str, _Route] = {}
        self._timer = trio.Event()
        self._sleep_until = math.inf

    # --- feeding ----------------------------------------------------------------------------

    def put(self, part: QueuedPart) -> None:
        """Queue a ready part at the back of its class and wake its route's waiters."""
        self._queues.put(part, self._clock())
        self._wake(part.route)

    def put_many(self, parts: Iterable[QueuedPart]) -> None:
        """Queue several ready parts; each route's waiters are woken once."""
        now = self._clock()
        touched: set[str] = set()
        for part in parts:
            self._queues.put(part, now)
            touched.add(part.route)
        for route in touched:
            self._wake(route)

    def defer(self, part: QueuedPart, until: float) -> None:
        """Hold a part until ``until`` (epoch seconds): not_before, quiet hours, retry delay.

        A part whose validity ends first is released at ``valid_until`` instead, so that it is
        reported expired then rather than at the end of a quiet night.
        """
        ready_at = min(until, part.valid_until)
        self._queues.defer(part, ready_at)
        if ready_at < self._sleep_until:
            self._timer.set()  # run() sleeps too long: let it recompute

    def retry(self, part: QueuedPart, delay_s: float, now_wall: float) -> None:
        """Put back a part a bind could not send: at the head of its class when ``delay_s`` is
        0 (it keeps its turn), else deferred by ``delay_s`` seconds from ``now_wall``."""
        if delay_s <= 0:
            self._queues.put_front(part)
            self._wake(part.route)
        else:
            self.defer(part, now_wall + delay_s)

    def reroute(self, source: str, target: str) -> int:
        """Hand every ready part of ``source`` to ``target`` (ahead of its own parts of each
        class: they are older) and wake ``target``'s waiters; return how many moved."""
        moved = self._queues.move_ready(source, target)
        if moved:
            self._wake(target)
        return moved

    # --- PartSource -------------------------------------------------------------------------

    async def get(self, route: str) -> OutboundPart:
        """Wait until a part of ``route`` is ready and take it.

        Cancel-safe: the part is taken by the synchronous :meth:`get_nowait` right before
        returning, after the last point where a cancellation can land.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self._route(route)
        while True:
            part = self.get_nowait(route)
            if part is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return part
            await state.lot.park()

    def get_nowait(self, route: str) -> OutboundPart | None:
        """Take the next part of ``route`` by the scheduling rule, or None if none is ready."""
        now = self._clock()
        self._queues.promote(now)
        state = self._routes.get(route) or self._route(route)
        lanes = state.lanes
        has = state.has
        top = -1
        for c in _PRIORITIES:
            lane = lanes[c]
            while lane and lane[0].valid_until <= now:
                self._on_expired(lane.popleft())
            has[c] = live = bool(lane)
            if live and top < 0:
                top = c
        if top < 0:
            return None
        credits = state.credits
        shares = self._shares
        lower = self._lower
        for c in lower:
            if has[c]:
                credits[c] = min(_CREDIT_CAP, credits[c] + shares[c])
        choice = top
        share_slot = False
        if not (state.after_share and has[_OTP]):
            for c in lower:
                if (
                    c > top
                    and has[c]
                    and credits[c] >= 1
                    and (not share_slot or credits[c] > credits[choice])
                ):
                    choice = c
                    share_slot = True
        state.after_share = share_slot
        if choice != _OTP:
            credits[choice] = max(0.0, credits[choice] - 1.0)
        part = lanes[choice].popleft()
        return OutboundPart(
            part_id=part, route=part.route, pdu=self._build(part), attempts=part.attempts
        )

    # --- the deferral timer -----------------------------------------------------------------

    async def run(self) -> None:
        """Background task: promote deferred parts as they fall due and wake their routes.

        Runs until cancelled. Sleeps ``ready_at - clock()`` for the earliest deferred part, or
        until :meth:`defer` brings in an earlier one.
        """
        while True:
            self._timer = trio.Event()
            next_due = self._queues.promote(self._clock())
            self._wake_ready()
            if next_due is None:
                self._sleep_until = math.inf
                await self._timer.wait()
                continue
            self._sleep_until = next_due
            with trio.move_on_after(max(0.0, next_due - self._clock())):
                await self._timer.wait()

    # --- metrics ----------------------------------------------------------------------------

    def depths(self) -> dict[MessageClass, int]:
        """Ready parts per class (the ``queue depth by class`` metric)."""
        return self._queues.depths()

    def deferred_count(self) -> int:
        """Parts waiting for a time (not_before, quiet hours, retry delay)."""
        return self._queues.deferred()

    # --- internals --------------------------------------------------------------------------

    def _route(self, route: str) -> _Route:
        state = self._routes.get(route)
        if state is None:
            state = self._routes[route] = _Route(self._queues.lanes(route))
        return state

    def _wake(self, route: str) -> None:
        state = self._routes.get(route)
        if state is not None and state.lot:
            state.lot.unpark_all()

    def _wake_ready(self) -> None:
        """Wake the waiters of every route that has ready work (expired parts included: the
        woken ``get`` sorts them out)."""
        for route, state in self._routes.items():
            if state.lot and self._queues.pending(route=route):
                state.lot.unpark_all()
