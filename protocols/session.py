"""The SMPP 3.4 session: a sans-IO state machine for one bind, either end.

Modelled on h11's ``Connection`` for the data flow and on aioquic's ``QuicConnection`` for time:

- ``receive_data(data, now)`` only buffers bytes (``b""`` means EOF); ``next_event()`` decodes
  and returns one :class:`~protocols._events.Event` at a time, or :data:`NEED_DATA`.
- ``send(pdu, now)`` checks that the PDU is legal for our role and state (the single table in
  :mod:`protocols._state`), assigns the sequence number of a request, records it in the window
  of outstanding requests, and returns the bytes to write.
- Time is an input: ``next_deadline()`` says when the session next needs attention and
  ``handle_timers(now)`` does the work due by then (response timeouts, the idle
  ``enquire_link``, the inactivity timeout); its outcomes come out of ``next_event()``.

Who writes the automatic answers
    The session itself, aioquic style. Answers that need no application decision are queued in
    the session: ``enquire_link_resp``, ``generic_nack`` for malformed PDUs, the
    ``ESME_RINVBNDSTS`` / ``ESME_RALYBND`` answers to PDUs illegal in the current state, our
    idle ``enquire_link`` and the ``unbind_resp`` at the end of a drain. The I/O layer collects
    them with ``data_to_send()`` after ``next_event()`` / ``handle_timers()``. ``send()``
    returns any queued bytes ahead of its own PDU, so bytes always leave in the order the
    session produced them, whichever call the I/O layer drains them through. Events still say
    what happened (:class:`PduRejected`, :class:`MalformedPdu`, ...). The one event ``send()``
    can cause (:class:`Unbound`, when the application's last owed answer releases the
    ``unbind_resp``) comes out of the next ``next_event()`` call.

Unbind and drain (SMPP 3.4 §4.2)
    After ``send(Unbind())`` no new request may be sent (``LocalProtocolError``); responses to
    outstanding requests are still matched, the application still answers what the peer sent
    before, and ``unbind_resp`` (whatever its status), a ``generic_nack`` or a timeout of the
    unbind ends the session (:class:`Unbound`, state ``CLOSED``). When the peer unbinds, the
    session reports :class:`UnbindRequested` and answers with ``unbind_resp`` by itself as soon
    as none of our requests is outstanding and the application owes no response (response
    timeouts bound the wait). Requests received from the peer while unbinding are answered
    with ``ESME_RINVBNDSTS``. ``unbind`` is not counted in the window, so a full window never
    blocks a shutdown.

Errors
    A ``LocalProtocolError`` from ``send()`` is raised before anything changes, so the session
    stays usable (unlike h11, which moves to ERROR: here nothing reached the wire). A malformed
    but framed PDU is answered with ``generic_nack`` and the session carries on. A framing error
    (bad ``command_length``) moves the session to ``ERROR`` (h11 ``_process_error``): the
    I/O layer must close the connection.

``now`` is any monotonic clock in seconds (``trio.current_time()``), never wall-clock time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ._events import (
    NEED_DATA,
    BindFailed,
    BindRequested,
    Bound,
    ConnectionClosed,
    Event,
    InactivityTimeout,
    MalformedPdu,
    NackReceived,
    NeedData,
    OutbindReceived,
    PduRejected,
    PeerDead,
    ProtocolViolation,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    UnbindRequested,
    Unbound,
    UnexpectedResponse,
)
from ._state import (
    BOUND_STATES,
    Direction,
    Role,
    SessionState,
    Transition,
    rejection_status,
    transitions_for,
)
from .constants import RESPONSE_BIT, CommandId
from .errors import LocalProtocolError, RemoteProtocolError
from .pdu import (
    DEFAULT_MAX_COMMAND_LENGTH,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    PduReader,
    UnbindResp,
    encode,
)
from .pdu import response_for as _response_for

__all__ = [
    "NEED_DATA",
    "BindFailed",
    "BindRequested",
    "Bound",
    "ConnectionClosed",
    "Event",
    "InactivityTimeout",
    "MalformedPdu",
    "NackReceived",
    "NeedData",
    "OutbindReceived",
    "PduRejected",
    "PeerDead",
    "ProtocolViolation",
    "RequestReceived",
    "ResponseReceived",
    "ResponseTimeout",
    "Role",
    "Session",
    "SessionConfig",
    "SessionState",
    "UnbindRequested",
    "Unbound",
    "UnexpectedResponse",
]

logger = logging.getLogger(__name__)

MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF
"""SMPP 3.4 §3.2: sequence numbers run 0x00000001..0x7FFFFFFF, then wrap to 1."""

_GENERIC_NACK: Final = int(CommandId.GENERIC_NACK)
_ENQUIRE_LINK: Final = int(CommandId.ENQUIRE_LINK)
_UNBIND: Final = int(CommandId.UNBIND)
_UNBIND_RESP: Final = int(CommandId.UNBIND_RESP)
_BIND_REQUESTS: Final = frozenset(
    {CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER}
)
# Requests without a response (§4.1.7, §4.12): never tracked, never owed.
_NO_RESPONSE: Final = frozenset({CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION})
# Requests whose completion changes the state.
_CONTROL: Final = _BIND_REQUESTS | {CommandId.UNBIND}
# Responses we never answer, even when malformed: answering a response could loop forever.
_KNOWN_RESPONSES: Final = frozenset(int(c) for c in CommandId if c & RESPONSE_BIT)

_REQUEST_EVENTS: Final[dict[int, Callable[[Pdu], Event]]] = {
    CommandId.BIND_TRANSMITTER: BindRequested,
    CommandId.BIND_RECEIVER: BindRequested,
    CommandId.BIND_TRANSCEIVER: BindRequested,
    CommandId.OUTBIND: OutbindReceived,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Per-bind protocol settings.

    Raises:
        ValueError: on a non-positive window or timeout.
    """

    window: int = 10
    """Maximum number of our requests awaiting a response (``unbind`` and the session's own
    ``enquire_link`` are not counted)."""
    response_timeout: float = 30.0
    """Seconds to wait for a response before :class:`ResponseTimeout` (or :class:`PeerDead`
    for the session's enquire_link)."""
    enquire_link_interval: float | None = 30.0
    """While bound, send ``enquire_link`` after this many seconds without receiving anything;
    ``None`` disables it."""
    inactivity_timeout: float | None = 120.0
    """Report :class:`InactivityTimeout` after this many seconds without receiving anything, in
    any state; ``None`` disables it."""
    max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH
    """Largest ``command_length`` accepted from the peer; a larger one is a framing error."""

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 1_000_000:
            raise ValueError(f"window must be in 1..1000000, not {self.window}")
        if not self.response_timeout > 0:
            raise ValueError("response_timeout must be positive")
        for name in ("enquire_link_interval", "inactivity_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None")
        if self.max_command_length < 16:
            raise ValueError("max_command_length must be at least 16 (the PDU header)")


class Session:
    """One SMPP session (one bind), ESME or SMSC side. See the module docstring for the model.

    Args:
        role: which end we are.
        config: protocol settings; the defaults suit tests and small binds.
        now: the current time; the inactivity and enquire_link timers start from it.
        first_sequence_number: the sequence number of our first request (tests use it to reach
            the wrap quickly).
    """

    def __init__(
        self,
        role: Role,
        config: SessionConfig | None = None,
        *,
        now: float,
        first_sequence_number: int = 1,
    ) -> None:
        if not 1 <= first_sequence_number <= MAX_SEQUENCE_NUMBER:
            raise ValueError("first_sequence_number must be in 1..0x7FFFFFFF")
        self._role = role
        self._config = config = config if config is not None else SessionConfig()
        self._window = config.window
        self._timeout = config.response_timeout
        self._enquire_interval = config.enquire_link_interval
        self._inactivity_timeout = config.inactivity_timeout
        self._reader = PduReader(config.max_command_length)

        self._state = SessionState.OPEN
        self._send_table = transitions_for(role, SessionState.OPEN, Direction.SEND)
        self._recv_table = transitions_for(role, SessionState.OPEN, Direction.RECEIVE)
        self._bound = False

        # Our requests awaiting a response: seq -> (request, sent_at). Dicts keep insertion
        # order, which is send order, so the first entry always has the earliest deadline.
        self._outstanding: dict[int, tuple[Pdu, float]] = {}
        self._exempt = 0  # entries not counted in the window: our enquire_link, unbind
        self._next_seq = first_sequence_number
        self._last_seq = 0
        self._owed: set[int] = set()  # sequence numbers of peer requests we have not answered
        self._peer_unbind: Pdu | None = None  # the peer's unbind, until we answer it

        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._terminal: Event | None = None
        self._eof = False

        self._rx_now = now  # the now of the latest receive_data()
        self._last_rx = now  # the now of the latest receive_data() that carried bytes
        self._ping = EnquireLink()
        self._ping_pending = False
        self._peer_dead = False
        self._inactivity_reported = False

    # --- inspection -------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        """Our end of the link."""
        return self._role

    @property
    def config(self) -> SessionConfig:
        """The settings this session was made with."""
        return self._config

    @property
    def state(self) -> SessionState:
        """The current bind state."""
        return self._state

    @property
    def last_sequence_number(self) -> int:
        """The sequence number assigned by the latest ``send()`` of a request (0 before any)."""
        return self._last_seq

    @property
    def in_flight(self) -> int:
        """How many of our requests await a response (the window's used slots)."""
        return len(self._outstanding) - self._exempt

    @property
    def window_free(self) -> int:
        """How many more requests ``send()`` accepts before the window is full."""
        return max(0, self._window - len(self._outstanding) + self._exempt)

    @property
    def owed_responses(self) -> int:
        """How many of the peer's requests the application has not answered yet."""
        return len(self._owed)

    # --- sending ----------------------------------------------------------------------------

    def send(self, pdu: Pdu, now: float) -> bytes:
        """Check a PDU against the state machine and encode it.

        A request gets the next free sequence number (``pdu.sequence_number`` is ignored; the
        number is in ``last_sequence_number`` and in the events) and occupies a window slot
        until it is answered or times out. A response keeps ``pdu.sequence_number``.

        Args:
            pdu: the PDU to send.
            now: the current time; a request's response deadline counts from it.

        Returns:
            The bytes to write: any automatic answers queued before, then this PDU (then the
            ``unbind_resp`` this response may have made due).

        Raises:
            LocalProtocolError: the PDU is illegal for our role in this state, the window is
                full, or the session is in ERROR. Nothing has changed in the session.
        """
        command_id = pdu.command_id
        transition = self._send_table.get(command_id)
        if transition is None:
            raise LocalProtocolError(
                f"{self._role.name} may not send {command_id.name} in state {self._state.name}"
            )
        if command_id & RESPONSE_BIT:
            data = self._send_response(pdu, transition)
        else:
            data = self._send_request(pdu, transition, now)
        if self._out:
            self._out.append(data)
            data = b"".join(self._out)
            self._out.clear()
        return data

    def _send_request(self, pdu: Pdu, transition: Transition, now: float) -> bytes:
        command_id = pdu.command_id
        outstanding = self._outstanding
        tracked = command_id not in _NO_RESPONSE
        exempt = command_id == _UNBIND
        if tracked and not exempt and len(outstanding) - self._exempt >= self._window:
            raise LocalProtocolError(f"window full ({self._window} requests outstanding)")
        seq = self._free_sequence_number()
        data = encode(pdu, seq)  # may raise; nothing has changed yet
        self._next_seq = seq + 1 if seq < MAX_SEQUENCE_NUMBER else 1
        self._last_seq = seq
        if tracked:
            outstanding[seq] = (pdu, now)
            if exempt:
                self._exempt += 1
        if transition.on_success is not self._state:
            self._set_state(transition.on_success)
        return data

    def _send_response(self, pdu: Pdu, transition: Transition) -> bytes:
        command_id = pdu.command_id
        if command_id == _UNBIND_RESP and self._peer_unbind is None:
            raise LocalProtocolError("no unbind from the peer awaits an answer")
        data = encode(pdu)
        self._owed.discard(pdu.sequence_number)
        if command_id == _UNBIND_RESP:
            self._peer_unbind = None
            self._after_unbind_resp_sent()
        elif transition.on_success is not self._state:
            # bind_*_resp (SMSC side): the status decides between BOUND_* and OPEN (§4.1).
            ok = pdu.command_status == 0
            self._set_state(transition.on_success if ok else transition.on_failure)
        elif self._peer_unbind is not None:
            self._out.append(data)
            self._maybe_finish_unbind()
            data = b"".join(self._out)
            self._out.clear()
        return data

    def _free_sequence_number(self) -> int:
        # Skip numbers still outstanding after a wrap (§3.2 only asks for uniqueness among
        # outstanding requests); the window bounds the loop.
        seq = self._next_seq
        outstanding = self._outstanding
        while seq in outstanding:
            seq = seq + 1 if seq < MAX_SEQUENCE_NUMBER else 1
        return seq

    def data_to_send(self) -> bytes:
        """The automatic answers and enquire_link queued by the session, to write as they are.

        Call it after ``next_event()`` returns and after ``handle_timers()``. Bytes queued here
        are also prepended to the next ``send()`` result, so nothing is written twice.
        """
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # --- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed the connection (EOF).

        Nothing is decoded here: call ``next_event()`` until it returns ``NEED_DATA``.
        Response times are measured to this call's ``now``. Data arriving in ERROR is dropped.

        Raises:
            LocalProtocolError: data after EOF.
        """
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        self._rx_now = now
        if not data:
            self._eof = True
            return
        if self._state is SessionState.ERROR:
            return
        self._last_rx = now
        self._peer_dead = False
        self._inactivity_reported = False
        self._reader.feed(data)

    def next_event(self) -> Event | NeedData:
        """Decode and process the next buffered PDU.

        Automatic answers are queued for ``data_to_send()``; PDUs that need no application
        decision (enquire_link and its response) produce no event.

        Returns:
            The next event, or ``NEED_DATA`` when more bytes are needed. The terminal events
            :class:`ConnectionClosed` and :class:`ProtocolViolation` are returned again on
            every call after the first.
        """
        events = self._events
        if events:
            return events.popleft()
        if self._terminal is not None:
            return self._terminal
        reader = self._reader
        while True:
            try:
                pdu = reader.next_pdu()
            except RemoteProtocolError as exc:
                event: Event | None = self._on_undecodable(exc)
            else:
                if pdu is None:
                    return self._on_eof() if self._eof else NEED_DATA
                command_id = pdu.command_id
                if command_id & RESPONSE_BIT:
                    event = self._on_response(pdu, command_id)
                else:
                    event = self._on_request(pdu, command_id)
            if event is not None:
                return event
            if events:
                return events.popleft()

    def _on_request(self, pdu: Pdu, command_id: int) -> Event | None:
        transition = self._recv_table.get(command_id)
        if transition is None:
            status = rejection_status(self._role, self._state, command_id)
            # Its *_resp, or generic_nack for outbind / alert_notification (§4.3.1).
            self._out.append(encode(_response_for(pdu, status)))
            logger.debug("rejected %s in %s with status %#x", pdu, self._state.name, status)
            return PduRejected(pdu, status)
        if command_id == _ENQUIRE_LINK:
            # §4.11: answered by the session in every live state; no event.
            self._out.append(encode(EnquireLinkResp(sequence_number=pdu.sequence_number)))
            return None
        if transition.on_success is not self._state:
            self._set_state(transition.on_success)
        if command_id == _UNBIND:
            self._peer_unbind = pdu
            event: Event = UnbindRequested(pdu)
            self._events.append(event)  # keep it ahead of an immediate Unbound
            self._maybe_finish_unbind()
            return self._events.popleft()
        if command_id not in _NO_RESPONSE:
            self._owed.add(pdu.sequence_number)
        return _REQUEST_EVENTS.get(command_id, RequestReceived)(pdu)

    def _on_response(self, pdu: Pdu, command_id: int) -> Event | None:
        seq = pdu.sequence_number
        entry = self._outstanding.get(seq)
        if entry is None:
            if command_id == _GENERIC_NACK and seq == 0:
                return NackReceived(pdu)
            return UnexpectedResponse(pdu, None)
        request, sent_at = entry
        request_id = request.command_id
        if command_id != request_id | RESPONSE_BIT and command_id != _GENERIC_NACK:
            # Not an answer to the request with that number: keep waiting for the real one.
            return UnexpectedResponse(pdu, request)
        del self._outstanding[seq]
        if request is self._ping:
            # Any answer, even a nack, shows the peer is alive.
            self._exempt -= 1
            self._ping_pending = False
            return None
        event = ResponseReceived(request, pdu, self._rx_now - sent_at)
        if request_id in _CONTROL:
            self._events.append(event)
            self._complete_control(request, pdu)
            return self._events.popleft()
        if self._peer_unbind is not None:
            self._maybe_finish_unbind()
        return event

    def _complete_control(self, request: Pdu, response: Pdu | None) -> None:
        """Apply the state change of a bind or unbind that completed (response or timeout)."""
        if request.command_id == _UNBIND:
            self._exempt -= 1
            if self._state is not SessionState.UNBIND_SENT:
                return
            if self._peer_unbind is not None:
                # Both sides unbound at once: we still owe the peer its unbind_resp.
                self._set_state(SessionState.UNBIND_RECEIVED)
                self._maybe_finish_unbind()
            else:
                self._set_state(SessionState.CLOSED)
                self._events.append(Unbound(by_peer=False))
            return
        transition = self._recv_table.get(request.command_id | RESPONSE_BIT)
        if transition is None:  # the state moved on (EOF); nothing to do
            return
        ok = (
            response is not None
            and response.command_id != _GENERIC_NACK
            and response.command_status == 0
        )
        self._set_state(transition.on_success if ok else transition.on_failure)
        if ok:
            self._events.append(Bound(self._state))
        elif response is not None:
            self._events.append(BindFailed(response.command_status, response))

    def _maybe_finish_unbind(self) -> None:
        """Answer the peer's unbind once the drain is over (see the module docstring)."""
        unbind = self._peer_unbind
        if unbind is None or self._owed or len(self._outstanding) > self._exempt:
            return
        self._peer_unbind = None
        self._out.append(encode(UnbindResp(sequence_number=unbind.sequence_number)))
        self._after_unbind_resp_sent()

    def _after_unbind_resp_sent(self) -> None:
        if self._state is SessionState.UNBIND_RECEIVED:
            self._set_state(SessionState.CLOSED)
            self._events.append(Unbound(by_peer=True))
        # In UNBIND_SENT our own unbind still awaits its answer.

    def _on_undecodable(self, exc: RemoteProtocolError) -> Event:
        answer = GenericNack(sequence_number=exc.sequence_number, command_status=exc.command_status)
        if self._reader.broken:
            # §3.2: the length cannot be trusted, so neither can anything after it.
            self._out.append(encode(answer))
            self._set_state(SessionState.ERROR)
            self._terminal = ProtocolViolation(exc, self._abandon())
            logger.debug("framing error, session in ERROR: %s", exc)
            return self._terminal
        answered = exc.command_id not in _KNOWN_RESPONSES
        if answered:
            self._out.append(encode(answer))
        logger.debug("malformed PDU (answered=%s): %s", answered, exc)
        return MalformedPdu(exc, answered)

    def _on_eof(self) -> Event:
        # Clean: unbound first, and no partial PDU cut off by the close.
        clean = self._state is SessionState.CLOSED and not self._reader.buffered
        unanswered = self._abandon()
        self._set_state(SessionState.CLOSED)
        self._terminal = ConnectionClosed(unanswered, clean)
        return self._terminal

    def _abandon(self) -> tuple[tuple[int, Pdu], ...]:
        """Forget every outstanding request and owed answer; return our unanswered requests."""
        ping = self._ping
        unanswered = tuple(
            (seq, request) for seq, (request, _) in self._outstanding.items() if request is not ping
        )
        self._outstanding.clear()
        self._exempt = 0
        self._ping_pending = False
        self._owed.clear()
        self._peer_unbind = None
        return unanswered

    # --- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timers()`` next has work to do, or ``None`` if never (until more
        happens). Recompute it after every call into the session."""
        if self._terminal is not None or self._eof:
            return None
        deadline: float | None = None
        if self._outstanding:
            _, sent_at = next(iter(self._outstanding.values()))
            deadline = sent_at + self._timeout
        interval = self._enquire_interval
        if interval is not None and self._bound and not self._ping_pending and not self._peer_dead:
            due = self._last_rx + interval
            if deadline is None or due < deadline:
                deadline = due
        if self._inactivity_timeout is not None and not self._inactivity_reported:
            due = self._last_rx + self._inactivity_timeout
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    def handle_timers(self, now: float) -> None:
        """Do the work due by ``now``: time out requests (:class:`ResponseTimeout`, or
        :class:`PeerDead` for our enquire_link), send the idle ``enquire_link`` (§4.11; bytes
        in ``data_to_send()``), report :class:`InactivityTimeout`. Events come out of
        ``next_event()``. Calling it early is harmless."""
        if self._terminal is not None or self._eof:
            return
        outstanding = self._outstanding
        timeout = self._timeout
        freed = False
        while outstanding:
            seq = next(iter(outstanding))
            request, sent_at = outstanding[seq]
            if sent_at + timeout > now:
                break
            del outstanding[seq]
            freed = True
            if request is self._ping:
                self._exempt -= 1
                self._ping_pending = False
                self._peer_dead = True
                self._events.append(PeerDead(sent_at))
                continue
            self._events.append(ResponseTimeout(request, seq, sent_at))
            if request.command_id in _CONTROL:
                self._complete_control(request, None)
        if freed:
            self._maybe_finish_unbind()

        interval = self._enquire_interval
        if (
            interval is not None
            and self._bound
            and not self._ping_pending
            and not self._peer_dead
            and self._last_rx + interval <= now
        ):
            seq = self._free_sequence_number()
            self._out.append(encode(self._ping, seq))
            self._next_seq = seq + 1 if seq < MAX_SEQUENCE_NUMBER else 1
            outstanding[seq] = (self._ping, now)
            self._exempt += 1
            self._ping_pending = True

        inactivity = self._inactivity_timeout
        if (
            inactivity is not None
            and not self._inactivity_reported
            and self._last_rx + inactivity <= now
        ):
            self._inactivity_reported = True
            self._events.append(InactivityTimeout(self._last_rx))

    # --- internals --------------------------------------------------------------------------

    def _set_state(self, state: SessionState) -> None:
        logger.debug("%s: %s -> %s", self._role.name, self._state.name, state.name)
        self._state = state
        self._send_table = transitions_for(self._role, state, Direction.SEND)
        self._recv_table = transitions_for(self._role, state, Direction.RECEIVE)
        self._bound = state in BOUND_STATES
