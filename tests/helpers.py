"""Test helpers: an ESME session and an SMSC session wired byte to byte.

Like h11's ``tests/helpers.py`` ``ConnectionPair`` and aioquic's ``client_and_server()``: what
one side sends is what the other side receives, so every test also checks that the peer
understood it. Time is a plain attribute advanced by hand; nothing sleeps.
"""

from __future__ import annotations

from protocols.pdu import BindTransceiver, Pdu, response_for
from protocols.session import (
    NEED_DATA,
    BindRequested,
    ConnectionClosed,
    Event,
    ProtocolViolation,
    Role,
    Session,
    SessionConfig,
)

__all__ = ["SessionPair", "drain", "feed"]


def drain(session: Session) -> list[Event]:
    """Every event the session can produce now, stopping after a terminal one."""
    events: list[Event] = []
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed | ProtocolViolation):
            return events


def feed(session: Session, data: bytes, now: float, *, chunk: int | None = None) -> list[Event]:
    """Give ``data`` to the session (in pieces of ``chunk`` bytes if set) and drain events."""
    events: list[Event] = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        session.receive_data(data[start : start + step], now)
        events.extend(drain(session))
    return events


class SessionPair:
    """An ESME and an SMSC session; bytes in transit are held until :meth:`flush`."""

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        esme_config: SessionConfig | None = None,
        smsc_config: SessionConfig | None = None,
        now: float = 0.0,
    ) -> None:
        self.now = now
        self.esme = Session(Role.ESME, esme_config or config, now=now)
        self.smsc = Session(Role.SMSC, smsc_config or config, now=now)
        # Bytes written by one side and not yet delivered to the other, keyed by receiver.
        self.wire: dict[Role, bytearray] = {Role.ESME: bytearray(), Role.SMSC: bytearray()}

    def peer(self, session: Session) -> Session:
        return self.smsc if session is self.esme else self.esme

    def send(self, session: Session, pdu: Pdu) -> int:
        """``session.send(pdu)``; the bytes go on the wire. Returns the sequence number used
        (the request's assigned number, or the response's own)."""
        data = session.send(pdu, self.now)
        self.wire[self.peer(session).role] += data
        if pdu.command_id & 0x80000000:
            return pdu.sequence_number
        return session.last_sequence_number

    def collect(self) -> None:
        """Put what both sessions queued by themselves (``data_to_send()``) on the wire."""
        for session in (self.esme, self.smsc):
            self.wire[self.peer(session).role] += session.data_to_send()

    def flush(self, *, chunk: int | None = None) -> tuple[list[Event], list[Event]]:
        """Deliver bytes both ways until nothing is in transit; return (esme, smsc) events."""
        got: dict[Role, list[Event]] = {Role.ESME: [], Role.SMSC: []}
        self.collect()
        while any(self.wire.values()):
            for session in (self.esme, self.smsc):
                data = bytes(self.wire[session.role])
                self.wire[session.role].clear()
                if data:
                    got[session.role].extend(feed(session, data, self.now, chunk=chunk))
            self.collect()
        return got[Role.ESME], got[Role.SMSC]

    def advance(self, seconds: float) -> tuple[list[Event], list[Event]]:
        """Move time on, run both sessions' timers, and flush."""
        self.now += seconds
        got: dict[Role, list[Event]] = {}
        for session in (self.esme, self.smsc):
            session.handle_timers(self.now)
            got[session.role] = drain(session)
        esme, smsc = self.flush()
        return got[Role.ESME] + esme, got[Role.SMSC] + smsc

    def bind(self, request: Pdu | None = None, status: int = 0) -> tuple[list[Event], list[Event]]:
        """Bind (a transceiver by default); the SMSC answers with ``status``."""
        self.send(self.esme, request or BindTransceiver(system_id="ulak", password="secret"))
        _, smsc_events = self.flush()
        (bind_requested,) = smsc_events
        assert isinstance(bind_requested, BindRequested)
        self.send(self.smsc, response_for(bind_requested.pdu, status))
        esme_events, smsc_more = self.flush()
        return esme_events, smsc_events + smsc_more
