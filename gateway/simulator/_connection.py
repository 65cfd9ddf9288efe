"""One TCP connection of the simulated SMSC, on the SMSC side of :class:`protocols.Session`.

Exactly three tasks per connection, whatever the traffic:

- the **reader** feeds each ``receive_some(65536)`` to the session and handles every event the
  chunk holds before awaiting again; all the bytes one chunk produces leave as one write;
- the **writer** joins whatever is queued into one ``send_all`` (trio pays one scheduler round
  per ``send_all``: one per PDU would cap the simulator near 40k PDUs/s, STACK.md §6);
- the **timer** sleeps until the earliest of: the head of the response-delay FIFO, the
  session's own deadline (our idle enquire_link, deliver_sm response timeouts).

The operator's round trip is modelled as latency on everything this side sends: bytes enter a
FIFO stamped ``now + response_delay_s`` and the timer releases them in order. The delay is the
same for all, so the FIFO is also in due order, and wire order is production order: a receipt
produced after its submit_sm_resp never overtakes it, and an "early" receipt produced before
the resp stays before it.

The session owns the protocol: bind states, what is legal when, sequence numbers and matching
of deliver_sm_resp, enquire_link answers, generic_nack for malformed PDUs, the unbind drain.
This module decides what an SMSC decides: credentials, throttling, message ids, receipts.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import trio

from gateway.ratelimit import TokenBucket
from protocols.constants import CommandId, CommandStatus
from protocols.pdu import (
    NO_TLVS,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DataSm,
    DataSmResp,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tlvs,
    response_for,
)
from protocols.session import (
    NEED_DATA,
    BindRequested,
    ConnectionClosed,
    Event,
    MalformedPdu,
    NackReceived,
    PduRejected,
    PeerDead,
    ProtocolViolation,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    Role,
    Session,
    SessionConfig,
    SessionState,
    UnbindRequested,
    Unbound,
    UnexpectedResponse,
)

from ._log import SubmitRecord
from ._receipts import PendingReceipt, mo_deliver_sm, receipt_deliver_sm
from ._settings import MoMessage
from ._stats import BindStats

if TYPE_CHECKING:
    from ._server import SimulatorHandle

__all__ = ["SmscConnection"]

logger = logging.getLogger(__name__)

# Read ~45 submit_sm at a time, not a whole window: the answers to the first ones go out
# while the client is still sending, as a real SMSC's would. Reading 64 KiB made the client
# and the simulator take turns (one window each way), idling a core at a time.
_RECEIVE_SIZE: Final = 4096
_HIGH_WATER: Final = 1 << 20  # queued output beyond which the reader stops reading
_DRAIN_TIMEOUT_S: Final = 5.0  # how long a closing connection may take to flush
_REDELIVERY_DELAY_S: Final = 1.0  # after a temporary deliver_sm_resp error
_SMSC_SYSTEM_ID: Final = "ULAKSIM"
_HEADER: Final = struct.Struct(">II")  # command_length, command_id
_ENQUIRE_LINK: Final = int(CommandId.ENQUIRE_LINK)
_ENQUIRE_LINK_RESP: Final = int(CommandId.ENQUIRE_LINK_RESP)

_RECEIVING: Final = frozenset({SessionState.BOUND_RX, SessionState.BOUND_TRX})
_BIND_MODES: Final = {
    BindTransmitter: "transmitter",
    BindReceiver: "receiver",
    BindTransceiver: "transceiver",
}
_BIND_RESPONSES: Final[
    dict[type[Pdu], type[BindTransmitterResp] | type[BindReceiverResp] | type[BindTransceiverResp]]
] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
}
# Requests the simulator does not implement, and the failure each gets (SMPP 3.4 §5.1.3).
_UNSUPPORTED_STATUS: Final[dict[int, CommandStatus]] = {
    CommandId.QUERY_SM: CommandStatus.ESME_RQUERYFAIL,
    CommandId.CANCEL_SM: CommandStatus.ESME_RCANCELFAIL,
    CommandId.REPLACE_SM: CommandStatus.ESME_RREPLACEFAIL,
}
# deliver_sm_resp statuses that mean "try again later" rather than "never".
_TEMPORARY: Final = frozenset(
    {CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL, CommandStatus.ESME_RX_T_APPN}
)
_PDU_EVENTS: Final = (
    BindRequested,
    UnbindRequested,
    PduRejected,
    MalformedPdu,
    UnexpectedResponse,
    NackReceived,
)
_RMSGQFUL: Final = int(CommandStatus.ESME_RMSGQFUL)
_RTHROTTLED: Final = int(CommandStatus.ESME_RTHROTTLED)
_BIND_VERSION_TLVS: Final = Tlvs(sc_interface_version=0x34)  # §5.3.2.25: we speak 3.4


class _Close(enum.Enum):
    """How a connection ends."""

    ABORT = "abort"  # the peer is gone or dead: drop everything
    FLUSH = "flush"  # unbound or unusable: send what is produced (delayed bytes too), close
    DROP = "drop"  # a simulated network drop: what is still "in the network" is lost


_Deliverable = PendingReceipt | MoMessage


_TLV_NAMES: Final = tuple(f.name for f in dataclasses.fields(Tlvs))


def _tlvs_json(tlvs: Tlvs) -> dict[str, Any]:
    """The TLVs of a submit_sm for the JSON log: spec names, bytes as hex."""
    if tlvs is NO_TLVS:
        return {}
    out: dict[str, Any] = {}
    for name in _TLV_NAMES:
        value = getattr(tlvs, name)
        if value is None or value == ():
            continue
        if isinstance(value, bytes):
            out[name] = value.hex()
        elif name == "unknown":
            out[name] = [[tag, raw.hex()] for tag, raw in value]
        else:
            out[name] = value
    return out


class SmscConnection:
    """The SMSC end of one TCP connection (at most one bind). Created by the server."""

    def __init__(self, sim: SimulatorHandle, stream: trio.SocketStream) -> None:
        settings = sim.settings
        self._sim = sim
        self._stats = sim.stats
        self._stream = stream
        self.connection_id = sim.next_connection_id()
        self.system_id = ""
        self.bind: BindStats | None = None
        self._session = Session(
            Role.SMSC,
            SessionConfig(
                window=settings.deliver_window,
                response_timeout=settings.response_timeout_s,
                enquire_link_interval=settings.enquire_link_interval_s,
                inactivity_timeout=None,
            ),
            now=trio.current_time(),
        )
        # Settings read on every submit, copied to attributes.
        self._delay = settings.response_delay_s
        self._spin = settings.release_spin_s  # the delay timer wakes this early, then polls
        self._max_window = settings.max_window
        self._receipts = settings.receipts
        self._receipt_delay = settings.response_delay_s + settings.receipt_delay_s
        self._early = settings.early_receipt_fraction
        self._decimal_ids = settings.receipt_id_format == "decimal"
        self._drop_after = settings.drop_after_pdus or math.inf
        self._mute_enquire_link = settings.stop_answering_enquire_link
        self._log = sim.log if sim.log.enabled else None
        self._bucket: TokenBucket | None = None

        self._pdus = 0  # PDUs received (for drop_after_pdus)
        self._unanswered = 0  # submit_sm received whose resp has not reached the writer
        self._chunk: list[bytes] = []  # output of the events being handled now, in order
        self._in_chunk = False
        self._chunk_submits = 0
        self._wall = 0.0
        self._fifo: deque[tuple[float, bytes, int]] = deque()  # (due, bytes, submit resps)
        self._unacked: dict[int, _Deliverable] = {}  # our deliver_sm by sequence number
        self._backlog: deque[_Deliverable] = deque()  # waiting for a deliver window slot
        self._due_receipts: list[PendingReceipt] = []  # made by this chunk, due at once
        self._closing = False

        self._out: list[bytes] = []
        self._out_bytes = 0
        self._writing = False
        self._writer_wake = trio.Event()
        self._drained = trio.Event()
        self._timer_wake = trio.Event()
        self._timer_deadline = math.inf
        self._read_scope = trio.CancelScope()
        self._close = _Close.ABORT

    # -- what the server asks --------------------------------------------------------------

    @property
    def can_receive(self) -> bool:
        """Whether deliver_sm (receipts, MO) may be sent on this connection now."""
        return not self._closing and self._session.state in _RECEIVING

    def take_unacknowledged(self) -> tuple[list[PendingReceipt], list[MoMessage]]:
        """Receipts and MO sent or queued here without a deliver_sm_resp; forgets them."""
        items = [*self._unacked.values(), *self._backlog]
        self._unacked.clear()
        self._backlog.clear()
        receipts = [i for i in items if isinstance(i, PendingReceipt)]
        mos = [i for i in items if isinstance(i, MoMessage)]
        return receipts, mos

    def close_bind(self) -> None:
        self._closing = True
        if self.bind is not None:
            self.bind.open = False

    def send_receipt(self, receipt: PendingReceipt) -> None:
        """Deliver a receipt on this bind (now, or when the deliver window has room)."""
        if self._backlog or self._session.window_free == 0:
            self._backlog.append(receipt)
        else:
            self._send_deliver(receipt)

    def send_mo(self, mo: MoMessage) -> None:
        """Deliver an MO message on this bind (now, or when the deliver window has room)."""
        if self._backlog or self._session.window_free == 0:
            self._backlog.append(mo)
        else:
            self._send_deliver(mo)

    # -- tasks -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; the caller closes the stream."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            nursery.start_soon(self._timer)
            with trio.CancelScope() as self._read_scope:
                self._close = await self._read_loop()
            # Either the reader decided, or the timer did and cancelled the reader.
            close = self._close
            self._closing = True
            if close is _Close.DROP:
                self._stats.dropped_connections += 1
                self._fifo.clear()
            if close is not _Close.ABORT:
                with trio.move_on_after(self._delay + _DRAIN_TIMEOUT_S):
                    await self._wait_drained(fifo_too=close is _Close.FLUSH)
            nursery.cancel_scope.cancel()

    async def _read_loop(self) -> _Close:
        session = self._session
        stream = self._stream
        while True:
            if self._out_bytes > _HIGH_WATER:
                # The peer reads slower than it writes: stop reading (TCP pushes back).
                await self._wait_drained(fifo_too=False)
            data = await stream.receive_some(_RECEIVE_SIZE)
            now = trio.current_time()
            session.receive_data(data, now)
            close = self._process(now)
            if close is not None:
                return close

    async def _writer(self) -> None:
        out = self._out
        stream = self._stream
        while True:
            if not out:
                self._writing = False
                self._drained.set()
                self._writer_wake = trio.Event()
                await self._writer_wake.wait()
                continue
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._out_bytes = 0
            self._writing = True
            await stream.send_all(data)

    async def _timer(self) -> None:
        session = self._session
        fifo = self._fifo
        while True:
            deadline = session.next_deadline()
            if deadline is None:
                deadline = math.inf
            wake_at = deadline
            if fifo and fifo[0][0] < deadline:
                deadline = fifo[0][0]
                wake_at = deadline - self._spin
            self._timer_deadline = deadline
            self._timer_wake = trio.Event()
            with trio.move_on_at(wake_at):
                await self._timer_wake.wait()
            self._timer_deadline = math.inf
            now = trio.current_time()
            if fifo:
                head = fifo[0][0]
                if now < head <= now + self._spin:
                    # Woken just before the head is due: checkpoint until it is (never early).
                    while now < head:
                        await trio.lowlevel.checkpoint()
                        later = trio.current_time()
                        if later == now:  # a virtual clock (tests): time moves only when idle
                            await trio.sleep_until(head)
                            later = trio.current_time()
                        now = later
                self._flush_due(now)
            due = session.next_deadline()
            if due is not None and due <= now:
                session.handle_timers(now)
                pings = session.data_to_send()
                if pings:
                    self._stats.enquire_links_sent += _count_commands(pings, _ENQUIRE_LINK)
                    self._queue_out(pings)
                close = self._process(now)
                if close is not None:
                    self._close = close
                    self._read_scope.cancel()

    async def _wait_drained(self, *, fifo_too: bool) -> None:
        while (fifo_too and self._fifo) or self._out or self._writing:
            self._drained = trio.Event()
            await self._drained.wait()

    # -- output ----------------------------------------------------------------------------

    def _push(self, data: bytes) -> None:
        """Hand bytes to the writer (they go out with everything else queued)."""
        if self._mute_enquire_link:
            data = self._strip_enquire_link_resps(data)
        self._out.append(data)
        self._out_bytes += len(data)
        self._writer_wake.set()

    def _emit(self, data: bytes, submit_resps: int) -> None:
        """Send bytes after the simulated network delay; ``submit_resps`` of them answer
        submit_sm (the window count drops when they reach the writer)."""
        if self._delay:
            due = trio.current_time() + self._delay
            self._fifo.append((due, data, submit_resps))
            if due < self._timer_deadline:
                self._timer_wake.set()
        else:
            self._push(data)
            self._unanswered -= submit_resps
        deadline = self._session.next_deadline()
        if deadline is not None and deadline < self._timer_deadline:
            self._timer_wake.set()

    def _queue_out(self, data: bytes) -> None:
        """Send bytes produced outside the submit path, keeping production order."""
        if self._in_chunk:
            self._chunk.append(data)
        else:
            self._emit(data, 0)

    def _flush_due(self, now: float) -> None:
        fifo = self._fifo
        parts: list[bytes] = []
        answered = 0
        while fifo and fifo[0][0] <= now:
            _, data, n = fifo.popleft()
            parts.append(data)
            answered += n
        if parts:
            self._push(b"".join(parts))
            self._unanswered -= answered

    def _strip_enquire_link_resps(self, data: bytes) -> bytes:
        """Remove enquire_link_resp frames (``stop_answering_enquire_link``: a dead peer).

        The session answers enquire_link by itself, so playing dead means dropping its answer
        on the way out. Only used in that test mode; the frames are well formed (ours).
        """
        kept: list[bytes] = []
        pos = 0
        while pos < len(data):
            length, command_id = _HEADER.unpack_from(data, pos)
            if command_id == _ENQUIRE_LINK_RESP:
                self._stats.enquire_links_ignored += 1
            else:
                kept.append(data[pos : pos + length])
            pos += length
        return b"".join(kept)

    # -- events ----------------------------------------------------------------------------

    def _process(self, now: float) -> _Close | None:
        """Handle every event the session has for us; return how to close, or None."""
        session = self._session
        chunk = self._chunk
        self._in_chunk = True
        self._chunk_submits = 0
        self._wall = time.time()
        close: _Close | None = None
        try:
            while True:
                event = session.next_event()
                if isinstance(event, RequestReceived):
                    self._pdus += 1
                    pdu = event.pdu
                    if isinstance(pdu, SubmitSm):
                        self._on_submit(pdu, now, chunk)
                    else:
                        self._on_other_request(pdu, now, chunk)
                elif event is NEED_DATA:
                    break
                elif isinstance(event, ResponseReceived):
                    self._pdus += 1
                    self._on_response(event, now)
                else:
                    close = self._on_event(event, now, chunk)
                out = session.data_to_send()
                if out:
                    chunk.append(out)
                if close is not None:
                    break
                if self._pdus >= self._drop_after:
                    close = _Close.DROP
                    break
            # Answers queued while looking for the next event (enquire_link_resp, a nack).
            out = session.data_to_send()
            if out:
                chunk.append(out)
            if self._due_receipts:
                # Receipts with no delay: after every resp of the chunk, in the same write.
                dispatch = self._sim.dispatch_receipt
                for receipt in self._due_receipts:
                    dispatch(receipt)
                self._due_receipts.clear()
        finally:
            self._in_chunk = False
        if chunk:
            self._emit(chunk[0] if len(chunk) == 1 else b"".join(chunk), self._chunk_submits)
            chunk.clear()
        return close

    def _on_submit(self, pdu: SubmitSm, now: float, chunk: list[bytes]) -> None:
        stats = self._stats
        bind = self.bind
        assert bind is not None  # the session only lets submit_sm through when bound
        stats.submits += 1
        bind.submits += 1
        self._chunk_submits += 1
        unanswered = self._unanswered = self._unanswered + 1
        if unanswered > bind.max_unanswered:
            bind.max_unanswered = unanswered
            stats.max_unanswered = max(stats.max_unanswered, unanswered)
        bucket = self._bucket
        max_window = self._max_window
        if max_window is not None and unanswered > max_window:
            # The ESME broke its window: refuse, and remember it (tests assert it never does).
            status = _RMSGQFUL
            stats.window_violations += 1
            bind.window_violations += 1
        elif bucket is not None and not bucket.try_take(now):
            status = _RTHROTTLED
            stats.throttled += 1
            bind.throttled += 1
        else:
            status = 0
        seq = pdu.sequence_number
        if status:
            message_id = ""
            resp = SubmitSmResp(sequence_number=seq, command_status=status)
        else:
            stats.accepted += 1
            bind.accepted += 1
            message_id = self._sim.next_message_id()
            resp = SubmitSmResp(sequence_number=seq, message_id=message_id)
            if self._receipts and pdu.registered_delivery & 0x03:
                self._make_receipt(pdu, message_id, now)
        chunk.append(self._session.send(resp, now))
        log = self._log
        if log is not None:
            tlvs = pdu.tlvs
            record: SubmitRecord = {
                "time": self._wall,
                "system_id": self.system_id,
                "sequence": seq,
                "source": pdu.source_addr,
                "destination": pdu.destination_addr,
                "esm_class": pdu.esm_class,
                "data_coding": pdu.data_coding,
                "registered_delivery": pdu.registered_delivery,
                "short_message": pdu.short_message.hex(),
                "tlvs": {} if tlvs is NO_TLVS else _tlvs_json(tlvs),
                "status": status,
                "message_id": message_id,
            }
            log.add(record)
            stats.log_records += 1

    def _make_receipt(self, pdu: SubmitSm, message_id: str, now: float) -> None:
        sim = self._sim
        state = sim.pick_receipt_state()
        if pdu.registered_delivery & 0x03 == 0x02 and state == "DELIVRD":
            return  # §5.2.17: receipt requested on failure only
        receipt = PendingReceipt(self.system_id, self, message_id, state, pdu, self._wall)
        early = self._early
        if early and sim.rng.random() < early:
            # The real-world race: the receipt is produced before the submit_sm_resp, so it is
            # on the wire first (on this bind if it can receive, else on another one).
            self._stats.receipts_early += 1
            sim.dispatch_receipt(receipt)
        elif self._receipt_delay:
            sim.schedule_receipt(receipt, now + self._receipt_delay)
        else:
            self._due_receipts.append(receipt)

    def _on_other_request(self, pdu: Pdu, now: float, chunk: list[bytes]) -> None:
        if isinstance(pdu, DataSm):
            # §4.7: data_sm is accepted like a submit_sm, without receipts or log.
            self._stats.accepted += 1
            answer: Pdu = DataSmResp(
                sequence_number=pdu.sequence_number, message_id=self._sim.next_message_id()
            )
        else:
            status = _UNSUPPORTED_STATUS.get(pdu.command_id, CommandStatus.ESME_RINVCMDID)
            answer = response_for(pdu, status)
            self._stats.rejected += 1
        chunk.append(self._session.send(answer, now))

    def _on_event(self, event: Event, now: float, chunk: list[bytes]) -> _Close | None:
        stats = self._stats
        if isinstance(event, _PDU_EVENTS):
            self._pdus += 1
        if isinstance(event, BindRequested):
            self._on_bind(event.pdu, now, chunk)
        elif isinstance(event, ResponseTimeout):
            item = self._unacked.pop(event.sequence_number, None)
            stats.deliver_sm_timeouts += 1
            if item is not None:
                self._redeliver(item, now)
            self._pump_backlog()
        elif isinstance(event, UnbindRequested):
            stats.unbinds += 1
        elif isinstance(event, Unbound):
            return _Close.FLUSH
        elif isinstance(event, PduRejected):
            stats.rejected_pdus += 1
        elif isinstance(event, MalformedPdu):
            stats.protocol_errors += 1
            stats.generic_nacks_sent += event.answered
        elif isinstance(event, ProtocolViolation):
            # The stream cannot be framed any more: send the generic_nack, then close.
            stats.protocol_errors += 1
            stats.generic_nacks_sent += 1
            return _Close.FLUSH
        elif isinstance(event, ConnectionClosed):
            return _Close.ABORT
        elif isinstance(event, PeerDead):
            stats.peers_dead += 1
            return _Close.ABORT
        elif isinstance(event, (UnexpectedResponse, NackReceived)):
            stats.unexpected_responses += 1
        return None

    def _on_bind(self, pdu: Pdu, now: float, chunk: list[bytes]) -> None:
        assert isinstance(pdu, (BindTransmitter, BindReceiver, BindTransceiver))
        sim = self._sim
        status = sim.check_bind(pdu.system_id, pdu.password)
        resp_class = _BIND_RESPONSES[type(pdu)]
        if status:
            resp = resp_class(sequence_number=pdu.sequence_number, command_status=status)
        else:
            resp = resp_class(
                sequence_number=pdu.sequence_number,
                system_id=_SMSC_SYSTEM_ID,
                tlvs=_BIND_VERSION_TLVS,
            )
        chunk.append(self._session.send(resp, now))
        if status:
            self._stats.bind_failures += 1
            logger.info("bind of %r refused with status %#x", pdu.system_id, status)
            return
        self.system_id = pdu.system_id
        self.bind = sim.register_bind(self, _BIND_MODES[type(pdu)])
        tps = sim.settings.tps_limit
        if tps is not None:
            self._bucket = TokenBucket(tps, sim.settings.effective_tps_burst, now)
        if self.can_receive:
            sim.offer_mo_to_account(self.system_id)

    def _on_response(self, event: ResponseReceived, now: float) -> None:
        item = self._unacked.pop(event.sequence_number, None)
        if event.ok:
            self._stats.deliver_sm_resp_ok += 1
        else:
            self._stats.deliver_sm_resp_errors += 1
            if item is not None and event.response.command_status in _TEMPORARY:
                self._redeliver(item, now + _REDELIVERY_DELAY_S)
        if self._backlog:
            self._pump_backlog()

    def _pump_backlog(self) -> None:
        """Send queued receipts and MO while the deliver window has room."""
        backlog = self._backlog
        while backlog and self._session.window_free and self.can_receive:
            self._send_deliver(backlog.popleft())

    def _redeliver(self, item: _Deliverable, due: float) -> None:
        if isinstance(item, PendingReceipt):
            item.origin = None
            self._stats.receipts_requeued += 1
            self._sim.schedule_receipt(item, due)
        else:
            self._sim.requeue_mo(item)

    def _send_deliver(self, item: _Deliverable) -> None:
        now = trio.current_time()
        stats = self._stats
        bind = self.bind
        if isinstance(item, PendingReceipt):
            pdu = receipt_deliver_sm(item, decimal_id=self._decimal_ids, done_time=time.time())
            stats.receipts_sent += 1
            stats.receipt_states[item.state] += 1
            if bind is not None:
                bind.receipts_sent += 1
        else:
            pdu = mo_deliver_sm(item)
            stats.mo_sent += 1
            if bind is not None:
                bind.mo_sent += 1
        data = self._session.send(pdu, now)
        self._unacked[self._session.last_sequence_number] = item
        self._queue_out(data)


def _count_commands(data: bytes, command_id: int) -> int:
    """How many whole PDUs with ``command_id`` the well-formed bytes ``data`` hold."""
    count = 0
    pos = 0
    while pos + 8 <= len(data):
        length, found = _HEADER.unpack_from(data, pos)
        count += found == command_id
        pos += length
    return count
