"""The Redis stream ingress against the real Redis at ``ULAK_REDIS_URL`` and a real pipeline
on a durable SQLite store (no binds: nothing is sent, but "accepted" means committed).

Each test uses its own streams (``ulak:test:<uuid>:...``), deleted at teardown. An unreachable
Redis fails the test: nothing here is skipped. Tests wait for conditions (counts reached),
never for time.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
import trio
import trio_asyncio

from gateway.compose import MessageRequest
from gateway.config import TenantConfig, parse_config
from gateway.daemon import open_store
from gateway.pipeline import AcceptItem, Pipeline
from queues.model import MessageClass
from queues.redis_ingress import Acceptor, EventOutbox, IngressError, RedisIngress
from queues.store import Store, StoreError

REDIS_URL = os.environ.get("ULAK_REDIS_URL", "redis://127.0.0.1:6379/0")
TO = "+905321234567"


async def aio(coro: Any) -> Any:
    """Run one redis-py coroutine on the test's trio-asyncio loop."""
    return await trio_asyncio.current_loop.get().run_aio_coroutine(coro)


@dataclass
class Env:
    redis: aioredis.Redis
    prefix: str
    pipeline: Pipeline
    store: Store
    tenants: dict[str, TenantConfig]

    @property
    def stream(self) -> str:
        return f"{self.prefix}:messages"

    def names(self) -> dict[str, str]:
        return {
            "stream": self.stream,
            "dead": f"{self.prefix}:dead",
            "events": f"{self.prefix}:events",
            "group": "ulak",
        }

    async def open(self, consumer: str = "b", **kw: Any) -> RedisIngress:
        args: dict[str, Any] = {**self.names(), "block_ms": 20, "keep_ids": True, **kw}
        return await RedisIngress.open(REDIS_URL, consumer=consumer, **args)

    async def xadd(self, *entries: Mapping[str, str | bytes]) -> list[str]:
        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for fields in entries:
                    pipe.xadd(self.stream, dict(fields))  # type: ignore[arg-type]
                return await pipe.execute()

        return [i.decode() for i in await aio(run())]

    async def pending(self) -> int:
        info = await aio(self.redis.xpending(self.stream, "ulak"))
        return int(info["pending"])

    async def dead(self) -> list[dict[str, str]]:
        rows = await aio(self.redis.xrange(f"{self.prefix}:dead"))
        return [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in rows]


def entry(body: dict[str, Any] | str, tenant: str = "shop", **extra: str) -> dict[str, str]:
    return {
        "tenant": tenant,
        "body": body if isinstance(body, str) else json.dumps(body),
        **extra,
    }


def message(text: str, to: str = TO, klass: str = "transactional") -> dict[str, Any]:
    return {"to": to, "text": text, "class": klass}


def _tenant(name: str, digit: str) -> dict[str, Any]:
    return {
        "name": name,
        "api_key_sha256": digit * 64,
        "require_opt_in": False,
        "default_sender": name.upper(),
    }


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = parse_config(
        {
            "store": {"url": f"sqlite://{tmp_path / 'ulak.db'}"},
            "quiet_hours": {"enabled": False},
            "tenants": [_tenant("shop", "a"), _tenant("bank", "b")],
            "routes": [
                {
                    "name": "sim",
                    "prefixes": [""],
                    "host": "127.0.0.1",
                    "port": 2775,
                    "system_id": "ulak",
                    "password": "secret",
                }
            ],
        },
        {},
    )
    prefix = f"ulak:test:{uuid.uuid4().hex}"
    async with trio_asyncio.open_loop():
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await aio(client.ping())
        except (OSError, aioredis.ConnectionError) as exc:
            pytest.fail(
                f"Redis at ULAK_REDIS_URL={REDIS_URL!r} is not reachable: {exc!r}."
                " Start it (see /work/.library/env) or point ULAK_REDIS_URL at one."
            )
        try:
            async with open_store(settings) as store:
                pipeline = Pipeline(settings, store)
                await pipeline.restore()
                async with trio.open_nursery() as nursery:
                    await nursery.start(pipeline.run)
                    tenants = {t.name: t for t in settings.tenants}
                    yield Env(client, prefix, pipeline, store, tenants)
                    await pipeline.flush()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                keys = await aio(client.keys(f"{prefix}:*"))
                if keys:
                    await aio(client.delete(*keys))
                await aio(client.aclose())


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.005)


async def _run_ingress(
    env: Env, ingress: RedisIngress, acceptor: Acceptor | None, check: Callable[[], bool]
) -> None:
    """Run the ingress until ``check`` holds, then stop it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(ingress.run, acceptor or env.pipeline, env.tenants)
        await until(check)
        nursery.cancel_scope.cancel()


async def test_valid_entries_are_accepted_durably_then_acknowledged(env: Env) -> None:
    calls: list[tuple[str, int]] = []

    class Counting:
        async def accept(
            self,
            tenant: TenantConfig,
            requests: Sequence[MessageRequest],
            idempotency_keys: Sequence[str | None] | None = None,
        ) -> list[AcceptItem]:
            calls.append((tenant.name, len(requests)))
            return await env.pipeline.accept(tenant, requests, idempotency_keys)

    await env.xadd(
        entry(message("Siparişiniz kargoda 1")),
        entry(message("Hesabınıza giriş", klass="otp"), tenant="bank"),
        entry(message("Siparişiniz kargoda 2")),
    )
    ingress = await env.open()
    try:
        await _run_ingress(env, ingress, Counting(), lambda: ingress.counts.accepted == 3)
    finally:
        await ingress.aclose()
    assert await env.pending() == 0
    assert sorted(calls) == [("bank", 1), ("shop", 2)]  # one accept per tenant of the batch
    shop1, shop2, bank = ingress.counts.accepted_ids
    for tenant, message_id, text in [
        ("shop", shop1, "Siparişiniz kargoda 1"),
        ("shop", shop2, "Siparişiniz kargoda 2"),
        ("bank", bank, "Hesabınıza giriş"),
    ]:
        view = await env.store.get_message(tenant, message_id)
        assert view is not None and view.message.text == text
    assert ingress.counts.dead == 0


async def test_invalid_entries_go_to_the_dead_stream_with_the_reason(env: Env) -> None:
    valid = entry(message("ok"), idempotency_key="k1")
    ids = await env.xadd(
        entry("{not json"),
        entry(message("x"), tenant="nobody"),
        {"body": json.dumps(message("x"))},
        {"tenant": "shop"},
        entry({"to": TO, "text": "x", "class": "spam"}),
        entry({**message("x"), "extra": 1}),
        entry(message("x", to="+90")),
        entry(message("x", to="905321234567")),
        {"tenant": "shop", "body": b"\xff\xfe"},
        entry(message("x"), idempotency_key="k" * 201),
        valid,
    )
    ingress = await env.open()
    try:
        await _run_ingress(env, ingress, None, lambda: ingress.counts.dead == 10)
        # The same key with another body is a conflict: dead too.
        conflict_id = (await env.xadd(entry(message("other"), idempotency_key="k1")))[0]
        await _run_ingress(env, ingress, None, lambda: ingress.counts.dead == 11)
    finally:
        await ingress.aclose()
    assert ingress.counts.accepted == 1
    assert await env.pending() == 0
    letters = await env.dead()
    assert [d["id"] for d in letters] == [*ids[:10], conflict_id]
    reasons = [d["reason"] for d in letters]
    assert reasons[0].startswith("body: not JSON")
    assert reasons[1] == "tenant: no tenant named 'nobody'"
    assert reasons[2] == "tenant: missing field"
    assert reasons[3] == "body: missing field"
    assert reasons[4].startswith("body.class: Input should be")
    assert reasons[5].startswith("body.extra: Extra inputs are not permitted")
    assert reasons[6].startswith("to: ") and reasons[6].endswith("(invalid)")
    assert "E.164" in reasons[7]
    assert reasons[8].startswith("fields: not UTF-8")
    assert reasons[9] == "idempotency_key: must be 1-200 characters"
    assert reasons[10] == "Idempotency-Key: was used before with a different body (conflict)"
    # The original fields travel with the letter, so it can be fixed and appended again.
    assert letters[1]["tenant"] == "nobody"
    assert json.loads(letters[1]["body"]) == message("x")
    assert letters[10]["idempotency_key"] == "k1"


async def test_an_idempotency_key_replayed_through_the_stream_gives_the_same_id(
    env: Env,
) -> None:
    # Transactional: an OTP replay is refused by the OTP cooldown before the store sees its
    # key (Pipeline.accept checks policies first; reported, not this module's to change).
    body = message("Siparişiniz 77 kargoda")
    ingress = await env.open()
    try:
        await env.xadd(entry(body, idempotency_key="order-77"))
        await _run_ingress(env, ingress, None, lambda: ingress.counts.accepted == 1)
        await env.xadd(entry(body, idempotency_key="order-77"))
        await _run_ingress(env, ingress, None, lambda: ingress.counts.accepted == 2)
    finally:
        await ingress.aclose()
    first, second = ingress.counts.accepted_ids
    assert first == second
    assert env.pipeline.queues.pending() == 1  # queued once


async def test_entries_left_pending_by_a_dead_consumer_are_claimed_and_accepted(
    env: Env,
) -> None:
    ingress = await env.open(consumer="b")  # creates the group
    try:
        await env.xadd(entry(message("bir")), entry(message("iki")))
        # Consumer "a" reads both and dies before acknowledging them.
        read = await aio(env.redis.xreadgroup("ulak", "a", {env.stream: ">"}, count=10))
        assert len(read[0][1]) == 2
        assert await env.pending() == 2
        await ingress.aclose()
        ingress = await env.open(consumer="b", claim_idle_ms=0)
        await _run_ingress(env, ingress, None, lambda: ingress.counts.accepted == 2)
    finally:
        await ingress.aclose()
    assert ingress.counts.reclaimed == 2
    assert await env.pending() == 0
    texts = []
    for message_id in ingress.counts.accepted_ids:
        view = await env.store.get_message("shop", message_id)
        assert view is not None
        texts.append(view.message.text)
    assert texts == ["bir", "iki"]


async def test_a_redelivered_entry_whose_accept_committed_is_not_stored_twice(
    env: Env,
) -> None:
    """The crash window: committed, then killed before the XACK. The entry id is the key."""
    [entry_id] = await env.xadd(entry(message("bir kez")))
    ingress = await env.open(claim_idle_ms=0)
    try:
        read = await aio(env.redis.xreadgroup("ulak", "a", {env.stream: ">"}, count=10))
        assert len(read[0][1]) == 1
        # What consumer "a" committed before dying:
        [item] = await env.pipeline.accept(
            env.tenants["shop"],
            [MessageRequest(TO, "bir kez", MessageClass.TRANSACTIONAL)],
            [f"redis:{env.stream}:{entry_id}"],
        )
        assert item.result is not None
        await _run_ingress(env, ingress, None, lambda: ingress.counts.accepted == 1)
    finally:
        await ingress.aclose()
    assert ingress.counts.accepted_ids == [item.result.id]
    assert env.pipeline.queues.pending() == 1


class Flaky:
    """Fails the first ``failures`` accepts with a StoreError, then accepts through ``inner``."""

    def __init__(self, inner: Pipeline, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.seen: list[list[str]] = []

    async def accept(
        self,
        tenant: TenantConfig,
        requests: Sequence[MessageRequest],
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[AcceptItem]:
        self.seen.append([r.text for r in requests])
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("the store is closed")
        return await self.inner.accept(tenant, requests, idempotency_keys)


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_the_next_batch_is_read_while_one_commits(env: Env, in_flight: int) -> None:
    """With room for two batches, a batch whose accept is slow does not hold back the next
    one (it is read, accepted and acknowledged meanwhile); with room for one, it does."""
    gate = trio.Event()
    texts: list[str] = []

    class SlowFirst:
        async def accept(
            self,
            tenant: TenantConfig,
            requests: Sequence[MessageRequest],
            idempotency_keys: Sequence[str | None] | None = None,
        ) -> list[AcceptItem]:
            texts.append(requests[0].text)
            if requests[0].text == "bir":
                await gate.wait()
            return await env.pipeline.accept(tenant, requests, idempotency_keys)

    await env.xadd(entry(message("bir")), entry(message("iki")))
    ingress = await env.open(batch=1, in_flight=in_flight)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ingress.run, SlowFirst(), env.tenants)
            if in_flight == 2:
                await until(lambda: ingress.counts.accepted == 1)
                assert texts == ["bir", "iki"]
                assert await env.pending() == 1  # "bir" waits for its commit, unacknowledged
            else:
                await until(lambda: texts == ["bir"])
                await trio.sleep(0.1)
                assert texts == ["bir"] and ingress.counts.accepted == 0
            gate.set()
            await until(lambda: ingress.counts.accepted == 2)
            nursery.cancel_scope.cancel()
    finally:
        await ingress.aclose()
    assert await env.pending() == 0


async def test_entries_are_not_acknowledged_when_the_accept_fails_and_come_again(
    env: Env,
) -> None:
    await env.xadd(entry(message("bir")), entry(message("iki")))
    flaky = Flaky(env.pipeline, failures=1)
    ingress = await env.open(claim_idle_ms=0, claim_every_s=0)
    try:
        await _run_ingress(env, ingress, flaky, lambda: ingress.counts.accepted == 2)
    finally:
        await ingress.aclose()
    assert flaky.seen == [["bir", "iki"], ["bir", "iki"]]  # refused, then delivered again
    assert ingress.counts.failed == 2
    assert await env.pending() == 0
    for message_id in ingress.counts.accepted_ids:
        assert await env.store.get_message("shop", message_id) is not None


async def test_a_crash_or_cancel_during_accept_leaves_the_entries_pending(env: Env) -> None:
    await env.xadd(entry(message("bir")), entry(message("iki")))

    class Broken:
        async def accept(self, *args: Any) -> list[AcceptItem]:
            raise RuntimeError("bug")

    entered = trio.Event()

    class Stuck:
        async def accept(self, *args: Any) -> list[AcceptItem]:
            entered.set()
            await trio.sleep_forever()
            raise AssertionError

    ingress = await env.open(consumer="a")
    try:
        with pytest.raises(RuntimeError, match="bug"):
            await ingress.run(Broken(), env.tenants)
        assert await env.pending() == 2
    finally:
        await ingress.aclose()
    # Another consumer reads a new entry and is cancelled (shut down) in the middle of its
    # accept: the entry stays pending ("a"'s are not idle long enough to be claimed by it).
    await env.xadd(entry(message("üç")))
    ingress = await env.open(consumer="c")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ingress.run, Stuck(), env.tenants)
            await entered.wait()
            nursery.cancel_scope.cancel()
        assert await env.pending() == 3
    finally:
        await ingress.aclose()
    ingress = await env.open(consumer="b", claim_idle_ms=0)
    try:
        await _run_ingress(env, ingress, None, lambda: ingress.counts.accepted == 3)
    finally:
        await ingress.aclose()
    assert await env.pending() == 0


async def test_a_lost_connection_or_a_vanished_group_is_retried(env: Env) -> None:
    async def kill_ingress_connections() -> None:
        # Killed while blocked in XREADGROUP (blocks of 30 s here, so still blocked when the
        # kill lands), the loss must surface to the ingress's own retry, which re-reads its
        # pending entries; an idle pooled connection would be replaced silently on next use.
        with trio.fail_after(10):
            while True:
                clients = await aio(env.redis.client_list())
                ours = [c for c in clients if c.get("name") == "ulak-ingress:b"]
                if any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in ours):
                    break
                await trio.sleep(0.005)
        for client in ours:
            await aio(env.redis.client_kill_filter(_id=client["id"]))

    await env.xadd(entry(message("bir")))
    ingress = await env.open(consumer="b", block_ms=30_000)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ingress.run, env.pipeline, env.tenants)
            await until(lambda: ingress.counts.accepted == 1)
            await kill_ingress_connections()
            await env.xadd(entry(message("iki")))
            await until(lambda: ingress.counts.accepted == 2)
            # Redis restarted without persistence would lose the group: it is made again
            # (from the stream's start), and the entries already accepted replay by their
            # entry-id keys instead of being stored twice.
            await aio(env.redis.xgroup_destroy(env.stream, "ulak"))
            await env.xadd(entry(message("üç")))
            await until(lambda: ingress.counts.accepted == 5)
            nursery.cancel_scope.cancel()
    finally:
        await ingress.aclose()
    assert ingress.counts.redis_errors >= 2
    assert len(set(ingress.counts.accepted_ids)) == 3
    assert env.pipeline.queues.pending() == 3
    assert await env.pending() == 0


async def test_publish_events_appends_in_order(env: Env) -> None:
    ingress = await env.open(events_maxlen=1000)
    try:
        events = [{"id": f"m{n}", "status": "submitted"} for n in range(3)]
        await ingress.publish_events(events)
        await ingress.publish_events([])
    finally:
        await ingress.aclose()
    rows = await aio(env.redis.xrange(f"{env.prefix}:events"))
    assert [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows] == events


async def test_open_needs_the_trio_asyncio_loop_and_a_reachable_server(env: Env) -> None:
    with pytest.raises(IngressError, match=r"Redis at redis://127\.0\.0\.1:1/0"):
        await RedisIngress.open("redis://127.0.0.1:1/0", consumer="x")
    token = trio_asyncio.current_loop.set(None)
    try:
        with pytest.raises(IngressError, match=r"trio_asyncio\.open_loop"):
            await RedisIngress.open(REDIS_URL, consumer="x")
    finally:
        trio_asyncio.current_loop.reset(token)


class _Relay:
    """A TCP relay to the real Redis that can be cut and put back (Redis restarting)."""

    def __init__(self, target: str) -> None:
        url = urllib.parse.urlsplit(target)
        self._target = (url.hostname or "127.0.0.1", url.port or 6379)
        self._path = url.path
        self.port = 0
        self._scope = trio.CancelScope()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self._path}"

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for data in source:
                await sink.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.send_eof()

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*self._target)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, server)
            nursery.start_soon(self._pipe, server, client)

    async def run(
        self,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self._scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    def cut(self) -> None:
        """Close the listener and every relayed connection."""
        self._scope.cancel()
        self._scope = trio.CancelScope()


async def test_status_events_wait_while_redis_is_away_and_go_in_order(env: Env) -> None:
    relay = _Relay(REDIS_URL)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        names: dict[str, Any] = env.names()
        ingress = await RedisIngress.open(relay.url, consumer="b", **names)
        outbox = EventOutbox(ingress)
        try:
            nursery.start_soon(outbox.run)
            for n in range(3):
                outbox.add({"id": f"m{n}", "status": "submitted"})
            await until(lambda: outbox.published == 3)
            relay.cut()  # Redis is gone: the events wait
            for n in range(3, 6):
                outbox.add({"id": f"m{n}", "status": "delivered"})
            await until(lambda: outbox.retries >= 1)
            assert outbox.published == 3 and outbox.waiting() == 3
            await nursery.start(relay.run)  # back, on the same port
            await until(lambda: outbox.published == 6)
        finally:
            await ingress.aclose()
            nursery.cancel_scope.cancel()
    rows = await aio(env.redis.xrange(f"{env.prefix}:events"))
    ids = [fields[b"id"].decode() for _, fields in rows]
    assert ids == [f"m{n}" for n in range(6)]
    assert (outbox.dropped, outbox.failed, outbox.waiting()) == (0, 0, 0)


def test_the_outbox_keeps_the_newest_events_up_to_its_limit() -> None:
    outbox = EventOutbox(cast(RedisIngress, None), limit=3)
    for n in range(5):
        outbox.add({"id": f"m{n}"})
    assert (outbox.waiting(), outbox.dropped) == (3, 2)
