"""How fast the SMSC simulator answers submit_sm, in its own process, on one core.

The simulator runs as ``python -m gateway.simulator`` in a child process; a trio load client in
this process binds once and keeps ``window`` pre-encoded submit_sm in flight (one ``send_all``
per batch, responses counted from their headers only). The figure that matters is submit_sm
answered per CPU-second of the simulator process, read from ``/proc/PID/stat`` around the
measured run (a warm-up batch first, so imports and the first allocations are not counted).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import TextIO

import trio

from benchmarks._simproc import cpu_seconds, start_simulator, stop_simulator
from protocols.pdu import BindTransceiver, BindTransmitter, DeliverSmResp, SubmitSm, encode

__all__ = ["run"]

_HEADER = struct.Struct(">IIII")
_SUBMIT_SM_RESP = 0x80000004
_DELIVER_SM = 0x00000005
_TARGET_PER_CPU_S = 30_000


def _submits(count: int, first_seq: int) -> bytes:
    """``count`` submit_sm back to back, sequence numbers from ``first_seq``."""
    template = encode(
        SubmitSm(
            source_addr="ULAK",
            source_addr_ton=5,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="905321234567",
            registered_delivery=1,
            short_message=b"Your code is 123456. Do not share it with anyone.",
        ),
        sequence_number=1,
    )
    size = len(template)
    out = bytearray(template * count)
    for i in range(count):
        struct.pack_into(">I", out, i * size + 12, first_seq + i)
    return bytes(out)


async def _load(
    pid: int, port: int, warmup: int, messages: int, window: int, receipts: bool
) -> dict[str, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    # A transceiver when receipts are on: they come back on the same bind and are answered.
    bind = BindTransceiver if receipts else BindTransmitter
    await stream.send_all(encode(bind(system_id="bench", password="bench"), sequence_number=1))
    buf = bytearray()
    while len(buf) < 16 or len(buf) < _HEADER.unpack_from(buf)[0]:
        buf += await stream.receive_some(65536)
    length, _, status, _ = _HEADER.unpack_from(buf)
    if status != 0:
        raise RuntimeError(f"bind refused with status 0x{status:X}")
    del buf[:length]

    deliver_resp = bytearray(encode(DeliverSmResp(), sequence_number=0))
    results: dict[str, float] = {}
    for count in (warmup, messages):
        payload = _submits(count, 2)
        size = len(payload) // count
        sent = answered = errors = 0
        cpu_start = cpu_seconds(pid)
        started = time.perf_counter()
        first = min(window, count)
        await stream.send_all(payload[: first * size])
        sent = first
        while answered < count:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("the simulator closed the connection")
            buf += data
            pos = 0
            n = len(buf)
            replies: list[bytes] = []
            while n - pos >= 16:
                length, command_id, status, seq = _HEADER.unpack_from(buf, pos)
                if n - pos < length:
                    break
                if command_id == _SUBMIT_SM_RESP:
                    answered += 1
                    if status:
                        errors += 1
                elif command_id == _DELIVER_SM:
                    struct.pack_into(">I", deliver_resp, 12, seq)
                    replies.append(bytes(deliver_resp))
                pos += length
            del buf[:pos]
            more = min(count - sent, window - (sent - answered))
            if more > 0:
                replies.append(payload[sent * size : (sent + more) * size])
                sent += more
            if replies:
                await stream.send_all(b"".join(replies))
        wall = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_start
        results = {
            "wall_s": wall,
            "submits_per_s": count / wall,
            "cpu_s": cpu,
            "submits_per_cpu_s": count / cpu if cpu > 0 else float("inf"),
            "errors": float(errors),
        }
    await stream.aclose()
    return results


def _start_simulator(receipts: bool, log_path: str) -> tuple[subprocess.Popen[str], int]:
    args = ["--seed", "1", "--account", "bench:bench", "--max-binds", "1"]
    args += ["--receipts", "--deliver-window", "1000"] if receipts else ["--no-receipts"]
    args += ["--log", log_path]
    return start_simulator(args)


def _measure(messages: int, window: int, *, receipts: bool) -> dict[str, float]:
    """One simulator process, one bind, ``messages`` submit_sm; the JSON log is on (written to
    a temporary file), as every submit_sm costs the simulator a log record."""
    with tempfile.TemporaryDirectory(prefix="ulak-sim-bench-") as folder:
        proc, port = _start_simulator(receipts, os.path.join(folder, "submits.jsonl"))
        try:
            warmup = max(1000, messages // 10)
            return trio.run(_load, proc.pid, port, warmup, messages, window, receipts)
        finally:
            stop_simulator(proc)


def run(
    *,
    messages: int = 200_000,
    as_json: bool = False,
    window: int = 1000,
    out: TextIO | None = None,
) -> dict[str, float]:
    """Measure the simulator; print a table (and one JSON line with ``as_json``).

    Two runs, each against a fresh simulator process: the headline one over a transmitter bind
    (submit_sm and their resps only: the simulator's own rate), then one over a transceiver
    with a receipt per message, which the client answers (every submit then costs the
    simulator a deliver_sm out and a deliver_sm_resp in as well).

    Args:
        messages: submit_sm per measured run (each after a warm-up of a tenth of it).
        as_json: also print one JSON line: ``sim_submits_per_s`` (wall), ``sim_cpu_s``,
            ``sim_submits_per_cpu_s`` (the target figure), the same with a ``sim_receipts_``
            prefix for the second run, and ``messages``, ``window``, ``errors``.
        window: submit_sm in flight on the one bind.
        out: where to print (stdout by default).

    Returns:
        The figures printed in the JSON line.
    """
    out = out or sys.stdout
    plain = _measure(messages, window, receipts=False)
    with_receipts = _measure(messages, window, receipts=True)
    result = {
        "messages": float(messages),
        "window": float(window),
        "sim_submits_per_s": plain["submits_per_s"],
        "sim_cpu_s": plain["cpu_s"],
        "sim_submits_per_cpu_s": plain["submits_per_cpu_s"],
        "sim_receipts_submits_per_s": with_receipts["submits_per_s"],
        "sim_receipts_cpu_s": with_receipts["cpu_s"],
        "sim_receipts_submits_per_cpu_s": with_receipts["submits_per_cpu_s"],
        "errors": plain["errors"] + with_receipts["errors"],
    }
    print(
        f"SMSC simulator, one bind, window {window}, {messages:,} submit_sm per run, "
        f"JSON log on; target >= {_TARGET_PER_CPU_S:,} submit_sm per CPU-second",
        file=out,
    )
    print(f"{'run':<24}{'wall s':>8}{'sim CPU s':>11}{'submit/s':>11}{'per CPU-s':>11}", file=out)
    for name, row in (("submit_sm only", plain), ("with receipts", with_receipts)):
        print(
            f"{name:<24}{row['wall_s']:>8.2f}{row['cpu_s']:>11.2f}"
            f"{row['submits_per_s']:>11,.0f}{row['submits_per_cpu_s']:>11,.0f}",
            file=out,
        )
    if result["errors"]:
        print(f"warning: {result['errors']:.0f} submit_sm_resp with an error status", file=out)
    if as_json:
        print(json.dumps(result, sort_keys=True), file=out)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="SMSC simulator throughput")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    ns = parser.parse_args()
    run(messages=ns.messages, as_json=ns.json, window=ns.window)
