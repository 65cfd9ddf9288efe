"""The error hierarchy of the sans-IO core (h11 ``_util.py`` model).

``ProtocolError`` splits into :class:`LocalProtocolError` (our code misused the API: a value that
cannot be encoded, a PDU sent in the wrong state) and :class:`RemoteProtocolError` (the peer broke
SMPP 3.4). A remote error carries the ``command_status`` to answer with, usually in a generic_nack
(SMPP 3.4 §4.3.1), and the ``sequence_number`` of the offending PDU, which is 0 when the header
itself could not be read (§3.2).
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of every SMPP protocol error raised by ``protocols``."""


class LocalProtocolError(ProtocolError):
    """We misused the API, e.g. a field value that SMPP 3.4 cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something SMPP 3.4 does not allow.

    Attributes:
        command_status: the status to answer with (``ESME_RINVCMDLEN``, ``ESME_RINVCMDID``, ...).
        sequence_number: the offending PDU's sequence number; 0 when the header was unreadable.
        command_id: the offending PDU's command_id, or ``None`` when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        command_status: int,
        sequence_number: int = 0,
        command_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.command_status = command_status
        self.sequence_number = sequence_number
        self.command_id = command_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.args[0]!r}, command_status=0x{self.command_status:08X}, "
            f"sequence_number={self.sequence_number}, command_id="
            f"{'None' if self.command_id is None else f'0x{self.command_id:08X}'})"
        )
