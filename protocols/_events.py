"""Events that :class:`protocols.session.Session` hands to the application.

Each event is a frozen, slotted dataclass (aioquic ``quic/events.py`` style: one class per thing
that happened, every field documented). The session never calls back into the application: it
returns these from :meth:`~protocols.session.Session.next_event`, in the order things happened.

Every request the application sends with :meth:`~protocols.session.Session.send` (other than
``outbind`` and ``alert_notification``, which have no response) ends in exactly one of
:class:`ResponseReceived`, :class:`ResponseTimeout`, or the ``unanswered`` list of
:class:`ConnectionClosed`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ._state import SessionState
from .errors import RemoteProtocolError
from .frozen import fast_init
from .pdu import Pdu

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
    "UnbindRequested",
    "Unbound",
    "UnexpectedResponse",
]


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = "NEED_DATA"


_GENERIC_NACK: Final = 0x80000000

NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by ``next_event()`` when the buffered bytes hold no further complete PDU."""


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every session event."""


# --- requests from the peer -------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """The peer sent a request the application must act on: submit_sm, submit_multi, data_sm,
    query_sm, cancel_sm, replace_sm (SMSC side), deliver_sm, data_sm, alert_notification (ESME
    side). ``enquire_link`` never shows up here: the session answers it itself.

    Answer it with ``session.send(response_for(pdu, status), now)`` (keeping its
    sequence_number). ``alert_notification`` (SMPP 3.4 §4.12) has no response.
    """

    pdu: Pdu
    """The request, as decoded."""


@dataclass(frozen=True, slots=True)
class BindRequested(Event):
    """SMSC side: an ESME sent ``bind_transmitter``/``_receiver``/``_transceiver``.

    The session is now ``BINDING_*``. Accept with ``send(response_for(pdu), now)`` (status 0:
    the session becomes ``BOUND_*``) or refuse with a status such as ``ESME_RINVPASWD`` (the
    session goes back to ``OPEN``).
    """

    pdu: Pdu
    """The bind request: ``system_id``, ``password``, ``system_type``, ..."""


@dataclass(frozen=True, slots=True)
class OutbindReceived(Event):
    """ESME side: the SMSC sent ``outbind`` (SMPP 3.4 §4.1.7): it asks us to bind as a receiver
    or transceiver. There is no response; answer by sending a bind request."""

    pdu: Pdu
    """The outbind request (``system_id``, ``password``)."""


@dataclass(frozen=True, slots=True)
class UnbindRequested(Event):
    """The peer sent ``unbind`` (SMPP 3.4 §4.2); the session is now ``UNBIND_RECEIVED``.

    Stop sending requests (they would raise ``LocalProtocolError``) and answer the requests you
    still owe the peer. The session sends ``unbind_resp`` itself once nothing is outstanding in
    either direction, and then reports :class:`Unbound`. Sending ``response_for(pdu)`` yourself
    ends the drain early.
    """

    pdu: Pdu
    """The unbind request."""


# --- answers to our requests ------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response matched one of our outstanding requests by sequence number; its window slot is
    free again.

    ``response`` is the request's ``*_resp``, or a ``generic_nack`` (the peer could not process
    the request). Check :attr:`ok` or ``response.command_status`` (``ESME_RTHROTTLED``,
    ``ESME_RMSGQFUL``, ...).
    """

    request: Pdu
    """The request as it was passed to ``send()`` (its sequence_number field is whatever the
    caller set; the number on the wire is ``response.sequence_number``)."""
    response: Pdu
    """The response as decoded."""
    elapsed: float
    """Seconds between ``send()`` of the request and ``receive_data()`` of the response."""

    @property
    def sequence_number(self) -> int:
        """The sequence number the request was sent with."""
        return self.response.sequence_number

    @property
    def ok(self) -> bool:
        """True for a ``*_resp`` with ``command_status`` ESME_ROK; False for errors and nacks."""
        return self.response.command_status == 0 and self.response.command_id != _GENERIC_NACK


@dataclass(frozen=True, slots=True)
class ResponseTimeout(Event):
    """No response came within ``response_timeout``: the request's window slot is freed. A
    response that arrives later is reported as :class:`UnexpectedResponse`. SMPP is
    at-least-once: the request may or may not have been processed by the peer."""

    request: Pdu
    """The request as it was passed to ``send()``."""
    sequence_number: int
    """The sequence number it was sent with."""
    sent_at: float
    """The ``now`` it was sent at."""


@dataclass(frozen=True, slots=True)
class UnexpectedResponse(Event):
    """A response that answers none of our outstanding requests: unknown or duplicate sequence
    number, a response to a request that already timed out, or a response whose command_id does
    not answer the request with that sequence number (the request then stays outstanding). Log
    it; the session carries on."""

    response: Pdu
    """The response as decoded."""
    request: Pdu | None
    """The outstanding request with the same sequence number, if the command_id did not match;
    ``None`` when no request was outstanding under that number."""


@dataclass(frozen=True, slots=True)
class NackReceived(Event):
    """The peer sent ``generic_nack`` with sequence number 0: it could not read a PDU header of
    ours, so it cannot say which request failed (SMPP 3.4 §4.3). No request is completed; the
    affected one will time out."""

    pdu: Pdu
    """The generic_nack; ``pdu.command_status`` says what the peer objected to."""


# --- state changes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bound(Event):
    """ESME side: the peer accepted our bind (follows the bind's :class:`ResponseReceived`)."""

    state: SessionState
    """``BOUND_TX``, ``BOUND_RX`` or ``BOUND_TRX``."""


@dataclass(frozen=True, slots=True)
class BindFailed(Event):
    """ESME side: the peer refused our bind (follows the bind's :class:`ResponseReceived`); the
    session is ``OPEN`` again. A bind that times out gives :class:`ResponseTimeout` instead."""

    command_status: int
    """Why: ``ESME_RINVPASWD``, ``ESME_RINVSYSID``, ``ESME_RALYBND``, ``ESME_RBINDFAIL``, ..."""
    response: Pdu
    """The bind response or generic_nack."""


@dataclass(frozen=True, slots=True)
class Unbound(Event):
    """The unbind handshake is over: the session is ``CLOSED``; close the connection."""

    by_peer: bool
    """True when the peer sent ``unbind``, False when we did."""


# --- problems -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PduRejected(Event):
    """The peer sent a request that is illegal in the current state (or for its role). The
    session already queued the answer: its ``*_resp`` (or ``generic_nack`` when it has none)
    with ``command_status``."""

    pdu: Pdu
    """The rejected request."""
    command_status: int
    """The status we answered with: ``ESME_RINVBNDSTS``, or ``ESME_RALYBND`` for a second bind."""


@dataclass(frozen=True, slots=True)
class MalformedPdu(Event):
    """The peer sent a framed PDU that could not be decoded. Unless it was a response, the
    session queued a ``generic_nack`` with ``error.command_status`` and ``error.sequence_number``.
    The session carries on with the next PDU."""

    error: RemoteProtocolError
    """What was wrong with it."""
    answered: bool
    """Whether a generic_nack was queued (responses are never answered)."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The byte stream cannot be framed any more (bad ``command_length``): the session is in
    ``ERROR``. Send what ``data_to_send()`` holds (a generic_nack) and close the connection.
    Terminal: ``next_event()`` returns this event again on every later call."""

    error: RemoteProtocolError
    """The framing error."""
    unanswered: tuple[tuple[int, Pdu], ...]
    """``(sequence_number, request)`` for each of our requests still outstanding, oldest first:
    they will never be answered on this connection."""


@dataclass(frozen=True, slots=True)
class PeerDead(Event):
    """The session's idle ``enquire_link`` got no answer within ``response_timeout``: the link
    is probably half-open. Close the connection. Reported once; the session sends no further
    enquire_link until the peer sends something."""

    sent_at: float
    """When the unanswered enquire_link was sent."""


@dataclass(frozen=True, slots=True)
class InactivityTimeout(Event):
    """Nothing was received for ``inactivity_timeout`` seconds. Reported once per silent
    period."""

    last_received_at: float
    """The ``now`` of the last ``receive_data()`` that carried bytes."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed the transport (``receive_data(b"")``) and every buffered PDU has been
    processed. The session is ``CLOSED``. Terminal: returned again on every later call."""

    unanswered: tuple[tuple[int, Pdu], ...]
    """``(sequence_number, request)`` for each of our requests still outstanding, oldest first:
    they will never be answered on this connection."""
    clean: bool
    """True when the session had unbound (``CLOSED``) before the transport closed and no
    partial PDU was left in the buffer."""
