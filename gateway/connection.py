"""One connection of a bind: the tasks that move PDUs between the socket and the session.

A :class:`Connection` runs exactly these tasks in one nursery, whatever the traffic (no task per
message, no callbacks):

- the **reader** feeds each ``receive_some(65536)`` to the sans-IO session and handles every
  event of the chunk before reading again (trio-websocket ``_reader_task``): submit responses
  resolve parts, throttling answers slow the bind down, deliver_sm go to the deliver workers;
- the **writer** joins every queued byte string into one ``send_all`` (STACK.md §6: one
  ``send_all`` per PDU caps trio near 40k PDUs/s). Whatever produces bytes appends them to the
  outbox synchronously, right after the session call that produced them, so the wire order is
  the session's order (a bind before the submits, the last submit before the unbind); the
  window bounds the outbox;
- the **timer** sleeps until ``session.next_deadline()`` and runs ``handle_timers``: response
  timeouts, our idle enquire_link and the dead-peer verdict (SMPP 3.4 §4.11);
- the **send loop** (transmitter and transceiver): waits until the window has room and the
  token bucket has a token, takes one part with ``await source.get()``, then as many more as
  the window and the tokens allow with ``get_nowait()``, encodes them and queues them at once;
- the **answerer** (receiver and transceiver): the reader offers each deliver_sm to
  ``sink.deliver_now``, which handles a receipt of a part it knows there and then and returns
  a commit ticket; the answerer sends the deliver_sm_resp of every such receipt once the store
  has committed its ticket, a batch per commit. So a receipt is stored before the SMSC hears
  we have it, and the receipts a bind can take per commit are bounded by the SMSC's deliver
  window alone;
- ``deliver_workers`` **deliver workers** (receiver and transceiver) for the rest (MO
  messages, receipts whose part must be looked up in the store or has not had its
  submit_sm_resp yet): each awaits ``sink.on_deliver`` for one deliver_sm, then sends the
  deliver_sm_resp with the status it returned. The reader hands them deliver_sm through an
  unbounded memory channel without blocking mid-chunk, and stops reading the socket while
  ``deliver_queue_limit`` are pending on both paths (TCP then pushes back on the SMSC): a slow
  store delays receipts, never the submit responses of the same chunk. A store that is stuck
  (none of them answered for ``deliver_stall_s``) must not silence the bind, or the SMSC's
  enquire_link goes unanswered and it drops the bind with the submissions in its window: the
  reader then reads on and answers each new deliver_sm at once with ESME_RX_T_APPN, which the
  SMSC delivers again later, until the pending ones move.

The bind's task is the controller (:meth:`Connection.run`): bind, wait until the connection
ends or a stop is requested, then the graceful stop (SMPP 3.4 §4.2): cancel the send loop, wait
for outstanding responses until the stop deadline, unbind, wait for unbind_resp, flush.

The window is the session's (``window_free``; it refuses a request beyond it), so no slot
objects are needed: no task waits for one particular response (trio-websocket keeps an Event per
ping because a caller awaits each one). The send loop waits on one event, set whenever a
response or a timeout frees a slot.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Final, cast

import trio

from gateway.bindstate import BindFailure, BindMode, BindState, FailureKind
from gateway.parts import OutboundPart, RetryReason
from protocols.constants import CommandId, CommandStatus
from protocols.errors import LocalProtocolError
from protocols.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DataSm,
    DeliverSm,
    Pdu,
    SubmitSmResp,
    Unbind,
    response_for,
)
from protocols.session import (
    NEED_DATA,
    BindFailed,
    Bound,
    ConnectionClosed,
    Event,
    InactivityTimeout,
    MalformedPdu,
    NackReceived,
    OutbindReceived,
    PduRejected,
    PeerDead,
    ProtocolViolation,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    Role,
    Session,
    SessionState,
    UnbindRequested,
    Unbound,
    UnexpectedResponse,
)

if TYPE_CHECKING:
    from gateway.bind import Bind

__all__ = ["Connection", "classify_bind_status"]

logger = logging.getLogger(__name__)

_RECEIVE_SIZE: Final = 65536
# Parts sent in one go before the send loop lets other tasks run: a whole window at once
# (100 parts, a few milliseconds) held up everything else, an OTP's accept among them.
_SEND_SLICE: Final = 32
_FLUSH_TIMEOUT_S: Final = 1.0  # for the last bytes (an unbind_resp, a generic_nack)
_LAST_WORDS_S: Final = 0.2  # shielded unbind after a cancellation
_THROTTLING: Final = frozenset(
    {int(CommandStatus.ESME_RTHROTTLED), int(CommandStatus.ESME_RMSGQFUL)}
)
# submit_sm_resp statuses worth another try later (SMPP 3.4 §5.1.3): the SMSC's trouble, not the
# message's. Any other error status rejects the part for good.
_TRANSIENT: Final = frozenset(
    {
        int(CommandStatus.ESME_RSYSERR),
        int(CommandStatus.ESME_RINVBNDSTS),
        int(CommandStatus.ESME_RX_T_APPN),
        int(CommandStatus.ESME_RUNKNOWNERR),
    }
)
# The answer to a deliver_sm we cannot take now (the SMSC delivers it again).
_DEFERRED: Final = int(CommandStatus.ESME_RX_T_APPN)
_BAD_CREDENTIALS: Final = frozenset(
    {int(CommandStatus.ESME_RINVPASWD), int(CommandStatus.ESME_RINVSYSID)}
)
_ENCODE_FAILURE: Final = int(CommandStatus.ESME_RSUBMITFAIL)  # a part our codec cannot encode
_BIND_COMMANDS: Final = frozenset(
    {CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER}
)
_TX_STATES: Final = frozenset({SessionState.BOUND_TX, SessionState.BOUND_TRX})
_BOUND_STATES: Final = frozenset(
    {SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX}
)
_BIND_REQUESTS: Final = {
    BindMode.TRANSMITTER: BindTransmitter,
    BindMode.RECEIVER: BindReceiver,
    BindMode.TRANSCEIVER: BindTransceiver,
}


def classify_bind_status(status: int) -> FailureKind:
    """The failure kind of a refused bind, from the bind response's command_status."""
    if status in _BAD_CREDENTIALS:
        return FailureKind.BAD_CREDENTIALS
    if status == CommandStatus.ESME_RALYBND:
        return FailureKind.ALREADY_BOUND
    return FailureKind.BIND_REFUSED


class Connection:
    """One TCP (or TLS) connection of a :class:`~gateway.bind.Bind` and its tasks (see the
    module docstring). The bind creates one per connection, awaits :meth:`run`, and then,
    whatever happened (even under cancellation), calls :meth:`abandon` and :meth:`last_words`.
    """

    def __init__(self, bind: Bind, stream: trio.abc.Stream) -> None:
        s = bind.settings
        self._bind = bind
        self._settings = s
        self._stream = stream
        self._sink = bind.sink
        self._name = bind.name
        self._counters = bind.counters
        self._rate = bind.rate
        self.session = Session(Role.ESME, s.session_config(), now=trio.current_time())
        self.inflight: dict[int, OutboundPart] = {}  # our submit_sm by sequence number
        self.bound = False
        self.ended = False
        self.failure: BindFailure | None = None
        self._bound_at = math.inf
        self.attention = trio.Event()  # bound, ended or stop requested: the controller looks
        self._room = trio.Event()  # a window slot was freed (the send loop waits for it)
        self._progress = trio.Event()  # a response came or a deliver_sm was answered
        self._send_scope = trio.CancelScope()
        # The outbox: byte strings in production order, joined by the writer.
        self._out: list[bytes] = []
        self._writing = False
        self._writer_wake = trio.Event()
        self._writer_idle = trio.Event()
        self._timer_at = math.inf
        self._timer_wake = trio.Event()
        self._deliver_in, self._deliver_out = trio.open_memory_channel[DeliverSm | DataSm](math.inf)
        self._delivers_pending = 0  # deliver_sm not yet answered, on either path
        self._deliver_room = trio.Event()
        # Set when the pending deliver_sm have not moved for deliver_stall_s: new ones are
        # answered at once with a temporary error until they do.
        self._shedding = False
        # deliver_sm the sink handled at once (sink.deliver_now): (commit ticket, pdu, status),
        # answered by the answerer once their transitions are committed.
        self._answers: deque[tuple[int, DeliverSm | DataSm, int]] = deque()
        self._answers_wake = trio.Event()

    # --- the controller ---------------------------------------------------------------------

    async def run(self) -> BindFailure | None:
        """Bind, serve until the connection ends or the bind stops, unbind; return why it
        ended (None for a clean unbind of ours)."""
        bind = self._bind
        mode = self._settings.bind_mode
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader)
            nursery.start_soon(self._writer)
            nursery.start_soon(self._timer)
            if await self._bind_session():
                if mode.transmits:
                    nursery.start_soon(self._send_loop)
                if mode.receives:
                    nursery.start_soon(self._answerer)
                    for _ in range(self._settings.deliver_workers):
                        nursery.start_soon(self._deliver_worker, self._deliver_out.clone())
                while not (self.ended or bind.stopping):
                    self.attention = trio.Event()
                    await self.attention.wait()
                if not self.ended:
                    await self._unbind()
            await self._flush()
            nursery.cancel_scope.cancel()
        if self.bound:
            bind.on_connection_end(trio.current_time() - self._bound_at)
        return self.failure

    async def _bind_session(self) -> bool:
        s = self._settings
        bind = self._bind
        bind.set_state(BindState.BINDING)
        try:
            request = _BIND_REQUESTS[s.bind_mode](
                system_id=s.system_id,
                password=s.password,
                system_type=s.system_type,
                interface_version=0x34,
                addr_ton=s.addr_ton,
                addr_npi=s.addr_npi,
                address_range=s.address_range,
            )
            self._send_request(request)
        except LocalProtocolError:
            # Not chained or logged: the codec's message may quote the password.
            detail = "the bind request cannot be encoded (check system_id, password lengths)"
            self.end(self._failure(FailureKind.BIND_REFUSED, detail))
            return False
        with trio.move_on_after(s.bind_timeout_s):
            while not (self.bound or self.ended or bind.stopping):
                self.attention = trio.Event()
                await self.attention.wait()
        if not (self.bound or self.ended):
            if bind.stopping:
                self.end(None)
            else:
                self.end(self._failure(FailureKind.BIND_TIMEOUT, "no bind response"))
        return self.bound and not self.ended

    async def _unbind(self) -> None:
        """Graceful stop (SMPP 3.4 §4.2): no new work, wait (until the bind's stop deadline)
        for outstanding responses and deliver_sm being stored, unbind, wait for unbind_resp
        (at most ``unbind_timeout_s``)."""
        bind = self._bind
        session = self.session
        bind.set_state(BindState.UNBINDING)
        self._send_scope.cancel()
        with trio.move_on_at(bind.stop_deadline):
            while (session.in_flight or self._delivers_pending) and not self.ended:
                self._progress = trio.Event()
                await self._progress.wait()
        if self.ended or session.state not in _BOUND_STATES:
            return
        self._send_request(Unbind())
        with trio.move_on_after(self._settings.unbind_timeout_s):
            while not self.ended:
                self.attention = trio.Event()
                await self.attention.wait()
        if not self.ended:
            logger.info("%s: no unbind_resp; closing", bind.name)
            self.end(None)

    async def _flush(self) -> None:
        """Let the writer send what is queued (an unbind_resp, a generic_nack), briefly."""
        with trio.move_on_after(_FLUSH_TIMEOUT_S):
            while self._out or self._writing:
                self._writer_idle = trio.Event()
                await self._writer_idle.wait()

    def end(self, failure: BindFailure | None) -> None:
        """The connection is over (the first reason wins); wake everything that waits."""
        if not self.ended:
            self.ended = True
            self.failure = failure
        self.attention.set()
        self._progress.set()
        self._room.set()
        self._send_scope.cancel()

    async def last_words(self) -> None:
        """After a cancellation (the shutdown's hard deadline, or the daemon's scope): send
        what is queued and an unbind, shielded and brief (hypercorn ``tcp_server.py`` shields
        its close the same way), so the SMSC sees a goodbye rather than a reset. Skipped when
        the connection already ended, or when the writer was cut off mid-``send_all`` (a PDU
        may be half written: nothing more can follow it)."""
        if self.ended or self._writing or self.session.state not in _BOUND_STATES:
            return
        try:
            self._out.append(self.session.send(Unbind(), trio.current_time()))
        except LocalProtocolError:
            return
        data = b"".join(self._out)
        self._out.clear()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _LAST_WORDS_S
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._stream.send_all(data)

    def abandon(self) -> None:
        """Return every part still outstanding to the sink (the connection is gone)."""
        if not self.inflight:
            return
        graceful = self._bind.stopping and self.failure is None
        reason = RetryReason.SHUTDOWN if graceful else RetryReason.CONNECTION_LOST
        parts = list(self.inflight.values())
        self.inflight.clear()
        counters = self._counters
        counters.retried += len(parts)
        counters.duplicates_risk += len(parts)
        logger.warning(
            "%s: %d submit_sm unanswered at close (%s); retried, may duplicate",
            self._bind.name,
            len(parts),
            reason.value,
        )
        now = trio.current_time()
        for part in parts:
            self._sink.on_retry(part, 0.0, reason, now)

    def _failure(self, kind: FailureKind, detail: str, status: int | None = None) -> BindFailure:
        return BindFailure(kind, detail, trio.current_time(), status)

    # --- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes for the writer (synchronously, so production order is wire order)."""
        self._out.append(data)
        self._writer_wake.set()

    def _send_request(self, pdu: Pdu) -> None:
        self.write(self.session.send(pdu, trio.current_time()))
        self._kick_timer()

    async def _writer(self) -> None:
        out = self._out
        stream = self._stream
        try:
            while True:
                if not out:
                    self._writing = False
                    self._writer_idle.set()
                    self._writer_wake = trio.Event()
                    await self._writer_wake.wait()
                    continue
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                self._writing = True
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            out.clear()
            self._writing = False
            self._writer_idle.set()
            self.end(self._failure(FailureKind.NETWORK, f"send failed: {exc!r}"))

    # --- reading and events -----------------------------------------------------------------

    async def _reader(self) -> None:
        stream = self._stream
        session = self.session
        limit = self._settings.deliver_queue_limit
        stall_s = self._settings.deliver_stall_s
        try:
            while True:
                while self._delivers_pending >= limit and not self._shedding:
                    # The store is behind: stop reading, so TCP pushes back on the SMSC. But
                    # not for long: a silent bind misses the SMSC's enquire_link and is dropped.
                    self._deliver_room = trio.Event()
                    with trio.move_on_after(stall_s) as stalled:
                        await self._deliver_room.wait()
                    if stalled.cancelled_caught:
                        self._shedding = True
                        logger.warning(
                            "%s: no deliver_sm answered for %g s (the store is down?);"
                            " answering new ones with ESME_RX_T_APPN until it catches up",
                            self._bind.name,
                            stall_s,
                        )
                data = await stream.receive_some(_RECEIVE_SIZE)
                if type(data) is not bytes:  # SSLStream may hand out a bytearray
                    data = bytes(data)
                now = trio.current_time()
                session.receive_data(data, now)
                self.process_events(now)
                if not data or self.ended:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.end(self._failure(FailureKind.NETWORK, f"receive failed: {exc!r}"))

    def process_events(self, now: float) -> None:
        """Handle every event the session has, then queue its automatic answers."""
        session = self.session
        inflight = self.inflight
        answered = 0
        while True:
            event = session.next_event()
            if type(event) is ResponseReceived:
                part = inflight.pop(event.sequence_number, None)
                if part is not None:
                    answered += 1
                    self._on_submit_response(part, event, now)
                # else: a bind or unbind response; Bound/BindFailed/Unbound follow.
            elif event is NEED_DATA:
                break
            elif type(event) is RequestReceived:
                self._on_request(event.pdu, now)
            elif type(event) is ResponseTimeout:
                answered += self._on_timeout(event, now)
            elif self._on_other_event(event):
                break  # terminal: next_event() would return it again
        if answered:  # window slots were freed: once per chunk, not per response
            self._room.set()
            self._progress.set()
        out = session.data_to_send()
        if out:
            self.write(out)
        self._kick_timer()

    def _on_submit_response(self, part: OutboundPart, event: ResponseReceived, now: float) -> None:
        response = event.response
        status = response.command_status
        counters = self._counters
        sink = self._sink
        is_resp = type(response) is SubmitSmResp
        if status == 0 and is_resp:
            counters.submitted += 1
            counters.response_time_s += event.elapsed
            sink.on_submitted(part, cast(SubmitSmResp, response).message_id, self._name, now)
        elif status in _THROTTLING:
            # Some SMSCs throttle with a generic_nack: either way, slow down and try later.
            counters.throttled += 1
            counters.retried += 1
            self._rate.on_throttled(now)
            sink.on_retry(part, self._settings.throttle_retry_s, RetryReason.THROTTLED, now)
        elif not is_resp or status in _TRANSIENT:
            if not is_resp:
                counters.generic_nacks += 1
                logger.warning("%s: submit_sm got generic_nack 0x%X", self._name, status)
            counters.transient_errors += 1
            counters.retried += 1
            sink.on_retry(part, self._settings.error_retry_s, RetryReason.TRANSIENT_ERROR, now)
        else:
            counters.rejected += 1
            sink.on_rejected(part, status, now)

    def _on_timeout(self, event: ResponseTimeout, now: float) -> int:
        """A request timed out; return 1 if it was a submit_sm (its slot is free)."""
        part = self.inflight.pop(event.sequence_number, None)
        if part is None:
            if event.request.command_id in _BIND_COMMANDS:
                self.end(self._failure(FailureKind.BIND_TIMEOUT, "no bind response"))
            return 0  # an unbind timeout ends in Unbound (the session closes)
        counters = self._counters
        counters.timeouts += 1
        counters.retried += 1
        counters.duplicates_risk += 1
        logger.warning(
            "%s: no submit_sm_resp for seq %d; retrying, may duplicate",
            self._name,
            event.sequence_number,
        )
        self._sink.on_retry(part, 0.0, RetryReason.TIMEOUT, now)
        return 1

    def _on_request(self, pdu: Pdu, now: float) -> None:
        if isinstance(pdu, (DeliverSm, DataSm)):
            self._counters.delivers += 1
            if self._shedding:
                # Not taken: the SMSC delivers it again later (as after a store error).
                self._counters.deliver_errors += 1
                self._counters.delivers_deferred += 1
                self.write(self.session.send(response_for(pdu, _DEFERRED), now))
                return
            self._delivers_pending += 1
            quick = self._sink.deliver_now(pdu, self._bind.name)
            if quick is None:
                self._deliver_in.send_nowait(pdu)
            else:
                status, ticket = quick
                self._answers.append((ticket, pdu, status))
                self._answers_wake.set()
        else:
            # alert_notification (§4.12) has no response; nothing else reaches us here.
            logger.info("%s: ignoring %s", self._bind.name, type(pdu).__name__)

    def _on_other_event(self, event: Event) -> bool:
        """Handle a rarer event; return True when it is terminal."""
        bind = self._bind
        name = bind.name
        counters = self._counters
        if isinstance(event, Bound):
            self.bound = True
            self._bound_at = trio.current_time()
            bind.on_bound()
            self.attention.set()
        elif isinstance(event, BindFailed):
            status = event.command_status
            kind = classify_bind_status(status)
            self.end(self._failure(kind, "bind refused", status))
        elif isinstance(event, UnexpectedResponse):
            counters.late_responses += 1
            logger.warning("%s: response matching no request: %s", name, event.response)
        elif isinstance(event, MalformedPdu):
            counters.malformed += 1
            logger.warning("%s: malformed PDU from SMSC: %r", name, event.error)
        elif isinstance(event, NackReceived):
            counters.generic_nacks += 1
            logger.warning(
                "%s: generic_nack status 0x%X for an unreadable PDU of ours",
                name,
                event.pdu.command_status,
            )
        elif isinstance(event, PduRejected):
            # While we unbind, a deliver_sm crossing our unbind is expected: the SMSC keeps it
            # and delivers it again later, so it is no cause for a warning.
            level = logging.INFO if bind.state is BindState.UNBINDING else logging.WARNING
            logger.log(
                level,
                "%s: SMSC sent %s, illegal now; answered 0x%X",
                name,
                type(event.pdu).__name__,
                event.command_status,
            )
        elif isinstance(event, UnbindRequested):
            logger.info("%s: SMSC unbinds; draining", name)
            self._send_scope.cancel()
            bind.set_state(BindState.UNBINDING)
        elif isinstance(event, Unbound):
            failure = (
                self._failure(FailureKind.UNBOUND_BY_PEER, "the SMSC unbound")
                if event.by_peer
                else None
            )
            self.end(failure)
        elif isinstance(event, ProtocolViolation):
            counters.protocol_errors += 1
            logger.error("%s: unframeable data from SMSC (%r); reconnecting", name, event.error)
            self.end(self._failure(FailureKind.PROTOCOL_ERROR, repr(event.error)))
            return True
        elif isinstance(event, PeerDead):
            counters.peer_dead += 1
            self.end(self._failure(FailureKind.PEER_DEAD, "enquire_link unanswered"))
        elif isinstance(event, InactivityTimeout):
            counters.peer_dead += 1
            self.end(self._failure(FailureKind.PEER_DEAD, "nothing received"))
        elif isinstance(event, ConnectionClosed):
            if not self.ended:
                failure = (
                    None
                    if event.clean
                    else self._failure(FailureKind.CLOSED_BY_PEER, "the SMSC closed the connection")
                )
                self.end(failure)
            return True
        elif isinstance(event, OutbindReceived):
            logger.info("%s: ignoring outbind", name)
        return False

    # --- timers -----------------------------------------------------------------------------

    def _kick_timer(self) -> None:
        deadline = self.session.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            self._timer_wake.set()

    async def _timer(self) -> None:
        session = self.session
        while True:
            deadline = session.next_deadline()
            self._timer_at = math.inf if deadline is None else deadline
            self._timer_wake = trio.Event()
            with trio.move_on_at(self._timer_at):
                await self._timer_wake.wait()
            now = trio.current_time()
            due = session.next_deadline()
            if due is not None and due <= now:
                session.handle_timers(now)
                self.process_events(now)

    # --- sending ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        with self._send_scope:
            await self._send_parts()

    async def _send_parts(self) -> None:
        session = self.session
        inflight = self.inflight
        bind = self._bind
        source = bind.source
        route = bind.route
        rate = self._rate
        counters = self._counters
        held: deque[OutboundPart] = deque()
        try:
            while True:
                free = session.window_free
                if free == 0:
                    self._room = trio.Event()
                    await self._room.wait()
                    continue
                bucket = rate.bucket
                if bucket is not None:
                    now = trio.current_time()
                    rate.refresh(now)
                    bucket = rate.bucket
                    if bucket is not None:
                        wait = bucket.delay_until(now, rate.batch(bucket, free))
                        if wait > 0:
                            await trio.sleep(wait)
                            continue
                if not held:
                    first = source.get_nowait(route)  # no scheduling round when work waits
                    if first is None:
                        held.append(await source.get(route))
                        continue  # time passed: look at the window and the tokens again
                    held.append(first)
                if self.ended or session.state not in _TX_STATES:
                    return
                now = trio.current_time()
                budget = free if bucket is None else min(free, int(bucket.available(now)))
                sliced = budget > _SEND_SLICE
                if sliced:
                    budget = _SEND_SLICE
                while len(held) < budget:
                    more = source.get_nowait(route)
                    if more is None:
                        break
                    held.append(more)
                chunks: list[bytes] = []
                for _ in range(min(budget, len(held))):
                    part = held.popleft()
                    try:
                        chunks.append(session.send(part.pdu, now))
                    except LocalProtocolError as exc:
                        # The state was checked above, so the PDU itself cannot be encoded.
                        logger.error("%s: cannot encode part %s: %s", bind.name, part.part_id, exc)
                        counters.rejected += 1
                        self._sink.on_rejected(part, _ENCODE_FAILURE, now)
                        continue
                    inflight[session.last_sequence_number] = part
                    part.attempts += 1
                sent = len(chunks)
                if bucket is not None and sent:
                    bucket.take_up_to(now, sent)
                counters.sent += sent
                self._out.extend(chunks)
                self._writer_wake.set()
                in_flight = session.in_flight
                counters.max_in_flight = max(counters.max_in_flight, in_flight)
                self._kick_timer()
                rate.note_sent(now, counters.sent)
                if sliced:
                    await trio.lowlevel.checkpoint()  # the rest of the window after the others
        finally:
            if held:
                now = trio.current_time()
                for part in held:
                    self._sink.on_retry(part, 0.0, RetryReason.NOT_SENT, now)

    # --- receipts and MO --------------------------------------------------------------------

    async def _answerer(self) -> None:
        """Answer the deliver_sm handled in the reader (:meth:`_on_request`), in batches: each
        commit of the store lets out every answer waiting for it, in one write."""
        answers = self._answers
        sink = self._sink
        while True:
            if not answers:
                self._answers_wake = trio.Event()
                await self._answers_wake.wait()
                continue
            ticket = answers[0][0]
            await sink.wait_committed(ticket)
            now = trio.current_time()
            chunks: list[bytes] = []
            while answers and answers[0][0] <= ticket:
                _, pdu, status = answers.popleft()
                data = self._deliver_answer(pdu, status, now)
                if data:
                    chunks.append(data)
            if chunks:
                self._out.extend(chunks)
                self._writer_wake.set()

    async def _deliver_worker(self, receive: trio.MemoryReceiveChannel[DeliverSm | DataSm]) -> None:
        sink = self._sink
        name = self._bind.name
        async with receive:
            async for pdu in receive:
                # Stored first, answered second: if we crash in between, the SMSC re-delivers.
                status = await sink.on_deliver(pdu, name)
                data = self._deliver_answer(pdu, status, trio.current_time())
                if data:
                    self.write(data)

    def _deliver_answer(self, pdu: DeliverSm | DataSm, status: int, now: float) -> bytes:
        """Count a deliver_sm as handled; its deliver_sm_resp, or b"" when none can go."""
        self._delivers_pending -= 1
        self._deliver_room.set()
        if self._shedding and self._delivers_pending < self._settings.deliver_queue_limit:
            self._shedding = False
            logger.info("%s: the store caught up; taking deliver_sm again", self._bind.name)
        self._progress.set()
        if status:
            self._counters.deliver_errors += 1
        if self.ended:
            return b""  # the connection is gone; the SMSC will deliver it again
        try:
            return self.session.send(response_for(pdu, status), now)
        except LocalProtocolError as exc:
            logger.debug("%s: deliver_sm_resp not sent: %s", self._bind.name, exc)
            return b""
