"""The SMPP 3.4 bind-state machine: every rule about which PDU is legal when lives here.

Like h11's ``_state.py`` ("everything that affects the state machine must live here"), this
module holds one table, :data:`TRANSITIONS`, keyed by ``(role, state, direction, command_id)``.
A key that is absent means the PDU is illegal for that role, in that state, in that direction.
The value says which state the session moves to when the PDU is sent or received and, for
responses, which state it moves to when the response carries an error (or the request it answers
times out or is answered by ``generic_nack``).

The table is derived from SMPP 3.4 §2.3 (table 2-1, "SMPP PDUs": which side may send each PDU
and the bind states it requires) and §2.4 (the session states), with these decisions:

- ``bind_*`` requests and their responses pass through a transitional state per bind type
  (``BINDING_TX`` ...), so that the bind response's target state is in the table rather than
  in a side variable.
- ``data_sm`` follows the direction of the traffic (§4.7): an ESME may send it when it may
  submit (BOUND_TX, BOUND_TRX), an SMSC when it may deliver (BOUND_RX, BOUND_TRX).
- §2.3 allows ``enquire_link`` only in bound states. We send it only there, but answer it in
  every state but CLOSED and ERROR (SMPP 5.0 §2.4 relaxed this; answering costs nothing and a
  peer that checks the link while binding or unbinding should not see an error).
- Unbinding is split by who started it (``UNBIND_SENT`` / ``UNBIND_RECEIVED``): during the drain
  both sides keep answering requests and matching responses, but no new request may start; a
  request received then is answered with ``ESME_RINVBNDSTS``. An ``unbind`` received in
  ``UNBIND_SENT`` (both sides unbinding at once) is accepted and answered after the drain.
- Responses other than the bind and unbind responses never change the state, and may be sent
  in every state but ERROR by the side that receives the request: a response answers a request
  that was legal when it arrived, and the state may have moved on (an unbind) since.
  ``generic_nack`` may be sent and received by both sides in every state but ERROR. Received
  responses are matched against the outstanding requests before this table is consulted, so
  an unknown response is never rejected, only reported.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

from .constants import RESPONSE_BIT, CommandId, CommandStatus

__all__ = [
    "BOUND_STATES",
    "TRANSITIONS",
    "Direction",
    "Role",
    "SessionState",
    "Transition",
    "rejection_status",
    "transitions_for",
]


class Role(enum.Enum):
    """Which end of the link a session plays (SMPP 3.4 §2.1)."""

    ESME = "esme"
    """External Short Message Entity: the gateway's side; it binds."""
    SMSC = "smsc"
    """Short Message Service Centre: the simulator's side; it accepts binds."""


class SessionState(enum.Enum):
    """Session states (SMPP 3.4 §2.4, plus the transitional states this engine needs)."""

    OPEN = "open"
    """Connected, not bound (§2.4 OPEN). Only binds, outbind and enquire_link are legal."""
    BINDING_TX = "binding_tx"
    """``bind_transmitter`` sent (ESME) or received (SMSC); its response is awaited."""
    BINDING_RX = "binding_rx"
    """``bind_receiver`` sent or received; its response is awaited."""
    BINDING_TRX = "binding_trx"
    """``bind_transceiver`` sent or received; its response is awaited."""
    BOUND_TX = "bound_tx"
    """Bound as a transmitter: the ESME submits."""
    BOUND_RX = "bound_rx"
    """Bound as a receiver: the SMSC delivers."""
    BOUND_TRX = "bound_trx"
    """Bound as a transceiver: both."""
    UNBIND_SENT = "unbind_sent"
    """We sent ``unbind``: no new requests; responses still flow until ``unbind_resp``."""
    UNBIND_RECEIVED = "unbind_received"
    """The peer sent ``unbind``: we drain, then answer it with ``unbind_resp``."""
    CLOSED = "closed"
    """Unbound (§2.4 CLOSED), or the transport reached EOF."""
    ERROR = "error"
    """The byte stream is unusable (framing error): close the connection."""


class Direction(enum.Enum):
    """Whether a PDU is sent by us or received from the peer."""

    SEND = "send"
    RECEIVE = "receive"


class Transition(NamedTuple):
    """Where a legal PDU takes the session.

    ``on_failure`` applies to responses only: when the response's ``command_status`` is not
    ``ESME_ROK``, when ``generic_nack`` answers the request, or when the request times out.
    """

    on_success: SessionState
    on_failure: SessionState


S = SessionState
C = CommandId

BOUND_STATES: Final = frozenset({S.BOUND_TX, S.BOUND_RX, S.BOUND_TRX})
_TX: Final = frozenset({S.BOUND_TX, S.BOUND_TRX})
_RX: Final = frozenset({S.BOUND_RX, S.BOUND_TRX})
_UNBINDING: Final = frozenset({S.UNBIND_SENT, S.UNBIND_RECEIVED})
_BINDING: Final = frozenset({S.BINDING_TX, S.BINDING_RX, S.BINDING_TRX})

_BINDS: Final = (
    (C.BIND_TRANSMITTER, C.BIND_TRANSMITTER_RESP, S.BINDING_TX, S.BOUND_TX),
    (C.BIND_RECEIVER, C.BIND_RECEIVER_RESP, S.BINDING_RX, S.BOUND_RX),
    (C.BIND_TRANSCEIVER, C.BIND_TRANSCEIVER_RESP, S.BINDING_TRX, S.BOUND_TRX),
)

# Requests that need no state change: (command_id, sending role, states it may be sent in).
# SMPP 3.4 §2.3 table 2-1, with data_sm split by direction (see the module docstring).
_PLAIN_REQUESTS: Final[tuple[tuple[CommandId, Role, frozenset[SessionState]], ...]] = (
    (C.SUBMIT_SM, Role.ESME, _TX),
    (C.SUBMIT_MULTI, Role.ESME, _TX),
    (C.QUERY_SM, Role.ESME, _TX),
    (C.CANCEL_SM, Role.ESME, _TX),
    (C.REPLACE_SM, Role.ESME, _TX),
    (C.DATA_SM, Role.ESME, _TX),
    (C.DELIVER_SM, Role.SMSC, _RX),
    (C.DATA_SM, Role.SMSC, _RX),
    (C.ALERT_NOTIFICATION, Role.SMSC, _RX),
    (C.ENQUIRE_LINK, Role.ESME, BOUND_STATES),
    (C.ENQUIRE_LINK, Role.SMSC, BOUND_STATES),
    # §4.1.7: the SMSC asks the ESME to bind; the ESME answers with a bind, not a response.
    (C.OUTBIND, Role.SMSC, frozenset({S.OPEN})),
)

# §2.3 / SMPP 5.0 §2.4: we answer enquire_link wherever the link is up (see module docstring).
_ENQUIRE_LINK_ANSWERED: Final = frozenset({S.OPEN}) | _BINDING | BOUND_STATES | _UNBINDING

_LIVE_STATES: Final = frozenset(S) - {S.ERROR}


def _other(role: Role) -> Role:
    return Role.SMSC if role is Role.ESME else Role.ESME


def _build() -> dict[tuple[Role, SessionState, Direction, CommandId], Transition]:
    table: dict[tuple[Role, SessionState, Direction, CommandId], Transition] = {}

    def add(
        sender: Role,
        states: Iterable[SessionState],
        command_id: CommandId,
        *,
        send: bool = True,
        receive: bool = True,
        to: SessionState | None = None,
        on_failure: SessionState | None = None,
    ) -> None:
        for state in states:
            success = state if to is None else to
            transition = Transition(success, success if on_failure is None else on_failure)
            if send:
                table[sender, state, Direction.SEND, command_id] = transition
            if receive:
                table[_other(sender), state, Direction.RECEIVE, command_id] = transition

    # Bind (§4.1): OPEN -> BINDING_x -> BOUND_x, or back to OPEN when refused.
    for request, response, binding, bound in _BINDS:
        add(Role.ESME, [S.OPEN], request, to=binding)
        add(Role.SMSC, [binding], response, to=bound, on_failure=S.OPEN)

    for command_id, sender, states in _PLAIN_REQUESTS:
        add(sender, states, command_id)
    for role in Role:
        add(role, _ENQUIRE_LINK_ANSWERED - BOUND_STATES, C.ENQUIRE_LINK, send=False)

    # Unbind (§4.2): either side, from a bound state; the drain happens in UNBIND_*.
    for role in Role:
        add(role, BOUND_STATES, C.UNBIND, send=False, to=S.UNBIND_RECEIVED)
        add(role, BOUND_STATES, C.UNBIND, receive=False, to=S.UNBIND_SENT)
        # Both sides unbinding at once: stay UNBIND_SENT; the session answers after the drain.
        add(role, [S.UNBIND_SENT], C.UNBIND, send=False)
        # Whatever the answer to our unbind says, the session is over (§4.2.2).
        add(role, [S.UNBIND_RECEIVED], C.UNBIND_RESP, receive=False, to=S.CLOSED)
        add(_other(role), [S.UNBIND_SENT], C.UNBIND_RESP, send=False, to=S.CLOSED)
        # Answering the peer's unbind while ours is outstanding: wait for ours in UNBIND_SENT.
        add(role, [S.UNBIND_SENT], C.UNBIND_RESP, receive=False)

    # Plain responses: sent by the side that received the request, in any live state.
    responders: dict[CommandId, set[Role]] = {}
    for command_id, sender, _states in _PLAIN_REQUESTS:
        if command_id not in (C.OUTBIND, C.ALERT_NOTIFICATION):  # §4.1.7, §4.12: no response
            responders.setdefault(CommandId(command_id | RESPONSE_BIT), set()).add(_other(sender))
    for response, roles in responders.items():
        for role in roles:
            add(role, _LIVE_STATES, response)
    for role in Role:
        add(role, _LIVE_STATES, C.GENERIC_NACK)
    return table


TRANSITIONS: Final[Mapping[tuple[Role, SessionState, Direction, CommandId], Transition]] = (
    MappingProxyType(_build())
)
"""The whole state machine: ``(role, state, direction, command_id) -> Transition``."""


def _index() -> dict[tuple[Role, SessionState, Direction], Mapping[int, Transition]]:
    index: dict[tuple[Role, SessionState, Direction], dict[int, Transition]] = {
        (role, state, direction): {} for role in Role for state in S for direction in Direction
    }
    for (role, state, direction, command_id), transition in TRANSITIONS.items():
        # Plain int keys: the session looks PDUs up by their wire command_id.
        index[role, state, direction][int(command_id)] = transition
    # Plain dicts (typed read-only): the session does one lookup per PDU in them.
    return dict(index)


_INDEX: Final = _index()


def transitions_for(
    role: Role, state: SessionState, direction: Direction
) -> Mapping[int, Transition]:
    """The legal command_ids for one role, state and direction, and where each one leads.

    The session caches this mapping on every state change, so that checking a PDU costs one
    dict lookup.
    """
    return _INDEX[role, state, direction]


def rejection_status(role: Role, state: SessionState, command_id: int) -> CommandStatus:
    """The command_status with which ``role`` answers a request illegal in ``state``.

    ``ESME_RALYBND`` when an SMSC gets a bind while binding or bound (SMPP 3.4 §5.1.3: "ESME
    already in bound state"); ``ESME_RINVBNDSTS`` otherwise, including for PDUs the peer's role
    may never send.
    """
    if (
        role is Role.SMSC
        and command_id in (C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER)
        and (state in _BINDING or state in BOUND_STATES)
    ):
        return CommandStatus.ESME_RALYBND
    return CommandStatus.ESME_RINVBNDSTS
