"""``ulak run`` wired end to end: the Redis stream ingress and its status events, beside the
HTTP API, against the simulator and the real Redis service."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.daemon_helpers import Daemon, Simulator, write_config

REDIS_URL = os.environ.get("ULAK_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} (set ULAK_REDIS_URL): {exc}")
    return client


def test_a_stream_entry_is_accepted_sent_and_reported_on_the_events_stream(
    tmp_path: Path,
) -> None:
    client = _redis()
    prefix = f"ulak:test:{uuid.uuid4().hex}"
    streams = {"stream": f"{prefix}:messages", "dead": f"{prefix}:dead", "events": f"{prefix}:ev"}
    extra = f"""
[redis]
url = "{REDIS_URL}"
stream = "{streams["stream"]}"
dead_letter_stream = "{streams["dead"]}"
events_stream = "{streams["events"]}"
block_ms = 100
"""
    sim = Simulator(tmp_path)
    try:
        daemon = Daemon(write_config(tmp_path, sim.port, extra=extra))
        try:
            body = {"to": "+905321234567", "text": "Kargonuz yolda.", "class": "transactional"}
            client.xadd(streams["stream"], {"tenant": "shop", "body": json.dumps(body)})
            client.xadd(streams["stream"], {"tenant": "shop", "body": "{not json"})
            deadline = time.monotonic() + 20
            statuses: set[str] = set()
            while time.monotonic() < deadline and "delivered" not in statuses:
                events: Any = client.xrange(streams["events"])
                statuses = {fields["status"] for _, fields in events}
                time.sleep(0.05)
            assert {"submitted", "delivered"} <= statuses
            while time.monotonic() < deadline and not sim.texts():
                time.sleep(0.05)  # the simulator writes its log every half second
            assert sim.texts()["Kargonuz yolda."] == 1
            dead_entries: Any = client.xrange(streams["dead"])
            [(_, dead)] = dead_entries
            assert "JSON" in dead["reason"] or "json" in dead["reason"]
            pending: Any = client.xpending(streams["stream"], "ulak")
            assert pending["pending"] == 0  # both entries acknowledged
        finally:
            assert daemon.terminate() == 0
    finally:
        sim.stop()
        client.delete(*streams.values())
