"""Running the real daemon (``ulak run``) and the simulator as subprocesses, for end-to-end
tests: a config in a temporary folder, an HTTP client, and the simulator's submit log."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import httpx

from benchmarks._daemonproc import daemon_config, start_daemon
from benchmarks._simproc import start_simulator, stop_simulator

__all__ = ["API_KEY", "Daemon", "Simulator", "write_config"]

API_KEY = "test-key-0123456789abcdef0123456789"


class Simulator:
    """``python -m gateway.simulator`` with a submit log."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.log = folder / "submits.jsonl"
        base = ["--account", "ulak:secret", "--max-binds", "8", "--log", str(self.log)]
        self.proc, self.port = start_simulator([*base, *args])

    def stop(self) -> None:
        stop_simulator(self.proc)

    def texts(self) -> Counter[str]:
        """How many times each short_message (decoded as ASCII) reached the simulator."""
        counts: Counter[str] = Counter()
        if not self.log.exists():
            return counts
        with self.log.open(encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                counts[bytes.fromhex(record["short_message"]).decode("ascii", "replace")] += 1
        return counts


def write_config(
    folder: Path,
    smsc_port: int,
    *,
    binds: int = 2,
    window: int = 10,
    tenant_extra: str = "",
    extra: str = "",
) -> Path:
    """The daemon's config for these tests: tenant ``shop`` (key :data:`API_KEY`), quick
    response timeouts and shutdown."""
    return daemon_config(
        folder,
        smsc_port,
        binds=binds,
        window=window,
        route_extra="response_timeout_s = 5\nshutdown_grace_s = 5",
        tenant_extra=tenant_extra,
        extra=extra,
        tenant="shop",
        api_key=API_KEY,
        sender="SHOP",
    )


class Daemon:
    """``ulak run -c CONFIG`` in a subprocess."""

    def __init__(self, config: Path) -> None:
        self.proc, urls = start_daemon(config, None)
        self.url = urls["http"]
        self.metrics_url = urls.get("metrics", "")  # with [metrics] listen
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.client.close()

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.client.close()
        return code
