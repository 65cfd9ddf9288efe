"""``ulak run`` wired end to end: the Redis stream ingress and its status events, beside the
HTTP API, against the simulator and the real Redis service."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

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


def test_metrics_on_their_own_listener_and_path(tmp_path: Path) -> None:
    extra = """
[metrics]
listen = "127.0.0.1:0"
path = "/prometheus"
"""
    sim = Simulator(tmp_path)
    try:
        daemon = Daemon(write_config(tmp_path, sim.port, extra=extra))
        try:
            assert daemon.metrics_url.endswith("/prometheus")
            response = httpx.get(daemon.metrics_url, timeout=10)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            names = {f.name for f in text_string_to_metric_families(response.text)}
            assert {"ulak_bind_up", "ulak_messages"} <= names
            other = httpx.get(daemon.metrics_url.replace("/prometheus", "/metrics"), timeout=10)
            assert other.status_code == 404
            assert other.headers["content-type"] == "application/problem+json"
            # The API's own listener no longer serves them.
            api = daemon.client.get("/metrics")
            assert api.status_code == 404 and "listen" in api.json()["detail"]
        finally:
            assert daemon.terminate() == 0
    finally:
        sim.stop()
