"""Crash safety, end to end: the daemon as a subprocess on SQLite against the simulator.

Load goes in through the HTTP API from a thread while the main thread kills the daemon
(``kill -9``) or stops it (SIGTERM) mid-load. After a restart, every message the API accepted
(answered 202) must reach the simulator — none lost — and duplicates must stay within what was
in flight: after ``kill -9``, the binds' windows; after SIGTERM, none.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_helpers import Daemon, Simulator, write_config

BINDS = 2
WINDOW = 10


def _load(daemon: Daemon, accepted: list[str], stop: threading.Event) -> None:
    """POST batches of 50 until told to stop or the daemon goes away; keep what got a 202."""
    n = 0
    while not stop.is_set():
        texts = [f"crash-test message {n + i:06d}" for i in range(50)]
        n += 50
        body = {
            "messages": [
                {"to": "+905321234567", "text": t, "class": "transactional"} for t in texts
            ]
        }
        try:
            response = daemon.client.post("/v1/messages/batch", json=body)
        except (httpx.HTTPError, RuntimeError):
            return
        if response.status_code != 202:
            return
        results = response.json()["results"]
        accepted.extend(t for t, r in zip(texts, results, strict=True) if "id" in r)


def _wait_all_sent(sim: Simulator, accepted: list[str], timeout: float = 60.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = sim.texts()
        missing = [t for t in accepted if counts[t] == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"{len(missing)} accepted messages never reached the SMSC: {missing[:3]}"
    return {t: counts[t] for t in accepted}


def _check_metrics(daemon: Daemon) -> None:
    """The restarted daemon counted what it sent, by class and status, at /metrics."""
    text = daemon.client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("ulak_messages_total", (("class", "transactional"), ("status", "submitted")))
    assert samples.get(key, 0) > 0
    assert samples[("ulak_bind_up", (("bind", "sim#1"), ("route", "sim")))] in (0.0, 1.0)


def _run(tmp_path: Path, crash: str) -> tuple[list[str], dict[str, int]]:
    sim = Simulator(tmp_path, "--rtt-ms", "20")
    try:
        config = write_config(tmp_path, sim.port, binds=BINDS, window=WINDOW)
        daemon = Daemon(config)
        accepted: list[str] = []
        stop = threading.Event()
        loader = threading.Thread(target=_load, args=(daemon, accepted, stop))
        loader.start()
        while len(accepted) < 1500:
            time.sleep(0.01)
            assert loader.is_alive(), "the load stopped before the crash"
        if crash == "kill":
            daemon.kill()
        else:
            assert daemon.terminate() == 0
        stop.set()
        loader.join()
        assert len(accepted) >= 1500
        before = sim.texts()
        sent_before = sum(before[t] > 0 for t in accepted)
        print(f"{crash}: accepted {len(accepted)}, sent before the crash {sent_before}")
        assert sent_before < len(accepted), "nothing was left to resume"
        restarted = Daemon(config)
        try:
            counts = _wait_all_sent(sim, accepted)
            _check_metrics(restarted)
        finally:
            assert restarted.terminate() == 0
        return accepted, counts
    finally:
        sim.stop()


def test_kill_9_mid_load_loses_nothing_and_duplicates_stay_within_the_windows(
    tmp_path: Path,
) -> None:
    _, counts = _run(tmp_path, "kill")
    duplicates = sum(n - 1 for n in counts.values())
    print(f"kill: {duplicates} duplicates")
    assert duplicates <= BINDS * WINDOW, f"{duplicates} duplicates"


def test_sigterm_mid_load_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    _, counts = _run(tmp_path, "term")
    twice = {t: n for t, n in counts.items() if n > 1}
    assert not twice, f"sent more than once after a clean stop: {list(twice.items())[:3]}"
