"""Webhook delivery against a real HTTP receiver on 127.0.0.1 (trio + h11, no mocks)."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import WebhooksConfig
from gateway.webhooks import WebhookSender, WebhookStats, sign, verify_signature
from queues.sqlite import SQLiteStore
from queues.store import StoredWebhook

T0 = 1_700_000_000.0
SECRET = b"s3cret-key"
TEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Recorded:
    target: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A tiny HTTP/1.1 server: records every request, answers ``fail_status`` to the first
    ``fail_first`` requests of each path (``fail_first=-1``: always), and holds every answer
    on a path in ``hold`` until :attr:`release` is set."""

    def __init__(self, fail_first: int = 0, fail_status: int = 500) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.ok_status = 204
        self.answer_body = b""
        self.hold: set[str] = set()
        self.release = trio.Event()
        self.requests: list[Recorded] = []
        self.port = 0
        self._counts: dict[str, int] = {}
        self._changed = trio.Event()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.target == path]

    async def wait_requests(self, n: int, path: str | None = None) -> None:
        while len(self.requests if path is None else self.on(path)) < n:
            await self._changed.wait()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        # The client may go away mid-request (a timed-out or cancelled attempt).
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError
        ):
            await self._converse(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request = await self._read_request(conn, stream)
                if request is None:
                    return
                target, headers, body = request
                self.requests.append(Recorded(target, headers, body))
                event, self._changed = self._changed, trio.Event()
                event.set()
                count = self._counts[target] = self._counts.get(target, 0) + 1
                if target in self.hold:
                    await self.release.wait()
                failing = self.fail_first < 0 or count <= self.fail_first
                status = self.fail_status if failing else self.ok_status
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=[])))
                if self.answer_body and status != 204:
                    await stream.send_all(conn.send(h11.Data(data=self.answer_body)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[str, dict[str, str], bytes] | None:
        target, headers, body = "", {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                target = event.target.decode()
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return target, headers, body
            elif isinstance(event, h11.ConnectionClosed):
                return None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(r.serve)
        yield r
        r.release.set()
        nursery.cancel_scope.cancel()


def make_config(**overrides: Any) -> WebhooksConfig:
    values: dict[str, Any] = {
        "timeout_s": 5.0,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        "concurrency": 4,
        "queue_size": 100,
    }
    values.update(overrides)
    return WebhooksConfig(**values)


def make_sender(config: WebhooksConfig) -> WebhookSender:
    return WebhookSender(config, wall_clock=lambda: T0, rng=random.Random(7))


async def wait_stats(sender: WebhookSender, predicate: Any) -> WebhookStats:
    """Poll the sender's counters (short real sleeps: the I/O here is real)."""
    while not predicate(sender.stats()):
        await trio.sleep(0.005)
    return sender.stats()


async def test_delivery_is_signed_compact_json(receiver: Receiver) -> None:
    sender = make_sender(make_config())
    event = {"status": "delivered", "id": "m1", "parts": [1, 2], "text": "Günaydın"}
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            assert sender.submit(receiver.url(), SECRET, event)
            stats = await wait_stats(sender, lambda s: s.delivered == 1)
            nursery.cancel_scope.cancel()
    assert stats == WebhookStats(delivered=1, retried=0, failed=0, dropped=0, pending=0)
    (req,) = receiver.requests
    assert req.body == json.dumps(
        event, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    ).encode("utf-8")
    assert json.loads(req.body) == event
    assert req.headers["content-type"] == "application/json"
    assert len(req.headers["x-ulak-event-id"]) == 32
    header = req.headers["x-ulak-signature"]
    assert header.startswith(f"t={int(T0)},v1=")
    assert verify_signature(SECRET, header, req.body, now=T0 + 10)
    assert not verify_signature(SECRET, header, req.body + b" ", now=T0)
    assert not verify_signature(b"other", header, req.body, now=T0)
    assert not verify_signature(SECRET, header, req.body, now=T0 + 301)  # a replay, later
    assert not verify_signature(SECRET, header, req.body, now=T0 - 301)


async def test_custom_signature_header_and_given_event_id(receiver: Receiver) -> None:
    sender = make_sender(make_config(signature_header="X-Hook-Sig"))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(receiver.url(), SECRET, {"a": 1}, event_id="m1:delivered")
            await wait_stats(sender, lambda s: s.delivered == 1)
            nursery.cancel_scope.cancel()
    (req,) = receiver.requests
    assert verify_signature(SECRET, req.headers["x-hook-sig"], req.body, now=T0)
    assert req.headers["x-ulak-event-id"] == "m1:delivered"


async def test_retries_then_succeeds_with_the_same_event_id(receiver: Receiver) -> None:
    receiver.fail_first = 2
    sender = make_sender(make_config(max_attempts=5))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(receiver.url(), SECRET, {"n": 1})
            stats = await wait_stats(sender, lambda s: s.delivered == 1)
            nursery.cancel_scope.cancel()
    assert (stats.retried, stats.failed, stats.pending) == (2, 0, 0)
    assert len(receiver.requests) == 3
    assert len({r.headers["x-ulak-event-id"] for r in receiver.requests}) == 1
    for r in receiver.requests:
        assert verify_signature(SECRET, r.headers["x-ulak-signature"], r.body, now=T0)


async def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.fail_first = -1
    receiver.fail_status = 503
    sender = make_sender(make_config(max_attempts=3))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(receiver.url(), SECRET, {"n": 1})
            stats = await wait_stats(sender, lambda s: s.failed == 1)
            nursery.cancel_scope.cancel()
    assert stats == WebhookStats(delivered=0, retried=2, failed=1, dropped=0, pending=0)
    assert len(receiver.requests) == 3


async def test_connection_refused_is_retried_then_given_up() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nobody listens there any more
    sender = make_sender(make_config(max_attempts=2))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(f"http://127.0.0.1:{port}/x", SECRET, {})
            stats = await wait_stats(sender, lambda s: s.failed == 1)
            nursery.cancel_scope.cancel()
    assert (stats.retried, stats.delivered) == (1, 0)


async def test_timeout_counts_as_a_failed_attempt(receiver: Receiver) -> None:
    receiver.hold.add("/slow")
    sender = make_sender(make_config(timeout_s=0.05, max_attempts=2))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(receiver.url("/slow"), SECRET, {})
            stats = await wait_stats(sender, lambda s: s.failed == 1)
            nursery.cancel_scope.cancel()
    assert stats.retried == 1
    assert len(receiver.on("/slow")) == 2


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "", "http://", "http://[::1", "not a url"])
async def test_unusable_url_is_given_up_at_once(url: str) -> None:
    sender = make_sender(make_config())
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(url, SECRET, {})
            stats = await wait_stats(sender, lambda s: s.failed == 1)
            nursery.cancel_scope.cancel()
    assert stats.retried == 0


async def test_large_answer_body_is_not_buffered(receiver: Receiver) -> None:
    receiver.ok_status = 200
    receiver.answer_body = b"x" * 1_000_000
    sender = make_sender(make_config())
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            for n in range(3):
                sender.submit(receiver.url(), SECRET, {"n": n})
            stats = await wait_stats(sender, lambda s: s.delivered == 3)
            nursery.cancel_scope.cancel()
    assert stats.failed == stats.retried == 0


async def test_events_not_delivered_before_a_stop_are_sent_after_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The receiver is down: the events are kept in the store; a new sender (a new process)
    sends them, with the same ids and bodies, signed with the tenant's secret, and the store
    forgets them once delivered. One delivered at once never reaches the store."""
    receiver.fail_first = -1
    config = make_config(max_attempts=100, backoff_initial_s=0.05, backoff_max_s=0.05)
    store = await SQLiteStore.open(str(tmp_path / "ulak.db"))
    try:
        sender = WebhookSender(config, journal=store, journal_gather_s=0.01)
        with trio.fail_after(TEST_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.run)
                for n in range(3):
                    body = {"id": f"m{n}", "status": "delivered"}
                    sender.submit(
                        receiver.url(), SECRET, body, event_id=f"m{n}:delivered", tenant="shop"
                    )
                while len(await store.pending_webhooks()) < 3:
                    await trio.sleep(0.01)
                await receiver.wait_requests(3)
                nursery.cancel_scope.cancel()  # the process ends with them undelivered
        kept = await store.pending_webhooks()
        assert [h.event_id for h in kept] == [f"m{n}:delivered" for n in range(3)]
        assert {h.tenant for h in kept} == {"shop"}
        assert all(SECRET not in h.body for h in kept)

        receiver.fail_first = 0
        receiver.requests.clear()
        later = WebhookSender(config, journal=store, journal_gather_s=0.01)
        assert later.restore(kept, {"shop": SECRET}) == 3
        with trio.fail_after(TEST_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(later.run)
                await wait_stats(later, lambda s: s.delivered == 3)
                while await store.pending_webhooks():
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        # An event delivered before the journal's round (here a long one, so however slow
        # this machine) is never written, not even by the flush at the stop.
        commits = store.commits
        quick = WebhookSender(config, journal=store, journal_gather_s=3600)
        with trio.fail_after(TEST_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(quick.run)
                await trio.testing.wait_all_tasks_blocked()  # the journal waits for work
                quick.submit(receiver.url(), SECRET, {"id": "m9"}, event_id="m9:x", tenant="shop")
                await wait_stats(quick, lambda s: s.delivered == 1)
                nursery.cancel_scope.cancel()
        assert store.commits == commits
        assert await store.pending_webhooks() == []
    finally:
        await store.aclose()
    delivered = {r.headers["x-ulak-event-id"]: r for r in receiver.requests}
    assert set(delivered) == {"m0:delivered", "m1:delivered", "m2:delivered", "m9:x"}
    for hook in kept:
        request = delivered[hook.event_id]
        assert request.body == hook.body
        signature = request.headers["x-ulak-signature"]
        assert verify_signature(SECRET, signature, request.body, now=time.time())


async def test_kept_events_of_a_tenant_without_a_secret_now_are_dropped(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "ulak.db"))
    try:
        await store.put_webhooks([StoredWebhook("m1:x", "gone", "http://127.0.0.1:9/", b"{}", T0)])
        sender = WebhookSender(make_config(), journal=store, journal_gather_s=0.01)
        assert sender.restore(await store.pending_webhooks(), {"shop": SECRET}) == 0
        with trio.fail_after(TEST_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.run)
                while await store.pending_webhooks():
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


def test_full_queue_drops_and_counts() -> None:
    sender = make_sender(make_config(queue_size=2))
    assert sender.submit("http://127.0.0.1:1/", SECRET, {"n": 1})
    assert sender.submit("http://127.0.0.1:1/", SECRET, {"n": 2})
    assert not sender.submit("http://127.0.0.1:1/", SECRET, {"n": 3})
    assert not sender.submit("http://127.0.0.1:1/", SECRET, {"n": 4})
    assert sender.stats() == WebhookStats(delivered=0, retried=0, failed=0, dropped=2, pending=2)


def test_unserialisable_event_is_the_callers_error() -> None:
    sender = make_sender(make_config())
    with pytest.raises(TypeError):
        sender.submit("http://127.0.0.1:1/", SECRET, {"when": object()})
    assert sender.stats().pending == 0


async def test_slow_receiver_blocks_neither_submit_nor_other_endpoints(
    receiver: Receiver,
) -> None:
    receiver.hold.add("/slow")
    sender = make_sender(make_config(concurrency=2, queue_size=10))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            assert sender.submit(receiver.url("/slow"), SECRET, {"n": 0})
            await receiver.wait_requests(1, "/slow")
            # One worker is stuck on /slow; submit still returns at once, and the other
            # worker keeps delivering to a healthy endpoint.
            for n in range(5):
                assert sender.submit(receiver.url("/fast"), SECRET, {"n": n})
            await wait_stats(sender, lambda s: s.delivered == 5)
            assert sender.stats().pending == 1
            # The queue bound counts the held event: 1 pending, 9 more fit, then drops.
            accepted = [sender.submit(receiver.url("/slow"), SECRET, {}) for _ in range(10)]
            assert accepted.count(True) == 9
            assert sender.stats().dropped == 1
            receiver.release.set()
            stats = await wait_stats(sender, lambda s: s.pending == 0)
            nursery.cancel_scope.cancel()
    assert stats.delivered == 15


async def test_backoff_waits_in_the_heap_not_in_a_worker(receiver: Receiver) -> None:
    # A single worker; the failing endpoint backs off for a minute. If the wait happened in the
    # worker, the second event could not be delivered.
    receiver.fail_first = -1
    sender = make_sender(
        make_config(concurrency=1, backoff_initial_s=60.0, backoff_max_s=60.0, max_attempts=3)
    )
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            sender.submit(receiver.url("/down"), SECRET, {})
            await wait_stats(sender, lambda s: s.retried == 1)
            receiver.fail_first = 1  # /up succeeds at its second request: fails once, too
            sender.submit(receiver.url("/up"), SECRET, {})
            stats = await wait_stats(sender, lambda s: s.retried == 2)
            nursery.cancel_scope.cancel()
    assert len(receiver.on("/down")) == 1
    assert stats.pending == 2  # both deferred, the single worker free


async def test_deferred_events_come_back_in_due_order(receiver: Receiver) -> None:
    receiver.fail_first = 1  # each path fails once, then succeeds
    sender = make_sender(make_config(concurrency=1, max_attempts=2))
    paths = [f"/p{i}" for i in range(5)]
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            for path in paths:
                sender.submit(receiver.url(path), SECRET, {"path": path})
            stats = await wait_stats(sender, lambda s: s.pending == 0)
            nursery.cancel_scope.cancel()
    assert stats == WebhookStats(delivered=5, retried=5, failed=0, dropped=0, pending=0)
    assert all(len(receiver.on(p)) == 2 for p in paths)


@given(
    secret=st.binary(min_size=1, max_size=64),
    body=st.binary(max_size=256),
    t=st.integers(min_value=0, max_value=2**33),
    skew=st.floats(min_value=-300, max_value=300),
)
def test_sign_then_verify(secret: bytes, body: bytes, t: int, skew: float) -> None:
    header = sign(secret, body, t)
    assert verify_signature(secret, header, body, now=t + skew)
    assert not verify_signature(secret + b"x", header, body, now=t)
    assert not verify_signature(secret, header, body, now=t + 300.5)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "v1=abc",
        "t=1700000000",
        "t=abc,v1=00",
        "t=1700000000,t=1700000000,v1=00",
        "garbage",
        "t=-5,v1=00",
    ],
)
def test_malformed_headers_do_not_verify(header: str) -> None:
    assert not verify_signature(SECRET, header, b"{}", now=T0)


def test_any_v1_may_match_for_secret_rotation() -> None:
    new = sign(b"new", b"{}", int(T0)).split(",")[1]
    old = sign(b"old", b"{}", int(T0))
    assert verify_signature(b"new", f"{old},{new}", b"{}", now=T0)
