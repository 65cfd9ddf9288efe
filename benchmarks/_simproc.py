"""The SMSC simulator as a separate process, for benchmarks that measure each side's CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from gateway.childproc import read_line

__all__ = ["cpu_seconds", "start_simulator", "stop_simulator", "terminate"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_simulator(args: Sequence[str]) -> tuple[subprocess.Popen[str], int]:
    """Start ``python -m gateway.simulator --port 0 ARGS``; return it and the port it took."""
    cmd = [sys.executable, "-m", "gateway.simulator", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = read_line(proc, time.monotonic() + 60) or ""
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def stop_simulator(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the simulator flushes its log and exits 0), then kill after 10 s."""
    terminate(proc, 10.0)


def terminate(proc: subprocess.Popen[str], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``grace_s`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
