"""The bind supervisor: every route's pool of binds, routing with failover, graceful shutdown.

:class:`BindSupervisor` owns one :class:`BindPool` per configured route (``binds = N``
:class:`~gateway.bind.Bind` each) and runs every bind as one task of its nursery (trio
``_highlevel_serve_listeners.py``: ``task_status.started()`` once the tasks exist; failures of
one bind stay inside that bind's task). The pipeline uses it like this::

    supervisor = BindSupervisor(routes, source, sink)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        route = supervisor.route_for("+905321234567")  # primary, or its backup if down
        ...
        supervisor.shutdown()  # on SIGTERM: graceful, bounded; run() returns when done

Routing is :class:`gateway.router.Router`'s longest prefix match, asked with
:meth:`BindSupervisor.is_up`, so a route whose binds are all down fails over to its backup.

Shutdown follows hypercorn's ``trio/run.py``: every bind is asked to stop gracefully (no more
work, outstanding responses awaited until the grace period ends, unbind, unbind_resp awaited
for at most ``unbind_timeout_s``), and the nursery's cancel scope gets a hard deadline just
beyond that, so a stuck peer cannot hold the daemon. Parts still unanswered at the end go back
to their queue through ``on_retry``, even when the deadline cancels the binds.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import trio

from gateway.bind import Bind
from gateway.bindstate import BindCounters, BindStatus, RouteSettings, StateWatch
from gateway.parts import PartSink, PartSource
from gateway.router import RouteEntry, Router

__all__ = ["BindPool", "BindSupervisor", "SupervisorStats"]

logger = logging.getLogger(__name__)

_CLOSE_MARGIN_S = 1.0  # beyond grace + unbind timeout, for the last flush and close


class BindPool:
    """The binds of one route."""

    def __init__(self, settings: RouteSettings, binds: Iterable[Bind]) -> None:
        self.settings = settings
        self.binds: tuple[Bind, ...] = tuple(binds)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def is_up(self) -> bool:
        """At least one bind is bound and able to submit."""
        return any(bind.is_up for bind in self.binds)

    @property
    def up_count(self) -> int:
        return sum(bind.is_up for bind in self.binds)

    @property
    def in_flight(self) -> int:
        return sum(bind.in_flight for bind in self.binds)


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    """A snapshot of every bind, with totals."""

    binds: tuple[BindStatus, ...]
    routes_up: dict[str, bool]
    totals: BindCounters

    def for_route(self, route: str) -> tuple[BindStatus, ...]:
        return tuple(b for b in self.binds if b.route == route)


class BindSupervisor:
    """Runs the bind pools of all routes and routes destinations to them.

    Args:
        routes: one entry per configured route; names unique, prefixes per
            :class:`gateway.router.Router`, ``backup`` naming another route.
        source: where the binds take parts (per route).
        sink: where outcomes, receipts and MO go.
        strict: let unexpected exceptions in a bind propagate (tests) instead of logging them
            and reconnecting that bind.
        rng: random source of the backoff jitter (tests).

    Raises:
        ValueError: duplicate route names or prefixes, an unknown backup route.
    """

    def __init__(
        self,
        routes: Iterable[RouteSettings],
        source: PartSource,
        sink: PartSink,
        *,
        strict: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        settings = list(routes)
        self.router = Router(RouteEntry(r.name, r.prefixes, r.backup) for r in settings)
        self.watch = StateWatch()
        self.pools: dict[str, BindPool] = {
            r.name: BindPool(
                r,
                (
                    Bind(r, i, source, sink, watch=self.watch, strict=strict, rng=rng)
                    for i in range(1, r.binds + 1)
                ),
            )
            for r in settings
        }
        self._scope: trio.CancelScope | None = None
        self._hard_deadline = math.inf

    def binds(self) -> Iterator[Bind]:
        """Every bind of every route."""
        for pool in self.pools.values():
            yield from pool.binds

    # --- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every bind until :meth:`shutdown` has completed (or until cancelled).

        ``task_status.started()`` is called once the bind tasks exist, before any is bound;
        wait with :meth:`wait_until_up` for readiness.
        """
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.cancel_scope.deadline = self._hard_deadline  # shutdown() came first
            for bind in self.binds():
                await nursery.start(bind.run, name=f"bind {bind.name}")
            task_status.started()
        # Every bind task returns after a shutdown; until then the nursery keeps us here.

    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop every bind gracefully; :meth:`run` returns when they are all closed.

        Args:
            grace_s: how long binds wait for outstanding responses before unbinding; ``None``
                takes each route's ``shutdown_grace_s``. A hard deadline of grace plus the
                unbind timeout plus a second then cancels whatever is left.
        """
        now = trio.current_time()
        hard = now
        for pool in self.pools.values():
            s = pool.settings
            grace = s.shutdown_grace_s if grace_s is None else grace_s
            hard = max(hard, now + grace + s.unbind_timeout_s + _CLOSE_MARGIN_S)
            for bind in pool.binds:
                bind.request_stop(now + grace)
        logger.info("shutting down %d binds (hard deadline in %.1fs)", len(self), hard - now)
        self._hard_deadline = min(self._hard_deadline, hard)
        if self._scope is not None:
            self._scope.deadline = self._hard_deadline

    def __len__(self) -> int:
        return sum(len(pool.binds) for pool in self.pools.values())

    # --- routing ----------------------------------------------------------------------------

    def is_up(self, route: str) -> bool:
        """Whether ``route`` has a bind able to submit now."""
        pool = self.pools.get(route)
        return pool is not None and pool.is_up

    def route_for(self, destination: str) -> str | None:
        """The route to use for ``destination`` now: its primary route if that has a bind up,
        else the first backup along the chain that has; None when none is up (defer).

        Raises:
            gateway.router.NoRouteError: no configured prefix matches ``destination``.
        """
        entry = self.router.select(destination, self.is_up)
        return None if entry is None else entry.name

    # --- observing --------------------------------------------------------------------------

    def stats(self) -> SupervisorStats:
        """Snapshot of every bind (state, last failure, rate, counters) and totals."""
        statuses = tuple(bind.status() for bind in self.binds())
        totals = BindCounters()
        for status in statuses:
            totals.add(status.counters)
        routes_up = {name: pool.is_up for name, pool in self.pools.items()}
        return SupervisorStats(binds=statuses, routes_up=routes_up, totals=totals)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is re-checked on every bind state change."""
        await self.watch.wait_for(predicate)

    async def wait_until_up(self, route: str | None = None, binds: int = 1) -> None:
        """Return once ``route`` (or every route) has at least ``binds`` binds up."""
        pools = list(self.pools.values()) if route is None else [self.pools[route]]
        await self.watch.wait_for(lambda: all(p.up_count >= binds for p in pools))
