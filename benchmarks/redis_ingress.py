"""``ulak bench redis``: messages through the Redis stream, end to end.

The simulator runs in a child process (receipts on, an operator round trip of ``rtt_ms``).
This process runs the real :class:`~gateway.pipeline.Pipeline` on durable SQLite in a temporary
folder, the real bind supervisor, and the real :class:`~queues.redis_ingress.RedisIngress`
under a trio-asyncio loop (DESIGN §6).

First ``messages`` entries are appended to a fresh stream (pipelined, 1000 per round trip),
as upstream apps would have queued them; then the ingress starts. ``msgs_per_s`` is messages
read, durably accepted, acknowledged *and* submitted (submit_sm_resp received) per second,
from the ingress's start to the last response; ``accept_msgs_per_s`` stops the clock at the
last acknowledgement instead. The streams are deleted at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import trio
import trio_asyncio

from benchmarks._simproc import cpu_seconds, start_simulator, stop_simulator
from benchmarks.pipeline import bench_settings
from benchmarks.yardstick import Yardstick, describe
from gateway.binds import BindSupervisor
from gateway.bindstate import RouteSettings
from gateway.config import Settings
from gateway.parts import OutboundPart
from gateway.pipeline import Pipeline
from queues.redis_ingress import RedisIngress

__all__ = ["run"]

_XADD_CHUNK = 1000


class _Submitted:
    """Counts submit_sm_resp through the pipeline's sink; ``done`` at ``expect``."""

    def __init__(self, pipeline: Pipeline, expect: int) -> None:
        self.count = 0
        self.expect = expect
        self.done = trio.Event()
        self.last_at = 0.0
        original = pipeline.on_submitted

        def on_submitted(op: OutboundPart, smsc_id: str, bind: str, now: float) -> None:
            original(op, smsc_id, bind, now)
            self.count += 1
            if self.count >= self.expect:
                self.last_at = time.perf_counter()
                self.done.set()

        pipeline.on_submitted = on_submitted  # type: ignore[method-assign,assignment]


async def _aio(coro: Any) -> Any:
    return await trio_asyncio.current_loop.get().run_aio_coroutine(coro)


async def _produce(client: aioredis.Redis, stream: str, messages: int) -> None:
    """Append the entries an upstream app would, ``_XADD_CHUNK`` per round trip."""
    for first in range(0, messages, _XADD_CHUNK):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(first, min(messages, first + _XADD_CHUNK)):
                body = {
                    "to": f"+90532{n % 10_000_000:07d}",
                    "text": f"Siparişiniz {n} kargoya verildi.",
                    "class": "transactional",
                    "reference": f"order-{n}",
                }
                pipe.xadd(stream, {"tenant": "bench", "body": json.dumps(body)})
            await pipe.execute()


async def _measure(
    settings: Settings, url: str, messages: int, batch: int, entry_keys: bool
) -> dict[str, float]:
    from gateway.daemon import open_store

    prefix = f"ulak:bench:{uuid.uuid4().hex}"
    names = {
        "stream": f"{prefix}:messages",
        "dead": f"{prefix}:dead",
        "events": f"{prefix}:events",
    }
    tenants = {t.name: t for t in settings.tenants}
    async with trio_asyncio.open_loop(), open_store(settings) as store:
        client = aioredis.Redis.from_url(url)
        try:
            pipeline = Pipeline(settings, store)
            submitted = _Submitted(pipeline, messages)
            routes = [RouteSettings.from_config(r) for r in settings.routes]
            supervisor = BindSupervisor(routes, pipeline, pipeline)
            pipeline.route_up = supervisor.is_up
            start = time.perf_counter()
            await _aio(_produce(client, names["stream"], messages))
            xadd_s = time.perf_counter() - start
            ingress = await RedisIngress.open(
                url,
                consumer="bench",
                batch=batch,
                entry_keys=entry_keys,
                stream=names["stream"],
                dead=names["dead"],
                events=names["events"],
            )
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(pipeline.run)
                    await nursery.start(supervisor.run)
                    with trio.fail_after(10):
                        await supervisor.wait_until_up(
                            "sim", binds=len(supervisor.pools["sim"].binds)
                        )
                    start = time.perf_counter()
                    nursery.start_soon(ingress.run, pipeline, tenants)
                    with trio.fail_after(600):
                        while ingress.counts.accepted + ingress.counts.dead < messages:
                            await trio.sleep(0.001)
                    accepted_s = time.perf_counter() - start
                    with trio.fail_after(600):
                        await submitted.done.wait()
                    elapsed = submitted.last_at - start
                    supervisor.shutdown()
                    nursery.cancel_scope.deadline = trio.current_time() + 15
                    await pipeline.flush()
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await ingress.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await _aio(client.delete(*names.values()))
                await _aio(client.aclose())
    return {
        "messages": float(messages),
        "msgs_per_s": messages / elapsed,
        "accept_msgs_per_s": messages / accepted_s,
        "xadd_msgs_per_s": messages / xadd_s,
        "dead": float(ingress.counts.dead),
        "batches": float(ingress.counts.batches),
    }


def run(
    messages: int = 50_000,
    as_json: bool = False,
    *,
    rtt_ms: float = 5.0,
    binds: int = 4,
    window: int = 100,
    batch: int = 500,
    url: str | None = None,
    entry_keys: bool = True,
) -> dict[str, Any]:
    """Run the measurement; print it; return the figures.

    Args:
        messages: entries appended to the stream, then taken through to the SMSC.
        as_json: also print one JSON line.
        rtt_ms: the simulated SMSC round trip.
        binds, window: binds to the simulator and the window of each.
        batch: entries per XREADGROUP (``COUNT``), each batch one durable accept.
        entry_keys: accept each entry under its entry id as idempotency key (the ingress's
            default: a redelivery cannot duplicate a message); off measures what that costs.
        url: the Redis server (default ``ULAK_REDIS_URL`` or redis://127.0.0.1:6379/0).
    """
    url = url or os.environ.get("ULAK_REDIS_URL", "redis://127.0.0.1:6379/0")
    sim_args = ["--account", "bench:bench", "--max-binds", str(binds), "--rtt-ms", str(rtt_ms)]
    yardstick = Yardstick()
    proc, port = start_simulator(sim_args)
    try:
        with tempfile.TemporaryDirectory(prefix="ulak-bench-") as folder:
            settings = bench_settings(Path(folder), port, None, binds, window)
            sim0, cpu0 = cpu_seconds(proc.pid), time.process_time()
            result: dict[str, Any] = trio.run(_measure, settings, url, messages, batch, entry_keys)
            result["cpu_gateway_s"] = time.process_time() - cpu0
            result["cpu_simulator_s"] = cpu_seconds(proc.pid) - sim0
    finally:
        stop_simulator(proc)
    result |= yardstick.figures(result["msgs_per_s"])
    result.update(
        mode="redis", rtt_ms=rtt_ms, binds=binds, window=window, batch=batch, entry_keys=entry_keys
    )
    print(
        f"redis ingress: stream -> SQLite (durable) -> {binds} binds x window {window},"
        f" SMSC RTT {rtt_ms:g} ms, receipts on, XREADGROUP COUNT {batch},"
        f" entry-id keys {'on' if entry_keys else 'off'}"
    )
    print(
        f"  throughput  {result['msgs_per_s']:>10,.0f} msg/s read, accepted, acked and submitted"
        f" ({result['messages']:,.0f} messages)"
    )
    print(describe(result, label_width=12))
    print(f"  accept      {result['accept_msgs_per_s']:>10,.0f} msg/s read, accepted and acked")
    print(f"  producer    {result['xadd_msgs_per_s']:>10,.0f} msg/s XADD, pipelined by 1000")
    print(
        f"  CPU         gateway {result['cpu_gateway_s']:.1f}s,"
        f" simulator {result['cpu_simulator_s']:.1f}s"
    )
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return result
