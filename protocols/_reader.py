"""The streaming PDU decoder: bytes in, whole PDUs out, whatever the chunking."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _codec
from .errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from .pdu import Pdu

__all__ = ["DEFAULT_MAX_COMMAND_LENGTH", "PduReader"]

#: Room for a 64 KiB message_payload plus the fixed fields: the reader's default bound.
DEFAULT_MAX_COMMAND_LENGTH = 65536 + 1024


class PduReader:
    """Streaming decoder: bytes in through :meth:`feed`, whole PDUs out of :meth:`next_pdu`.

    The same PDUs come out whatever the chunking. At most ``max_command_length`` octets of an
    incomplete PDU are waited for (h11's ``max_incomplete_event_size``).

    Errors come in two kinds. A framed but malformed PDU raises RemoteProtocolError with its
    sequence_number, and its octets are consumed: the reader stays usable. A command_length
    below 16 or above ``max_command_length`` is a framing error: nothing after it can be
    trusted (§3.2), so ``broken`` becomes true and every later :meth:`next_pdu` raises
    ESME_RINVCMDLEN again (sequence_number 0: only 4 octets of the header may be there).
    """

    __slots__ = ("_buf", "_error", "_max", "_parts", "_parts_len", "_pos")

    def __init__(self, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        if max_command_length < 16:
            raise LocalProtocolError(f"max_command_length {max_command_length} is below 16")
        self._max = max_command_length
        # Consumed up to _pos in _buf; later chunks wait in _parts until a PDU is complete,
        # so feeding one octet at a time costs O(1) per feed and each octet is copied O(1)
        # times (no quadratic re-joining).
        self._buf = b""
        self._pos = 0
        self._parts: list[bytes] = []
        self._parts_len = 0
        self._error: str | None = None

    @property
    def broken(self) -> bool:
        """True after a framing error; the connection must be closed."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as PDUs (a partial PDU at EOF shows here)."""
        return len(self._buf) - self._pos + self._parts_len

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer received octets (ignored once the reader is broken)."""
        if self._error is not None or not data:
            return
        if self._pos >= len(self._buf) and not self._parts:
            self._buf = bytes(data)  # no copy for bytes
            self._pos = 0
        else:
            chunk = bytes(data)
            self._parts.append(chunk)
            self._parts_len += len(chunk)

    def next_pdu(self) -> Pdu | None:
        """Decode the next whole PDU.

        Returns:
            The PDU, or ``None`` when more octets are needed.

        Raises:
            RemoteProtocolError: see the class docstring.
        """
        if self._error is not None:
            raise _codec.framing_error(self._error)
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 16:
            if avail + self._parts_len < 4:
                return None
            buf, pos, avail = self._join()
            length = int.from_bytes(buf[pos : pos + 4], "big")
            self._check_length(length)
            if avail < 16:
                return None
        length, command_id, status, seq = _codec.HEADER.unpack_from(buf, pos)
        if length < 16 or length > self._max:
            self._check_length(length)
        if avail < length:
            if avail + self._parts_len < length:
                return None
            buf, pos, avail = self._join()
        end = pos + length
        self._pos = end  # consumed even if malformed: the reader stays usable
        decoder = _codec.DECODERS.get(command_id)
        if decoder is None:
            raise _codec.unknown_command(command_id, seq)
        # The decoders want the PDU alone (its end is the end of the bytes); copying one PDU
        # out of a 64 KiB chunk costs less than bounds checks on every field.
        pdu: Pdu = decoder(buf if length == len(buf) else buf[pos:end], seq, status)
        return pdu

    def _join(self) -> tuple[bytes, int, int]:
        buf = b"".join([self._buf[self._pos :], *self._parts])
        self._buf = buf
        self._pos = 0
        self._parts = []
        self._parts_len = 0
        return buf, 0, len(buf)

    def _check_length(self, length: int) -> None:
        try:
            _codec.check_command_length(length, self._max)
        except RemoteProtocolError as exc:
            self._error = str(exc)
            self._buf = b""
            self._pos = 0
            self._parts = []
            self._parts_len = 0
            raise
