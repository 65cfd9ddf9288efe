"""Concatenation: cutting outgoing messages into parts, and putting incoming parts together.

Outgoing: :func:`segment` turns an :class:`~protocols.encoding.EncodedText` into neutral
:class:`Segment` records (short_message, UDHI, SAR values, message_payload) from which the
gateway builds its submit_sm PDUs. References come from a :class:`ReferenceAllocator`, never
from a random number: two long messages in flight to one number must not share a reference
(TS 23.040 §9.2.3.24.1), or the handset mixes their parts.

Incoming: :class:`Reassembler` collects the parts of concatenated MO messages, with time passed
in as ``now``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from protocols.encoding import EncodedText, TextEncoding, join_part_texts
from protocols.frozen import fast_init
from protocols.gsm import LocalEncodingError, fill_bits, pack_septets
from protocols.userdata import (
    MAX_PARTS,
    ConcatInfo,
    InformationElement,
    SegmentationMethod,
    UnitKind,
    build_udh,
    concat_ie,
)

__all__ = [
    "PartialMessage",
    "Reassembler",
    "ReferenceAllocator",
    "ReferencesExhaustedError",
    "Segment",
    "SegmentedMessage",
    "UnknownReferenceError",
    "sar_concat_info",
    "segment",
]

logger = logging.getLogger(__name__)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """What one submit_sm carries of a message.

    Attributes:
        short_message: the ``short_message`` field (UDH first when ``udhi``); empty with
            ``message_payload``.
        udhi: set ``esm_class`` bit 0x40 (the user data starts with a UDH).
        sar_msg_ref_num / sar_total_segments / sar_segment_seqnum: the SAR TLVs (SMPP 3.4
            §5.3.2.22-24), only with the ``sar`` method and more than one part.
        message_payload: the ``message_payload`` TLV (§5.3.2.32), only with ``payload``.
    """

    short_message: bytes = b""
    udhi: bool = False
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None
    message_payload: bytes | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentedMessage:
    """A message ready to become submit_sm PDUs, one per segment, all with ``data_coding``."""

    encoding: TextEncoding
    data_coding: int
    method: SegmentationMethod
    reference: int | None
    segments: tuple[Segment, ...]


def _reference_limit(method: SegmentationMethod) -> int:
    # The 8-bit IE has one reference octet; the 16-bit IE and sar_msg_ref_num have two.
    return 0xFF if method is SegmentationMethod.UDH else 0xFFFF


def segment(
    encoded: EncodedText, *, reference: int | None = None, packed: bool = False
) -> SegmentedMessage:
    """Cut an encoded text into segments for its segmentation method.

    Parts were cut by the encoder at character boundaries: an escape pair (0x1B + code) or a
    UTF-16 surrogate pair never straddles two parts. A single part gets no concatenation IE
    and no SAR TLVs; national language IEs go in a UDH whenever the encoding needs them (with
    ``sar`` and ``payload`` too, UDHI then set).

    Args:
        encoded: from :func:`~protocols.encoding.choose_encoding` or ``encode_text``.
        reference: the concatenation reference, from a :class:`ReferenceAllocator`; required
            when ``encoded.needs_reference``, ignored otherwise. 0-255 for ``udh``, 0-65535 for
            ``udh16`` and ``sar``.
        packed: send 7-bit text packed (with fill bits after the UDH) instead of one septet per
            octet, for SMSCs that want it. No effect on UCS-2 and Latin-1.

    Raises:
        LocalEncodingError: reference missing or out of range.
    """
    method = encoded.method
    seven_bit = encoded.unit_kind is UnitKind.SEPTET

    def user_data(udh: bytes, units: bytes) -> bytes:
        if packed and seven_bit:
            return udh + pack_septets(units, fill_bits(len(udh)))
        return udh + units

    national_udh = _national_udh(encoded.national_ies)
    if method is SegmentationMethod.PAYLOAD:
        payload = user_data(national_udh, encoded.units)
        segments: tuple[Segment, ...] = (Segment(udhi=bool(national_udh), message_payload=payload),)
        reference = None
    elif not encoded.needs_reference:
        segments = (
            Segment(short_message=user_data(national_udh, encoded.units), udhi=bool(national_udh)),
        )
        reference = None
    else:
        if reference is None:
            raise LocalEncodingError(f"{encoded.parts} parts need a concatenation reference")
        if not 0 <= reference <= _reference_limit(method):
            raise LocalEncodingError(f"reference {reference} out of range for {method.value}")
        total = encoded.parts
        built: list[Segment] = []
        for seqnum, chunk in enumerate(encoded.chunks, start=1):
            info = ConcatInfo(reference, total, seqnum)
            if method is SegmentationMethod.SAR:
                built.append(
                    Segment(
                        short_message=user_data(national_udh, chunk),
                        udhi=bool(national_udh),
                        sar_msg_ref_num=reference,
                        sar_total_segments=total,
                        sar_segment_seqnum=seqnum,
                    )
                )
            else:
                ie = concat_ie(info, sixteen_bit=method is SegmentationMethod.UDH16)
                udh = build_udh((ie, *encoded.national_ies))
                built.append(Segment(short_message=user_data(udh, chunk), udhi=True))
        segments = tuple(built)
    return SegmentedMessage(
        encoding=encoded.encoding,
        data_coding=encoded.data_coding,
        method=method,
        reference=reference,
        segments=segments,
    )


# ---------------------------------------------------------------------------------------------
# Reference allocation


class ReferencesExhaustedError(LocalEncodingError):
    """Every reference to this destination is in flight (256 with 8-bit references).

    Attributes:
        destination: the destination address.
    """

    def __init__(self, destination: str, size: int) -> None:
        self.destination = destination
        super().__init__(
            f"all {size} concatenation references to {destination!r} are in flight; "
            "release one (the message's last part was answered or expired) before sending more"
        )


class UnknownReferenceError(LocalEncodingError):
    """A reference was released that was not allocated (or was released twice)."""


class ReferenceAllocator:
    """Concatenation references per destination, unique among messages in flight.

    Invariant: between ``allocate(d)`` returning ``r`` and ``release(d, r)``, no other
    ``allocate(d)`` returns ``r``. References rotate through the whole space rather than reusing
    the one just released, so a handset still holding stray parts of an old message is unlikely
    to merge them into a new one. Memory is proportional to what is in flight.

    Args:
        bits: 8 (references 0-255, for the ``udh`` method) or 16 (0-65535, ``udh16``/``sar``).
    """

    def __init__(self, bits: int = 8) -> None:
        if bits not in (8, 16):
            raise ValueError(f"reference width must be 8 or 16 bits, not {bits}")
        self._size = 1 << bits
        self._next = 0
        self._in_flight: dict[str, set[int]] = {}

    @property
    def size(self) -> int:
        """Number of distinct references (256 or 65536)."""
        return self._size

    def allocate(self, destination: str) -> int:
        """A reference not in flight to ``destination``; it stays taken until released.

        Raises:
            ReferencesExhaustedError: every reference to ``destination`` is in flight.
        """
        taken = self._in_flight.setdefault(destination, set())
        if len(taken) >= self._size:
            raise ReferencesExhaustedError(destination, self._size)
        candidate = self._next
        while candidate in taken:
            candidate = (candidate + 1) % self._size
        taken.add(candidate)
        self._next = (candidate + 1) % self._size
        return candidate

    def release(self, destination: str, reference: int) -> None:
        """Give back a reference once its message is done (all parts answered, or given up).

        Raises:
            UnknownReferenceError: ``reference`` is not in flight to ``destination``.
        """
        taken = self._in_flight.get(destination)
        if taken is None or reference not in taken:
            raise UnknownReferenceError(
                f"reference {reference} to {destination!r} is not in flight"
            )
        taken.remove(reference)
        if not taken:
            del self._in_flight[destination]

    def in_flight(self, destination: str) -> frozenset[int]:
        """References currently held for ``destination``."""
        return frozenset(self._in_flight.get(destination, ()))


# ---------------------------------------------------------------------------------------------
# Reassembly of incoming parts


def sar_concat_info(
    sar_msg_ref_num: int | None, sar_total_segments: int | None, sar_segment_seqnum: int | None
) -> ConcatInfo | None:
    """Concatenation details from a deliver_sm's SAR TLVs, or None.

    None when a TLV is missing or the values are inconsistent (sequence 0 or above the total),
    which TS 23.040 §9.2.3.24.1 treats as "not concatenated" for the equivalent IE.
    """
    if sar_msg_ref_num is None or sar_total_segments is None or sar_segment_seqnum is None:
        return None
    if not 0 <= sar_msg_ref_num <= 0xFFFF:
        return None
    if not 1 <= sar_segment_seqnum <= sar_total_segments <= MAX_PARTS:
        return None
    return ConcatInfo(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum)


@dataclass(frozen=True, slots=True)
class PartialMessage:
    """An incomplete concatenated message given up on (expired or evicted).

    Attributes:
        source_addr / reference / total: the key it was collected under.
        parts: ``(seqnum, text)`` of the parts that arrived, by sequence number.
    """

    source_addr: str
    reference: int
    total: int
    parts: tuple[tuple[int, str], ...]


@dataclass(slots=True)
class _Pending:
    deadline: float
    texts: dict[int, str] = field(default_factory=dict)


class Reassembler:
    """Collects the parts of concatenated incoming messages.

    Parts are keyed by ``(source_addr, reference, total)``: the reference alone is only unique
    per sender, and the total guards against a reused reference of a different message. A
    repeated part (an SMSC retry after a lost deliver_sm_resp) is ignored. A message whose
    parts stop coming expires ``timeout`` seconds after its latest part.

    Args:
        timeout: seconds to wait for the next part.
        max_pending: bound on messages being collected; beyond it the one closest to expiry is
            given up early (it comes back from :meth:`expire`), so a flood of first parts
            cannot exhaust memory.
    """

    def __init__(self, *, timeout: float = 600.0, max_pending: int = 10_000) -> None:
        if timeout <= 0 or max_pending < 1:
            raise ValueError("timeout must be positive and max_pending at least 1")
        self._timeout = timeout
        self._max_pending = max_pending
        self._pending: dict[tuple[str, int, int], _Pending] = {}
        self._given_up: list[PartialMessage] = []

    def __len__(self) -> int:
        """Number of messages being collected."""
        return len(self._pending)

    def add(self, source_addr: str, concat: ConcatInfo | None, text: str, now: float) -> str | None:
        """Add one received part.

        Args:
            source_addr: the sender (the gateway may append the destination to separate
                messages to different short codes).
            concat: from :attr:`DecodedMessage.concat` or :func:`sar_concat_info`; None for a
                message that is not concatenated.
            text: the part's decoded text.
            now: the current time, in seconds on any monotonic scale.

        Returns:
            The whole text once every part is there (also at once for an unconcatenated
            message or a one-part "concatenation"), else None.
        """
        if concat is None or concat.total == 1:
            return join_part_texts((text,))
        key = (source_addr, concat.reference, concat.total)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self._max_pending:
                self._evict_one()
            pending = self._pending[key] = _Pending(deadline=now + self._timeout)
        if concat.seqnum in pending.texts:
            # An SMSC resends a deliver_sm whose resp it did not see; the first copy stands.
            logger.debug("duplicate part %s of reference %s", concat.seqnum, key)
            return None
        pending.texts[concat.seqnum] = text
        pending.deadline = now + self._timeout
        if len(pending.texts) < concat.total:
            return None
        del self._pending[key]
        return join_part_texts(pending.texts[seqnum] for seqnum in range(1, concat.total + 1))

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do (the earliest deadline), or None."""
        if self._given_up:
            return float("-inf")
        return min((p.deadline for p in self._pending.values()), default=None)

    def expire(self, now: float) -> list[PartialMessage]:
        """Give up on messages whose deadline has passed; return them (and any evicted)."""
        gone = self._given_up
        self._given_up = []
        for key in [k for k, p in self._pending.items() if p.deadline <= now]:
            gone.append(self._partial(key, self._pending.pop(key)))
        return gone

    def _evict_one(self) -> None:
        key = min(self._pending, key=lambda k: self._pending[k].deadline)
        logger.warning("reassembly full (%d messages); giving up on %s", len(self._pending), key)
        self._given_up.append(self._partial(key, self._pending.pop(key)))

    @staticmethod
    def _partial(key: tuple[str, int, int], pending: _Pending) -> PartialMessage:
        source_addr, reference, total = key
        return PartialMessage(source_addr, reference, total, tuple(sorted(pending.texts.items())))


@functools.cache  # a handful of table pairs; built for every message
def _national_udh(ies: tuple[InformationElement, ...]) -> bytes:
    return build_udh(ies)
