"""The narrow interface between the bind supervisor and the pipeline that feeds it.

The supervisor (:mod:`gateway.binds`) takes message parts from a :class:`PartSource`, one route
at a time, and reports every outcome to a :class:`PartSink`. The pipeline (scheduler and store)
implements both; :class:`gateway.workqueue.WorkQueue` is the simple in-memory implementation used
by tests and benchmarks.

The contract that makes "never a lost message" checkable: every part the supervisor takes from
the source ends in exactly one of ``on_submitted``, ``on_rejected`` or ``on_retry`` (the part
goes back to its queue). Nothing is dropped on the floor, whether the SMSC answers, throttles,
times out, drops the connection, or the daemon shuts down.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from protocols.pdu import DataSm, DeliverSm, SubmitSm

__all__ = ["OutboundPart", "PartId", "PartSink", "PartSource", "RetryReason"]

PartId = Hashable
"""The pipeline's identifier of one message part: any hashable key (the pipeline passes its
compact queued-part record, so a retried part goes back to its queue as it was)."""


@dataclass(slots=True, eq=False)
class OutboundPart:
    """One submit_sm to send on a route.

    ``pdu`` carries no sequence number: the bind's session assigns it on the wire. ``attempts``
    counts how many times the supervisor has written the part to an SMSC (incremented at each
    send), so the pipeline can give up on a part that keeps failing.
    """

    part_id: PartId
    route: str
    pdu: SubmitSm
    attempts: int = 0


class RetryReason(enum.StrEnum):
    """Why a part went back to its queue (the ``reason`` of :meth:`PartSink.on_retry`)."""

    THROTTLED = "throttled"
    """ESME_RTHROTTLED or ESME_RMSGQFUL: the SMSC asked us to slow down."""
    TRANSIENT_ERROR = "transient_error"
    """A temporary error status or a generic_nack answered the submit_sm."""
    TIMEOUT = "timeout"
    """No submit_sm_resp within the response timeout; the SMSC may have taken it."""
    CONNECTION_LOST = "connection_lost"
    """The connection ended while the part was outstanding; the SMSC may have taken it."""
    SHUTDOWN = "shutdown"
    """Still unanswered when a graceful shutdown closed the connection."""
    NOT_SENT = "not_sent"
    """Taken from the source but never written (the bind stopped first)."""

    @property
    def duplicate_risk(self) -> bool:
        """True when the SMSC may already have accepted the part (SMPP is at-least-once)."""
        return self in _DUPLICATE_RISK


_DUPLICATE_RISK = frozenset(
    {RetryReason.TIMEOUT, RetryReason.CONNECTION_LOST, RetryReason.SHUTDOWN}
)


class PartSource(Protocol):
    """Where binds take parts from, per route.

    ``get`` must be cancel-safe: a ``get`` cancelled while waiting must not lose a part (the
    supervisor cancels waiting send loops on shutdown and on connection loss).
    """

    async def get(self, route: str) -> OutboundPart:
        """Wait until a part for ``route`` is ready and take it."""
        ...

    def get_nowait(self, route: str) -> OutboundPart | None:
        """Take a ready part for ``route``, or return None at once (used to fill a batch)."""
        ...


class PartSink(Protocol):
    """What binds report to. The synchronous methods are called from a bind's reader, timer or
    send loop, so they must not block; ``now`` is ``trio.current_time()``."""

    def on_submitted(
        self, part: OutboundPart, smsc_message_id: str, bind_name: str, now: float
    ) -> None:
        """The SMSC accepted the part (submit_sm_resp with ESME_ROK) under ``smsc_message_id``."""
        ...

    def on_rejected(self, part: OutboundPart, command_status: int, now: float) -> None:
        """The SMSC refused the part for good (a permanent error status)."""
        ...

    def on_retry(self, part: OutboundPart, delay_s: float, reason: str, now: float) -> None:
        """Put the part back in its queue, ready again after ``delay_s`` seconds.

        ``reason`` is a :class:`RetryReason` value; ``RetryReason(reason).duplicate_risk`` tells
        whether the SMSC may already have it.
        """
        ...

    async def on_deliver(self, pdu: DeliverSm | DataSm, bind_name: str) -> int:
        """A deliver_sm (receipt or MO) or data_sm arrived; store it and return the
        command_status for its response. The response is sent only after this returns, so a
        crash before then makes the SMSC deliver it again."""
        ...

    def deliver_now(self, pdu: DeliverSm | DataSm, bind_name: str) -> tuple[int, int] | None:
        """The quick path of :meth:`on_deliver`, called from the reader: handle ``pdu`` at
        once if that needs no waiting but for a commit (a receipt of a part known in memory),
        and return its command_status and a commit ticket: the response goes out once
        :meth:`wait_committed` for that ticket returns. None: nothing was done, and the
        deliver_sm goes to :meth:`on_deliver` instead."""
        ...

    async def wait_committed(self, ticket: int) -> None:
        """Return once what :meth:`deliver_now` recorded under ``ticket`` is committed."""
        ...
