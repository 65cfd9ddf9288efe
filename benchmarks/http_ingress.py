"""``ulak bench http``: the HTTP ingress end to end, the way an application sees it.

Three processes share the machine, as in production on one host: the SMSC simulator (receipts
on, 1 ms round trip), ``ulak run`` (durable SQLite in a temporary folder, ``binds`` binds, four
by default), and this
process, the HTTP clients (httpx on trio). Two measurements:

1. **single** — ``clients`` concurrent clients POST ``/v1/messages`` one message per request.
   ``single_msgs_per_s`` is messages accepted *and* submitted per second (from the first
   request to the simulator having answered them all); ``http_p50_ms``/``http_p99_ms`` are the
   request latencies (each one a durable accept: the daemon answers 202 after the commit).
2. **batch** — ``messages`` messages in ``POST /v1/messages/batch`` requests of 1000, from four
   concurrent clients; ``msgs_per_s`` is accepted-and-submitted per second, the DESIGN §5
   throughput target (≥ 10,000/s).

"Submitted" is read from the simulator's own counters (SIGUSR1 prints them), so the figure
counts what reached the SMSC and got its ``submit_sm_resp``, not what the daemon believes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from benchmarks._daemonproc import API_KEY, daemon_config, start_daemon, stop_daemon
from benchmarks._simproc import cpu_seconds, start_simulator, stop_simulator
from benchmarks.yardstick import Yardstick, describe

__all__ = ["run"]

_BATCH: Final = 1000
_BATCH_CLIENTS: Final = 4
_TIMEOUT_S: Final = 300.0


@contextlib.contextmanager
def _services(binds: int) -> Iterator[tuple[subprocess.Popen[str], subprocess.Popen[str], str]]:
    folder = Path(tempfile.mkdtemp(prefix="ulak-bench-http-"))
    simulator, port = start_simulator(["--rtt-ms", "1", "--max-binds", str(max(8, binds))])
    daemon = None
    try:
        config = daemon_config(folder, port, binds=binds)
        daemon, urls = start_daemon(config, folder / "daemon.log")
        yield simulator, daemon, urls["http"]
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        stop_simulator(simulator)
        shutil.rmtree(folder, ignore_errors=True)


class _SimulatorCounters:
    """The simulator's ``accepted`` counter, read by SIGUSR1 (it prints ``name: value``)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    def _read_accepted(self) -> int:
        assert self._proc.stdout is not None
        self._proc.send_signal(signal.SIGUSR1)
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError("the simulator exited")
            name, _, value = line.partition(": ")
            if name == "accepted":
                return int(value)

    async def accepted(self) -> int:
        return await trio.to_thread.run_sync(self._read_accepted)

    async def wait_for(self, target: int) -> float:
        """Poll until the simulator has accepted ``target`` submit_sm; the time it was seen."""
        with trio.fail_after(_TIMEOUT_S):
            while await self.accepted() < target:
                await trio.sleep(0.02)
        return time.perf_counter()


def _body(i: int) -> dict[str, Any]:
    return {
        "to": f"+90532{i % 10_000_000:07d}",
        "text": f"Order {i} has shipped. Track it with code {i:08d}.",
        "class": "transactional",
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _single(
    client: httpx.AsyncClient, counters: _SimulatorCounters, count: int, clients: int
) -> dict[str, float]:
    base = await counters.accepted()
    latencies: list[float] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            t0 = time.perf_counter()
            response = await client.post("/v1/messages", json=_body(i))
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/messages: {response.status_code} {response.text}")

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(worker)
    accepted = time.perf_counter()
    done = await counters.wait_for(base + count)
    return {
        "single_msgs_per_s": count / (done - started),
        "single_accept_per_s": count / (accepted - started),
        "http_p50_ms": _percentile(latencies, 0.50) * 1000,
        "http_p99_ms": _percentile(latencies, 0.99) * 1000,
    }


async def _batch(
    client: httpx.AsyncClient, counters: _SimulatorCounters, count: int
) -> dict[str, float]:
    base = await counters.accepted()
    offset = 10_000_000 // 2  # other numbers than the single run's (no shared rate state)
    batches = [
        [_body(offset + i) for i in range(start, min(start + _BATCH, count))]
        for start in range(0, count, _BATCH)
    ]
    next_batch = iter(batches)
    latencies: list[float] = []

    async def worker() -> None:
        for messages in next_batch:
            t0 = time.perf_counter()
            response = await client.post("/v1/messages/batch", json={"messages": messages})
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/messages/batch: {response.status_code}")

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(_BATCH_CLIENTS):
            nursery.start_soon(worker)
    accepted = time.perf_counter()
    done = await counters.wait_for(base + count)
    return {
        "msgs_per_s": count / (done - started),
        "batch_accept_per_s": count / (accepted - started),
        "batch_http_p50_ms": _percentile(latencies, 0.50) * 1000,
        "batch_http_p99_ms": _percentile(latencies, 0.99) * 1000,
    }


async def _measure(
    url: str, counters: _SimulatorCounters, messages: int, single: int, clients: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=max(clients, _BATCH_CLIENTS))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits
    ) as client:
        with trio.fail_after(30):
            while (await client.get("/readyz")).status_code != 200:
                await trio.sleep(0.05)
        await _single(client, counters, min(200, single), clients)  # warm-up
        result: dict[str, Any] = await _single(client, counters, single, clients)
        result |= await _batch(client, counters, messages)
    return result


def run(
    *, messages: int = 20_000, clients: int = 16, binds: int = 4, as_json: bool = False
) -> dict[str, Any]:
    """Run both measurements and print them (and one JSON line with ``as_json``)."""
    single = max(100, min(messages // 5, 5000))
    yardstick = Yardstick()
    with _services(binds) as (simulator, daemon, url):
        counters = _SimulatorCounters(simulator)
        cpu_before = (cpu_seconds(daemon.pid), cpu_seconds(simulator.pid), time.process_time())
        result = trio.run(_measure, url, counters, messages, single, clients)
        # CPU of each side over the whole run (warm-up included): who was the bottleneck.
        result["cpu_daemon_s"] = cpu_seconds(daemon.pid) - cpu_before[0]
        result["cpu_simulator_s"] = cpu_seconds(simulator.pid) - cpu_before[1]
        result["cpu_clients_s"] = time.process_time() - cpu_before[2]
    result = {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}
    result |= yardstick.figures(result["msgs_per_s"])
    result |= {
        "mode": f"subprocess daemon, SQLite (durable), receipts on, {binds} binds, rtt 1 ms",
        "binds": binds,
        "messages": messages,
        "single_messages": single,
        "clients": clients,
    }
    print(
        f"single POSTs ({clients} clients, {single} messages): "
        f"{result['single_msgs_per_s']:,.0f} msg/s accepted and submitted, "
        f"HTTP p50 {result['http_p50_ms']} ms, p99 {result['http_p99_ms']} ms"
    )
    print(
        f"batches of {_BATCH} ({_BATCH_CLIENTS} clients, {messages} messages): "
        f"{result['msgs_per_s']:,.0f} msg/s accepted and submitted "
        f"(accept alone {result['batch_accept_per_s']:,.0f}/s), "
        f"batch request p50 {result['batch_http_p50_ms']} ms, p99 {result['batch_http_p99_ms']} ms"
    )
    print(describe(result, label_width=10).strip())
    print(
        f"CPU seconds: daemon {result['cpu_daemon_s']}, simulator {result['cpu_simulator_s']}, "
        f"clients {result['cpu_clients_s']}"
    )
    if as_json:
        print(json.dumps(result), flush=True)
    return result
