"""The session state machine (protocols.session, protocols._state).

Deterministic: time is a number passed in, nothing sleeps. The legality matrices below are
written from SMPP 3.4 §2.3 table 2-1 independently of ``protocols._state.TRANSITIONS``, so the
table is checked against the spec rather than against itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import event as note
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocols.constants import CommandId, CommandStatus
from protocols.errors import LocalProtocolError
from protocols.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    decode,
    encode,
    response_for,
)
from protocols.session import (
    NEED_DATA,
    BindFailed,
    BindRequested,
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
    SessionConfig,
    SessionState,
    UnbindRequested,
    Unbound,
    UnexpectedResponse,
)
from tests.helpers import SessionPair, drain, feed

S = SessionState
C = CommandId
ESME, SMSC = Role.ESME, Role.SMSC

CONFIG = SessionConfig(
    window=10, response_timeout=5.0, enquire_link_interval=None, inactivity_timeout=None
)

# --- the spec, written out ------------------------------------------------------------------

TX = {S.BOUND_TX, S.BOUND_TRX}
RX = {S.BOUND_RX, S.BOUND_TRX}
BOUND = {S.BOUND_TX, S.BOUND_RX, S.BOUND_TRX}
BINDING = {S.BINDING_TX, S.BINDING_RX, S.BINDING_TRX}
UNBINDING = {S.UNBIND_SENT, S.UNBIND_RECEIVED}
LIVE = set(S) - {S.ERROR}

# (role, command_id) -> states in which that role may send the request (§2.3 table 2-1).
MAY_SEND: dict[tuple[Role, CommandId], set[SessionState]] = {
    (ESME, C.BIND_TRANSMITTER): {S.OPEN},
    (ESME, C.BIND_RECEIVER): {S.OPEN},
    (ESME, C.BIND_TRANSCEIVER): {S.OPEN},
    (SMSC, C.OUTBIND): {S.OPEN},
    (ESME, C.SUBMIT_SM): TX,
    (ESME, C.SUBMIT_MULTI): TX,
    (ESME, C.QUERY_SM): TX,
    (ESME, C.CANCEL_SM): TX,
    (ESME, C.REPLACE_SM): TX,
    (ESME, C.DATA_SM): TX,
    (SMSC, C.DATA_SM): RX,
    (SMSC, C.DELIVER_SM): RX,
    (SMSC, C.ALERT_NOTIFICATION): RX,
    (ESME, C.ENQUIRE_LINK): BOUND,
    (SMSC, C.ENQUIRE_LINK): BOUND,
    (ESME, C.UNBIND): BOUND,
    (SMSC, C.UNBIND): BOUND,
}


def may_receive(role: Role, command_id: CommandId) -> set[SessionState]:
    """States in which ``role`` accepts the request from its peer."""
    other = SMSC if role is ESME else ESME
    states = set(MAY_SEND.get((other, command_id), set()))
    if command_id is C.ENQUIRE_LINK:
        states |= {S.OPEN} | BINDING | UNBINDING  # answered wherever the link is up
    if command_id is C.UNBIND:
        states |= {S.UNBIND_SENT}  # both sides unbinding at once
    return states


REQUESTS: dict[CommandId, Callable[[], Pdu]] = {
    C.BIND_TRANSMITTER: lambda: BindTransmitter(system_id="ulak", password="pw"),
    C.BIND_RECEIVER: lambda: BindReceiver(system_id="ulak", password="pw"),
    C.BIND_TRANSCEIVER: lambda: BindTransceiver(system_id="ulak", password="pw"),
    C.OUTBIND: lambda: Outbind(system_id="smsc", password="pw"),
    C.SUBMIT_SM: lambda: SubmitSm(
        source_addr="ULAK", destination_addr="905321234567", short_message=b"hello"
    ),
    C.SUBMIT_MULTI: lambda: SubmitMulti(source_addr="ULAK", short_message=b"hi"),
    C.QUERY_SM: lambda: QuerySm(message_id="abc", source_addr="ULAK"),
    C.CANCEL_SM: lambda: CancelSm(message_id="abc"),
    C.REPLACE_SM: lambda: ReplaceSm(message_id="abc", short_message=b"new"),
    C.DATA_SM: lambda: DataSm(source_addr="ULAK", destination_addr="905321234567"),
    C.DELIVER_SM: lambda: DeliverSm(source_addr="905321234567", short_message=b"stop"),
    C.ALERT_NOTIFICATION: lambda: AlertNotification(source_addr="905321234567"),
    C.ENQUIRE_LINK: EnquireLink,
    C.UNBIND: Unbind,
}
RESPONSES: dict[CommandId, type[Pdu]] = {
    C.BIND_TRANSMITTER_RESP: BindTransmitterResp,
    C.BIND_RECEIVER_RESP: BindReceiverResp,
    C.BIND_TRANSCEIVER_RESP: BindTransceiverResp,
    C.SUBMIT_SM_RESP: SubmitSmResp,
    C.SUBMIT_MULTI_RESP: SubmitMultiResp,
    C.QUERY_SM_RESP: QuerySmResp,
    C.CANCEL_SM_RESP: CancelSmResp,
    C.REPLACE_SM_RESP: ReplaceSmResp,
    C.DATA_SM_RESP: DataSmResp,
    C.DELIVER_SM_RESP: DeliverSmResp,
    C.ENQUIRE_LINK_RESP: EnquireLinkResp,
    C.UNBIND_RESP: UnbindResp,
    C.GENERIC_NACK: GenericNack,
}
NO_RESPONSE = {C.OUTBIND, C.ALERT_NOTIFICATION}
BINDS = {
    S.BINDING_TX: (BindTransmitter, BindTransmitterResp, S.BOUND_TX),
    S.BINDING_RX: (BindReceiver, BindReceiverResp, S.BOUND_RX),
    S.BINDING_TRX: (BindTransceiver, BindTransceiverResp, S.BOUND_TRX),
}
BOUND_TO_BINDING = {bound: binding for binding, (_, _, bound) in BINDS.items()}


def may_send_response(role: Role, state: SessionState, command_id: CommandId) -> bool:
    if state is S.ERROR:
        return False
    if command_id is C.GENERIC_NACK:
        return True
    for binding, (_, resp, _) in BINDS.items():
        if command_id is resp.command_id:
            return role is SMSC and state is binding
    if command_id is C.UNBIND_RESP:
        return state is S.UNBIND_RECEIVED  # session_in() leaves the peer's unbind unanswered
    request = CommandId(command_id & ~0x80000000)
    return bool(may_receive(role, request))  # the side that may receive the request


# --- building a session in any state ----------------------------------------------------------


def wire(pdu: Pdu, seq: int) -> bytes:
    return encode(pdu, seq)


def session_in(role: Role, state: SessionState, config: SessionConfig = CONFIG) -> Session:
    """A session driven into ``state`` by real PDUs, with nothing left to write."""
    s = Session(role, config, now=0.0)
    target = state
    if state in UNBINDING or state is S.CLOSED:
        target = S.BOUND_TRX
    if state in BINDING:
        bind_cls = BINDS[state][0]
        if role is ESME:
            s.send(bind_cls(system_id="ulak"), 0.0)
        else:
            feed(s, wire(bind_cls(system_id="ulak"), 1), 0.0)
    elif target in BOUND:
        bind_cls, resp_cls, _ = BINDS[BOUND_TO_BINDING[target]]
        if role is ESME:
            s.send(bind_cls(system_id="ulak"), 0.0)
            feed(s, wire(resp_cls(), s.last_sequence_number), 0.0)
        else:
            (event,) = feed(s, wire(bind_cls(system_id="ulak"), 1), 0.0)
            assert isinstance(event, BindRequested)
            s.send(response_for(event.pdu), 0.0)
    if state is S.UNBIND_SENT:
        s.send(Unbind(), 0.0)
    elif state is S.UNBIND_RECEIVED:
        owed = DeliverSm() if role is ESME else SubmitSm()
        feed(s, wire(owed, 50) + wire(Unbind(), 51), 0.0)  # we owe an answer: drain holds
    elif state is S.CLOSED:
        s.send(Unbind(), 0.0)
        feed(s, wire(UnbindResp(), s.last_sequence_number), 0.0)
    elif state is S.ERROR:
        feed(s, struct.pack(">IIII", 8, C.SUBMIT_SM, 0, 1), 0.0)
    s.data_to_send()
    assert s.state is state
    return s


ALL_STATES = list(S)


def received(events: list[Event]) -> list[Pdu]:
    """The requests in a list of events."""
    return [e.pdu for e in events if isinstance(e, RequestReceived)]


def state_of(session: Session) -> SessionState:
    """``session.state``, unnarrowed: mypy keeps a property's narrowed type across calls."""
    return session.state


ROLES = list(Role)


# --- legality, table-driven -------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("command_id", list(REQUESTS), ids=lambda c: c.name)
def test_receive_request(role: Role, state: SessionState, command_id: CommandId) -> None:
    s = session_in(role, state)
    pdu = REQUESTS[command_id]()
    decoded = decode(wire(pdu, 77))
    events = feed(s, wire(pdu, 77), 1.0)
    out = s.data_to_send()
    if state is S.ERROR:
        assert len(events) == 1
        assert isinstance(events[0], ProtocolViolation)
        assert out == b""
        return
    if state in may_receive(role, command_id):
        if command_id is C.ENQUIRE_LINK:
            assert events == []
            assert decode(out) == EnquireLinkResp(sequence_number=77)
            return
        expected: Callable[[Pdu], Event] = {
            C.BIND_TRANSMITTER: BindRequested,
            C.BIND_RECEIVER: BindRequested,
            C.BIND_TRANSCEIVER: BindRequested,
            C.OUTBIND: OutbindReceived,
            C.UNBIND: UnbindRequested,
        }.get(command_id, RequestReceived)
        assert events[0] == expected(decoded)
        if command_id is C.UNBIND and state is not S.UNBIND_RECEIVED:
            # Nothing to drain: answered at once.
            assert decode(out) == UnbindResp(sequence_number=77)
        else:
            assert out == b""
        return
    status = CommandStatus.ESME_RINVBNDSTS
    if role is SMSC and command_id.name.startswith("BIND_") and state in BINDING | BOUND:
        status = CommandStatus.ESME_RALYBND
    assert events == [PduRejected(decoded, status)]
    answer = decode(out)
    if command_id in NO_RESPONSE:
        assert answer == GenericNack(sequence_number=77, command_status=status)
    else:
        assert type(answer) is RESPONSES[CommandId(command_id | 0x80000000)]
        assert answer.sequence_number == 77
        assert answer.command_status == status
    assert s.state is state  # a rejected PDU changes nothing


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("command_id", list(REQUESTS), ids=lambda c: c.name)
def test_send_request(role: Role, state: SessionState, command_id: CommandId) -> None:
    s = session_in(role, state)
    pdu = REQUESTS[command_id]()
    in_flight = s.in_flight
    if state in MAY_SEND.get((role, command_id), set()):
        data = s.send(pdu, 1.0)
        sent = decode(data)
        assert type(sent) is type(pdu)
        assert sent.sequence_number == s.last_sequence_number
        if command_id not in NO_RESPONSE | {C.UNBIND}:
            assert s.in_flight == in_flight + 1
    else:
        with pytest.raises(LocalProtocolError):
            s.send(pdu, 1.0)
        assert s.state is state
        assert s.in_flight == in_flight
        assert s.data_to_send() == b""


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("command_id", list(RESPONSES), ids=lambda c: c.name)
def test_send_response(role: Role, state: SessionState, command_id: CommandId) -> None:
    s = session_in(role, state)
    pdu = RESPONSES[command_id](sequence_number=1 if command_id.name.startswith("BIND") else 51)
    if may_send_response(role, state, command_id):
        assert decode(s.send(pdu, 1.0)) == pdu
    else:
        with pytest.raises(LocalProtocolError):
            s.send(pdu, 1.0)
        assert s.state is state


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("state", [s for s in S if s is not S.ERROR], ids=lambda s: s.name)
@pytest.mark.parametrize("command_id", list(RESPONSES), ids=lambda c: c.name)
def test_unknown_response_is_an_event(
    role: Role, state: SessionState, command_id: CommandId
) -> None:
    s = session_in(role, state)
    response = RESPONSES[command_id](sequence_number=999)
    assert feed(s, wire(response, 999), 1.0) == [
        UnexpectedResponse(decode(wire(response, 999)), None)
    ]
    assert s.data_to_send() == b""  # a response is never answered
    assert s.state is state


# --- bind ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("binding", list(BINDS), ids=lambda s: s.name)
def test_bind_success(binding: SessionState) -> None:
    bind_cls, resp_cls, bound = BINDS[binding]
    pair = SessionPair(CONFIG)
    request = bind_cls(system_id="ulak", password="secret")
    pair.send(pair.esme, request)
    assert state_of(pair.esme) is binding
    _, smsc_events = pair.flush()
    assert state_of(pair.smsc) is binding
    (event,) = smsc_events
    assert isinstance(event, BindRequested)
    assert isinstance(event.pdu, bind_cls)
    assert (event.pdu.system_id, event.pdu.password) == ("ulak", "secret")
    pair.send(pair.smsc, resp_cls(sequence_number=event.pdu.sequence_number, system_id="SIM"))
    assert state_of(pair.smsc) is bound
    esme_events, _ = pair.flush()
    assert state_of(pair.esme) is bound
    assert len(esme_events) == 2
    assert isinstance(esme_events[0], ResponseReceived)
    assert esme_events[0].request is request
    assert esme_events[0].ok
    assert esme_events[1] == Bound(bound)


@pytest.mark.parametrize(
    "status",
    [CommandStatus.ESME_RINVPASWD, CommandStatus.ESME_RINVSYSID, CommandStatus.ESME_RALYBND],
)
def test_bind_failure_surfaces_the_status(status: CommandStatus) -> None:
    pair = SessionPair(CONFIG)
    esme_events, _ = pair.bind(status=status)
    assert state_of(pair.esme) is S.OPEN
    assert state_of(pair.smsc) is S.OPEN
    response, failed = esme_events
    assert isinstance(response, ResponseReceived)
    assert not response.ok
    assert isinstance(failed, BindFailed)
    assert failed.command_status == status
    # Binding again is allowed after a refusal.
    _esme_events, _ = pair.bind()
    assert state_of(pair.esme) is S.BOUND_TRX
    assert state_of(pair.smsc) is S.BOUND_TRX


def test_bind_answered_by_generic_nack_fails() -> None:
    esme = Session(ESME, CONFIG, now=0.0)
    esme.send(BindTransmitter(), 0.0)
    nack = GenericNack(command_status=CommandStatus.ESME_RINVCMDLEN)
    events = feed(esme, wire(nack, esme.last_sequence_number), 0.5)
    assert isinstance(events[0], ResponseReceived)
    assert not events[0].ok
    assert events[1] == BindFailed(CommandStatus.ESME_RINVCMDLEN, decode(wire(nack, 1)))
    assert esme.state is S.OPEN


def test_bind_timeout_returns_to_open() -> None:
    esme = Session(ESME, CONFIG, now=0.0)
    request = BindTransceiver()
    esme.send(request, 0.0)
    assert esme.next_deadline() == 5.0
    esme.handle_timers(5.0)
    assert drain(esme) == [ResponseTimeout(request, 1, 0.0)]
    assert esme.state is S.OPEN
    late = feed(esme, wire(BindTransceiverResp(), 1), 6.0)
    assert isinstance(late[0], UnexpectedResponse)
    assert esme.state is S.OPEN


def test_second_bind_while_bound_gets_already_bound() -> None:
    smsc = session_in(SMSC, S.BOUND_TX)
    events = feed(smsc, wire(BindTransmitter(), 9), 1.0)
    assert events == [PduRejected(decode(wire(BindTransmitter(), 9)), CommandStatus.ESME_RALYBND)]
    answer = decode(smsc.data_to_send())
    assert answer == BindTransmitterResp(
        sequence_number=9, command_status=CommandStatus.ESME_RALYBND
    )


def test_smsc_may_only_answer_the_pending_bind_type() -> None:
    smsc = session_in(SMSC, S.BINDING_TX)
    with pytest.raises(LocalProtocolError):
        smsc.send(BindReceiverResp(sequence_number=1), 0.0)
    smsc.send(BindTransmitterResp(sequence_number=1), 0.0)
    assert smsc.state is S.BOUND_TX


def test_outbind_then_bind_receiver() -> None:
    pair = SessionPair(CONFIG)
    pair.send(pair.smsc, Outbind(system_id="smsc", password="pw"))
    esme_events, _ = pair.flush()
    assert len(esme_events) == 1
    assert isinstance(esme_events[0], OutbindReceived)
    assert state_of(pair.esme) is S.OPEN
    assert pair.esme.data_to_send() == b""  # outbind has no response
    pair.bind(BindReceiver(system_id="ulak"))
    assert state_of(pair.esme) is S.BOUND_RX
    assert state_of(pair.smsc) is S.BOUND_RX


# --- window and sequence numbers --------------------------------------------------------------


def bound_esme(config: SessionConfig = CONFIG, **kwargs: int) -> Session:
    esme = Session(ESME, config, now=0.0, **kwargs)
    esme.send(BindTransceiver(), 0.0)
    feed(esme, wire(BindTransceiverResp(), esme.last_sequence_number), 0.0)
    assert esme.state is S.BOUND_TRX
    return esme


def test_window_is_never_exceeded() -> None:
    esme = bound_esme(SessionConfig(window=3, response_timeout=5.0))
    assert (esme.in_flight, esme.window_free) == (0, 3)
    seqs = []
    for _ in range(3):
        esme.send(SubmitSm(), 0.0)
        seqs.append(esme.last_sequence_number)
    assert (esme.in_flight, esme.window_free) == (3, 0)
    with pytest.raises(LocalProtocolError, match="window"):
        esme.send(SubmitSm(), 0.0)
    assert esme.in_flight == 3
    feed(esme, wire(SubmitSmResp(message_id="1"), seqs[1]), 0.1)
    assert (esme.in_flight, esme.window_free) == (2, 1)
    esme.send(SubmitSm(), 0.2)
    assert esme.window_free == 0
    # unbind is not counted: a full window never blocks a shutdown.
    esme.send(Unbind(), 0.3)
    assert esme.in_flight == 3


def test_sequence_numbers_wrap_to_one() -> None:
    esme = bound_esme(first_sequence_number=0x7FFFFFFE)
    # The bind took 0x7FFFFFFE.
    esme.send(SubmitSm(), 0.0)
    assert esme.last_sequence_number == 0x7FFFFFFF
    esme.send(SubmitSm(), 0.0)
    assert esme.last_sequence_number == 1


def test_sequence_wrap_skips_numbers_in_flight() -> None:
    esme = bound_esme(first_sequence_number=0x7FFFFFFD)
    sent = []
    for _ in range(4):  # 0x7FFFFFFE, 0x7FFFFFFF, 1, 2
        esme.send(SubmitSm(), 0.0)
        sent.append(esme.last_sequence_number)
    assert sent == [0x7FFFFFFE, 0x7FFFFFFF, 1, 2]
    for seq in (0x7FFFFFFE, 0x7FFFFFFF):
        feed(esme, wire(SubmitSmResp(), seq), 0.0)
    # Force the counter round again while 1 and 2 are still outstanding.
    esme._next_seq = 0x7FFFFFFF
    esme.send(SubmitSm(), 0.0)
    assert esme.last_sequence_number == 0x7FFFFFFF
    esme.send(SubmitSm(), 0.0)
    assert esme.last_sequence_number == 3


def test_response_keeps_the_request_sequence_number() -> None:
    smsc = session_in(SMSC, S.BOUND_TRX)
    (event,) = feed(smsc, wire(SubmitSm(), 4242), 0.0)
    assert isinstance(event, RequestReceived)
    assert smsc.owed_responses == 1
    data = smsc.send(response_for(event.pdu), 0.0)
    assert decode(data).sequence_number == 4242
    assert smsc.owed_responses == 0


# --- responses ----------------------------------------------------------------------------------


def test_response_matched_with_request_and_elapsed_time() -> None:
    esme = bound_esme()
    request = SubmitSm(short_message=b"x")
    esme.send(request, 10.0)
    seq = esme.last_sequence_number
    response = SubmitSmResp(message_id="m1")
    (event,) = feed(esme, wire(response, seq), 10.25)
    assert isinstance(event, ResponseReceived)
    assert event.request is request
    assert event.response == decode(wire(response, seq))
    assert event.sequence_number == seq
    assert event.elapsed == pytest.approx(0.25)
    assert event.ok


def test_duplicate_response_is_an_event() -> None:
    esme = bound_esme()
    esme.send(SubmitSm(), 0.0)
    seq = esme.last_sequence_number
    resp = wire(SubmitSmResp(), seq)
    (first,) = feed(esme, resp, 0.1)
    assert isinstance(first, ResponseReceived)
    assert feed(esme, resp, 0.2) == [UnexpectedResponse(decode(resp), None)]


def test_response_with_wrong_command_id_keeps_request_outstanding() -> None:
    esme = bound_esme()
    request = SubmitSm()
    esme.send(request, 0.0)
    seq = esme.last_sequence_number
    wrong = wire(QuerySmResp(), seq)
    assert feed(esme, wrong, 0.1) == [UnexpectedResponse(decode(wrong), request)]
    assert esme.in_flight == 1
    (event,) = feed(esme, wire(SubmitSmResp(), seq), 0.2)
    assert isinstance(event, ResponseReceived)
    assert esme.in_flight == 0


def test_generic_nack_completes_the_request_with_an_error() -> None:
    esme = bound_esme()
    request = SubmitSm()
    esme.send(request, 0.0)
    seq = esme.last_sequence_number
    (event,) = feed(esme, wire(GenericNack(command_status=CommandStatus.ESME_RINVCMDID), seq), 0.1)
    assert isinstance(event, ResponseReceived)
    assert event.request is request
    assert not event.ok
    assert event.response.command_status == CommandStatus.ESME_RINVCMDID
    assert esme.in_flight == 0


def test_generic_nack_with_sequence_zero_is_a_protocol_error_event() -> None:
    esme = bound_esme()
    esme.send(SubmitSm(), 0.0)
    nack = wire(GenericNack(command_status=CommandStatus.ESME_RINVCMDLEN), 0)
    assert feed(esme, nack, 0.1) == [NackReceived(decode(nack))]
    assert esme.in_flight == 1  # nothing completed: the request will time out
    assert esme.data_to_send() == b""


def test_throttling_status_is_reported_not_retried() -> None:
    esme = bound_esme()
    esme.send(SubmitSm(), 0.0)
    seq = esme.last_sequence_number
    throttled = SubmitSmResp(command_status=CommandStatus.ESME_RTHROTTLED)
    (event,) = feed(esme, wire(throttled, seq), 0.1)
    assert isinstance(event, ResponseReceived)
    assert event.response.command_status == CommandStatus.ESME_RTHROTTLED
    assert esme.in_flight == 0


def test_response_timeout_frees_the_slot_and_late_response_is_unexpected() -> None:
    esme = bound_esme(
        SessionConfig(
            window=2, response_timeout=5.0, enquire_link_interval=None, inactivity_timeout=None
        )
    )
    first, second = SubmitSm(), SubmitSm()
    esme.send(first, 1.0)
    seq1 = esme.last_sequence_number
    esme.send(second, 2.0)
    seq2 = esme.last_sequence_number
    assert esme.window_free == 0
    assert esme.next_deadline() == 6.0
    esme.handle_timers(5.9)
    assert drain(esme) == []
    esme.handle_timers(6.0)
    assert drain(esme) == [ResponseTimeout(first, seq1, 1.0)]
    assert (esme.in_flight, esme.window_free) == (1, 1)
    assert esme.next_deadline() == 7.0
    esme.handle_timers(100.0)
    assert drain(esme) == [ResponseTimeout(second, seq2, 2.0)]
    assert esme.next_deadline() is None
    late = wire(SubmitSmResp(), seq1)
    assert feed(esme, late, 100.5) == [UnexpectedResponse(decode(late), None)]


# --- enquire_link, liveness -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_enquire_link_answered_automatically(role: Role) -> None:
    s = session_in(role, S.BOUND_TRX)
    assert feed(s, wire(EnquireLink(), 31), 1.0) == []
    assert decode(s.data_to_send()) == EnquireLinkResp(sequence_number=31)
    assert s.data_to_send() == b""


def test_queued_answers_go_out_ahead_of_the_next_send() -> None:
    esme = bound_esme()
    feed(esme, wire(EnquireLink(), 31), 1.0)
    data = esme.send(SubmitSm(), 1.0)
    reply = wire(EnquireLinkResp(), 31)
    assert data.startswith(reply)
    assert decode(data[len(reply) :]).command_id == C.SUBMIT_SM
    assert esme.data_to_send() == b""


def test_idle_enquire_link_and_answer() -> None:
    pair = SessionPair(
        SessionConfig(response_timeout=5.0, enquire_link_interval=30.0, inactivity_timeout=None)
    )
    pair.bind()
    assert pair.esme.next_deadline() == 30.0
    assert pair.advance(29.0) == ([], [])
    assert pair.esme.next_deadline() == 30.0
    # Both sides are idle: each sends its own enquire_link and answers the other's.
    esme_events, smsc_events = pair.advance(1.0)
    assert (esme_events, smsc_events) == ([], [])
    assert pair.esme.in_flight == 0
    assert pair.esme.next_deadline() == 60.0  # counted from the answer


def test_traffic_postpones_enquire_link() -> None:
    esme = bound_esme(SessionConfig(response_timeout=5.0, enquire_link_interval=30.0))
    esme.receive_data(wire(DeliverSm(), 5)[:10], 20.0)  # even a partial PDU shows life
    assert drain(esme) == []
    assert esme.next_deadline() == 50.0
    esme.handle_timers(49.0)
    assert esme.data_to_send() == b""


def test_peer_dead_when_enquire_link_unanswered() -> None:
    esme = bound_esme(
        SessionConfig(response_timeout=5.0, enquire_link_interval=30.0, inactivity_timeout=None)
    )
    esme.handle_timers(30.0)
    ping = decode(esme.data_to_send())
    assert isinstance(ping, EnquireLink)
    assert esme.in_flight == 0  # not counted in the window
    assert esme.next_deadline() == 35.0
    esme.handle_timers(35.0)
    assert drain(esme) == [PeerDead(30.0)]
    # Reported once; no further enquire_link until the peer shows life.
    assert esme.next_deadline() is None
    esme.handle_timers(1000.0)
    assert drain(esme) == []
    assert esme.data_to_send() == b""
    late = wire(EnquireLinkResp(), ping.sequence_number)
    assert feed(esme, late, 1001.0) == [UnexpectedResponse(decode(late), None)]
    assert esme.next_deadline() == 1031.0


def test_inactivity_timeout_in_open_state() -> None:
    smsc = Session(SMSC, SessionConfig(inactivity_timeout=60.0), now=100.0)
    assert smsc.next_deadline() == 160.0
    smsc.handle_timers(159.0)
    assert drain(smsc) == []
    smsc.handle_timers(160.0)
    assert drain(smsc) == [InactivityTimeout(100.0)]
    smsc.handle_timers(500.0)
    assert drain(smsc) == []  # once per silent period
    assert smsc.next_deadline() is None
    feed(smsc, wire(EnquireLink(), 1), 600.0)
    assert smsc.next_deadline() == 660.0


def test_no_idle_enquire_link_when_not_bound() -> None:
    esme = Session(ESME, SessionConfig(enquire_link_interval=10.0, inactivity_timeout=None), now=0)
    assert esme.next_deadline() is None
    esme.handle_timers(100.0)
    assert esme.data_to_send() == b""


# --- unbind and drain -----------------------------------------------------------------------


def test_unbind_drain_esme_initiated() -> None:
    pair = SessionPair(CONFIG)
    pair.bind()
    requests = [SubmitSm(short_message=b"1"), SubmitSm(short_message=b"2")]
    for request in requests:
        pair.send(pair.esme, request)
    unbind = Unbind()
    pair.send(pair.esme, unbind)
    assert state_of(pair.esme) is S.UNBIND_SENT
    with pytest.raises(LocalProtocolError):
        pair.send(pair.esme, SubmitSm())
    _, smsc_events = pair.flush()
    assert [type(e) for e in smsc_events] == [RequestReceived, RequestReceived, UnbindRequested]
    assert state_of(pair.smsc) is S.UNBIND_RECEIVED
    with pytest.raises(LocalProtocolError):
        pair.send(pair.smsc, DeliverSm())
    # The SMSC answers what it owes; the last answer releases the unbind_resp.
    first, second = received(smsc_events)
    pair.send(pair.smsc, response_for(first))
    assert state_of(pair.smsc) is S.UNBIND_RECEIVED
    data = pair.smsc.send(response_for(second), 0.0)
    pair.wire[ESME] += data
    assert state_of(pair.smsc) is S.CLOSED
    assert drain(pair.smsc) == [Unbound(by_peer=True)]
    esme_events, _ = pair.flush()
    assert [type(e) for e in esme_events] == [
        ResponseReceived,
        ResponseReceived,
        ResponseReceived,
        Unbound,
    ]
    assert [e.request for e in esme_events[:3] if isinstance(e, ResponseReceived)] == [
        *requests,
        unbind,
    ]
    assert esme_events[3] == Unbound(by_peer=False)
    assert state_of(pair.esme) is S.CLOSED


def test_unbind_drain_smsc_initiated() -> None:
    pair = SessionPair(CONFIG)
    pair.bind()
    pair.send(pair.esme, SubmitSm())
    _, smsc_events = pair.flush()
    assert [type(e) for e in smsc_events] == [RequestReceived]
    pair.send(pair.smsc, DeliverSm())
    pair.send(pair.smsc, Unbind())
    esme_events, _ = pair.flush()
    assert [type(e) for e in esme_events] == [RequestReceived, UnbindRequested]
    assert state_of(pair.esme) is S.UNBIND_RECEIVED
    # The ESME still waits for its submit_sm_resp and owes a deliver_sm_resp.
    pair.send(pair.esme, response_for(received(esme_events)[0]))
    assert state_of(pair.esme) is S.UNBIND_RECEIVED
    pair.send(pair.smsc, response_for(received(smsc_events)[0]))
    esme_events, smsc_events = pair.flush()
    assert [type(e) for e in esme_events] == [ResponseReceived, Unbound]
    assert [type(e) for e in smsc_events] == [ResponseReceived, ResponseReceived, Unbound]
    assert state_of(pair.esme) is S.CLOSED
    assert state_of(pair.smsc) is S.CLOSED


def test_request_crossing_an_unbind_gets_rinvbndsts() -> None:
    pair = SessionPair(CONFIG)
    pair.bind()
    request = SubmitSm()
    pair.send(pair.esme, request)  # written before the ESME sees the unbind
    pair.send(pair.smsc, Unbind())
    esme_events, smsc_events = pair.flush()
    assert [type(e) for e in smsc_events] == [PduRejected, ResponseReceived, Unbound]
    answer = esme_events[1]
    assert isinstance(answer, ResponseReceived)
    assert answer.request is request
    assert answer.response.command_status == CommandStatus.ESME_RINVBNDSTS
    assert [type(e) for e in esme_events] == [UnbindRequested, ResponseReceived, Unbound]
    assert (pair.esme.state, pair.smsc.state) == (S.CLOSED, S.CLOSED)


def test_unbind_drain_ends_on_response_timeout() -> None:
    pair = SessionPair(CONFIG)
    pair.bind()
    pair.send(pair.esme, SubmitSm())
    pair.wire[SMSC].clear()  # lost on the way
    pair.now = 3.0
    pair.send(pair.smsc, Unbind())
    esme_events, _ = pair.flush()
    assert [type(e) for e in esme_events] == [UnbindRequested]
    assert state_of(pair.esme) is S.UNBIND_RECEIVED
    esme_events, smsc_events = pair.advance(2.0)
    assert [type(e) for e in esme_events] == [ResponseTimeout, Unbound]
    assert [type(e) for e in smsc_events] == [ResponseReceived, Unbound]
    assert state_of(pair.smsc) is S.CLOSED


def test_requests_after_unbind_are_rejected() -> None:
    esme = session_in(ESME, S.UNBIND_RECEIVED)
    late = wire(DeliverSm(), 60)
    assert feed(esme, late, 1.0) == [PduRejected(decode(late), CommandStatus.ESME_RINVBNDSTS)]
    assert decode(esme.data_to_send()) == DeliverSmResp(
        sequence_number=60, command_status=CommandStatus.ESME_RINVBNDSTS
    )
    smsc = session_in(SMSC, S.UNBIND_SENT)
    late = wire(SubmitSm(), 61)
    assert feed(smsc, late, 1.0) == [PduRejected(decode(late), CommandStatus.ESME_RINVBNDSTS)]


def test_unbind_collision_closes_both() -> None:
    pair = SessionPair(CONFIG)
    pair.bind()
    pair.send(pair.esme, Unbind())
    pair.send(pair.smsc, Unbind())
    esme_events, smsc_events = pair.flush()
    # Each side answered the other's unbind at once (nothing to drain), then got its own answer.
    for events in (esme_events, smsc_events):
        assert [type(e) for e in events] == [UnbindRequested, ResponseReceived, Unbound]
        assert events[-1] == Unbound(by_peer=False)
    assert state_of(pair.esme) is S.CLOSED
    assert state_of(pair.smsc) is S.CLOSED


def test_unbind_response_cannot_be_sent_unasked() -> None:
    smsc = session_in(SMSC, S.UNBIND_SENT)
    with pytest.raises(LocalProtocolError):
        smsc.send(UnbindResp(sequence_number=3), 0.0)


# --- malformed input --------------------------------------------------------------------------


def test_unknown_command_id_gets_generic_nack_and_session_continues() -> None:
    smsc = session_in(SMSC, S.BOUND_TRX)
    bogus = struct.pack(">IIII", 16, 0x00000099, 0, 1234)
    events = feed(smsc, bogus + wire(SubmitSm(), 1235), 1.0)
    assert len(events) == 2
    malformed, request = events
    assert isinstance(malformed, MalformedPdu)
    assert malformed.answered
    assert malformed.error.command_status == CommandStatus.ESME_RINVCMDID
    assert isinstance(request, RequestReceived)
    assert decode(smsc.data_to_send()) == GenericNack(
        sequence_number=1234, command_status=CommandStatus.ESME_RINVCMDID
    )
    assert smsc.state is S.BOUND_TRX


def test_malformed_body_gets_generic_nack_with_its_status_and_sequence() -> None:
    smsc = session_in(SMSC, S.BOUND_TRX)
    body = b"\x01" * 8  # no C-octet string terminator anywhere
    bogus = struct.pack(">IIII", 16 + len(body), C.SUBMIT_SM, 0, 777) + body
    events = feed(smsc, bogus, 1.0)
    assert len(events) == 1
    assert isinstance(events[0], MalformedPdu)
    status = events[0].error.command_status
    assert status != 0
    assert decode(smsc.data_to_send()) == GenericNack(sequence_number=777, command_status=status)
    assert smsc.owed_responses == 0


def test_malformed_response_is_not_answered() -> None:
    esme = bound_esme()
    esme.send(SubmitSm(), 0.0)
    seq = esme.last_sequence_number
    body = b"\x01" * 8  # message_id without its terminator
    bogus = struct.pack(">IIII", 16 + len(body), C.SUBMIT_SM_RESP, 0, seq) + body
    (event,) = feed(esme, bogus, 0.1)
    assert isinstance(event, MalformedPdu)
    assert not event.answered
    assert esme.data_to_send() == b""
    assert esme.in_flight == 1  # left to time out


@pytest.mark.parametrize("length", [0, 8, 15, CONFIG.max_command_length + 1])
def test_framing_error_moves_to_error(length: int) -> None:
    esme = bound_esme()
    request = SubmitSm()
    esme.send(request, 0.0)
    seq = esme.last_sequence_number
    events = feed(esme, struct.pack(">IIII", length, C.DELIVER_SM, 0, 5) + b"\x00" * 64, 1.0)
    assert len(events) == 1
    violation = events[0]
    assert isinstance(violation, ProtocolViolation)
    assert violation.error.command_status == CommandStatus.ESME_RINVCMDLEN
    assert violation.unanswered == ((seq, request),)
    assert esme.state is S.ERROR
    nack = decode(esme.data_to_send())
    assert isinstance(nack, GenericNack)
    assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
    assert esme.next_event() is violation  # terminal
    esme.receive_data(wire(DeliverSm(), 6), 2.0)  # dropped
    assert esme.next_event() is violation
    assert esme.next_deadline() is None
    with pytest.raises(LocalProtocolError):
        esme.send(SubmitSm(), 2.0)
    with pytest.raises(LocalProtocolError):
        esme.send(DeliverSmResp(sequence_number=5), 2.0)


# --- transport ----------------------------------------------------------------------------------


def test_eof_reports_unanswered_requests() -> None:
    esme = bound_esme()
    requests = [SubmitSm(short_message=bytes([i])) for i in range(3)]
    seqs = []
    for request in requests:
        esme.send(request, 0.0)
        seqs.append(esme.last_sequence_number)
    feed(esme, wire(SubmitSmResp(), seqs[1]), 0.1)
    esme.receive_data(wire(DeliverSm(), 70), 0.2)
    esme.receive_data(b"", 0.3)
    first, closed = drain(esme)
    assert isinstance(first, RequestReceived)  # buffered PDUs come out before the close
    assert closed == ConnectionClosed(((seqs[0], requests[0]), (seqs[2], requests[2])), False)
    assert esme.state is S.CLOSED
    assert esme.next_event() is closed
    assert esme.in_flight == 0
    assert esme.next_deadline() is None
    with pytest.raises(LocalProtocolError):
        esme.receive_data(b"more", 0.4)


def test_eof_after_unbind_is_clean() -> None:
    esme = session_in(ESME, S.CLOSED)
    esme.receive_data(b"", 1.0)
    assert drain(esme) == [ConnectionClosed((), True)]


def test_bytes_one_at_a_time_give_the_same_events() -> None:
    def conversation(chunk: int | None) -> list[tuple[list[Event], list[Event]]]:
        pair = SessionPair(CONFIG)
        log = [pair.bind()]
        for i in range(3):
            pair.send(pair.esme, SubmitSm(short_message=bytes([i]) * 50))
        pair.send(pair.smsc, DeliverSm(short_message=b"xyz"))
        pair.send(pair.smsc, EnquireLink())
        esme_events, smsc_events = pair.flush(chunk=chunk)
        log.append((esme_events, smsc_events))
        for event in smsc_events:
            if isinstance(event, RequestReceived):
                pair.send(pair.smsc, response_for(event.pdu))
        log.append(pair.flush(chunk=chunk))
        return log

    by_byte = conversation(1)
    assert by_byte == conversation(None)
    assert [len(events) for step in by_byte for events in step] == [2, 1, 1, 4, 3, 0]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SessionConfig(window=0)
    with pytest.raises(ValueError):
        SessionConfig(response_timeout=0)
    with pytest.raises(ValueError):
        SessionConfig(enquire_link_interval=-1.0)
    with pytest.raises(ValueError):
        Session(ESME, now=0.0, first_sequence_number=0)


def test_next_event_without_data() -> None:
    assert Session(ESME, now=0.0).next_event() is NEED_DATA


# --- the pair under random interleavings ------------------------------------------------------

MACHINE_CONFIG = SessionConfig(
    window=4, response_timeout=10.0, enquire_link_interval=7.0, inactivity_timeout=30.0
)
# Requests either side may try; illegal ones must raise LocalProtocolError and change nothing.
MACHINE_REQUESTS = [
    C.BIND_TRANSMITTER,
    C.BIND_RECEIVER,
    C.BIND_TRANSCEIVER,
    C.SUBMIT_SM,
    C.DATA_SM,
    C.DELIVER_SM,
    C.QUERY_SM,
    C.ENQUIRE_LINK,
    C.ALERT_NOTIFICATION,
    C.OUTBIND,
]
BIND_IDS = (C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER)
CONSISTENT = {
    (S.UNBIND_SENT, S.UNBIND_RECEIVED),
    (S.UNBIND_RECEIVED, S.UNBIND_SENT),
    (S.UNBIND_SENT, S.UNBIND_SENT),
} | {(state, state) for state in S}


class PairMachine(RuleBasedStateMachine):
    """An ESME and an SMSC with bytes delivered in random chunks, random sends and answers, and
    time moving on. Checks: the window holds, every request ends exactly once (response or
    timeout), only LocalProtocolError escapes, and quiescent pairs agree on the state."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = SessionPair(MACHINE_CONFIG)
        self.sessions = {ESME: self.pair.esme, SMSC: self.pair.smsc}
        # What the application believes: its outstanding requests and what it owes the peer.
        self.outstanding: dict[Role, dict[int, Pdu]] = {ESME: {}, SMSC: {}}
        self.owed: dict[Role, list[Pdu]] = {ESME: [], SMSC: []}
        self.timed_out: dict[Role, bool] = {ESME: False, SMSC: False}
        self.sent_untracked: dict[Role, bool] = {ESME: False, SMSC: False}
        self.diverged = False  # a bind or unbind timed out: the two sides may disagree

    def handle(self, role: Role, events: list[Event]) -> None:
        for event in events:
            assert not isinstance(
                event, MalformedPdu | ProtocolViolation | NackReceived | ConnectionClosed
            ), event
            if isinstance(event, ResponseReceived):
                seq = event.sequence_number
                assert self.outstanding[role].pop(seq) is event.request
            elif isinstance(event, ResponseTimeout):
                assert self.outstanding[role].pop(event.sequence_number) is event.request
                self.timed_out[role] = True
                if event.request.command_id in (C.UNBIND, *BIND_IDS):
                    self.diverged = True
            elif isinstance(event, PeerDead):
                self.timed_out[role] = True
            elif isinstance(event, UnexpectedResponse):
                # Only late answers are unexpected, or a nack for an outbind/alert_notification
                # (requests without a response, hence never tracked) the peer could not accept.
                untracked = isinstance(event.response, GenericNack) and self.sent_untracked[role]
                assert self.timed_out[role] or untracked, event
            elif (
                isinstance(event, RequestReceived | BindRequested)
                and event.pdu.command_id is not C.ALERT_NOTIFICATION
            ):
                self.owed[role].append(event.pdu)

    def collect(self) -> None:
        self.pair.collect()

    def flush(self) -> None:
        while any(self.pair.wire.values()):
            for role in ROLES:
                self.deliver(role, 10**9)

    @initialize(kind=st.sampled_from([None, *BIND_IDS]))
    def start(self, kind: CommandId | None) -> None:
        """Most runs start bound, so that the bound and unbinding states get explored."""
        if kind is not None:
            self.send_request(ESME, kind)
            self.flush()
            self.answer(SMSC, 0, 0)
            self.flush()
            assert self.pair.esme.state in BOUND

    @rule()
    def deliver_everything(self) -> None:
        self.flush()

    @rule(
        role=st.sampled_from(ROLES),
        command_id=st.sampled_from(MACHINE_REQUESTS),
    )
    def send_request(self, role: Role, command_id: CommandId) -> None:
        session = self.sessions[role]
        pdu = REQUESTS[command_id]()
        legal = session.state in MAY_SEND.get((role, command_id), set())
        full = session.window_free == 0 and command_id not in NO_RESPONSE
        before = session.state
        try:
            seq = self.pair.send(session, pdu)
        except LocalProtocolError:
            assert not legal or full
            assert session.state is before
            return
        assert legal and not full
        if command_id in NO_RESPONSE:
            self.sent_untracked[role] = True
        else:
            assert seq not in self.outstanding[role]
            self.outstanding[role][seq] = pdu

    @rule(role=st.sampled_from(ROLES))
    def unbind(self, role: Role) -> None:
        session = self.sessions[role]
        pdu = Unbind()
        try:
            seq = self.pair.send(session, pdu)
        except LocalProtocolError:
            assert session.state not in BOUND
            return
        self.outstanding[role][seq] = pdu

    @rule(
        role=st.sampled_from(ROLES),
        index=st.integers(min_value=0),
        status=st.sampled_from([0, 0, CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RINVPASWD]),
    )
    def answer(self, role: Role, index: int, status: int) -> None:
        owed = self.owed[role]
        if not owed:
            return
        request = owed.pop(index % len(owed))
        try:
            self.pair.send(self.sessions[role], response_for(request, status))
        except LocalProtocolError:
            # Only a bind answer can become illegal (the peer gave up on it and bound again).
            assert request.command_id in BIND_IDS
        self.collect()

    @rule(role=st.sampled_from(ROLES), size=st.integers(min_value=1, max_value=200))
    def deliver(self, role: Role, size: int) -> None:
        """Deliver up to ``size`` bytes in transit to ``role``."""
        buffer = self.pair.wire[role]
        data = bytes(buffer[:size])
        del buffer[:size]
        if data:
            session = self.sessions[role]
            self.handle(role, feed(session, data, self.pair.now))
        self.collect()

    @rule(seconds=st.floats(min_value=0.0, max_value=12.0))
    def advance(self, seconds: float) -> None:
        self.pair.now += seconds
        for role, session in self.sessions.items():
            session.handle_timers(self.pair.now)
            self.handle(role, drain(session))
        self.collect()

    @invariant()
    def window_holds(self) -> None:
        for role, session in self.sessions.items():
            assert 0 <= session.in_flight <= MACHINE_CONFIG.window
            counted = [p for p in self.outstanding[role].values() if p.command_id is not C.UNBIND]
            assert session.in_flight == len(counted)

    @invariant()
    def states_agree_when_quiet(self) -> None:
        note(f"esme {self.pair.esme.state.name}, smsc {self.pair.smsc.state.name}")
        if self.diverged or any(self.pair.wire.values()):
            return
        assert (self.pair.esme.state, self.pair.smsc.state) in CONSISTENT

    def teardown(self) -> None:
        # Deliver everything, then let every timeout run: each request must have ended once.
        self.flush()
        self.advance(MACHINE_CONFIG.response_timeout + 1)
        self.advance(MACHINE_CONFIG.response_timeout + 1)
        assert self.outstanding == {ESME: {}, SMSC: {}}


TestPairMachine = PairMachine.TestCase
TestPairMachine.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None, derandomize=True
)
