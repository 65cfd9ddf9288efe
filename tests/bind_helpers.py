"""Shared pieces of the bind and supervisor tests: a running simulator + supervisor, parts, and a
scripted raw SMSC for the misbehaviours the simulator does not play (garbage, generic_nack).

Everything runs on real TCP on loopback and trio's real clock; tests wait for conditions
(``supervisor.wait_for``, ``queue.wait_idle``), never for time, under ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import trio

from gateway.bind import Bind
from gateway.binds import BindSupervisor
from gateway.bindstate import RouteSettings
from gateway.parts import OutboundPart
from gateway.simulator import SimulatorHandle, SimulatorSettings, serve_simulator
from gateway.workqueue import WorkQueue
from protocols.pdu import Pdu, PduReader, SubmitSm, encode

__all__ = [
    "FAST",
    "Harness",
    "RawSmsc",
    "accepted_counts",
    "make_parts",
    "route",
    "running",
    "serve_raw",
]

# Timeouts and backoffs scaled down so that failure paths take milliseconds, not minutes.
FAST: dict[str, Any] = {
    "connect_timeout_s": 2.0,
    "bind_timeout_s": 2.0,
    "response_timeout_s": 2.0,
    "enquire_link_interval_s": 5.0,
    "reconnect_initial_s": 0.02,
    "reconnect_max_s": 0.1,
    "throttle_retry_s": 0.05,
    "error_retry_s": 0.05,
    "shutdown_grace_s": 2.0,
    "unbind_timeout_s": 1.0,
}


def route(name: str, port: int, **overrides: Any) -> RouteSettings:
    """Route settings for a simulator on loopback, fast timeouts, account ulak/secret."""
    values: dict[str, Any] = {
        "name": name,
        "host": "127.0.0.1",
        "port": port,
        "system_id": "ulak",
        "password": "secret",
        "prefixes": ("",),
        **FAST,
    }
    values.update(overrides)
    return RouteSettings(**values)


def make_parts(route_name: str, count: int, *, start: int = 0, **fields: Any) -> list[OutboundPart]:
    """``count`` parts with ids ``start..``; the destination carries the id (to find it in the
    simulator's records)."""
    return [
        OutboundPart(
            part_id=i,
            route=route_name,
            pdu=SubmitSm(
                source_addr="ULAK",
                destination_addr=f"90532{i:07d}",
                short_message=f"part {i}".encode(),
                **fields,
            ),
        )
        for i in range(start, start + count)
    ]


def part_id_of(destination: str) -> int:
    return int(destination[5:])


def accepted_counts(sim: SimulatorHandle) -> Counter[int]:
    """How many times the simulator accepted (status 0) each part id."""
    return Counter(part_id_of(r["destination"]) for r in sim.submitted if r["status"] == 0)


@dataclass
class Harness:
    sim: SimulatorHandle
    supervisor: BindSupervisor
    queue: WorkQueue

    def bind(self, route_name: str, index: int = 1) -> Bind:
        return self.supervisor.pools[route_name].binds[index - 1]


@asynccontextmanager
async def running(
    routes: Callable[[int], Sequence[RouteSettings]],
    sim_settings: SimulatorSettings | None = None,
    *,
    queue: WorkQueue | None = None,
    grace_s: float | None = None,
) -> AsyncIterator[Harness]:
    """A simulator and a supervisor over ``routes(sim.port)``; on exit a graceful shutdown,
    and the supervisor's ``run`` must return (every bind stopped)."""
    queue = queue if queue is not None else WorkQueue()
    async with trio.open_nursery() as nursery:
        sim: SimulatorHandle = await nursery.start(
            serve_simulator, sim_settings or SimulatorSettings()
        )
        supervisor = BindSupervisor(routes(sim.port), queue, queue, strict=True)
        async with trio.open_nursery() as binds:
            await binds.start(supervisor.run)
            yield Harness(sim, supervisor, queue)
            supervisor.shutdown(grace_s)
        nursery.cancel_scope.cancel()


# --- a scripted raw SMSC ----------------------------------------------------------------------


class RawSmsc:
    """One accepted connection, PDU by PDU: the test decides every byte the SMSC sends."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = PduReader()
        self.seq = itertools.count(1)

    async def recv(self) -> Pdu | None:
        """The next PDU from the gateway, or None at EOF."""
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                return pdu
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self.reader.feed(data)

    async def send(self, *items: Pdu | bytes) -> None:
        """Send PDUs (requests get fresh sequence numbers) and raw bytes, in one write."""
        out: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                out.append(item)
            elif item.command_id & 0x80000000:
                out.append(encode(item))
            else:
                out.append(encode(item, next(self.seq)))
        await self.stream.send_all(b"".join(out))


@asynccontextmanager
async def serve_raw(
    script: Callable[[RawSmsc], Awaitable[None]],
) -> AsyncIterator[tuple[int, list[int]]]:
    """Listen on an ephemeral port and run ``script`` for every connection; yields the port and
    a list that grows by one per connection (its index)."""
    connections: list[int] = []

    async def handler(stream: trio.SocketStream) -> None:
        connections.append(len(connections))
        async with stream:
            await script(RawSmsc(stream))

    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1], connections
        nursery.cancel_scope.cancel()


def with_overrides(settings: RouteSettings, **overrides: Any) -> RouteSettings:
    return replace(settings, **overrides)


def ids(parts: Iterable[OutboundPart]) -> set[int]:
    return {cast(int, p.part_id) for p in parts}
