"""``ulak bench binds``: raw submit_sm throughput through the bind supervisor.

The SMSC simulator runs as ``python -m gateway.simulator`` in a child process (its own core),
with the operator round trip (``--rtt-ms``) and, when given, the per-bind TPS limit. This
process runs the real :class:`~gateway.binds.BindSupervisor` with ``binds`` transmitter binds
of ``window``, fed by the in-memory :class:`~gateway.workqueue.WorkQueue` filled beforehand,
and counts submit_sm_resp with ESME_ROK over ``seconds`` after a warm-up.

The bound is what the protocol allows: each bind has at most ``window`` submits per round trip
and at most ``tps`` per second, so throughput <= min(N·W/R, N·tps). The simulator holds each
response for R with ``--release-spin-us 500``: its timer wakes half a millisecond early and it
polls until the response is due. Without it, a wake-up came up to 1 ms late (epoll counts
whole milliseconds), and a 10 ms operator answered in 10.5-10.8 ms, a loss that was the
simulator's, not the gateway's. The spin cost the simulator up to 5 % of a core here. Its real
round trip is still R plus its wake-up and processing time, so the run first measures it
as a baseline, with a minimal blocking client that has one submit_sm at a time in flight
(``baseline_rtt_ms``, the median), and also reports the fraction of the bound at that round
trip (``fraction_of_baseline_bound``): what no client of this simulator here could beat. With
no RTT and no TPS there is no protocol bound: the run is CPU-bound and measures the gateway's
cost per message (both processes' CPU seconds are reported: this process via
``time.process_time``, the child from ``/proc/PID/stat``).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import statistics
import struct
import subprocess
import time

import trio

from benchmarks._simproc import cpu_seconds, start_simulator, stop_simulator
from gateway.binds import BindSupervisor
from gateway.bindstate import BindMode, RouteSettings
from gateway.parts import OutboundPart
from gateway.workqueue import WorkQueue
from protocols.pdu import BindTransmitter, SubmitSm, Unbind, encode

__all__ = ["run"]

_WARMUP_S = 0.5
_FILL_RATE = 60_000.0  # parts per second of run prepared when there is no protocol bound
_MAX_PARTS = 2_000_000


def _start_simulator(
    binds: int, rtt_ms: float, tps: float | None
) -> tuple[subprocess.Popen[str], int]:
    args = ["--no-receipts", "--account", "bench:bench", "--max-binds", str(binds + 1)]
    args += ["--rtt-ms", str(rtt_ms), "--release-spin-us", "500"]
    if tps is not None:
        args += ["--tps", str(tps)]
    return start_simulator(args)


def _baseline_rtt_ms(port: int, rtt_ms: float) -> float:
    """Median submit_sm -> submit_sm_resp time of a blocking client, one in flight (~2 s)."""
    rounds = max(20, min(300, int(2000 / max(rtt_ms, 1.0))))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def exchange(data: bytes) -> None:
            sock.sendall(data)
            received = b""
            while len(received) < 4 or len(received) < struct.unpack(">I", received[:4])[0]:
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("the simulator closed the baseline connection")
                received += chunk

        exchange(encode(BindTransmitter(system_id="bench", password="bench"), 1))
        pdu = SubmitSm(destination_addr="905321234567", short_message=b"baseline")
        times = []
        for seq in range(2, rounds + 2):
            started = time.perf_counter()
            exchange(encode(pdu, seq))
            times.append(time.perf_counter() - started)
        exchange(encode(Unbind(), rounds + 2))
    return 1000.0 * statistics.median(times)


def _bound(binds: int, window: int, rtt_ms: float, tps: float | None) -> float:
    bound = math.inf
    if rtt_ms > 0:
        bound = binds * window / (rtt_ms / 1000.0)
    if tps is not None:
        bound = min(bound, binds * tps)
    return bound


async def _measure(
    pid: int, port: int, binds: int, window: int, tps: float | None, seconds: float, parts: int
) -> dict[str, float]:
    queue = WorkQueue(record=False)
    # One immutable PDU for every part: the codec encodes it afresh with each sequence number.
    pdu = SubmitSm(
        source_addr="ULAK",
        source_addr_ton=5,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="905321234567",
        short_message=b"Your code is 123456. Do not share it with anyone.",
    )
    queue.put_many(OutboundPart(i, "bench", pdu) for i in range(parts))
    settings = RouteSettings(
        name="bench",
        host="127.0.0.1",
        port=port,
        system_id="bench",
        password="bench",
        bind_mode=BindMode.TRANSMITTER,
        prefixes=("",),
        binds=binds,
        window=window,
        tps=tps,
        shutdown_grace_s=2.0,
    )
    supervisor = BindSupervisor([settings], queue, queue)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with trio.fail_after(10):
            await supervisor.wait_until_up("bench", binds=binds)
        await trio.sleep(_WARMUP_S)
        counts = queue.counts
        sent0, cpu0, sim0 = counts["submitted"], time.process_time(), cpu_seconds(pid)
        before = supervisor.stats().totals
        wall0 = time.perf_counter()
        await trio.sleep(seconds)
        sent1, cpu1, sim1 = counts["submitted"], time.process_time(), cpu_seconds(pid)
        wall = time.perf_counter() - wall0
        totals = supervisor.stats().totals
        supervisor.shutdown()
    if queue.pending() == 0:
        logging.getLogger(__name__).warning("the queue ran dry: the figure is a lower bound")
    done = sent1 - sent0
    answered = totals.submitted - before.submitted
    response_s = totals.response_time_s - before.response_time_s
    return {
        "observed_rtt_ms": 1000.0 * response_s / answered if answered else 0.0,
        "messages": float(done),
        "wall_s": wall,
        "msgs_per_s": done / wall,
        "cpu_gateway_s": cpu1 - cpu0,
        "cpu_simulator_s": sim1 - sim0,
        "gateway_msgs_per_cpu_s": done / (cpu1 - cpu0) if cpu1 > cpu0 else 0.0,
        "throttled": float(totals.throttled),
        "max_in_flight": float(totals.max_in_flight),
    }


def run(
    *,
    binds: int,
    window: int,
    rtt_ms: float,
    tps: float | None,
    seconds: float,
    as_json: bool,
) -> dict[str, float]:
    """Measure submit throughput through the supervisor; print it; return the figures.

    Returns:
        ``msgs_per_s``, ``bound_msgs_per_s`` (0 when there is no protocol bound: CPU-bound),
        ``fraction_of_bound`` (0 when CPU-bound), ``cpu_gateway_s``, ``cpu_simulator_s``,
        ``gateway_msgs_per_cpu_s``, ``cpu_bound`` (1.0 or 0.0) and the details.
    """
    bound = _bound(binds, window, rtt_ms, tps)
    rate = bound if math.isfinite(bound) else _FILL_RATE
    parts = min(_MAX_PARTS, int(rate * (seconds + _WARMUP_S + 2.0) * 1.2) + binds * window)
    proc, port = _start_simulator(binds, rtt_ms, tps)
    try:
        baseline_rtt_ms = _baseline_rtt_ms(port, rtt_ms) if rtt_ms > 0 else 0.0
        result = trio.run(_measure, proc.pid, port, binds, window, tps, seconds, parts)
    finally:
        stop_simulator(proc)
    result["baseline_rtt_ms"] = baseline_rtt_ms
    cpu_bound = not math.isfinite(bound)
    result["bound_msgs_per_s"] = 0.0 if cpu_bound else bound
    result["fraction_of_bound"] = 0.0 if cpu_bound else result["msgs_per_s"] / bound
    result["cpu_bound"] = 1.0 if cpu_bound else 0.0
    # What the window allows at the round trip the gateway actually saw (the configured RTT plus
    # loopback, wake-up and both sides' processing): how full the windows were kept.
    observed_s = result["observed_rtt_ms"] / 1000.0
    observed_bound = _bound(binds, window, result["observed_rtt_ms"], tps) if observed_s else 0.0
    result["fraction_of_observed_bound"] = (
        result["msgs_per_s"] / observed_bound if not cpu_bound and observed_bound else 0.0
    )
    baseline_bound = _bound(binds, window, baseline_rtt_ms, tps) if baseline_rtt_ms else 0.0
    result["fraction_of_baseline_bound"] = (
        result["msgs_per_s"] / baseline_bound if not cpu_bound and baseline_bound else 0.0
    )
    limit = "none (CPU-bound)" if cpu_bound else f"{bound:,.0f} msg/s"
    tps_text = "unlimited" if tps is None else f"{tps:g}"
    print(f"binds={binds} window={window} rtt={rtt_ms:g}ms tps/bind={tps_text} {seconds:g}s")
    print(f"  achieved   {result['msgs_per_s']:>12,.0f} submit_sm/s")
    print(f"  bound      {limit:>12}   min(N*W/R, N*tps)")
    if not cpu_bound:
        print(f"  of bound   {result['fraction_of_bound']:>12.1%}")
        print(
            f"  baseline   simulator round trip {baseline_rtt_ms:.2f} ms (one in flight):"
            f" {result['fraction_of_baseline_bound']:.1%} of N*W/RTT at that round trip"
        )
        print(
            f"  observed RTT {result['observed_rtt_ms']:.2f} ms (submit_sm → resp):"
            f" {result['fraction_of_observed_bound']:.1%} of N*W/RTT at that round trip"
        )
    print(
        f"  CPU        gateway {result['cpu_gateway_s']:.2f}s"
        f" ({result['gateway_msgs_per_cpu_s']:,.0f} msg per CPU-s),"
        f" simulator {result['cpu_simulator_s']:.2f}s, over {result['wall_s']:.2f}s"
    )
    if result["throttled"]:
        print(f"  throttled  {result['throttled']:>12,.0f} answers")
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":  # pragma: no cover - `ulak bench binds` is the entry point
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binds", type=int, default=1)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--tps", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    run(
        binds=a.binds,
        window=a.window,
        rtt_ms=a.rtt_ms,
        tps=a.tps,
        seconds=a.seconds,
        as_json=a.json,
    )
