"""The SMSC simulator over real TCP on loopback: binds, limits, receipts, MO, faults, smpplib.

Each test starts the simulator in its nursery on an ephemeral port and talks to it with a raw
PDU client (:class:`Esme`), so that tests can also break the rules (overrun the window, send
garbage). Every test runs under ``trio.fail_after``; tests that need time to pass run on
pytest-trio's ``autojump_clock``, so no test waits on the wall clock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from gateway.simulator import (
    RECEIPT_STATES,
    MoMessage,
    SimulatorHandle,
    SimulatorSettings,
    add_arguments,
    parse_receipt_mix,
    serve_simulator,
    settings_from_args,
)
from protocols.constants import CommandStatus
from protocols.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    PduReader,
    QuerySm,
    SubmitSm,
    SubmitSmResp,
    Tlvs,
    Unbind,
    UnbindResp,
    encode,
)

P = TypeVar("P", bound=Pdu)
ROOT = Path(__file__).absolute().parent.parent
TIMEOUT = 10  # seconds of trio time for a whole test (generous: CI machines are shared)


class ClosedError(Exception):
    """The simulator closed the connection."""


class Esme:
    """A minimal raw ESME over trio TCP: numbered PDUs out, decoded PDUs in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = PduReader()
        self.seq = itertools.count(1)

    @classmethod
    async def connect(cls, port: int) -> Esme:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, *pdus: Pdu) -> list[int]:
        """Send requests with fresh sequence numbers (responses keep theirs); one write."""
        seqs: list[int] = []
        parts: list[bytes] = []
        for pdu in pdus:
            seq = pdu.sequence_number if pdu.command_id & 0x80000000 else next(self.seq)
            seqs.append(seq)
            parts.append(encode(pdu, seq))
        await self.stream.send_all(b"".join(parts))
        return seqs

    async def recv(self) -> Pdu:
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                return pdu
            data = await self.stream.receive_some(65536)
            if not data:
                raise ClosedError
            self.reader.feed(data)

    async def expect(self, cls: type[P]) -> P:
        pdu = await self.recv()
        assert isinstance(pdu, cls), pdu
        return pdu

    async def recv_all(self, count: int) -> list[Pdu]:
        return [await self.recv() for _ in range(count)]

    async def expect_closed(self) -> list[Pdu]:
        """Read until EOF; return what came before it."""
        seen: list[Pdu] = []
        while True:
            try:
                seen.append(await self.recv())
            except (ClosedError, trio.BrokenResourceError):
                return seen

    async def bind(
        self,
        kind: type[BindTransmitter | BindReceiver | BindTransceiver] = BindTransceiver,
        system_id: str = "ulak",
        password: str = "secret",
    ) -> Pdu:
        await self.send(kind(system_id=system_id, password=password))
        return await self.recv()

    async def aclose(self) -> None:
        await self.stream.aclose()


def submit(text: bytes = b"hello", *, receipt: int = 0, **fields: Any) -> SubmitSm:
    fields.setdefault("source_addr", "ULAK")
    fields.setdefault("destination_addr", "905321234567")
    return SubmitSm(short_message=text, registered_delivery=receipt, **fields)


def receipt_fields(pdu: Pdu) -> dict[str, str]:
    assert isinstance(pdu, DeliverSm)
    assert pdu.esm_class & 0x3C == 0x04  # SMPP 3.4 §5.2.12: SMSC delivery receipt
    text = pdu.short_message.decode("ascii")
    head = text.split(" text:", 1)[0]
    out: dict[str, str] = {}
    for key in ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err"):
        start = head.index(key + ":") + len(key) + 1
        out[key] = head[start:].split(" ", 1)[0]
    return out


@asynccontextmanager
async def simulator(**overrides: Any) -> AsyncIterator[SimulatorHandle]:
    settings = SimulatorSettings(**overrides)
    async with trio.open_nursery() as nursery:
        handle: SimulatorHandle = await nursery.start(serve_simulator, settings)
        yield handle
        nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (the caller's fail_after bounds it)."""
    while not condition():
        await trio.sleep(0.001)


# -- binds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        (BindTransmitter, "transmitter"),
        (BindReceiver, "receiver"),
        (BindTransceiver, "transceiver"),
    ],
)
async def test_bind_and_unbind_in_each_mode(
    kind: type[BindTransmitter | BindReceiver | BindTransceiver], mode: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            esme = await Esme.connect(sim.port)
            resp = await esme.bind(kind)
            assert resp.command_id == kind.command_id | 0x80000000
            assert resp.command_status == 0
            assert getattr(resp, "system_id", None) == "ULAKSIM"
            assert sim.active_binds("ulak") == 1
            assert [(b.system_id, b.mode, b.open) for b in sim.binds] == [("ulak", mode, True)]
            await esme.send(Unbind())
            assert isinstance(await esme.recv(), UnbindResp)
            assert await esme.expect_closed() == []
            await wait_for(lambda: not sim.binds[0].open)
            assert sim.active_binds() == 0
            assert sim.stats.unbinds == 1


async def test_bind_refusals_carry_the_right_status() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(accounts={"a": "pw-a", "b": "pw-b"}, max_binds_per_account=1) as sim:
            esme = await Esme.connect(sim.port)
            resp = await esme.bind(system_id="a", password="wrong")
            assert resp.command_status == CommandStatus.ESME_RINVPASWD
            resp = await esme.bind(system_id="nobody", password="pw-a")
            assert resp.command_status == CommandStatus.ESME_RINVSYSID
            # A refused bind leaves the connection open and unbound: the next try works.
            assert (await esme.bind(system_id="a", password="pw-a")).command_status == 0
            second = await Esme.connect(sim.port)
            resp = await second.bind(BindTransmitter, system_id="a", password="pw-a")
            assert resp.command_status == CommandStatus.ESME_RALYBND
            # Another account has its own limit.
            third = await Esme.connect(sim.port)
            assert (await third.bind(system_id="b", password="pw-b")).command_status == 0
            assert sim.stats.bind_failures == 3
            assert sim.stats.binds == 2


async def test_submit_before_bind_is_refused_by_the_session() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            esme = await Esme.connect(sim.port)
            await esme.send(submit())
            resp = await esme.recv()
            assert isinstance(resp, SubmitSmResp)
            assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
            assert sim.stats.submits == 0


# -- submit_sm -------------------------------------------------------------------------------


async def test_submit_sm_gets_a_hex_id_and_a_log_record(tmp_path: Path) -> None:
    log = tmp_path / "submits.jsonl"
    with trio.fail_after(TIMEOUT):
        async with simulator(log_path=str(log)) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind(BindTransmitter)
            pdus = [
                submit(b"one", esm_class=0, data_coding=0),
                submit(
                    b"\x05\x00\x03\x07\x02\x01two",
                    esm_class=0x40,
                    data_coding=8,
                    tlvs=Tlvs(source_port=16),
                ),
            ]
            seqs = await esme.send(*pdus)
            resps = [await esme.expect(SubmitSmResp) for _ in range(2)]
    assert [r.sequence_number for r in resps] == seqs
    ids = [r.message_id for r in resps]
    assert all(r.command_status == 0 for r in resps)
    assert len(set(ids)) == 2
    assert all(int(i, 16) > 0 and i == i.lower() for i in ids)
    records = sim.submitted
    assert [r["sequence"] for r in records] == seqs
    first, second = records
    assert first["system_id"] == "ulak"
    assert first["source"] == "ULAK"
    assert first["destination"] == "905321234567"
    assert first["short_message"] == b"one".hex()
    assert first["message_id"] == ids[0]
    assert first["tlvs"] == {}
    assert second["esm_class"] == 0x40
    assert second["data_coding"] == 8
    assert second["tlvs"] == {"source_port": 16}
    # The file is flushed at shutdown and holds the same records, one JSON object a line.
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records


async def test_the_log_is_flushed_on_a_timer_while_running(tmp_path: Path) -> None:
    log = tmp_path / "submits.jsonl"

    def lines() -> list[str]:
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []

    with trio.fail_after(TIMEOUT):
        async with simulator(
            log_path=str(log), log_flush_interval_s=0.01, keep_records=False
        ) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind(BindTransmitter)
            await esme.send(submit(b"a"), submit(b"b"))
            await esme.recv_all(2)
            await wait_for(lambda: len(lines()) == 2)
            assert sim.submitted == []  # keep_records=False: the file only
    assert [json.loads(line)["short_message"] for line in lines()] == ["61", "62"]


async def test_tps_limit_throttles_beyond_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    tps, seconds, offered = 100, 4.0, 400  # offered twice the rate
    with trio.fail_after(TIMEOUT + seconds):
        async with simulator(tps_limit=tps) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind(BindTransmitter)
            start = trio.current_time()
            for i in range(int(offered * seconds)):
                await trio.sleep_until(start + i / offered)
                await esme.send(submit())
            resps = await esme.recv_all(int(offered * seconds))
    statuses = Counter(r.command_status for r in resps)
    assert set(statuses) == {0, CommandStatus.ESME_RTHROTTLED}
    accepted = statuses[0]
    # The bucket holds a tenth of a second of tokens; the rest comes at the rate.
    expected = tps * seconds + sim.settings.effective_tps_burst
    assert abs(accepted - expected) <= 0.05 * expected
    assert sim.stats.throttled == statuses[CommandStatus.ESME_RTHROTTLED]
    assert sim.binds[0].throttled == sim.stats.throttled


async def test_max_window_violation_is_answered_and_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(max_window=5, response_delay_s=0.5) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind(BindTransmitter)
            await esme.send(*[submit() for _ in range(8)])
            resps = await esme.recv_all(8)
            # Answered in order after the delay; a window of 5 later is fine again.
            await esme.send(*[submit() for _ in range(5)])
            more = await esme.recv_all(5)
    assert [r.command_status for r in resps] == [0] * 5 + [CommandStatus.ESME_RMSGQFUL] * 3
    assert all(r.command_status == 0 for r in more)
    assert sim.stats.window_violations == 3
    assert sim.binds[0].window_violations == 3
    assert sim.binds[0].max_unanswered == 8


async def test_response_delay_applies_to_every_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(response_delay_s=0.25) as sim:
            esme = await Esme.connect(sim.port)
            start = trio.current_time()
            await esme.bind(BindTransmitter)
            assert trio.current_time() - start >= 0.25
            start = trio.current_time()
            await esme.send(submit(), EnquireLink())
            resps = await esme.recv_all(2)
            assert trio.current_time() - start >= 0.25
            assert [type(r) for r in resps] == [SubmitSmResp, EnquireLinkResp]
            # Unbind drains: whatever was answered before goes out before unbind_resp.
            await esme.send(submit(), Unbind())
            resps = await esme.recv_all(2)
            assert [type(r) for r in resps] == [SubmitSmResp, UnbindResp]


# -- receipts ------------------------------------------------------------------------------------


async def collect_receipts(esme: Esme, submits: int) -> tuple[list[SubmitSmResp], list[DeliverSm]]:
    """Read until every submit has its resp and its receipt; answer receipts as they come."""
    resps: list[SubmitSmResp] = []
    receipts: list[DeliverSm] = []
    while len(resps) < submits or len(receipts) < submits:
        pdu = await esme.recv()
        if isinstance(pdu, SubmitSmResp):
            resps.append(pdu)
        elif isinstance(pdu, DeliverSm):
            receipts.append(pdu)
            await esme.send(DeliverSmResp(sequence_number=pdu.sequence_number))
        else:
            raise AssertionError(f"unexpected {pdu}")
    return resps, receipts


async def test_receipt_mix_follows_the_weights() -> None:
    mix = {"DELIVRD": 0.7, "UNDELIV": 0.2, "EXPIRED": 0.05, "REJECTD": 0.05}
    count = 1000
    with trio.fail_after(TIMEOUT):
        async with simulator(receipt_mix=mix, seed=7) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            for _ in range(count // 100):
                await esme.send(*[submit(receipt=1) for _ in range(100)])
            resps, receipts = await collect_receipts(esme, count)
            await wait_for(lambda: sim.stats.deliver_sm_resp_ok == count)
    ids = {r.message_id for r in resps}
    states: Counter[str] = Counter()
    for pdu in receipts:
        fields = receipt_fields(pdu)
        assert fields["id"] in ids
        assert pdu.tlvs.receipted_message_id == fields["id"]
        assert fields["dlvrd"] == ("001" if fields["stat"] == "DELIVRD" else "000")
        states[fields["stat"]] += 1
        # The source of a receipt is the handset, its destination the original sender.
        assert (pdu.source_addr, pdu.destination_addr) == ("905321234567", "ULAK")
        assert (
            pdu.tlvs.message_state
            == {"DELIVRD": 2, "UNDELIV": 5, "EXPIRED": 3, "REJECTD": 8}[fields["stat"]]
        )
    assert len({receipt_fields(p)["id"] for p in receipts}) == count  # one receipt per message
    for state, weight in mix.items():
        assert abs(states[state] / count - weight) < 0.04, states
    assert sim.stats.receipt_states == states


async def test_receipts_can_carry_decimal_ids() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(receipt_id_format="decimal") as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            await esme.send(*[submit(receipt=1) for _ in range(3)])
            resps, receipts = await collect_receipts(esme, 3)
    hex_ids = [r.message_id for r in resps]
    text_ids = [receipt_fields(p)["id"] for p in receipts]
    assert text_ids == [str(int(i, 16)) for i in hex_ids]
    assert all(t.isdigit() for t in text_ids)
    # The TLV keeps the id exactly as submit_sm_resp gave it.
    assert [p.tlvs.receipted_message_id for p in receipts] == hex_ids
    assert sim.stats.receipts_sent == 3


async def test_registered_delivery_decides_whether_a_receipt_is_sent() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(receipt_mix={"DELIVRD": 1.0, "UNDELIV": 1.0}, seed=3) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            # 0: no receipt; 2: receipt on failure only (SMPP 3.4 §5.2.17).
            await esme.send(*[submit(receipt=0) for _ in range(20)])
            await esme.send(*[submit(receipt=2) for _ in range(40)])
            await esme.send(submit(receipt=1))
            resps: list[SubmitSmResp] = []
            receipts: list[DeliverSm] = []
            while len(resps) < 61 or not any(
                receipt_fields(p)["id"] == resps[-1].message_id for p in receipts
            ):
                pdu = await esme.recv()
                if isinstance(pdu, DeliverSm):
                    receipts.append(pdu)
                else:
                    assert isinstance(pdu, SubmitSmResp)
                    resps.append(pdu)
    by_id = {r.message_id: i for i, r in enumerate(resps)}
    failure_only = [p for p in receipts if 20 <= by_id[receipt_fields(p)["id"]] < 60]
    assert failure_only, "some of the 40 should have failed"
    assert all(receipt_fields(p)["stat"] == "UNDELIV" for p in failure_only)
    assert not [p for p in receipts if by_id[receipt_fields(p)["id"]] < 20]
    assert sim.stats.receipts_sent == len(receipts)


async def test_early_receipts_arrive_before_their_resp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(early_receipt_fraction=1.0, response_delay_s=0.1) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            await esme.send(*[submit(receipt=1) for _ in range(5)])
            order: list[tuple[str, str]] = []
            while len(order) < 10:
                pdu = await esme.recv()
                if isinstance(pdu, DeliverSm):
                    order.append(("receipt", receipt_fields(pdu)["id"]))
                    await esme.send(DeliverSmResp(sequence_number=pdu.sequence_number))
                else:
                    assert isinstance(pdu, SubmitSmResp)
                    order.append(("resp", pdu.message_id))
    for message_id in {i for _, i in order}:
        assert order.index(("receipt", message_id)) < order.index(("resp", message_id))
    assert sim.stats.receipts_early == 5


async def test_normal_receipts_follow_their_resp_even_with_a_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(response_delay_s=0.2) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            await esme.send(*[submit(receipt=1) for _ in range(5)])
            kinds = [type(p) for p in await esme.recv_all(10)]
    assert kinds == [SubmitSmResp] * 5 + [DeliverSm] * 5
    assert sim.stats.receipts_early == 0


async def test_multipart_parts_each_get_an_id_and_a_receipt() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            udh_parts = [
                submit(bytes([5, 0, 3, 0x2A, 3, n]) + b"part", esm_class=0x40, receipt=1)
                for n in (1, 2, 3)
            ]
            sar_parts = [
                submit(
                    b"sar part",
                    receipt=1,
                    tlvs=Tlvs(sar_msg_ref_num=9, sar_total_segments=2, sar_segment_seqnum=n),
                )
                for n in (1, 2)
            ]
            await esme.send(*udh_parts, *sar_parts)
            resps, receipts = await collect_receipts(esme, 5)
    ids = [r.message_id for r in resps]
    assert len(set(ids)) == 5
    assert sorted(receipt_fields(p)["id"] for p in receipts) == sorted(ids)
    # A receipt never quotes a UDH (Appendix B quotes the text).
    udh_receipts = [p for p in receipts if receipt_fields(p)["id"] in ids[:3]]
    assert all(p.short_message.endswith(b"text:") for p in udh_receipts)
    assert sim.submitted[3]["tlvs"] == {
        "sar_msg_ref_num": 9,
        "sar_total_segments": 2,
        "sar_segment_seqnum": 1,
    }


async def test_receipts_go_to_another_bind_of_the_account(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(receipt_delay_s=1.0) as sim:
            tx = await Esme.connect(sim.port)
            await tx.bind(BindTransmitter)
            # A transmitter cannot take deliver_sm: with no receiver, the receipt is dropped.
            await tx.send(submit(receipt=1))
            await tx.recv()
            await trio.sleep(1.5)
            assert sim.stats.receipts_dropped == 1
            rx = await Esme.connect(sim.port)
            await rx.bind(BindReceiver)
            await tx.send(submit(receipt=1))
            resp = await tx.expect(SubmitSmResp)
            receipt = await rx.recv()
            assert receipt_fields(receipt)["id"] == resp.message_id
            # A transceiver that drops before its receipt is due: the receipt moves over.
            trx = await Esme.connect(sim.port)
            await trx.bind(BindTransceiver)
            await trx.send(submit(receipt=1))
            resp = await trx.expect(SubmitSmResp)
            await trx.aclose()
            receipt = await rx.recv()
            assert receipt_fields(receipt)["id"] == resp.message_id


async def test_unacknowledged_receipts_are_redelivered_after_a_drop() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            first = await Esme.connect(sim.port)
            await first.bind()
            await first.send(submit(receipt=1))
            resp = await first.expect(SubmitSmResp)
            receipt = await first.recv()  # never answered
            second = await Esme.connect(sim.port)
            await second.bind(BindReceiver)
            await first.aclose()
            again = await second.expect(DeliverSm)
            await second.send(DeliverSmResp(sequence_number=again.sequence_number))
            await wait_for(lambda: sim.stats.deliver_sm_resp_ok == 1)
    assert receipt_fields(again)["id"] == receipt_fields(receipt)["id"] == resp.message_id
    assert sim.stats.receipts_requeued == 1


# -- faults ----------------------------------------------------------------------------------


async def test_connection_drops_after_n_pdus() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator(drop_after_pdus=5) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind(BindTransmitter)  # PDU 1
            await esme.send(*[submit() for _ in range(10)])
            seen = await esme.expect_closed()
            # The bind and four submits are answered; the connection then goes down.
            assert len(seen) == 4
            assert sim.stats.submits == 4
            await wait_for(lambda: sim.stats.dropped_connections == 1)
            # Every new connection gets the same treatment.
            again = await Esme.connect(sim.port)
            assert (await again.bind(BindTransmitter)).command_status == 0


async def test_garbage_gets_generic_nack_and_the_server_keeps_serving() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            bad = await Esme.connect(sim.port)
            await bad.bind()
            # A well-framed PDU with an unknown command id (SMPP 3.4 §4.3).
            await bad.stream.send_all(struct.pack(">IIII", 16, 0x7777, 0, 42))
            nack = await bad.recv()
            assert isinstance(nack, GenericNack)
            assert nack.sequence_number == 42
            assert nack.command_status == CommandStatus.ESME_RINVCMDID
            # The bind carries on.
            await bad.send(submit())
            assert (await bad.recv()).command_status == 0
            # A command_length that cannot be right: nack, then the connection is closed.
            await bad.stream.send_all(b"\x00\x00\x00\x03garbage garbage")
            seen = await bad.expect_closed()
            assert [type(p) for p in seen] == [GenericNack]
            assert seen[0].command_status == CommandStatus.ESME_RINVCMDLEN
            # Other connections were never disturbed.
            good = await Esme.connect(sim.port)
            assert (await good.bind()).command_status == 0
            await good.send(submit())
            assert (await good.recv()).command_status == 0
            assert sim.stats.protocol_errors == 2
            assert sim.stats.generic_nacks_sent == 2


async def test_unimplemented_requests_get_a_failure_status() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            await esme.send(QuerySm(message_id="a0000000", source_addr="ULAK"))
            resp = await esme.recv()
            assert resp.command_status == CommandStatus.ESME_RQUERYFAIL
            assert sim.stats.rejected == 1


# -- MO and enquire_link ------------------------------------------------------------------------


async def test_mo_messages_are_delivered_to_a_receiving_bind() -> None:
    mos = (
        MoMessage(source_addr="905321234567", destination_addr="ULAK", text="STOP"),
        MoMessage(source_addr="905551112233", destination_addr="ULAK", text="DURDUR"),
        MoMessage(source_addr="905551112233", destination_addr="ULAK", text="İPTAL"),
    )
    with trio.fail_after(TIMEOUT):
        async with simulator(mo_messages=mos) as sim:
            tx = await Esme.connect(sim.port)
            await tx.bind(BindTransmitter)
            assert sim.stats.mo_sent == 0  # a transmitter cannot receive them
            rx = await Esme.connect(sim.port)
            await rx.bind(BindReceiver)
            delivered = [await rx.expect(DeliverSm) for _ in range(3)]
            for pdu in delivered:
                await rx.send(DeliverSmResp(sequence_number=pdu.sequence_number))
            await wait_for(lambda: sim.stats.deliver_sm_resp_ok == 3)
    assert all(p.esm_class == 0 for p in delivered)
    texts = [(p.source_addr, p.short_message) for p in delivered]
    assert texts[:2] == [("905321234567", b"STOP"), ("905551112233", b"DURDUR")]
    assert delivered[2].data_coding == 8
    assert delivered[2].short_message.decode("utf-16-be") == "İPTAL"
    assert sim.stats.mo_sent == 3


async def test_enquire_link_in_both_directions(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT + 60):
        async with simulator(enquire_link_interval_s=5.0, response_timeout_s=3.0) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            # Ours is answered.
            (seq,) = await esme.send(EnquireLink())
            resp = await esme.recv()
            assert isinstance(resp, EnquireLinkResp)
            assert resp.sequence_number == seq
            # Idle for the interval: the simulator asks; we answer, and it asks again later.
            start = trio.current_time()
            ping = await esme.recv()
            assert isinstance(ping, EnquireLink)
            assert trio.current_time() - start >= 4.9
            await esme.send(EnquireLinkResp(sequence_number=ping.sequence_number))
            assert isinstance(await esme.recv(), EnquireLink)
            assert sim.stats.enquire_links_sent == 2
            # Left unanswered, the link is declared dead and closed.
            assert await esme.expect_closed() == []
            assert sim.stats.peers_dead == 1


async def test_stop_answering_enquire_link_plays_a_dead_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT + 60):
        async with simulator(stop_answering_enquire_link=True) as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            await esme.send(EnquireLink(), submit())
            resp = await esme.recv()
            assert isinstance(resp, SubmitSmResp)  # everything else is still answered
            with trio.move_on_after(30):
                await esme.recv()
                raise AssertionError("the enquire_link was answered")
            assert sim.stats.enquire_links_ignored == 1


# -- status and CLI --------------------------------------------------------------------------


async def test_status_line_and_counters() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            esme = await Esme.connect(sim.port)
            await esme.bind()
            await esme.send(submit(), submit())
            await esme.recv_all(2)
            line = sim.status_line()
            counters = sim.stats.as_dict()
    assert "binds=1" in line
    assert "submits=2" in line
    assert counters["accepted"] == 2
    json.dumps(counters)


def test_settings_validation_and_parsing() -> None:
    assert parse_receipt_mix("delivrd=0.9, UNDELIV=0.1") == {"DELIVRD": 0.9, "UNDELIV": 0.1}
    for bad in ("DELIVRD", "NOPE=1", "DELIVRD=x", "DELIVRD=0"):
        with pytest.raises(ValueError):
            parse_receipt_mix(bad)
    with pytest.raises(ValueError):
        SimulatorSettings(early_receipt_fraction=1.5)
    with pytest.raises(ValueError):
        SimulatorSettings(accounts={})
    assert MoMessage.parse("905321234567:ULAK:STOP: now") == MoMessage(
        source_addr="905321234567", destination_addr="ULAK", text="STOP: now"
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--port=0",
            "--account=a:b",
            "--account=c:d:e",
            "--rtt-ms=20",
            "--tps=50",
            "--receipt-mix=DELIVRD=0.5,EXPIRED=0.5",
            "--receipt-ids=decimal",
            "--early-receipts=0.25",
            "--no-receipts",
            "--mo=1:2:STOP",
            "--drop-after=7",
        ]
    )
    settings = settings_from_args(args)
    assert settings.accounts == {"a": "b", "c": "d:e"}
    assert settings.response_delay_s == pytest.approx(0.02)
    assert settings.tps_limit == 50
    assert settings.receipt_mix == {"DELIVRD": 0.5, "EXPIRED": 0.5}
    assert settings.receipt_id_format == "decimal"
    assert settings.early_receipt_fraction == 0.25
    assert settings.receipts is False
    assert settings.drop_after_pdus == 7
    assert settings.mo_messages == (MoMessage(source_addr="1", destination_addr="2", text="STOP"),)
    with pytest.raises(SystemExit):
        parser.parse_args(["--early-receipts=2"])


class _Lines:
    """Lines of a child's stdout, each read with a deadline (a hung child fails the test)."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""
        self.deadline = time.monotonic() + timeout

    def readline(self) -> str:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, remaining))
            if not ready:
                raise AssertionError("the simulator process printed nothing in time")
            data = os.read(self.fd, 4096)
            if not data:
                raise AssertionError(f"the simulator process ended: {self.buffer!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def test_the_process_prints_counters_on_sigusr1_and_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.simulator", "--port=0", "--account=ulak:secret"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        lines = _Lines(proc)
        line = lines.readline()
        assert line.startswith("ulak smsc-sim listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(encode(BindTransmitter(system_id="ulak", password="secret"), 1))
            header = sock.recv(16, socket.MSG_WAITALL)
            assert struct.unpack(">IIII", header)[2] == 0
        proc.send_signal(signal.SIGUSR1)
        counters: dict[str, str] = {}
        while "receipt_states" not in counters:  # the last counter printed
            name, _, value = lines.readline().partition(": ")
            counters[name] = value.strip()
        assert counters["binds"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert lines.readline().startswith("stopping: binds=")
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- interoperability ------------------------------------------------------------------------


def _smpplib_exchange(port: int) -> tuple[str, str, str]:
    """Bind smpplib 2.2.4's blocking client as a transceiver, submit, wait for the receipt."""
    import smpplib.client
    import smpplib.consts

    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    sent: list[str] = []
    receipts: list[Any] = []

    def on_sent(pdu: Any) -> None:
        sent.append(pdu.message_id.decode())

    def on_received(pdu: Any) -> None:
        receipts.append(pdu)

    client.set_message_sent_handler(on_sent)
    client.set_message_received_handler(on_received)
    client.connect()
    try:
        client.bind_transceiver(system_id="ulak", password="secret")
        client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="ULAK",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr="905321234567",
            short_message=b"hello from smpplib",
            registered_delivery=True,
        )
        deadline = time.monotonic() + TIMEOUT
        while not (sent and receipts):
            assert time.monotonic() < deadline, "no resp and receipt from the simulator"
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    receipt = receipts[0]
    return sent[0], receipt.receipted_message_id.decode(), receipt.short_message.decode()


async def test_smpplib_client_interoperates() -> None:
    with trio.fail_after(TIMEOUT):
        async with simulator() as sim:
            message_id, receipted, text = await trio.to_thread.run_sync(_smpplib_exchange, sim.port)
    assert message_id == sim.submitted[0]["message_id"]
    assert receipted == message_id
    assert f"id:{message_id} " in text
    assert "stat:DELIVRD" in text
    assert sim.stats.deliver_sm_resp_ok == 1
    assert sim.stats.unbinds == 1


@pytest.mark.parametrize("state", sorted(RECEIPT_STATES))
@pytest.mark.parametrize("decimal_id", [False, True])
def test_simulator_receipt_text_parses_with_our_receipt_parser(
    state: str, decimal_id: bool
) -> None:
    """The simulator formats receipts on its own fast path; it must agree with the parser."""
    import datetime as dt

    from gateway.simulator._receipts import PendingReceipt, receipt_text
    from protocols.constants import MessageState
    from protocols.pdu import SubmitSm
    from protocols.receipts import message_id_keys, parse_receipt

    submit = SubmitSm(source_addr="ULAK", destination_addr="905321234567", short_message=b"hi")
    pending = PendingReceipt(
        system_id="ulak",
        origin=None,
        message_id="1a2b3c",
        state=state,
        submit=submit,
        submit_time=1_800_000_000,
    )
    text = receipt_text(pending, decimal_id=decimal_id, done_time=1_800_000_120)
    receipt = parse_receipt(text)
    assert set(message_id_keys(receipt.message_id)) & set(message_id_keys("1a2b3c"))
    assert receipt.message_id == (str(0x1A2B3C) if decimal_id else "1a2b3c")
    assert receipt.state is MessageState(RECEIPT_STATES[state])
    assert receipt.submitted == dt.datetime(2027, 1, 15, 8, 0)
    assert receipt.done == dt.datetime(2027, 1, 15, 8, 2)
    assert receipt.text == "hi"
