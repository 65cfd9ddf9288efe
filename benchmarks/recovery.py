"""``ulak bench recovery``: a restart after ``kill -9`` with a backlog queued (DESIGN §5: sending
resumes within 3 s, and nothing is lost).

1. **Fill.** The simulator (its submit log on, receipts on) and ``ulak run`` on durable SQLite,
   the route held to ``fill_tps`` per bind so that a backlog builds; ``messages`` messages go in
   through ``POST /v1/messages/batch``, 1000 per request. Then the daemon is killed (SIGKILL),
   with its windows full.
2. **Restart.** ``ulak run`` again on the same store, the limit lifted. ``resume_s`` is from the
   restart (the process spawned) to the first submit_sm the simulator receives from it — the
   interpreter's start, the store opened and the queues rebuilt from it, the binds made;
   ``ready_s`` is to its HTTP listener. The backlog then drains, and every accepted message is
   looked up in the simulator's log: ``lost`` (accepted, never received) must be 0, and
   ``duplicates`` (received twice) at most the windows in flight at the kill.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import httpx

from benchmarks._daemonproc import API_KEY, daemon_config, start_daemon, stop_daemon
from benchmarks._simproc import start_simulator, stop_simulator

__all__ = ["run"]

_BATCH = 1000
_DRAIN_TIMEOUT_S = 900.0


class _SubmitLog:
    """The simulator's JSON-lines submit log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[str] | None = None
        self._tail = ""
        self.texts: Counter[str] = Counter()
        self.times: list[float] = []

    def read(self) -> None:
        """Take in the whole lines appended since the last call."""
        if self._file is None:
            if not self._path.exists():
                return
            self._file = self._path.open(encoding="utf-8")
        chunk = self._tail + self._file.read()
        lines = chunk.split("\n")
        self._tail = lines.pop()
        for line in lines:
            record = json.loads(line)
            self.texts[bytes.fromhex(record["short_message"]).decode("ascii", "replace")] += 1
            self.times.append(record["time"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _fill(url: str, messages: int) -> list[str]:
    """POST ``messages`` in batches; return the texts of those accepted (202 with an id)."""
    accepted: list[str] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for first in range(0, messages, _BATCH):
            texts = [
                f"Recovery bench {n:07d}: your parcel is out for delivery."
                for n in range(first, min(messages, first + _BATCH))
            ]
            body = {
                "messages": [
                    {"to": f"+90532{n % 10_000_000:07d}", "text": t, "class": "transactional"}
                    for n, t in enumerate(texts, start=first)
                ]
            }
            response = client.post("/v1/messages/batch", json=body)
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/messages/batch: {response.status_code}")
            results = response.json()["results"]
            accepted.extend(t for t, r in zip(texts, results, strict=True) if "id" in r)
    return accepted


def _wait(condition: Any, log: _SubmitLog, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        log.read()
        if condition():
            return
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the simulator's log")
        time.sleep(0.01)


def run(
    *,
    messages: int = 100_000,
    binds: int = 2,
    window: int = 100,
    rtt_ms: float = 5.0,
    fill_tps: float = 25.0,
    as_json: bool = False,
) -> dict[str, Any]:
    """Fill, kill, restart, drain; print the figures (and one JSON line with ``as_json``)."""
    folder = Path(tempfile.mkdtemp(prefix="ulak-bench-recovery-"))
    submits = _SubmitLog(folder / "submits.jsonl")
    sim_args = ["--rtt-ms", str(rtt_ms), "--max-binds", str(2 * binds)]
    simulator, port = start_simulator([*sim_args, "--log", str(folder / "submits.jsonl")])
    daemon = None
    try:
        slow = f"tps = {fill_tps:g}"
        config = daemon_config(folder, port, binds=binds, window=window, route_extra=slow)
        daemon, urls = start_daemon(config, folder / "daemon.log")
        t0 = time.perf_counter()
        accepted = _fill(urls["http"], messages)
        fill_s = time.perf_counter() - t0
        daemon.send_signal(signal.SIGKILL)
        daemon.communicate()
        daemon = None
        time.sleep(1.0)  # the simulator's log is flushed on a timer
        submits.read()
        sent_before = sum(1 for t in accepted if submits.texts[t])
        logged_before = len(submits.times)

        config = daemon_config(folder, port, binds=binds, window=window)
        restarted_at = time.time()
        t0 = time.perf_counter()
        daemon, urls = start_daemon(config, folder / "daemon.log")
        ready_s = time.perf_counter() - t0
        _wait(lambda: len(submits.times) > logged_before, submits, 60.0)
        resume_s = min(submits.times[logged_before:]) - restarted_at
        t1 = time.perf_counter()
        # Every text is distinct and every logged one was accepted: done when all are seen
        # (O(1) per look, so the waiting does not take CPU from the daemon).
        _wait(lambda: len(submits.texts) >= len(accepted), submits, _DRAIN_TIMEOUT_S)
        drain_s = time.perf_counter() - t1
        stop_daemon(daemon)
        daemon = None
        submits.read()
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.communicate()
        stop_simulator(simulator)
        submits.close()
        shutil.rmtree(folder, ignore_errors=True)
    queued = len(accepted) - sent_before
    result: dict[str, Any] = {
        "messages": messages,
        "accepted": len(accepted),
        "queued_at_kill": queued,
        "fill_accept_per_s": round(len(accepted) / fill_s, 1),
        "ready_s": round(ready_s, 3),
        "resume_s": round(resume_s, 3),
        "drain_msgs_per_s": round(queued / drain_s, 1),
        "lost": sum(1 for t in accepted if not submits.texts[t]),
        "duplicates": sum(submits.texts[t] - 1 for t in accepted if submits.texts[t] > 1),
        "windows_in_flight": binds * window,
        "mode": f"subprocess daemon, SQLite (durable), receipts on, {binds} binds x {window}",
    }
    print(
        f"recovery: {result['accepted']:,} accepted ({result['fill_accept_per_s']:,.0f}/s),"
        f" {queued:,} queued at kill -9"
    )
    print(
        f"  restart -> first submit_sm  {result['resume_s']:.2f} s (target <= 3 s);"
        f" -> HTTP listening {result['ready_s']:.2f} s"
    )
    print(
        f"  drain  {result['drain_msgs_per_s']:,.0f} msg/s; lost {result['lost']},"
        f" sent twice {result['duplicates']} (windows in flight {binds * window})"
    )
    if as_json:
        print(json.dumps(result), flush=True)
    return result
