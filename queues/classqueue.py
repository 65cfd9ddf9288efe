"""Per-route, per-class FIFOs of queued message parts, and one deferral heap.

This is the in-memory half of the pipeline's queue: the durable store holds the truth, and this
holds what the scheduler hands to the binds. It has to hold a million queued parts in under
1 KiB each (DESIGN §5), so an entry is a slotted :class:`QueuedPart` referenced from exactly
one place at a time (a deque or the heap), with its route string interned so a million parts
share one copy.

Ready parts live in one deque per (route, class). Parts that must wait — ``not_before``, quiet
hours, a retry delay — live in ONE heap of ``(ready_at, seq, part)`` shared by every route and
class: the scheduler needs a single "next due" time to sleep on, and ``seq`` keeps the heap
from ever comparing two parts. :meth:`ClassQueues.promote` moves what is due to the *front* of
its class deque, earliest first: a deferred part was accepted (or first tried) before anything
that waits behind it, so it should not queue again behind a backlog.

No policy here (priority, shares, expiry): that is the scheduler's. No clock either: every
time is passed in (epoch seconds).
"""

from __future__ import annotations

import heapq
import itertools
import sys
from collections import deque

from queues.model import MessageClass

__all__ = ["CLASSES", "ClassQueues", "Lanes", "QueuedPart"]

CLASSES: tuple[MessageClass, ...] = tuple(sorted(MessageClass, key=lambda c: c.priority))
"""The classes in priority order: ``CLASSES[c.priority] is c``."""

Lanes = tuple[deque["QueuedPart"], deque["QueuedPart"], deque["QueuedPart"]]
"""The ready deques of one route, indexed by class priority."""


class QueuedPart:
    """One message part waiting to be sent: the queue's entry and the supervisor's part id.

    A plain ``__slots__`` class (no ``__dict__``, no dataclass machinery) because there can be a
    million of them. Equality and hashing are by identity: the same object goes out as
    ``OutboundPart.part_id`` and comes back through ``on_retry``.

    Args:
        message_id: the message's id (shared by its parts).
        index: the part's 0-based index in its message.
        klass: the message's traffic class.
        route: the route's name; interned, so every part of a route shares one string.
        valid_until: epoch seconds after which the part must not be sent.
        payload: opaque to the queue; what the pipeline needs to build the submit_sm (typically
            the part's short_message bytes and a few ints).
        attempts: how many times the part was written to an SMSC so far.
    """

    __slots__ = ("attempts", "index", "klass", "message_id", "payload", "route", "valid_until")

    message_id: str
    index: int
    klass: MessageClass
    route: str
    valid_until: float
    payload: object
    attempts: int

    def __init__(
        self,
        message_id: str,
        index: int,
        klass: MessageClass,
        route: str,
        valid_until: float,
        payload: object,
        attempts: int = 0,
    ) -> None:
        self.message_id = message_id
        self.index = index
        self.klass = klass
        self.route = sys.intern(route)
        self.valid_until = valid_until
        self.payload = payload
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"QueuedPart({self.message_id!r}, {self.index}, {self.klass.value}, "
            f"{self.route!r}, valid_until={self.valid_until}, attempts={self.attempts})"
        )


class ClassQueues:
    """Ready FIFOs per (route, class) plus one deferral heap.

    "Pending" means ready (in a deque); "deferred" means in the heap. A part is in exactly one
    of them until :meth:`pop` takes it.
    """

    def __init__(self) -> None:
        self._lanes: dict[str, Lanes] = {}
        self._heap: list[tuple[float, int, QueuedPart]] = []
        self._seq = itertools.count()

    # --- feeding ----------------------------------------------------------------------------

    def put(self, part: QueuedPart, now: float) -> None:
        """Queue ``part`` at the back of its class on its route.

        Whatever the heap holds that is due at ``now`` is promoted first, so the deques always
        reflect ``now`` after a put (the check costs one heap peek when nothing is due).
        """
        if self._heap and self._heap[0][0] <= now:
            self.promote(now)
        self.lanes(part.route)[part.klass.priority].append(part)

    def put_front(self, part: QueuedPart) -> None:
        """Queue ``part`` at the head of its class (a part retried at once keeps its turn)."""
        self.lanes(part.route)[part.klass.priority].appendleft(part)

    def defer(self, part: QueuedPart, until: float) -> None:
        """Hold ``part`` until ``until`` (epoch seconds); :meth:`promote` releases it."""
        heapq.heappush(self._heap, (until, next(self._seq), part))

    def promote(self, now: float) -> float | None:
        """Move every deferred part due at ``now`` to the front of its class deque.

        Due parts keep their ready-time order among themselves (earliest at the head).

        Returns:
            The ready time of the next deferred part, or None when nothing is deferred.
        """
        heap = self._heap
        if not heap or heap[0][0] > now:
            return heap[0][0] if heap else None
        due: list[QueuedPart] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        for part in reversed(due):  # appendleft in reverse: the earliest ends up first
            self.lanes(part.route)[part.klass.priority].appendleft(part)
        return heap[0][0] if heap else None

    def move_ready(self, source: str, target: str) -> int:
        """Move every ready part of ``source`` to ``target`` (its ``route`` set to it), ahead of
        the parts ``target`` has of the same class and in their own order; return how many."""
        moved = 0
        source_lanes = self._lanes.get(source)
        if source_lanes is None or source == target:
            return 0
        route = sys.intern(target)
        for lane, into in zip(source_lanes, self.lanes(target), strict=True):
            for part in lane:
                part.route = route
            moved += len(lane)
            into.extendleft(reversed(lane))
            lane.clear()
        return moved

    # --- taking -----------------------------------------------------------------------------

    def lanes(self, route: str) -> Lanes:
        """The ready deques of ``route``, indexed by class priority (created empty if new).

        The scheduler peeks and pops these directly: taking a part is its hottest path. The
        tuple is the same object for the life of the queues, so it can be kept.
        """
        lanes = self._lanes.get(route)
        if lanes is None:
            lanes = self._lanes[route] = (deque(), deque(), deque())
        return lanes

    def pop(self, route: str, klass: MessageClass) -> QueuedPart | None:
        """Remove and return the head of ``klass`` on ``route``, or None."""
        lanes = self._lanes.get(route)
        if lanes is None:
            return None
        lane = lanes[klass.priority]
        return lane.popleft() if lane else None

    # --- looking ----------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The ready time of the earliest deferred part, or None."""
        return self._heap[0][0] if self._heap else None

    def pending(self, klass: MessageClass | None = None, route: str | None = None) -> int:
        """Ready (not deferred) parts, of one class and/or one route, or of all."""
        if route is None:
            selected: list[Lanes] = list(self._lanes.values())
        else:
            lanes = self._lanes.get(route)
            selected = [] if lanes is None else [lanes]
        if klass is None:
            return sum(len(lane) for lanes in selected for lane in lanes)
        return sum(len(lanes[klass.priority]) for lanes in selected)

    def deferred(self) -> int:
        """Parts waiting in the deferral heap."""
        return len(self._heap)

    def depths(self) -> dict[MessageClass, int]:
        """Ready parts per class over all routes (the queue-depth metric)."""
        return {klass: self.pending(klass) for klass in CLASSES}

    def routes(self) -> list[str]:
        """Every route that has had a ready part."""
        return list(self._lanes)
