"""From the pipeline's events to signed webhook deliveries.

Status changes arrive as message-level :class:`~queues.model.Transition` objects, which carry
no tenant and no callback URL (the pipeline keeps no per-message memory for queued messages).
The relay collects them for a moment, looks the messages up in one store read
(:meth:`~queues.store.Store.callback_targets`) and hands each event to the
:class:`~gateway.webhooks.WebhookSender` for the message's own ``callback_url`` or, failing
that, its tenant's; signed with the tenant's ``webhook_secret``. MO messages come with their
tenant already known. Nothing here blocks the send path: listeners only append.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import trio

from gateway.config import TenantConfig
from gateway.webhooks import WebhookSender
from queues.model import Transition
from queues.store import Store, StoreError

__all__ = ["WebhookRelay"]

logger = logging.getLogger(__name__)


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


class WebhookRelay:
    """Run :meth:`run` in a nursery; register :meth:`on_status` and :meth:`on_mo` with the
    pipeline."""

    def __init__(
        self,
        sender: WebhookSender,
        store: Store,
        tenants: Mapping[str, TenantConfig],
        *,
        gather_s: float = 0.05,
        retry_s: float = 1.0,
    ) -> None:
        self._sender = sender
        self._store = store
        self._tenants = dict(tenants)
        self._gather_s = gather_s
        self._retry_s = retry_s
        self.lookup_failures = 0
        """Store reads of callback targets that failed (their events waited and went later)."""
        self._pending: list[Transition] = []
        self._wake = trio.Event()
        self.unsigned = 0
        """Events not sent because the tenant has no webhook_secret to sign them with."""

    def on_status(self, transition: Transition) -> None:
        self._pending.append(transition)
        self._wake.set()

    def on_mo(self, tenant: TenantConfig, event: dict[str, Any]) -> None:
        if tenant.callback_url is None:
            return
        self._submit(tenant, tenant.callback_url, {"type": "mo", "tenant": tenant.name, **event})

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await trio.sleep(self._gather_s)  # let a burst of changes share one read
            self._wake = trio.Event()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                targets = await self._store.callback_targets([t.message_id for t in batch])
            except StoreError as exc:
                # The events wait (first, in order) for the store to come back.
                self.lookup_failures += 1
                logger.warning(
                    "webhooks: cannot look up %d status changes (trying again in %g s): %s",
                    len(batch),
                    self._retry_s,
                    exc,
                )
                self._pending[:0] = batch
                await trio.sleep(self._retry_s)
                self._wake.set()
                continue
            for transition in batch:
                target = targets.get(transition.message_id)
                if target is None:
                    continue
                tenant_name, url, to, parts = target
                tenant = self._tenants.get(tenant_name)
                if tenant is None:
                    continue
                url = url or tenant.callback_url
                if url is None:
                    continue
                event: dict[str, Any] = {
                    "type": "message.status",
                    "tenant": tenant_name,
                    "id": transition.message_id,
                    "to": to,
                    "parts": parts,
                    "status": transition.status.value,
                    "at": _iso(transition.at),
                }
                if transition.error:
                    event["error"] = transition.error
                self._submit(
                    tenant, url, event, f"{transition.message_id}:{transition.status.value}"
                )

    def _submit(
        self, tenant: TenantConfig, url: str, event: dict[str, Any], event_id: str | None = None
    ) -> None:
        if tenant.webhook_secret is None:
            self.unsigned += 1
            logger.warning("tenant %s has a callback but no webhook_secret: not sent", tenant.name)
            return
        secret = tenant.webhook_secret.get_secret_value().encode()
        self._sender.submit(url, secret, event, event_id=event_id, tenant=tenant.name)
