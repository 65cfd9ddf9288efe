"""The Redis stream ingress (DESIGN §4): ``XADD ulak:messages * tenant T body <json>``.

Upstream apps append entries to a stream; every gateway instance reads it as one consumer of
the group ``ulak``, so the group spreads the entries across instances (DESIGN §3). Each entry
has the fields:

- ``tenant``: the name of a configured tenant;
- ``body``: the JSON of ``POST /v1/messages``, validated by the same pydantic model as the HTTP
  API (:class:`gateway.api_models.MessageBody`), so both accept exactly the same shape;
- ``idempotency_key`` (optional): as the HTTP ``Idempotency-Key`` header.

Other fields are ignored (producers may add their own tracing fields).

**Accept means durable.** An entry is acknowledged (XACK) only after the pipeline's store has
committed its message, or after the entry has been copied to the dead-letter stream with the
reason it was refused. The dead-letter XADDs and the XACK of a batch go in one MULTI/EXEC
pipeline: one round trip, and never an ACK without its dead letter. An entry read but not yet
acknowledged when the process dies (or when the accept fails, or when the task is cancelled)
stays in the group's pending list; ``XAUTOCLAIM`` hands it to a live consumer once it has been
idle ``claim_idle_ms``, at start and periodically after, so nothing read is ever lost.

A redelivered entry must not become a second message: an entry without its own
``idempotency_key`` is accepted under the key ``redis:<stream>:<entry id>`` (unique in the
stream), so a reclaimed entry whose message was committed before the crash replays to the same
message id instead of being stored twice.

redis-py is an asyncio library (DESIGN §6): :meth:`RedisIngress.open` captures the running
``trio_asyncio`` loop, and every crossing into asyncio happens in :meth:`RedisIngress._aio`.
Callers see plain trio coroutine functions.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
import trio
import trio_asyncio
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.api_models import MessageBody
from gateway.backoff import Backoff
from gateway.compose import MessageRequest
from gateway.config import TenantConfig
from gateway.pipeline import AcceptItem
from queues.store import StoreError

__all__ = [
    "Acceptor",
    "EventOutbox",
    "IngressCounts",
    "IngressError",
    "ParsedEntry",
    "RedisIngress",
    "parse_entry",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_KEY = 200  # as the HTTP Idempotency-Key header
Fields = dict[bytes, bytes]


class IngressError(Exception):
    """The ingress cannot work: no trio-asyncio loop, or Redis cannot be reached or used.

    Attributes:
        transient: the connection was lost or timed out (worth retrying).
        no_group: the consumer group (or its stream) does not exist any more.
    """

    def __init__(self, message: str, *, transient: bool = False, no_group: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.no_group = no_group


class Acceptor(Protocol):
    """What the ingress needs from :class:`gateway.pipeline.Pipeline`: its durable accept."""

    async def accept(
        self,
        tenant: TenantConfig,
        requests: Sequence[MessageRequest],
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[AcceptItem]: ...


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One stream entry: a request for ``tenant``, or the ``reason`` it is refused."""

    entry_id: str
    fields: Fields
    tenant: TenantConfig | None = None
    request: MessageRequest | None = None
    idempotency_key: str | None = None
    reason: str | None = None


def _field(fields: Fields, name: str) -> str | None:
    raw = fields.get(name.encode())
    if raw is None:
        return None
    return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError: the caller refuses it


def _validation_detail(exc: ValidationError) -> str:
    """The same wording as the HTTP API's 422 detail: ``<field>: <message>; ...``."""
    return "; ".join(
        f"body.{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def parse_entry(
    entry_id: str,
    fields: Fields,
    tenants: Mapping[str, TenantConfig],
    stream: str,
    *,
    entry_key: bool = True,
) -> ParsedEntry:
    """Validate one entry; a refused entry carries the precise reason (never raises).

    With ``entry_key``, an entry without ``idempotency_key`` gets ``redis:<stream>:<id>``.
    """
    try:
        tenant_name = _field(fields, "tenant")
        body = _field(fields, "body")
        key = _field(fields, "idempotency_key")
    except UnicodeDecodeError as exc:
        return ParsedEntry(entry_id, fields, reason=f"fields: not UTF-8: {exc}")
    if tenant_name is None:
        return ParsedEntry(entry_id, fields, reason="tenant: missing field")
    tenant = tenants.get(tenant_name)
    if tenant is None:
        return ParsedEntry(entry_id, fields, reason=f"tenant: no tenant named {tenant_name!r}")
    if body is None:
        return ParsedEntry(entry_id, fields, reason="body: missing field")
    if key is not None and not 1 <= len(key) <= _MAX_KEY:
        return ParsedEntry(
            entry_id, fields, reason=f"idempotency_key: must be 1-{_MAX_KEY} characters"
        )
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return ParsedEntry(entry_id, fields, reason=f"body: not JSON: {exc}")
    try:
        request = MessageBody.model_validate(data).to_request()
    except ValidationError as exc:
        return ParsedEntry(entry_id, fields, reason=_validation_detail(exc))
    if key is None and entry_key:
        # The entry id is unique in the stream: a redelivery replays instead of duplicating.
        key = f"redis:{stream}:{entry_id}"
    return ParsedEntry(entry_id, fields, tenant, request, key)


@dataclass
class IngressCounts:
    """What the ingress has done since it started (tests, metrics, benchmarks)."""

    accepted: int = 0
    """Entries whose message the store holds (created or replayed), acknowledged."""
    dead: int = 0
    """Entries copied to the dead-letter stream, acknowledged."""
    failed: int = 0
    """Entries left pending because the accept failed (they are claimed again later)."""
    reclaimed: int = 0
    """Entries taken over by XAUTOCLAIM (from a dead consumer, or this one's failed accepts)."""
    batches: int = 0
    redis_errors: int = 0
    """Lost connections, timeouts and vanished groups, each retried."""
    accepted_ids: list[str] = field(default_factory=list, repr=False)
    """Message ids accepted, in order (kept only when ``keep_ids``)."""

    def totals(self) -> dict[str, int]:
        """The running totals the metrics follow (``ulak_redis_total``)."""
        return {
            "entries_accepted": self.accepted,
            "entries_dead": self.dead,
            "entries_failed": self.failed,
            "entries_reclaimed": self.reclaimed,
            "redis_errors": self.redis_errors,
        }


class RedisIngress:
    """One consumer of the ingress stream's group. Use :meth:`open`, run :meth:`run` in a
    nursery, and :meth:`aclose` at the end (inside the same trio-asyncio loop)."""

    def __init__(
        self,
        loop: Any,
        client: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        dead: str,
        events: str,
        events_maxlen: int,
        batch: int,
        in_flight: int,
        block_ms: int,
        claim_idle_ms: int,
        claim_every_s: float,
        entry_keys: bool,
        keep_ids: bool,
    ) -> None:
        # Use `open`. `loop` is the trio_asyncio loop (untyped: trio_asyncio ships no types).
        self._loop = loop
        self._client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead = dead
        self.events = events
        self.events_maxlen = events_maxlen
        self.batch = batch
        self.in_flight = in_flight
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = claim_every_s
        self.entry_keys = entry_keys
        self.keep_ids = keep_ids
        self.counts = IngressCounts()
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        consumer: str,
        stream: str = "ulak:messages",
        group: str = "ulak",
        dead: str = "ulak:messages:dead",
        events: str = "ulak:events",
        events_maxlen: int = 1_000_000,
        batch: int = 500,
        in_flight: int = 2,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        claim_every_s: float | None = None,
        entry_keys: bool = True,
        keep_ids: bool = False,
    ) -> RedisIngress:
        """Connect, check the server answers, and create the group (and stream) if missing.

        Must run inside ``async with trio_asyncio.open_loop():``; the ingress keeps using that
        loop, so it must stay open until :meth:`aclose` returns.

        Args:
            url: ``redis://``, ``rediss://`` or ``unix://`` URL.
            consumer: this instance's name in the group (stable across restarts, so that its
                own pending entries are found again).
            stream, group, dead, events: the ingress stream, its consumer group, the
                dead-letter stream and the status-event stream.
            events_maxlen: trim the events stream to about this many entries (``MAXLEN ~``);
                0 keeps everything.
            batch: entries per XREADGROUP / XAUTOCLAIM (``COUNT``).
            in_flight: batches accepted at once (the next is read while others commit);
                with more than one, stream order is kept within a batch, not across
                batches (as with several consumers in the group).
            block_ms: how long one XREADGROUP waits for new entries.
            claim_idle_ms: pending entries idle this long are claimed by this consumer.
            claim_every_s: how often to look for such entries; default ``claim_idle_ms / 2``.
            entry_keys: accept an entry without ``idempotency_key`` under the key
                ``redis:<stream>:<entry id>``, so that a redelivery (after a crash between the
                commit and the XACK) replays instead of storing the message twice. Costs an
                idempotency-key row per message; off, that window gives duplicates.
            keep_ids: record accepted message ids in ``counts.accepted_ids`` (tests).

        Raises:
            IngressError: no trio-asyncio loop, or Redis cannot be reached.
        """
        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise IngressError(
                "RedisIngress.open must be called inside `async with trio_asyncio.open_loop():`"
                " (redis-py runs on that asyncio loop)"
            )
        if batch < 1 or in_flight < 1 or block_ms < 1 or claim_idle_ms < 0 or events_maxlen < 0:
            raise ValueError("batch, in_flight and block_ms must be >= 1, the others >= 0")
        if len({stream, dead, events}) != 3:
            raise ValueError("stream, dead and events must be three different streams")
        # RESP2 pinned: the reply shapes parsed below are those of RESP2.
        client = aioredis.Redis.from_url(
            url,
            decode_responses=False,
            protocol=2,
            # A hung server fails a command instead of blocking the ingress (and a shielded
            # acknowledgement) for ever; a blocking read takes up to block_ms by itself.
            socket_timeout=block_ms / 1000 + 10,
            socket_connect_timeout=10,
            client_name="ulak-ingress:" + consumer.replace(" ", "_"),
        )
        try:
            await loop.run_aio_coroutine(_create_group(client, stream, group))
        except (RedisError, OSError) as exc:
            with trio.CancelScope(shield=True):
                await loop.run_aio_coroutine(client.aclose())
            raise IngressError(f"Redis at {_safe_url(url)}: {exc}") from exc
        return cls(
            loop,
            client,
            stream=stream,
            group=group,
            consumer=consumer,
            dead=dead,
            events=events,
            events_maxlen=events_maxlen,
            batch=batch,
            in_flight=in_flight,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
            claim_every_s=claim_every_s if claim_every_s is not None else claim_idle_ms / 2000,
            entry_keys=entry_keys,
            keep_ids=keep_ids,
        )

    async def _aio(self, coro: Coroutine[Any, Any, T]) -> T:
        """The one crossing into asyncio: run ``coro`` on the ingress's loop."""
        result: T = await self._loop.run_aio_coroutine(coro)
        return result

    # --- reading ----------------------------------------------------------------------------

    async def run(
        self,
        acceptor: Acceptor,
        tenants: Mapping[str, TenantConfig],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read, accept and acknowledge entries until cancelled.

        Entries pending for ``claim_idle_ms`` are claimed at start and every
        ``claim_every_s``. Cancelling leaves the entries being accepted unacknowledged: they
        are claimed again later (by this consumer or another), never lost.

        A lost connection or a timeout (Redis restarting, a failover) is retried with
        backoff, and a group that vanished (Redis restarted without persistence) is created
        again; after either, this consumer's own pending entries are read again first. An
        accept failing with :class:`~queues.store.StoreError` leaves its entries pending.

        Args:
            acceptor: the durable accept (the :class:`~gateway.pipeline.Pipeline`).
            tenants: configured tenants by name; an entry naming another is dead-lettered.

        Raises:
            IngressError: Redis answered with an error that retrying cannot cure.
            Exception: any other error of ``acceptor.accept`` (its entries stay pending).
        """
        started = False
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await self._own_pending(acceptor, tenants)
                await self.reclaim(acceptor, tenants)
                if not started:
                    task_status.started()
                    started = True
                await self._read_loop(acceptor, tenants, backoff)
            except IngressError as exc:
                if not (exc.transient or exc.no_group):
                    raise
                self.counts.redis_errors += 1
                delay = backoff.next_delay()
                logger.warning("%s; retrying in %.2f s", exc, delay)
                await trio.sleep(delay)
                if exc.no_group:
                    with contextlib.suppress(IngressError):
                        await self._redis(_create_group(self._client, self.stream, self.group))

    async def _read_loop(
        self, acceptor: Acceptor, tenants: Mapping[str, TenantConfig], backoff: Backoff
    ) -> None:
        """Read batches and process up to ``in_flight`` of them at once: the next batch is
        read and validated while the previous ones wait for their commit. Returns only by
        raising the first error of a read or a batch (the other batches are cancelled, and
        their entries stay pending)."""
        failures: list[Exception] = []
        room = trio.Semaphore(self.in_flight)

        async def process(entries: list[tuple[str, Fields]]) -> None:
            try:
                await self.process(acceptor, tenants, entries)
            except Exception as exc:
                failures.append(exc)
                batches.cancel_scope.cancel()
            finally:
                room.release()

        next_claim = trio.current_time() + self.claim_every_s
        async with trio.open_nursery() as batches:
            try:
                while True:
                    entries = await self._redis(
                        _read(
                            self._client,
                            self.stream,
                            self.group,
                            self.consumer,
                            self.batch,
                            self.block_ms,
                        )
                    )
                    backoff.reset()
                    if entries:
                        await room.acquire()
                        batches.start_soon(process, entries)
                    if trio.current_time() >= next_claim:
                        await self.reclaim(acceptor, tenants)
                        next_claim = trio.current_time() + self.claim_every_s
            except Exception as exc:
                failures.append(exc)
                batches.cancel_scope.cancel()
        raise failures[0]

    async def _own_pending(self, acceptor: Acceptor, tenants: Mapping[str, TenantConfig]) -> None:
        """Process the entries delivered to this consumer name and never acknowledged: left
        by its previous life, or by a blocking read cancelled after the server had answered it
        (the reply is lost with the closed connection, but the entry is pending here)."""
        cursor = "0-0"
        while True:
            entries, last = await self._redis(
                _read_history(
                    self._client, self.stream, self.group, self.consumer, cursor, self.batch
                )
            )
            if last is None:
                return
            if entries:
                await self.process(acceptor, tenants, entries)
            cursor = last

    async def reclaim(self, acceptor: Acceptor, tenants: Mapping[str, TenantConfig]) -> int:
        """Claim and process every entry pending at least ``claim_idle_ms``; return how many."""
        cursor = "0-0"
        total = 0
        while True:
            cursor, entries = await self._redis(
                _claim(
                    self._client,
                    self.stream,
                    self.group,
                    self.consumer,
                    self.claim_idle_ms,
                    cursor,
                    self.batch,
                )
            )
            if entries:
                total += len(entries)
                self.counts.reclaimed += len(entries)
                logger.info("claimed %d pending entries of %s", len(entries), self.stream)
                await self.process(acceptor, tenants, entries)
            if cursor == "0-0":
                return total

    async def process(
        self,
        acceptor: Acceptor,
        tenants: Mapping[str, TenantConfig],
        entries: Sequence[tuple[str, Fields]],
    ) -> None:
        """Accept one batch of entries, one ``accept`` call per tenant, then dead-letter the
        refused ones and acknowledge what is settled, in one round trip."""
        self.counts.batches += 1
        dead: list[tuple[str, str, Fields]] = []
        groups: dict[str, list[ParsedEntry]] = {}
        for entry_id, fields in entries:
            parsed = parse_entry(entry_id, fields, tenants, self.stream, entry_key=self.entry_keys)
            if parsed.reason is not None:
                dead.append((entry_id, parsed.reason, fields))
            else:
                assert parsed.tenant is not None
                groups.setdefault(parsed.tenant.name, []).append(parsed)
        settled: list[str] = [entry_id for entry_id, _, _ in dead]
        accepted_ids: list[str] = []
        for group in groups.values():
            tenant = group[0].tenant
            assert tenant is not None
            requests: list[MessageRequest] = []
            for p in group:
                assert p.request is not None
                requests.append(p.request)
            try:
                items = await acceptor.accept(tenant, requests, [p.idempotency_key for p in group])
            except StoreError as exc:
                # Not acknowledged: the entries stay pending and are claimed again later.
                logger.warning(
                    "%d entries of %s left pending: accept failed: %s", len(group), tenant.name, exc
                )
                self.counts.failed += len(group)
                continue
            for parsed, item in zip(group, items, strict=True):
                if item.error is not None:
                    reason = f"{item.error.field}: {item.error.detail} ({item.error.code})"
                    dead.append((parsed.entry_id, reason, parsed.fields))
                else:
                    assert item.result is not None
                    accepted_ids.append(item.result.id)
                settled.append(parsed.entry_id)
        if settled:
            if groups and len(dead) > 1:  # letters in stream order, as the entries came
                order = {entry_id: n for n, (entry_id, _) in enumerate(entries)}
                dead.sort(key=lambda letter: order[letter[0]])
            # Shielded: the store holds these messages now; an ACK lost to a cancellation here
            # would only make them replay (idempotently) later, but there is no need to.
            with trio.CancelScope(shield=True):
                await self._redis(
                    _settle(self._client, self.stream, self.group, self.dead, dead, settled)
                )
        self.counts.dead += len(dead)
        self.counts.accepted += len(accepted_ids)
        if self.keep_ids:
            self.counts.accepted_ids.extend(accepted_ids)

    # --- events -----------------------------------------------------------------------------

    async def publish_events(self, events: Sequence[Mapping[str, str]]) -> None:
        """Append status events to the events stream, in one pipeline (DESIGN §4).

        Raises:
            IngressError: Redis failed.
        """
        if not events:
            await trio.lowlevel.checkpoint()
            return
        await self._redis(_publish(self._client, self.events, events, self.events_maxlen))

    async def _redis(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await self._aio(coro)
        except (RedisError, OSError) as exc:
            raise IngressError(
                f"Redis: {exc}",
                transient=isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError),
                no_group=isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"),
            ) from exc

    # --- life cycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (pending entries stay pending, for a later claim)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self._aio(self._client.aclose())


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


# --- asyncio-side helpers (run through RedisIngress._aio) -----------------------------------


class EventOutbox:
    """Status events on their way to the events stream: :meth:`add` (the pipeline's listener)
    never blocks or fails; :meth:`run` appends what has gathered, a batch at a time.

    While Redis cannot be reached the events wait, in order, and go once it is back; past
    ``limit`` waiting, the oldest are dropped (``dropped``: the stream is a feed, the store
    keeps every status). An error that retrying cannot cure (say, the key holds another type)
    costs its batch (``failed``) rather than the daemon."""

    def __init__(self, ingress: RedisIngress, *, limit: int = 100_000) -> None:
        self._ingress = ingress
        self._limit = limit
        self._events: collections.deque[Mapping[str, str]] = collections.deque()
        self._wake = trio.Event()
        self.published = 0
        self.dropped = 0
        self.failed = 0
        self.retries = 0

    def add(self, event: Mapping[str, str]) -> None:
        if len(self._events) >= self._limit:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self._wake.set()

    def waiting(self) -> int:
        return len(self._events)

    def totals(self) -> dict[str, int]:
        return {
            "events_published": self.published,
            "events_dropped": self.dropped,
            "events_failed": self.failed,
        }

    async def run(self, *, batch: int = 1000) -> None:
        backoff = Backoff(0.1, 5.0)
        events = self._events
        while True:
            if not events:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            chunk = [events[i] for i in range(min(batch, len(events)))]
            dropped = self.dropped
            try:
                await self._ingress.publish_events(chunk)
            except IngressError as exc:
                if exc.transient:
                    self.retries += 1
                    delay = backoff.next_delay()
                    logger.warning(
                        "events stream: %s; %d events wait, retrying in %.2f s",
                        exc,
                        len(events),
                        delay,
                    )
                    await trio.sleep(delay)
                    continue
                self.failed += len(chunk)
                logger.error("events stream: %s; %d events not published", exc, len(chunk))
            else:
                self.published += len(chunk)
                backoff.reset()
            # Those sent (or given up) leave, less any that overflow pushed out meanwhile.
            for _ in range(max(0, len(chunk) - (self.dropped - dropped))):
                events.popleft()


async def _create_group(client: aioredis.Redis, stream: str, group: str) -> None:
    await client.ping()
    try:
        # From the first entry: entries appended before any gateway ever ran are read too.
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(raw: Any) -> list[tuple[str, Fields]]:
    # A claimed entry deleted from the stream meanwhile comes back as (id, None) on old servers.
    return [(entry_id.decode(), fields) for entry_id, fields in raw if fields is not None]


async def _read(
    client: aioredis.Redis, stream: str, group: str, consumer: str, count: int, block_ms: int
) -> list[tuple[str, Fields]]:
    reply: Any = await client.xreadgroup(
        group, consumer, {stream: ">"}, count=count, block=block_ms
    )
    if not reply:
        return []
    # RESP2: [[stream, [(id, {field: value}), ...]]]
    [[_, raw]] = reply
    return _entries(raw)


async def _read_history(
    client: aioredis.Redis, stream: str, group: str, consumer: str, after: str, count: int
) -> tuple[list[tuple[str, Fields]], str | None]:
    """This consumer's pending entries after ``after``, and the last id seen (None: done)."""
    reply: Any = await client.xreadgroup(group, consumer, {stream: after}, count=count)
    if not reply or not reply[0][1]:
        return [], None
    [[_, raw]] = reply
    return _entries(raw), raw[-1][0].decode()


async def _claim(
    client: aioredis.Redis,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    cursor: str,
    count: int,
) -> tuple[str, list[tuple[str, Fields]]]:
    reply = await client.xautoclaim(
        stream, group, consumer, min_idle_ms, start_id=cursor, count=count
    )
    # [next cursor, [(id, fields), ...], [deleted ids]] (Redis >= 7 adds the deleted ids,
    # which it removes from the pending list itself).
    return reply[0].decode(), _entries(reply[1])


async def _settle(
    client: aioredis.Redis,
    stream: str,
    group: str,
    dead_stream: str,
    dead: Sequence[tuple[str, str, Fields]],
    ack: Sequence[str],
) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for entry_id, reason, fields in dead:
            letter: dict[bytes | str, bytes | str] = {"id": entry_id, "reason": reason}
            for name, value in fields.items():
                if name not in (b"id", b"reason"):
                    letter[name] = value
            pipe.xadd(dead_stream, letter)  # type: ignore[arg-type]
        pipe.xack(stream, group, *ack)
        await pipe.execute()


async def _publish(
    client: aioredis.Redis, stream: str, events: Sequence[Mapping[str, str]], maxlen: int
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(stream, dict(event), maxlen=maxlen or None, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()
