"""``ulak run`` as a separate process, for benchmarks that go through its front doors: a config
in a folder (one tenant, one route to the simulator, durable SQLite), start and stop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from benchmarks._simproc import terminate
from gateway.childproc import read_line
from gateway.localconfig import simulator_config

__all__ = ["API_KEY", "TENANT", "daemon_config", "start_daemon", "stop_daemon"]

API_KEY: Final = "bench-key-0123456789abcdef0123456789"
TENANT: Final = "bench"


def daemon_config(
    folder: Path,
    port: int,
    *,
    binds: int = 4,
    window: int = 100,
    route_extra: str = "",
    tenant_extra: str = "",
    extra: str = "",
    tenant: str = TENANT,
    api_key: str = API_KEY,
    sender: str = "ULAK",
) -> Path:
    """:func:`gateway.localconfig.simulator_config` with the benchmarks' tenant and key, quiet
    hours off."""
    return simulator_config(
        folder,
        port,
        tenant=tenant,
        api_key=api_key,
        sender=sender,
        binds=binds,
        window=window,
        route_extra=route_extra,
        tenant_extra=tenant_extra,
        extra=extra,
    )


def start_daemon(config: Path, log: Path | None) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start ``ulak run -c CONFIG`` (stderr appended to ``log``, or dropped); return it once its
    HTTP API listens, with the URL of each listener it printed: ``"http"``, and ``"metrics"``
    when ``[metrics] listen`` is set (printed first)."""
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(log.open("a")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while (line := read_line(proc, deadline)) is not None:
        name, sep, url = line.partition(" listening on ")
        if sep:
            urls[name.rsplit(" ", 1)[-1]] = url.strip()
            if "http" in urls:
                return proc, urls
    proc.kill()
    raise RuntimeError(f"the daemon did not start (exit {proc.wait()}); see {log}")


def stop_daemon(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (a clean drain), then SIGKILL after 30 s. (Its stdout holds only the listening
    lines, read at start: nothing more can fill the pipe.)"""
    terminate(proc, 30.0)
