"""``ulak run``: the daemon. One trio nursery holds everything:

- the store (SQLite, or PostgreSQL under the trio-asyncio loop opened here, DESIGN §6);
- the pipeline (recorder and scheduler timer), after the queues are rebuilt from the store;
- the bind supervisor, fed by the pipeline;
- the HTTP API (hypercorn's trio worker).

SIGTERM or SIGINT starts a graceful stop: the HTTP server stops taking requests, the binds stop
taking parts, wait (bounded) for outstanding responses and unbind (unanswered parts go back to
their queue, and so stay stored as unsent), then the recorder commits what is pending.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import trio

from gateway.binds import BindSupervisor
from gateway.bindstate import RouteSettings
from gateway.config import Settings
from gateway.http_api import StoreTotpAdapter, build_app, metrics_app, tenant_keys, totp_key
from gateway.metrics import Metrics
from gateway.otp import OtpService
from gateway.pipeline import Pipeline
from gateway.totp import TotpService
from queues.model import Transition
from queues.store import Store

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig

__all__ = ["open_store", "run_daemon"]

logger = logging.getLogger("ulak")


@contextlib.asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """The one trio-asyncio loop the asyncio libraries run on (asyncpg, redis-py; DESIGN §6),
    opened unless one is already running."""
    import trio_asyncio

    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The configured store, open for the duration of the block."""
    config = settings.store
    if config.kind == "sqlite":
        from queues.sqlite import SQLiteStore

        path = config.sqlite_path
        assert path is not None
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        sqlite = await SQLiteStore.open(
            path, max_batch=config.commit_max_batch, max_delay_s=config.commit_max_delay_ms / 1000
        )
        try:
            yield sqlite
        finally:
            with trio.CancelScope(shield=True):
                await sqlite.aclose()
        return
    from queues.postgres import PostgresStore

    async with asyncio_loop():
        pg = await PostgresStore.open(
            config.url.get_secret_value(),
            pool_size=config.pool_size,
            max_batch=config.commit_max_batch,
            max_delay_s=config.commit_max_delay_ms / 1000,
        )
        try:
            yield pg
        finally:
            with trio.CancelScope(shield=True):
                await pg.aclose()


async def run_daemon(
    settings: Settings,
    *,
    task_status: trio.TaskStatus[tuple[Pipeline, BindSupervisor]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGTERM/SIGINT (or cancellation), then stop gracefully."""
    from hypercorn.trio import serve

    metrics_config = settings.metrics
    metrics = (
        Metrics(latency_buckets_s=metrics_config.latency_buckets_s)
        if metrics_config.enabled
        else None
    )
    async with contextlib.AsyncExitStack() as stack:
        if settings.redis is not None:
            await stack.enter_async_context(asyncio_loop())
        store = await stack.enter_async_context(open_store(settings))
        pipeline = Pipeline(settings, store, metrics=metrics)
        routes = [RouteSettings.from_config(r) for r in settings.routes]
        supervisor = BindSupervisor(routes, pipeline, pipeline)
        pipeline.route_up = supervisor.is_up
        stop = trio.Event()
        http_config = _listener(settings.http.listen)
        http_config.graceful_timeout = 5.0
        # Without [otp] hmac_key, a random key per start: pending codes and every TOTP
        # enrollment (sealed under a key derived from it) become unusable at restart.
        otp_config = settings.otp
        otp_key = (
            otp_config.hmac_key.get_secret_value().encode()
            if otp_config.hmac_key is not None
            else secrets.token_bytes(32)
        )
        if otp_config.hmac_key is None:
            logger.warning("[otp] hmac_key is not set: OTP codes and TOTP enrollments end at stop")
        app = build_app(
            pipeline,
            tenant_keys(list(settings.tenants)),
            ready=lambda: any(supervisor.pools[name].is_up for name in supervisor.pools),
            otp=OtpService(store, otp_config, otp_key, clock=time.time),
            totp=TotpService(
                StoreTotpAdapter(store),
                otp_config.totp_issuer,
                totp_key(otp_key),
                clock=time.time,
            ),
            metrics=metrics if metrics_config.listen is None else None,
            http=settings.http,
        )
        async with trio.open_nursery() as outer:
            await outer.start(pipeline.run)
            await outer.start(_restore, pipeline)
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                if metrics is not None and metrics_config.listen is not None:
                    metrics_http = _listener(metrics_config.listen)
                    only_metrics = metrics_app(metrics, metrics_config.path)
                    for address in await nursery.start(
                        _serve_http, serve, only_metrics, metrics_http, stop
                    ):
                        print(
                            f"ulak: metrics listening on {address}{metrics_config.path}", flush=True
                        )
                addresses = await nursery.start(_serve_http, serve, app, http_config, stop)
                for address in addresses:
                    print(f"ulak: http listening on {address}", flush=True)
                nursery.start_soon(_watch_signals, stop)
                redis_totals = None
                if settings.redis is not None:
                    redis_totals = await outer.start(_serve_redis, settings, pipeline)
                await outer.start(_serve_webhooks, settings, pipeline, store)
                if metrics is not None:  # in the outer nursery: it runs until the end
                    outer.start_soon(_refresh_metrics, metrics, pipeline, supervisor, redis_totals)
                task_status.started((pipeline, supervisor))
                await stop.wait()
                logger.info("stopping: draining the binds")
                supervisor.shutdown()
            await pipeline.flush()
            outer.cancel_scope.cancel()
        logger.info("stopped")


async def _restore(
    pipeline: Pipeline, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The store's unfinished messages queued again, beside the binds and front doors."""
    started = time.perf_counter()
    restored = await pipeline.restore(task_status=task_status)
    logger.info(
        "restored %d unfinished messages from the store in %.1f s",
        restored,
        time.perf_counter() - started,
    )


def _listener(listen: str) -> HypercornConfig:
    """A hypercorn config for one listener: no access log, errors to the ``ulak.http`` log."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [listen]
    config.accesslog = None
    config.errorlog = logging.getLogger("ulak.http")
    return config


async def _serve_http(
    serve: object,
    app: object,
    config: object,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)  # type: ignore[operator]


async def _serve_redis(
    settings: Settings,
    pipeline: Pipeline,
    *,
    task_status: trio.TaskStatus[Callable[[], dict[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The Redis stream ingress and the status events it publishes (``[redis]``); started
    with a function giving their running totals (for the metrics)."""
    from queues.redis_ingress import EventOutbox, RedisIngress

    config = settings.redis
    assert config is not None
    ingress = await RedisIngress.open(
        config.url.get_secret_value(),
        consumer=config.consumer or settings.cluster.name(),
        stream=config.stream,
        group=config.group,
        dead=config.dead_letter_stream,
        events=config.events_stream,
        events_maxlen=config.events_maxlen,
        batch=config.read_count,
        in_flight=config.batches_in_flight,
        block_ms=config.block_ms,
        claim_idle_ms=int(config.claim_idle_s * 1000),
    )
    outbox = EventOutbox(ingress)

    def on_status(transition: Transition) -> None:
        event = {
            "id": transition.message_id,
            "status": transition.status.value,
            "at": f"{transition.at:.3f}",
        }
        if transition.error:
            event["error"] = transition.error
        outbox.add(event)

    pipeline.status_listeners.append(on_status)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run)
            await nursery.start(ingress.run, pipeline, {t.name: t for t in settings.tenants})
            task_status.started(lambda: ingress.counts.totals() | outbox.totals())
    finally:
        with trio.CancelScope(shield=True):
            await ingress.aclose()


async def _serve_webhooks(
    settings: Settings,
    pipeline: Pipeline,
    store: Store,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Status changes and MO messages to the callback URLs, off the send path."""
    from gateway.webhook_relay import WebhookRelay
    from gateway.webhooks import WebhookSender

    sender = WebhookSender(settings.webhooks, journal=store)
    secrets = {
        t.name: t.webhook_secret.get_secret_value().encode()
        for t in settings.tenants
        if t.webhook_secret is not None
    }
    restored = sender.restore(await store.pending_webhooks(), secrets)
    if restored:
        logger.info("%d webhook events from before the restart queued again", restored)
    relay = WebhookRelay(sender, store, {t.name: t for t in settings.tenants})
    pipeline.status_listeners.append(relay.on_status)
    pipeline.mo_listeners.append(relay.on_mo)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        nursery.start_soon(relay.run)
        task_status.started()


async def _refresh_metrics(
    metrics: Metrics,
    pipeline: Pipeline,
    supervisor: BindSupervisor,
    redis_totals: Callable[[], dict[str, int]] | None,
) -> None:
    """The gauges read from state (queue depths, binds) and the running totals kept outside
    the metrics (pipeline events, the Redis ingress) are brought up to date every 2 s."""
    while True:
        pipeline.refresh_metrics()
        metrics.update_binds(supervisor.stats())
        if redis_totals is not None:
            metrics.redis_events(redis_totals())
        await trio.sleep(2.0)


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return
