"""Webhooks end to end: the pipeline's status changes and MO messages reach a real local
receiver, signed with the tenant's secret, at the message's or the tenant's callback URL."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from gateway.config import WebhooksConfig
from gateway.simulator import MoMessage
from gateway.webhook_relay import WebhookRelay
from gateway.webhooks import WebhookSender, verify_signature
from queues.store import Store, StoreError
from tests.test_pipeline import Running, StoreWrapper, running
from tests.test_webhooks import Receiver

SECRET = "a-webhook-secret-of-enough-length"


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    """A real local HTTP receiver that records every request."""
    r = Receiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(r.serve)
        yield r
        nursery.cancel_scope.cancel()


def _tenants(url: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "shop",
            "api_key_sha256": "a" * 64,
            "require_opt_in": False,
            "default_sender": "SHOP",
            "callback_url": url,
            "webhook_secret": SECRET,
        }
    ]


@asynccontextmanager
async def relaying(
    folder: Path, hook: str, relays: list[WebhookRelay] | None = None, **kw: Any
) -> AsyncIterator[Running]:
    async with running(folder, tenants=_tenants(hook), **kw) as r:
        sender = WebhookSender(WebhooksConfig(backoff_initial_s=0.01))
        tenants = {t.name: t for t in r.pipeline.settings.tenants}
        relay = WebhookRelay(sender, r.store, tenants, retry_s=0.02)
        if relays is not None:
            relays.append(relay)
        r.pipeline.status_listeners.append(relay.on_status)
        r.pipeline.mo_listeners.append(relay.on_mo)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            nursery.start_soon(relay.run)
            yield r
            nursery.cancel_scope.cancel()


def _events(hooks: Receiver, path: str) -> list[dict[str, Any]]:
    events = []
    for request in hooks.on(path):
        header = request.headers["x-ulak-signature"]
        assert verify_signature(SECRET.encode(), header, request.body, time.time())
        events.append(json.loads(request.body))
    return events


async def test_status_changes_reach_the_tenant_callback_signed(
    tmp_path: Path, hooks: Receiver
) -> None:
    async with relaying(tmp_path, hooks.url("/tenant")) as r:
        message_id = await r.send("Siparişiniz yolda.")
        with trio.fail_after(15):
            while {"submitted", "delivered"} - {
                e["status"] for e in _events(hooks, "/tenant") if e["id"] == message_id
            }:
                await hooks.wait_requests(len(hooks.requests) + 1)
    [submitted] = [e for e in _events(hooks, "/tenant") if e["status"] == "submitted"]
    assert submitted["type"] == "message.status"
    assert (submitted["tenant"], submitted["to"], submitted["parts"]) == (
        "shop",
        "+905321234567",
        1,
    )


async def test_a_message_callback_url_wins_over_the_tenants(
    tmp_path: Path, hooks: Receiver
) -> None:
    async with relaying(tmp_path, hooks.url("/tenant")) as r:
        message_id = await r.send("Kargo teslim edildi.", callback_url=hooks.url("/own"))
        with trio.fail_after(15):
            while "delivered" not in {e["status"] for e in _events(hooks, "/own")}:
                await hooks.wait_requests(len(hooks.requests) + 1)
    assert {e["id"] for e in _events(hooks, "/own")} == {message_id}
    assert not [e for e in _events(hooks, "/tenant") if e["id"] == message_id]


async def test_an_mo_stop_reply_is_posted_with_its_opt_out(tmp_path: Path, hooks: Receiver) -> None:
    sim = {
        "mo_messages": [
            MoMessage(source_addr="905321234567", destination_addr="SHOP", text="DURDUR")
        ]
    }
    async with relaying(tmp_path, hooks.url("/tenant"), sim=sim):
        with trio.fail_after(15):
            while not [e for e in _events(hooks, "/tenant") if e["type"] == "mo"]:
                await hooks.wait_requests(len(hooks.requests) + 1)
    [mo] = [e for e in _events(hooks, "/tenant") if e["type"] == "mo"]
    assert (mo["from"], mo["to"], mo["text"], mo["opt_out"]) == (
        "+905321234567",
        "SHOP",
        "DURDUR",
        True,
    )


class _LookupFailsTwice(StoreWrapper):
    """The real store, whose first two callback-target reads fail (the database restarting)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.failed = 0

    async def callback_targets(self, message_ids: Any) -> Any:
        if self.failed < 2:
            self.failed += 1
            raise StoreError("PostgreSQL: connection was closed in the middle of operation")
        return await self._store.callback_targets(message_ids)


async def test_status_changes_wait_for_a_store_that_fails_and_then_go(
    tmp_path: Path, hooks: Receiver
) -> None:
    relays: list[WebhookRelay] = []
    wrap = cast(Any, _LookupFailsTwice)
    async with relaying(tmp_path, hooks.url("/tenant"), relays, wrap_store=wrap) as r:
        message_id = await r.send("Siparişiniz yolda.")
        with trio.fail_after(15):
            while {"submitted", "delivered"} - {
                e["status"] for e in _events(hooks, "/tenant") if e["id"] == message_id
            }:
                await hooks.wait_requests(len(hooks.requests) + 1)
    assert relays[0].lookup_failures == 2
    statuses = [e["status"] for e in _events(hooks, "/tenant") if e["id"] == message_id]
    assert sorted(statuses) == ["delivered", "submitted"]  # each once (sent concurrently)
