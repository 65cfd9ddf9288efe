"""Webhook delivery: status changes and MO messages POSTed to callback URLs, signed, retried.

Sending SMS must never wait for a tenant's web server, so :meth:`WebhookSender.submit` is
synchronous and only appends to a bounded in-memory queue (a full queue drops the event and
counts it). ``concurrency`` worker tasks POST the events; a failed attempt goes into a deferral
heap ordered by due time, and one pump task moves due events back to the workers. No worker ever
sleeps on a backoff, so a slow or dead endpoint costs at most the request timeout per attempt
and cannot use up the workers that other endpoints need.

Delivery is at-least-once: a receiver may see an event twice (a 2xx lost on the way back), and
de-duplicates by the ``X-Ulak-Event-Id`` header, which stays the same across retries. Events
live in memory only; a restart loses the ones still pending (the status stays queryable).

Signature scheme
----------------
Each attempt carries the header (``signature_header``, default ``X-Ulak-Signature``)::

    t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The body is the exact bytes sent: compact JSON with sorted keys, UTF-8. The timestamp is part of
the signed text so a captured request cannot be replayed later: the receiver recomputes the MAC
over ``f"{t}.{body}"`` and rejects a ``t`` further than a few minutes from its own clock (see
:func:`verify_signature`). ``t`` is taken again at every attempt, so a retry hours later still
verifies. Several ``v1=`` entries may appear (any match is enough), leaving room to rotate
secrets.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import trio

from gateway.backoff import Backoff
from gateway.config import WebhooksConfig
from queues.store import StoredWebhook, StoreError

__all__ = [
    "EVENT_ID_HEADER",
    "WebhookJournal",
    "WebhookSender",
    "WebhookStats",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Ulak-Event-Id"
_MAX_ANSWER_BYTES = 64 * 1024


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The signature header's value for ``body`` sent at Unix time ``t``."""
    mac = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(
    secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300.0
) -> bool:
    """Check a signature header as a receiver should.

    Args:
        secret: the shared secret of the callback.
        header: the signature header's value, ``t=<unix>,v1=<hex>[,v1=<hex>...]``.
        body: the request body exactly as received.
        now: the receiver's Unix time (injected, so tests need no clock).
        tolerance_s: how far ``t`` may be from ``now``, either way; the replay window.

    Returns:
        True when ``t`` is within the tolerance and some ``v1`` matches; False for anything
        else, including a malformed header.
    """
    t: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if t is not None or not value.isdigit():
                return False
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates or abs(now - t) > tolerance_s:
        return False
    expected = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    # compare_digest on every candidate: the time taken does not tell which one was close.
    return any(hmac.compare_digest(expected, c) for c in candidates)


@dataclass(frozen=True, slots=True)
class WebhookStats:
    """Cumulative counts since the sender was made (a snapshot; the metrics read these)."""

    delivered: int
    retried: int
    """Attempts that failed and were scheduled again."""
    failed: int
    """Events given up after ``max_attempts`` (or at once for a URL that cannot work)."""
    dropped: int
    """Events refused by :meth:`WebhookSender.submit` because the queue was full."""
    pending: int
    """Events queued, in flight or waiting out a backoff."""


class WebhookJournal(Protocol):
    """Where a sender keeps its events until they are delivered or given up (the store)."""

    async def put_webhooks(self, hooks: Sequence[StoredWebhook]) -> None: ...

    async def drop_webhooks(self, event_ids: Sequence[str]) -> None: ...


@dataclass(slots=True, eq=False)
class _Delivery:
    url: str
    secret: bytes = field(repr=False)
    body: bytes
    event_id: str
    tenant: str | None = None
    """Set when the event is journalled (its tenant's secret signs it after a restart)."""
    attempts: int = 0
    backoff: Backoff | None = None
    """Made on the first failure: most events never need one."""


class WebhookSender:
    """Delivers webhook events with bounded memory, retries and a concurrency cap.

    Args:
        config: the ``[webhooks]`` section.
        http: a client to use (tests, shared pools); None: :meth:`run` makes and closes one.
        clock: monotonic time for the backoff schedule (``trio.current_time`` by default).
        wall_clock: Unix time for the signature's ``t``.
        rng: random source of the backoff jitter (tests).
        journal: keeps each event submitted with a tenant until it is delivered or given up,
            so that a restart sends it (:meth:`restore`). Written in batches every
            ``journal_gather_s``: an event delivered within that time is never written, and
            one submitted that long before a crash may be lost.
    """

    def __init__(
        self,
        config: WebhooksConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        journal: WebhookJournal | None = None,
        journal_gather_s: float = 0.05,
    ) -> None:
        self.config = config
        self._journal = journal
        self._journal_gather_s = journal_gather_s
        self._to_put: list[StoredWebhook] = []
        self._to_drop: list[str] = []
        self._journal_wake = trio.Event()
        self._http = http
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        # Unbounded channel, bounded by ``_pending``: retries must always get back in (an
        # accepted event is never dropped later), so the bound applies at submit only and
        # counts every event held anywhere in the sender.
        self._ready_send, self._ready_receive = trio.open_memory_channel[_Delivery](math.inf)
        self._deferred: list[tuple[float, int, _Delivery]] = []
        self._seq = itertools.count()
        self._deferred_changed = trio.Event()
        self._pending = 0
        self._delivered = 0
        self._retried = 0
        self._failed = 0
        self._dropped = 0

    def stats(self) -> WebhookStats:
        return WebhookStats(
            delivered=self._delivered,
            retried=self._retried,
            failed=self._failed,
            dropped=self._dropped,
            pending=self._pending,
        )

    def submit(
        self,
        url: str,
        secret: bytes,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        tenant: str | None = None,
    ) -> bool:
        """Queue ``event`` for delivery to ``url``; never blocks.

        The event is serialised now (so later changes by the caller do not leak into it). Its
        id, sent as ``X-Ulak-Event-Id`` on every attempt, is ``event_id`` or a fresh random one;
        a caller that may submit the same event twice (after a restart) passes a stable id so
        the receiver can de-duplicate. With a journal, an event given its ``tenant`` is kept
        until delivered or given up.

        Returns:
            True if queued; False if the queue is full (the event is dropped and counted).

        Raises:
            TypeError: ``event`` is not JSON-serialisable (a bug of the caller).
        """
        if self._pending >= self.config.queue_size:
            self._dropped += 1
            return False
        body = json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        delivery = _Delivery(url, secret, body.encode(), event_id or uuid.uuid4().hex)
        if self._journal is not None and tenant is not None:
            delivery.tenant = tenant
            stored = StoredWebhook(
                delivery.event_id, tenant, url, delivery.body, self._wall_clock()
            )
            self._to_put.append(stored)
            self._journal_wake.set()
        self._ready_send.send_nowait(delivery)
        self._pending += 1
        return True

    def restore(self, hooks: Sequence[StoredWebhook], secrets: Mapping[str, bytes]) -> int:
        """Queue the events an earlier run kept and did not finish, as they were (same id and
        body), each signed with its tenant's secret in ``secrets``; those of a tenant without
        one now are dropped from the journal. Returns how many were queued."""
        queued = 0
        for hook in hooks:
            secret = secrets.get(hook.tenant)
            if secret is None:
                self._to_drop.append(hook.event_id)
                continue
            delivery = _Delivery(hook.url, secret, hook.body, hook.event_id, hook.tenant)
            self._ready_send.send_nowait(delivery)
            self._pending += 1
            queued += 1
        if self._to_drop:
            self._journal_wake.set()
        return queued

    def _finished(self, delivery: _Delivery) -> None:
        self._pending -= 1
        if delivery.tenant is not None:
            self._to_drop.append(delivery.event_id)
            self._journal_wake.set()

    async def run(self) -> None:
        """Deliver events until cancelled: ``concurrency`` workers and the deferral pump."""
        if self._http is not None:
            await self._run_with(self._http)
            return
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            await self._run_with(http)

    async def _run_with(self, http: httpx.AsyncClient) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump)
            if self._journal is not None:
                nursery.start_soon(self._keep_journal, self._journal)
            for _ in range(self.config.concurrency):
                nursery.start_soon(self._worker, http)

    async def _worker(self, http: httpx.AsyncClient) -> None:
        async for delivery in self._ready_receive:
            delivery.attempts += 1
            outcome = await self._attempt(http, delivery)
            if outcome is True:
                self._delivered += 1
                self._finished(delivery)
            elif outcome is None or delivery.attempts >= self.config.max_attempts:
                self._failed += 1
                self._finished(delivery)
                logger.warning(
                    "webhook %s to %s given up after %d attempts",
                    delivery.event_id,
                    _origin(delivery.url),
                    delivery.attempts,
                )
            else:
                self._retried += 1
                self._defer(delivery)

    async def _attempt(self, http: httpx.AsyncClient, delivery: _Delivery) -> bool | None:
        """One POST. True: delivered; False: retry later; None: the URL can never work."""
        headers = {
            "Content-Type": "application/json",
            self.config.signature_header: sign(
                delivery.secret, delivery.body, int(self._wall_clock())
            ),
            EVENT_ID_HEADER: delivery.event_id,
        }
        try:
            # httpx's timeout is per phase (connect, each read); this bounds the whole attempt,
            # so a receiver trickling bytes cannot hold a worker for longer.
            with trio.fail_after(self.config.timeout_s):
                status = await self._post(http, delivery, headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # The message may quote the URL, and URLs may carry tokens: log the type only.
            logger.warning("webhook %s: unusable URL (%s)", delivery.event_id, type(exc).__name__)
            return None
        except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
            logger.info(
                "webhook %s to %s attempt %d: %s",
                delivery.event_id,
                _origin(delivery.url),
                delivery.attempts,
                type(exc).__name__,
            )
            return False
        except Exception:
            # A bug (ours or a library's): keep the sender alive for every other event, as a
            # bind does after an internal error, and make the cause visible.
            logger.exception("webhook %s: unexpected error, given up", delivery.event_id)
            return None
        if 200 <= status < 300:
            return True
        logger.info(
            "webhook %s to %s attempt %d: HTTP %d",
            delivery.event_id,
            _origin(delivery.url),
            delivery.attempts,
            status,
        )
        return False

    @staticmethod
    async def _post(http: httpx.AsyncClient, delivery: _Delivery, headers: dict[str, str]) -> int:
        """POST and return the status. The answer's body is read up to a small limit only (to
        keep the connection reusable), so a receiver cannot make us buffer megabytes."""
        async with http.stream("POST", delivery.url, content=delivery.body, headers=headers) as r:
            seen = 0
            async for chunk in r.aiter_raw():
                seen += len(chunk)
                if seen > _MAX_ANSWER_BYTES:
                    break  # closing an unread response drops the connection: fine here
            return r.status_code

    async def _keep_journal(self, journal: WebhookJournal) -> None:
        """Write the journal's puts and drops in batches; on the way out (cancelled), what is
        left is written too, for up to 5 s."""
        try:
            while True:
                if not (self._to_put or self._to_drop):
                    self._journal_wake = trio.Event()
                    await self._journal_wake.wait()
                    await trio.sleep(self._journal_gather_s)  # let a burst share the writes
                if not await self._write_journal(journal):
                    await trio.sleep(1.0)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                await self._write_journal(journal)

    async def _write_journal(self, journal: WebhookJournal) -> bool:
        """One batch of puts, then drops; an event both submitted and finished since the last
        batch is not written at all. False (the batch kept for later) if the store failed."""
        puts, self._to_put = self._to_put, []
        drops, self._to_drop = self._to_drop, []
        finished = set(drops)
        new = {hook.event_id for hook in puts}
        try:
            await journal.put_webhooks([h for h in puts if h.event_id not in finished])
            await journal.drop_webhooks([i for i in drops if i not in new])
        except StoreError as exc:
            logger.warning("webhook journal: %s; %d events wait to be kept", exc, len(puts))
            self._to_put[:0] = puts
            self._to_drop[:0] = drops
            return False
        return True

    def _defer(self, delivery: _Delivery) -> None:
        if delivery.backoff is None:
            delivery.backoff = Backoff(
                self.config.backoff_initial_s, self.config.backoff_max_s, rng=self._rng
            )
        due = self._clock() + delivery.backoff.next_delay()
        heapq.heappush(self._deferred, (due, next(self._seq), delivery))
        if self._deferred[0][2] is delivery:  # a new earliest due time: wake the pump
            event, self._deferred_changed = self._deferred_changed, trio.Event()
            event.set()

    async def _pump(self) -> None:
        """Move deferred events whose time has come back to the workers."""
        while True:
            now = self._clock()
            while self._deferred and self._deferred[0][0] <= now:
                _, _, delivery = heapq.heappop(self._deferred)
                self._ready_send.send_nowait(delivery)
            changed = self._deferred_changed
            if self._deferred:
                with trio.move_on_after(self._deferred[0][0] - now):
                    await changed.wait()
            else:
                await changed.wait()


def _origin(url: str) -> str:
    """Scheme and host of a URL for logs: paths and queries may carry tokens."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}"
    except ValueError:
        return "<invalid url>"
