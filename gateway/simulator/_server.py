"""The simulated SMSC's shared state and its listener.

One :class:`SimulatorHandle` per running simulator holds what outlives a connection: the
accounts and their live binds, the message id counter, the receipt heap with its single timer
task, the MO messages not yet delivered, the counters and the submit log. Each TCP connection is
an :class:`~._connection.SmscConnection` with exactly three tasks (reader, coalescing writer,
timer); nothing here starts a task per PDU or per message.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from bisect import bisect_right
from collections.abc import Iterator

import trio

from protocols.constants import CommandStatus

from ._connection import SmscConnection
from ._log import SubmitLog, SubmitRecord
from ._receipts import PendingReceipt
from ._settings import MoMessage, SimulatorSettings
from ._stats import BindStats, SimulatorStats

__all__ = ["SimulatorHandle", "serve_simulator"]

logger = logging.getLogger(__name__)

# Message ids start here so that the hex ids have letters and the decimal form differs from the
# hex text in every digit count: the gateway's id normalisation is exercised by default.
_FIRST_MESSAGE_ID = 0xA0000000


class SimulatorHandle:
    """The running simulator, as tests and the CLI see it.

    Attributes:
        port: the TCP port it listens on (the ephemeral one when settings.port is 0).
        settings: what it was started with.
        stats: overall counters (:class:`SimulatorStats`).
        binds: one :class:`BindStats` per accepted bind, in bind order, including closed ones.
        submitted: every received submit_sm as a :class:`SubmitRecord` (when ``keep_records``).
    """

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.port = 0
        self.stats = SimulatorStats()
        self.binds: list[BindStats] = []
        self._log = SubmitLog(settings.log_path, keep=settings.keep_records)
        self._rng = random.Random(settings.seed)
        self._ids = itertools.count(_FIRST_MESSAGE_ID)
        self._connection_ids = itertools.count(1)
        # Live binds per account, in bind order; receipts prefer the bind of their submit.
        self._bound: dict[str, list[SmscConnection]] = {sid: [] for sid in settings.accounts}
        self._round_robin = itertools.count()
        self._receipt_heap: list[tuple[float, int, PendingReceipt]] = []
        self._receipt_order = itertools.count()
        self._receipt_wake = trio.Event()
        self._mo_pending: list[MoMessage] = list(settings.mo_messages)
        states = list(settings.receipt_mix)
        weights = [settings.receipt_mix[s] for s in states]
        total = sum(weights)
        self._mix_states = states
        self._mix_cumulative = list(itertools.accumulate(w / total for w in weights))

    # -- what tests and the CLI read -------------------------------------------------------

    @property
    def submitted(self) -> list[SubmitRecord]:
        return self._log.records

    def active_binds(self, system_id: str | None = None) -> int:
        """Number of live binds, of one account or of all."""
        if system_id is not None:
            return len(self._bound.get(system_id, ()))
        return sum(len(conns) for conns in self._bound.values())

    def status_line(self) -> str:
        """One line of the main counters (printed by ``--status-interval-s`` and on stop)."""
        return self.stats.status_line(self.active_binds())

    # -- used by connections ---------------------------------------------------------------

    @property
    def log(self) -> SubmitLog:
        return self._log

    @property
    def rng(self) -> random.Random:
        return self._rng

    def next_message_id(self) -> str:
        # Hex, as most SMSCs answer in submit_sm_resp (SMPP 3.4 §4.4.2: opaque C-string).
        return f"{next(self._ids):x}"

    def next_connection_id(self) -> int:
        return next(self._connection_ids)

    def pick_receipt_state(self) -> str:
        index = bisect_right(self._mix_cumulative, self._rng.random())
        return self._mix_states[min(index, len(self._mix_states) - 1)]

    def check_bind(self, system_id: str, password: str) -> int:
        """The bind response status for these credentials (0 = accept)."""
        expected = self.settings.accounts.get(system_id)
        if expected is None:
            return CommandStatus.ESME_RINVSYSID
        if password != expected:
            return CommandStatus.ESME_RINVPASWD
        if len(self._bound[system_id]) >= self.settings.max_binds_per_account:
            # Operators answer an extra bind with ESME_RALYBND (PROTOCOL-NOTES, Sessions).
            return CommandStatus.ESME_RALYBND
        return CommandStatus.ESME_ROK

    def register_bind(self, conn: SmscConnection, mode: str) -> BindStats:
        bind = BindStats(connection_id=conn.connection_id, system_id=conn.system_id, mode=mode)
        self.binds.append(bind)
        self._bound[conn.system_id].append(conn)
        self.stats.binds += 1
        return bind

    def unregister(self, conn: SmscConnection) -> None:
        """A connection ended: forget its bind, re-deliver what it had not acknowledged."""
        conns = self._bound.get(conn.system_id)
        if conns is not None and conn in conns:
            conns.remove(conn)
        receipts, mos = conn.take_unacknowledged()
        now = trio.current_time()
        for receipt in receipts:
            receipt.origin = None
            self.stats.receipts_requeued += 1
            self.schedule_receipt(receipt, now)
        if mos:
            self._mo_pending[:0] = mos
            self.offer_mo_to_account(conn.system_id)

    def schedule_receipt(self, receipt: PendingReceipt, due: float) -> None:
        heap = self._receipt_heap
        if not heap or due < heap[0][0]:
            self._receipt_wake.set()
        heapq.heappush(heap, (due, next(self._receipt_order), receipt))

    def _receivers(self, system_id: str) -> Iterator[SmscConnection]:
        conns = self._bound.get(system_id, ())
        if not conns:
            return
        start = next(self._round_robin) % len(conns)
        for i in range(len(conns)):
            conn = conns[(start + i) % len(conns)]
            if conn.can_receive:
                yield conn

    def dispatch_receipt(self, receipt: PendingReceipt) -> bool:
        """Send a due receipt: on its own bind if it can take it, else on another bind of the
        same account; if the account has no receiving bind, drop it and count it."""
        origin = receipt.origin
        target = origin if origin is not None and origin.can_receive else None
        if target is None:
            target = next(self._receivers(receipt.system_id), None)
        if target is None:
            self.stats.receipts_dropped += 1
            return False
        target.send_receipt(receipt)
        return True

    def offer_mo_to_account(self, system_id: str) -> None:
        """Hand undelivered MO messages meant for ``system_id`` to one of its receiving binds."""
        if not self._mo_pending:
            return
        target = next(self._receivers(system_id), None)
        if target is None:
            return
        keep: list[MoMessage] = []
        for mo in self._mo_pending:
            if mo.system_id is None or mo.system_id == system_id:
                target.send_mo(mo)
            else:
                keep.append(mo)
        self._mo_pending = keep

    def requeue_mo(self, mo: MoMessage) -> None:
        """An MO the ESME refused for now: offered again with the account's next bind."""
        self._mo_pending.insert(0, mo)

    # -- tasks -----------------------------------------------------------------------------

    async def _receipt_loop(self) -> None:
        """The one timer task for every receipt of every bind: sleep to the earliest due."""
        heap = self._receipt_heap
        while True:
            deadline = heap[0][0] if heap else math.inf
            self._receipt_wake = trio.Event()
            with trio.move_on_at(deadline):
                await self._receipt_wake.wait()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, receipt = heapq.heappop(heap)
                self.dispatch_receipt(receipt)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = SmscConnection(self, stream)
        self.stats.connections += 1
        try:
            await conn.run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away (reset, closed while we wrote): ordinary for an SMSC
        except* Exception:
            # A bug of ours must cost one connection, never the simulator.
            logger.exception("connection %d failed", conn.connection_id)
        finally:
            conn.close_bind()
            self.unregister(conn)
            await trio.aclose_forcefully(stream)


async def serve_simulator(
    settings: SimulatorSettings,
    *,
    task_status: trio.TaskStatus[SimulatorHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the simulated SMSC until cancelled.

    Args:
        settings: what to simulate.
        task_status: ``started(handle)`` is called once the listener accepts connections (use
            ``handle = await nursery.start(serve_simulator, settings)``).

    Raises:
        OSError: the address cannot be bound or the log file cannot be opened.
    """
    handle = SimulatorHandle(settings)
    try:
        listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
        handle.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle._receipt_loop)
            nursery.start_soon(handle.log.run, settings.log_flush_interval_s)
            await nursery.start(trio.serve_listeners, handle._serve_connection, listeners)
            task_status.started(handle)
    finally:
        handle.log.close()
