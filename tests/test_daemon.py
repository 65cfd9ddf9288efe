"""``ulak run`` wired end to end: the Redis stream ingress and its status events, beside the
HTTP API, against the simulator and the real Redis service; webhooks across a ``kill -9``."""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import threading
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
            # The metrics follow the ingress (refreshed every 2 s).
            seen: dict[str, float] = {}
            while time.monotonic() < deadline + 10 and seen.get("entries_dead", 0) < 1:
                text = daemon.client.get("/metrics").text
                seen = {
                    s.labels["event"]: s.value
                    for f in text_string_to_metric_families(text)
                    if f.name == "ulak_redis"
                    for s in f.samples
                    if s.name == "ulak_redis_total"
                }
                time.sleep(0.1)
            assert (seen.get("entries_accepted"), seen.get("entries_dead")) == (1, 1)
            assert seen.get("events_published", 0) >= 2  # submitted, delivered
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


class _Hooks(http.server.ThreadingHTTPServer):
    """A real webhook receiver in a thread: answers 503 (down) until ``up`` is set, then 204;
    records the event id of every request it accepted."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.accepted: list[tuple[str, bytes]] = []
        self.refused = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.up.is_set():
                    outer.accepted.append((self.headers["X-Ulak-Event-Id"], body))
                    self.send_response(204)
                else:
                    outer.refused += 1
                    self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def _kept_webhooks(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM webhooks")]


def _wait(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_webhooks_not_delivered_before_a_kill_9_are_delivered_after_the_restart(
    tmp_path: Path,
) -> None:
    hooks = _Hooks()
    tenant = f'callback_url = "{hooks.url()}"\nwebhook_secret = "{"s" * 32}"'
    extra = "[webhooks]\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.2\nmax_attempts = 100"
    sim = Simulator(tmp_path)
    try:
        config = write_config(tmp_path, sim.port, tenant_extra=tenant, extra=extra)
        daemon = Daemon(config)
        try:
            body = {"to": "+905321234567", "text": "Kargonuz yolda.", "class": "transactional"}
            response = daemon.client.post("/v1/messages", json=body)
            assert response.status_code == 202, response.text
            message_id = response.json()["id"]
            wanted = {f"{message_id}:submitted", f"{message_id}:delivered"}
            _wait(lambda: set(_kept_webhooks(tmp_path / "ulak.db")) >= wanted, "kept webhooks")
            _wait(lambda: hooks.refused >= 2, "refused attempts")
        finally:
            daemon.kill()
        hooks.up.set()  # the receiver is back; the daemon is not yet
        daemon = Daemon(config)
        try:
            _wait(lambda: {i for i, _ in hooks.accepted} >= wanted, "webhooks after the restart")
            _wait(lambda: not _kept_webhooks(tmp_path / "ulak.db"), "the store to forget them")
        finally:
            assert daemon.terminate() == 0
    finally:
        sim.stop()
        hooks.shutdown()
    statuses = [json.loads(b)["status"] for i, b in hooks.accepted if i in wanted]
    assert sorted(statuses) == ["delivered", "submitted"]
