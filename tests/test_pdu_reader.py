"""PduReader: the same PDUs whatever the chunking, bounded, and usable after a malformed PDU."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.constants import CommandId, CommandStatus
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.pdu import (
    DataSm,
    DeliverSm,
    EnquireLink,
    Pdu,
    PduReader,
    SubmitSm,
    Tlvs,
    decode,
    encode,
)
from tests.pdu_strategies import pdus

S = CommandStatus


def _read_all(reader: PduReader) -> list[Pdu]:
    out: list[Pdu] = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out


def _feed_in_chunks(stream: bytes, cuts: list[int]) -> list[Pdu]:
    reader = PduReader()
    out: list[Pdu] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        reader.feed(stream[start:cut])
        start = cut
        out += _read_all(reader)
    assert reader.buffered == 0
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(pdus(), min_size=1, max_size=8), st.data())
def test_same_pdus_whatever_the_chunking(items: list[Pdu], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in items)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert _feed_in_chunks(stream, cuts) == items


@settings(max_examples=40, deadline=None)
@given(st.lists(pdus(), min_size=1, max_size=4))
def test_one_octet_at_a_time(items: list[Pdu]) -> None:
    stream = b"".join(encode(p) for p in items)
    reader = PduReader()
    out: list[Pdu] = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        out += _read_all(reader)
    assert out == items


def test_many_pdus_in_one_chunk() -> None:
    items = [
        SubmitSm(sequence_number=i, destination_addr=str(i), short_message=b"x" * (i % 50))
        for i in range(1, 2001)
    ]
    stream = b"".join(encode(p) for p in items)
    assert len(stream) > 64 * 1024
    reader = PduReader()
    reader.feed(stream)
    assert _read_all(reader) == items
    assert reader.buffered == 0


def test_accepts_bytearray_and_memoryview() -> None:
    wire = encode(EnquireLink(sequence_number=3))
    buffer = bytearray(wire)
    reader = PduReader()
    reader.feed(memoryview(buffer)[:10])
    reader.feed(buffer[10:])
    buffer[:] = bytes(len(buffer))  # the caller reuses its buffer: we copied
    assert reader.next_pdu() == EnquireLink(sequence_number=3)


def test_large_pdu_fed_one_octet_at_a_time() -> None:
    # A 64 KiB message_payload: each feed is O(1), the PDU is joined once when complete.
    pdu = DataSm(sequence_number=5, tlvs=Tlvs(message_payload=bytes(range(256)) * 255))
    wire = encode(pdu)
    reader = PduReader()
    for i in range(len(wire) - 1):
        reader.feed(wire[i : i + 1])
        assert reader.next_pdu() is None
    assert reader.buffered == len(wire) - 1
    reader.feed(wire[-1:])
    assert reader.next_pdu() == pdu


def test_partial_pdu_stays_buffered() -> None:
    wire = encode(EnquireLink(sequence_number=1))
    reader = PduReader()
    reader.feed(wire + wire[:7])
    assert reader.next_pdu() == EnquireLink(sequence_number=1)
    assert reader.next_pdu() is None
    assert reader.buffered == 7  # what an EOF now would cut short


def test_malformed_pdu_is_consumed_and_the_reader_goes_on() -> None:
    good = encode(EnquireLink(sequence_number=1))
    unknown = struct.pack(">IIII", 16, 0x99, 0, 2)
    bad_tlv = encode(DeliverSm(sequence_number=3)) + bytes.fromhex("0427 0002 0000")
    bad_tlv = struct.pack(">I", len(bad_tlv)) + bad_tlv[4:]
    reader = PduReader()
    reader.feed(good + unknown + bad_tlv + good)
    assert reader.next_pdu() == EnquireLink(sequence_number=1)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_pdu()
    assert (info.value.command_status, info.value.sequence_number) == (S.ESME_RINVCMDID, 2)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_pdu()
    assert (info.value.command_status, info.value.sequence_number) == (S.ESME_RINVPARLEN, 3)
    assert info.value.command_id == CommandId.DELIVER_SM
    assert reader.next_pdu() == EnquireLink(sequence_number=1)
    assert not reader.broken


@pytest.mark.parametrize("length", [0, 15, 65536 + 1024 + 1, 0xFFFFFFFF])
def test_bad_command_length_breaks_the_reader(length: int) -> None:
    reader = PduReader()
    # Only the 4 length octets: the error must not wait for a whole header (a peer sending
    # length 8 and then 8 octets would otherwise hang the session).
    reader.feed(struct.pack(">I", length))
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as info:
            reader.next_pdu()
        assert info.value.command_status == S.ESME_RINVCMDLEN
        assert info.value.sequence_number == 0
        assert reader.broken
    reader.feed(encode(EnquireLink()))  # ignored: nothing after a framing error is trusted
    with pytest.raises(RemoteProtocolError):
        reader.next_pdu()


def test_framing_error_after_good_pdus() -> None:
    reader = PduReader(max_command_length=100)
    reader.feed(encode(EnquireLink(sequence_number=1)) + struct.pack(">IIII", 101, 4, 0, 2))
    assert reader.next_pdu() == EnquireLink(sequence_number=1)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_pdu()
    assert info.value.command_status == S.ESME_RINVCMDLEN
    assert reader.broken


def test_maximum_is_inclusive() -> None:
    wire = encode(SubmitSm(short_message=b"x" * 40))
    reader = PduReader(max_command_length=len(wire))
    reader.feed(wire)
    assert reader.next_pdu() == SubmitSm(short_message=b"x" * 40)
    with pytest.raises(LocalProtocolError):
        PduReader(max_command_length=15)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_garbage_gives_pdus_or_remote_errors(garbage: bytes, cuts: list[int]) -> None:
    """h11's fuzz invariant: arbitrary octets never raise anything but RemoteProtocolError."""
    reader = PduReader(max_command_length=400)
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(garbage)), len(garbage)]:
        reader.feed(garbage[start:cut])
        start = cut
        for _ in range(len(garbage) + 1):
            try:
                if reader.next_pdu() is None:
                    break
            except RemoteProtocolError:
                if reader.broken:
                    break
    assert reader.buffered <= len(garbage)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(pdus().map(encode), st.binary(min_size=16, max_size=40)), max_size=6))
def test_reader_and_decode_agree(chunks: list[bytes]) -> None:
    """A framed PDU gives the same result through the reader as through decode()."""
    framed = [struct.pack(">I", len(c)) + c[4:] for c in chunks]
    reader = PduReader()
    reader.feed(b"".join(framed))
    for one in framed:
        try:
            expected: object = decode(one)
        except RemoteProtocolError as exc:
            expected = (exc.command_status, exc.sequence_number)
        try:
            got: object = reader.next_pdu()
        except RemoteProtocolError as exc:
            got = (exc.command_status, exc.sequence_number)
        assert got == expected
    assert reader.next_pdu() is None
