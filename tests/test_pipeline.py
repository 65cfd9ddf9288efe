"""The pipeline end to end, in process: durable SQLite store, real binds over loopback TCP, the
real simulator. Tests wait for conditions (a message reaching a status), never for time."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import trio
import trio.testing
import trio_asyncio

from gateway.binds import BindSupervisor
from gateway.bindstate import RouteSettings
from gateway.compose import MessageRequest
from gateway.config import Settings, TenantConfig, parse_config
from gateway.daemon import open_store
from gateway.pipeline import Pipeline
from gateway.simulator import MoMessage, SimulatorHandle, SimulatorSettings, serve_simulator
from protocols.constants import CommandStatus, EsmClass, MessageState
from protocols.pdu import DeliverSm
from protocols.receipts import format_receipt_text
from queues.classqueue import QueuedPart
from queues.model import ConsentRecord, MessageClass, MessageView, Status, Transition
from queues.postgres import PostgresStore
from queues.sqlite import SQLiteStore
from queues.store import HeldReceipt, Store, StoreError
from tests.test_store_postgres import DATABASE_URL as PG_URL
from tests.test_store_postgres import _admin as pg_admin

TO = "+905321234567"


def _settings(folder: Path, port: int, **extra: Any) -> Settings:
    route: dict[str, Any] = {
        "name": "sim",
        "prefixes": [""],
        "host": "127.0.0.1",
        "port": port,
        "system_id": "ulak",
        "password": "secret",
        "bind": "transceiver",
        "binds": 1,
        "window": 10,
        "response_timeout_s": 2,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        "shutdown_grace_s": 2,
        "national_shift": "turkish",
        **extra.pop("route", {}),
    }
    data: dict[str, Any] = {
        "store": {"url": f"sqlite://{folder / 'ulak.db'}"},
        "quiet_hours": {"enabled": False},
        "tenants": [
            {
                "name": "shop",
                "api_key_sha256": "a" * 64,
                "require_opt_in": False,
                "default_sender": "SHOP",
            }
        ],
        "routes": [route],
        **extra,
    }
    return parse_config(data, {})


@dataclass
class Running:
    pipeline: Pipeline
    supervisor: BindSupervisor
    sim: SimulatorHandle
    store: Store
    tenant: TenantConfig

    async def send(
        self, text: str, klass: MessageClass = MessageClass.TRANSACTIONAL, to: str = TO, **kw: Any
    ) -> str:
        [item] = await self.pipeline.accept(self.tenant, [MessageRequest(to, text, klass, **kw)])
        assert item.error is None, item.error
        assert item.result is not None
        return item.result.id

    async def wait_status(
        self, message_id: str, predicate: Callable[[Status], bool]
    ) -> MessageView:
        with trio.fail_after(15):
            while True:
                await self.pipeline.flush()
                view = await self.store.get_message(self.tenant.name, message_id)
                assert view is not None
                if predicate(view.message.status):
                    return view
                await trio.sleep(0.02)


@asynccontextmanager
async def running(
    folder: Path,
    *,
    sim: dict[str, Any] | None = None,
    binds: bool = True,
    wall: Callable[[], float] = time.time,
    store_opener: Callable[[Settings], AbstractAsyncContextManager[Store]] = open_store,
    wrap_store: Callable[[Store], Store] = lambda store: store,
    **config: Any,
) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        handle: SimulatorHandle = await nursery.start(
            serve_simulator, SimulatorSettings(accounts={"ulak": "secret"}, **(sim or {}))
        )
        settings = _settings(folder, handle.port, **config)
        async with store_opener(settings) as real_store:
            store = wrap_store(real_store)
            pipeline = Pipeline(settings, store, wall=wall)
            await pipeline.restore()
            routes = [RouteSettings.from_config(r) for r in settings.routes]
            supervisor = BindSupervisor(routes, pipeline, pipeline)
            pipeline.route_up = supervisor.is_up
            async with trio.open_nursery() as inner:
                await inner.start(pipeline.run)
                async with trio.open_nursery() as bind_tasks:
                    if binds:
                        await bind_tasks.start(supervisor.run)
                        with trio.fail_after(10):
                            await supervisor.wait_until_up("sim")
                    yield Running(pipeline, supervisor, handle, store, settings.tenants[0])
                    supervisor.shutdown()
                await pipeline.flush()
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_a_message_is_submitted_then_delivered_and_every_step_is_stored(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as r:
        message_id = await r.send("Siparişiniz kargoya verildi.")
        view = await r.wait_status(message_id, lambda s: s.is_final)
        await r.pipeline.flush()
        assert isinstance(r.store, SQLiteStore)
        rows = r.store._conn.execute(
            "SELECT status, part FROM transitions WHERE message_id = ? ORDER BY rowid",
            (message_id,),
        ).fetchall()
    assert view.message.status is Status.DELIVERED
    [part] = view.parts
    assert part.status is Status.DELIVERED and part.smsc_id
    steps = [(e.status, e.part) for e in view.history]
    assert steps == [
        (Status.ACCEPTED, None),
        (Status.SUBMITTED, 0),
        (Status.SUBMITTED, None),
        (Status.DELIVERED, 0),
        (Status.DELIVERED, None),
    ]
    # One part, so the part's changes are the message's: one stored row for both of each.
    assert rows == [("accepted", None), ("submitted", 0), ("delivered", 0)]
    [record] = r.sim.submitted
    assert record["destination"] == "905321234567"
    assert record["source"] == "SHOP"
    assert record["registered_delivery"] == 1


async def test_a_long_turkish_message_goes_in_parts_and_is_final_when_all_are(
    tmp_path: Path,
) -> None:
    text = (
        "Değerli müşterimiz, siparişiniz yola çıktı; kargo şirketi yarın öğleden önce "
        "teslim edecek. "
    ) * 4
    async with running(tmp_path) as r:
        message_id = await r.send(text)
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert view.message.status is Status.DELIVERED
    assert view.message.parts == len(view.parts) == 3
    assert len(r.sim.submitted) == 3
    assert all(rec["esm_class"] & EsmClass.UDHI for rec in r.sim.submitted)
    assert {p.status for p in view.parts} == {Status.DELIVERED}


async def test_early_receipts_with_decimal_ids_are_matched(tmp_path: Path) -> None:
    sim = {"early_receipt_fraction": 1.0, "receipt_id_format": "decimal"}
    async with running(tmp_path, sim=sim) as r:
        ids = [await r.send(f"Kargo {n}") for n in range(20)]
        views = [await r.wait_status(i, lambda s: s.is_final) for i in ids]
    assert {v.message.status for v in views} == {Status.DELIVERED}


def _receipt_pdu(smsc_id: str, stat: str) -> DeliverSm:
    moment = dt.datetime(2026, 11, 25, 10, 0)
    text = format_receipt_text(message_id=smsc_id, state=stat, submitted=moment, done=moment)
    return DeliverSm(esm_class=EsmClass.TYPE_SMSC_DELIVERY_RECEIPT, short_message=text)


async def test_an_early_receipt_is_answered_only_once_it_is_stored(tmp_path: Path) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await r.send("Erken rapor")
        op = r.pipeline.get_nowait("sim")
        assert op is not None
        answers: list[int] = []

        async def deliver() -> None:
            answers.append(await r.pipeline.on_deliver(_receipt_pdu("0A1B2C", "DELIVRD"), "t"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            with trio.fail_after(10):
                while r.pipeline.correlator.held == 0:  # looked up in the store, then held
                    await trio.sleep(0.001)
            await trio.sleep(0.05)
            assert answers == []  # no deliver_sm_resp while the receipt matches nothing stored
            r.pipeline.on_submitted(op, "0a1b2c", "t", trio.current_time())
        assert answers == [0]
        assert "receipts_answered_unmatched" not in r.pipeline.counts
        # Answered after the commit: the store has the outcome already.
        view = await r.store.get_message(r.tenant.name, message_id)
        assert view is not None and view.message.status is Status.DELIVERED


async def test_a_known_parts_receipt_is_applied_at_once_and_answered_after_its_commit(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await r.send("Hizli rapor")
        op = r.pipeline.get_nowait("sim")
        assert op is not None
        r.pipeline.on_submitted(op, "0c0ffee", "t", trio.current_time())
        quick = r.pipeline.deliver_now(_receipt_pdu("0C0FFEE", "DELIVRD"), "t")
        assert quick is not None
        status, ticket = quick
        assert status == 0
        await r.pipeline.wait_committed(ticket)
        # Nothing else was awaited: the ticket alone says when the answer may go out.
        view = await r.store.get_message(r.tenant.name, message_id)
        assert view is not None and view.message.status is Status.DELIVERED
        # What needs a store lookup or a wait is left to on_deliver, untouched.
        assert r.pipeline.deliver_now(_receipt_pdu("FFFF02", "DELIVRD"), "t") is None
        assert r.pipeline.correlator.held == 0
        mo = DeliverSm(source_addr="905321234567", short_message=b"DURDUR")
        assert r.pipeline.deliver_now(mo, "t") is None
        # An unreadable receipt is answered at once: there is nothing to store.
        garbage = DeliverSm(esm_class=EsmClass.TYPE_SMSC_DELIVERY_RECEIPT, short_message=b"?")
        assert r.pipeline.deliver_now(garbage, "t") == (0, -1)
        assert r.pipeline.counts["receipts_unreadable"] == 1


async def test_an_early_receipt_never_matched_is_answered_after_the_wait(tmp_path: Path) -> None:
    async with running(tmp_path, binds=False, pipeline={"early_receipt_wait_s": 0.05}) as r:
        answer = await r.pipeline.on_deliver(_receipt_pdu("FFFF01", "DELIVRD"), "t")
        assert answer == 0
        assert r.pipeline.counts["receipts_answered_unmatched"] == 1
        assert r.pipeline.correlator.held == 1  # still held, for a later submit_sm_resp
        # and kept by the store before the answer went: a restart will not lose it.
        [held] = await r.store.held_receipts()
        assert (held.smsc_id, held.state) == ("FFFF01", MessageState.DELIVERED)


async def test_a_receipt_answered_unmatched_survives_a_restart(tmp_path: Path) -> None:
    pipeline = {"early_receipt_wait_s": 0}
    async with running(tmp_path, binds=False, pipeline=pipeline) as r:
        message_id = await r.send("Yeniden başlatma")
        assert r.pipeline.get_nowait("sim") is not None  # handed out; its resp never comes
        assert await r.pipeline.on_deliver(_receipt_pdu("0D0E0F", "DELIVRD"), "t") == 0
    async with running(tmp_path, binds=False, pipeline=pipeline) as r:
        assert r.pipeline.correlator.held == 1  # taken back from the store
        op = r.pipeline.get_nowait("sim")  # the message, queued again
        assert op is not None
        r.pipeline.on_submitted(op, "d0e0f", "t", trio.current_time())  # same id, other form
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert view.message.status is Status.DELIVERED


async def test_held_receipts_whose_part_is_known_are_applied_at_restart(tmp_path: Path) -> None:
    async with running(tmp_path, binds=False) as r:
        pending = await r.send("Bekleyen")
        done = await r.send("Teslim edildi")
        for smsc_id in ("0A0B0C", "0A0B0D"):
            op = r.pipeline.get_nowait("sim")
            assert op is not None
            r.pipeline.on_submitted(op, smsc_id, "t", trio.current_time())
        await r.pipeline.on_deliver(_receipt_pdu("0A0B0D", "DELIVRD"), "t")
        await r.wait_status(done, lambda s: s.is_final)
        # As a crash leaves them: kept receipts whose parts came (the resp, or the match,
        # not committed before it), and one past the hold.
        now = time.time()
        await r.store.hold_receipt(HeldReceipt("A0B0C", MessageState.UNDELIVERABLE, "1", now))
        await r.store.hold_receipt(HeldReceipt("0A0B0D", MessageState.REJECTED, None, now))
        await r.store.hold_receipt(HeldReceipt("FFFF09", MessageState.DELIVERED, None, now - 1e4))
    async with running(tmp_path, binds=False) as r:
        pending_view = await r.wait_status(pending, lambda s: s.is_final)
        done_view = await r.store.get_message(r.tenant.name, done)
        assert await r.store.held_receipts() == []
        assert r.pipeline.correlator.held == 0
    assert pending_view.message.status is Status.UNDELIVERABLE
    assert done_view is not None and done_view.message.status is Status.DELIVERED
    assert [e.status for e in done_view.history if e.part is None][-1] is Status.DELIVERED


async def test_an_unclaimed_early_receipt_is_dropped_after_the_hold(tmp_path: Path) -> None:
    pipeline = {"early_receipt_wait_s": 0, "early_receipt_hold_s": 0.2}
    async with running(tmp_path, binds=False, pipeline=pipeline) as r:
        message_id = await r.send("Geç gelen yanıt")
        op = r.pipeline.get_nowait("sim")
        assert op is not None
        assert await r.pipeline.on_deliver(_receipt_pdu("FFFF03", "DELIVRD"), "t") == 0
        assert r.pipeline.correlator.held == 1
        with trio.fail_after(10):
            while r.pipeline.correlator.held:  # the pipeline's own housekeeping drops it
                await trio.sleep(0.01)
        assert r.pipeline.counts["receipts_expired"] == 1
        with trio.fail_after(10):
            while await r.store.held_receipts():  # the store's copy goes too
                await trio.sleep(0.01)
        # Its submit_sm_resp comes too late: the part is submitted, not delivered.
        r.pipeline.on_submitted(op, "ffff03", "t", trio.current_time())
        view = await r.wait_status(message_id, lambda s: s is Status.SUBMITTED)
    assert view.parts[0].status is Status.SUBMITTED


async def test_parts_are_remembered_in_memory_only_where_every_receipt_is_asked(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, binds=False) as r:
        await r.send("Her sonuç")
        op = r.pipeline.get_nowait("sim")
        assert op is not None
        r.pipeline.on_submitted(op, "0B0B01", "t", trio.current_time())
        assert len(r.pipeline.correlator) == 1
    # Failures only (registered_delivery 2): a delivered part gets no receipt to free it.
    async with running(tmp_path / "2", binds=False, route={"registered_delivery": 2}) as r:
        message_id = await r.send("Yalnız hatalar")
        op = r.pipeline.get_nowait("sim")
        assert op is not None
        r.pipeline.on_submitted(op, "0B0B02", "t", trio.current_time())
        assert len(r.pipeline.correlator) == 0
        await r.wait_status(message_id, lambda s: s is Status.SUBMITTED)
        # The rare receipt finds its part through the store.
        assert await r.pipeline.on_deliver(_receipt_pdu("0B0B02", "UNDELIV"), "t") == 0
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert view.message.status is Status.UNDELIVERABLE


async def test_a_multipart_message_takes_its_worst_part_status(tmp_path: Path) -> None:
    async with running(tmp_path, sim={"receipts": False}) as r:
        message_id = await r.send("x" * 300)  # 2 parts of GSM-7
        view = await r.wait_status(message_id, lambda s: s is Status.SUBMITTED)
        first, second = view.parts
        assert first.smsc_id and second.smsc_id

        async def receipt(smsc_id: str, stat: str) -> None:
            moment = dt.datetime(2026, 11, 25, 10, 0)
            text = format_receipt_text(
                message_id=smsc_id, state=stat, submitted=moment, done=moment
            )
            pdu = DeliverSm(esm_class=EsmClass.TYPE_SMSC_DELIVERY_RECEIPT, short_message=text)
            assert await r.pipeline.on_deliver(pdu, "test") == 0

        await receipt(first.smsc_id, "DELIVRD")
        halfway = await r.store.get_message(r.tenant.name, message_id)
        assert halfway is not None and halfway.message.status is Status.SUBMITTED  # one to go
        await receipt(second.smsc_id, "UNDELIV")
        final = await r.store.get_message(r.tenant.name, message_id)
    assert final is not None
    assert final.message.status is Status.UNDELIVERABLE
    assert [p.status for p in final.parts] == [Status.DELIVERED, Status.UNDELIVERABLE]


async def test_a_multipart_message_refused_at_send_sends_none_of_its_parts(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await r.send("Büyük indirim fırsatı! " * 12, MessageClass.MARKETING)
        other = await r.send("Kısa kampanya", MessageClass.MARKETING, to="+905321234568")
        # The number opts out after the accept, before the first part goes.
        record = ConsentRecord(r.tenant.name, TO, False, "api", time.time())
        await r.store.set_consent(record)
        r.pipeline.policies.consent.update(record)
        handed: list[str] = []
        while (op := r.pipeline.get_nowait("sim")) is not None:
            handed.append(cast(QueuedPart, op.part_id).message_id)
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert handed == [other]  # none of the refused message's parts
    assert view.message.status is Status.REJECTED
    assert len(view.parts) > 1
    assert {p.status for p in view.parts} == {Status.REJECTED}
    assert r.pipeline._refused == {}  # nothing left behind once every part was dropped


async def test_the_parts_of_a_refused_message_that_expire_stay_rejected(tmp_path: Path) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await r.send("Büyük indirim fırsatı! " * 12, MessageClass.MARKETING)
        record = ConsentRecord(r.tenant.name, TO, False, "api", time.time())
        await r.store.set_consent(record)
        r.pipeline.policies.consent.update(record)
        first = r.pipeline.scheduler.get_nowait("sim")
        assert first is not None
        assert not r.pipeline._admit(first)  # refused: the number opted out
        # The other parts reach their validity's end before a bind takes them.
        while (op := r.pipeline.scheduler.get_nowait("sim")) is not None:
            r.pipeline._on_expired(cast(QueuedPart, op.part_id))
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert view.message.status is Status.REJECTED  # not turned into a failure
    assert {p.status for p in view.parts} == {Status.REJECTED}
    assert r.pipeline._refused == {} and r.pipeline._multi == {}


LONG = "Kampanya: sepetinizdeki ürünlerde bugüne özel yüzde yirmi indirim sizi bekliyor. " * 6


async def _second_part_rejected(r: Running, smsc_id: str) -> str:
    """Send :data:`LONG`; its first part is taken by the SMSC as ``smsc_id``, its second
    rejected (ESME_RINVDSTADR). Returns the message id."""
    message_id = await r.send(LONG)
    first, second = r.pipeline.get_nowait("sim"), r.pipeline.get_nowait("sim")
    assert first is not None and second is not None
    r.pipeline.on_submitted(first, smsc_id, "sim#1", trio.current_time())
    r.pipeline.on_rejected(second, int(CommandStatus.ESME_RINVDSTADR), trio.current_time())
    return message_id


async def test_an_smsc_rejection_of_one_part_leaves_the_later_parts_unsent(tmp_path: Path) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await _second_part_rejected(r, "0A0A")
        assert r.pipeline.get_nowait("sim") is None  # the rest is dropped, not sent
        assert await r.pipeline.on_deliver(_receipt_pdu("0A0A", "DELIVRD"), "t") == 0
        view = await r.wait_status(message_id, lambda s: s.is_final)
    n = len(view.parts)
    assert n >= 4
    assert [p.status for p in view.parts] == [Status.DELIVERED] + [Status.REJECTED] * (n - 1)
    assert view.parts[1].error == "command_status 0x0000000B"
    assert all("part 2 rejected by the SMSC" in (p.error or "") for p in view.parts[2:])
    assert view.message.status is Status.REJECTED
    assert r.pipeline._refused == {} and r.pipeline._multi == {}


async def test_after_a_restart_the_parts_left_of_a_rejected_one_stay_unsent(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await _second_part_rejected(r, "0B0B")
    async with running(tmp_path, binds=False) as r:  # a new process: nothing in memory
        assert r.pipeline.get_nowait("sim") is None
        assert await r.pipeline.on_deliver(_receipt_pdu("0B0B", "DELIVRD"), "t") == 0
        view = await r.wait_status(message_id, lambda s: s.is_final)
    n = len(view.parts)
    assert [p.status for p in view.parts] == [Status.DELIVERED] + [Status.REJECTED] * (n - 1)
    assert view.message.status is Status.REJECTED
    assert r.pipeline._multi == {}


async def test_an_opt_out_before_a_restart_stops_the_restored_campaign_message(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, binds=False) as r:
        message_id = await r.send("Kampanya: sepetiniz sizi bekliyor", MessageClass.MARKETING)
        record = ConsentRecord(r.tenant.name, TO, False, "api", time.time())
        await r.store.set_consent(record)
        r.pipeline.policies.consent.update(record)
    async with running(tmp_path, binds=False) as r:  # a new process: no consent in memory
        assert r.pipeline.get_nowait("sim") is None
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert view.message.status is Status.REJECTED


class StoreWrapper:
    """The real store, passed through; subclasses make some calls fail (faults injected)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _FailingStore(StoreWrapper):
    """The real store, whose receipt lookups and consent writes fail (the database is gone)."""

    async def find_part(self, keys: Any) -> Any:
        raise StoreError("database is locked")

    async def set_consent(self, record: Any) -> None:
        raise StoreError("database is locked")


async def test_a_deliver_sm_the_store_cannot_take_is_answered_for_a_retry(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 9)
    async with open_store(settings) as real:
        pipeline = Pipeline(settings, _FailingStore(real))
        receipt = _receipt_pdu("0F0F01", "DELIVRD")
        mo = DeliverSm(source_addr="905321234567", destination_addr="SHOP", short_message=b"DURDUR")
        answers = [await pipeline.on_deliver(pdu, "t") for pdu in (receipt, mo)]
    # ESME_RX_T_APPN: the SMSC delivers each again; nothing was raised into the bind.
    assert answers == [CommandStatus.ESME_RX_T_APPN] * 2
    assert pipeline.counts["deliver_store_errors"] == 2


class _RecordRefusing(StoreWrapper):
    """The real store, whose ``record`` fails the batches :meth:`refuses` picks with a
    connection error (the database is gone), counted in ``failures``."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.failures = 0
        self.stored_again = 0

    def refuses(self, transitions: Sequence[Transition]) -> bool:
        raise NotImplementedError

    def stored(self, transitions: Sequence[Transition]) -> None:
        """Called once a batch is stored."""

    async def arrived(self, transitions: Sequence[Transition]) -> None:
        """Awaited as a batch comes, before anything else (by default, no checkpoint)."""

    async def record(
        self,
        transitions: Sequence[Transition],
        on_committed: Callable[[], None] | None = None,
        *,
        again: bool = False,
    ) -> None:
        await self.arrived(transitions)
        if self.refuses(transitions):
            self.failures += 1
            await trio.lowlevel.checkpoint()
            raise StoreError("could not connect to server: Connection refused")
        self.stored_again += again
        await self._store.record(transitions, on_committed=on_committed, again=again)
        self.stored(transitions)


W = TypeVar("W", bound=StoreWrapper)


def _wrapping(kind: Callable[[Store], W]) -> tuple[list[W], Callable[[Store], Store]]:
    """A ``wrap_store`` for :func:`running` that wraps the store in ``kind``, and the list
    that will hold the wrapper."""
    made: list[W] = []

    def wrap(store: Store) -> Store:
        made.append(kind(store))
        return cast(Store, made[0])

    return made, wrap


class _RecordFailsUntilDelivered(_RecordRefusing):
    """Fails each batch holding a submission until a batch holding a delivery has been
    stored: the database came back between the two batches, so the later one (the receipt)
    is stored before the retried earlier one (the submission)."""

    delivered_stored = False

    def refuses(self, transitions: Sequence[Transition]) -> bool:
        statuses = {t.status for t in transitions}
        if Status.SUBMITTED in statuses and not self.delivered_stored:
            assert Status.DELIVERED not in statuses  # receipts come 0.3 s after the response
            return True
        return False

    def stored(self, transitions: Sequence[Transition]) -> None:
        self.delivered_stored |= any(t.status is Status.DELIVERED for t in transitions)


async def test_status_changes_the_store_refuses_are_kept_and_stored_when_it_is_back(
    tmp_path: Path,
) -> None:
    failing, wrap = _wrapping(_RecordFailsUntilDelivered)
    async with running(tmp_path, sim={"receipt_delay_s": 0.3}, wrap_store=wrap) as r:
        message_id = await r.send("Siparişiniz kargoya verildi.")
        view = await r.wait_status(message_id, lambda s: s.is_final)
        # The pipeline kept running through the failures, and sends on.
        second = await r.send("Siparişiniz teslim edildi.")
        assert (
            await r.wait_status(second, lambda s: s.is_final)
        ).message.status is Status.DELIVERED
    assert failing[0].failures >= 1
    assert r.pipeline.counts["record_retries"] == failing[0].failures
    assert failing[0].stored_again == 1  # the failed batch, marked as maybe stored already
    # The retried submission, stored after the delivery, did not take the final status back.
    assert view.message.status is Status.DELIVERED
    [part] = view.parts
    assert part.status is Status.DELIVERED and part.smsc_id  # the submission's id is kept
    assert [e.status for e in view.history if e.part == 0] == [Status.SUBMITTED, Status.DELIVERED]


class _RecordsHeld(_RecordRefusing):
    """Notes each batch as it comes and holds it (the commit takes long) until ``release``
    is set; refuses none."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.batches: list[list[Transition]] = []
        self.release = trio.Event()

    def refuses(self, transitions: Sequence[Transition]) -> bool:
        return False

    async def arrived(self, transitions: Sequence[Transition]) -> None:
        self.batches.append(list(transitions))
        await self.release.wait()


async def test_status_changes_reach_the_store_a_round_after_they_happen_while_others_commit(
    tmp_path: Path,
) -> None:
    """A submission goes to the store the scheduler round after its response, even while
    the batches before it are still committing: its window slot waits for the commit, so
    every round it waited in memory first would be a round of the slot's time lost."""
    held, wrap = _wrapping(_RecordsHeld)
    async with running(tmp_path, binds=False, wrap_store=wrap) as r:
        ids = [await r.send(f"Sipariş {n} kargoda.") for n in range(4)]
        ops = [r.pipeline.get_nowait("sim") for _ in ids]
        for n, op in enumerate(ops):
            assert op is not None
            r.pipeline.on_submitted(op, f"5e{n}", "t", trio.current_time())
            await trio.lowlevel.checkpoint()  # the round the record task starts in
            await trio.lowlevel.checkpoint()
            assert [len(batch) for batch in held[0].batches] == [1] * (n + 1)
        held[0].release.set()
        await r.pipeline.flush()
        for message_id in ids:
            view = await r.store.get_message(r.tenant.name, message_id)
            assert view is not None and view.message.status is Status.SUBMITTED


class _RecordFailsWhileDown(_RecordRefusing):
    """Fails every batch while ``down`` is set."""

    down = False

    def refuses(self, transitions: Sequence[Transition]) -> bool:
        return self.down


async def test_a_store_outage_longer_than_the_smscs_patience_keeps_the_bind_up(
    tmp_path: Path,
) -> None:
    """Receipts pile up unanswered while the store is down. The bind must still answer the
    SMSC's enquire_link (a silent bind is dropped, with the submissions in its window): after
    deliver_stall_s the reader reads on and defers new deliver_sm with ESME_RX_T_APPN."""
    wrapped, wrap = _wrapping(_RecordFailsWhileDown)
    sim = {"receipt_delay_s": 0.05, "enquire_link_interval_s": 0.3, "response_timeout_s": 1.5}
    route = {"deliver_queue_limit": 2, "deliver_stall_s": 0.3}
    async with running(tmp_path, sim=sim, wrap_store=wrap, route=route) as r:
        store = wrapped[0]
        store.down = True
        sent = [await r.send(f"Siparişiniz {n} kargoya verildi.") for n in range(6)]
        with trio.fail_after(10):
            # The simulator gave up on some receipts and delivered them again; we deferred
            # those, and answered its enquire_link all along.
            while r.supervisor.stats().totals.delivers_deferred < 3:
                await trio.sleep(0.05)
        await trio.sleep(2.5)  # past the simulator's patience (enquire_link + its timeout)
        store.down = False
        views = [await r.wait_status(m, lambda s: s.is_final) for m in sent]
        stats = r.supervisor.stats()
    assert [v.message.status for v in views] == [Status.DELIVERED] * 6
    assert r.sim.stats.peers_dead == 0
    assert r.sim.stats.binds == 1  # the one bind lived through the outage
    assert stats.totals.reconnects == 0
    assert r.sim.stats.enquire_links_sent >= 1
    for view in views:  # each once, however often its receipt came
        assert [e.status for e in view.history if e.part == 0] == [
            Status.SUBMITTED,
            Status.DELIVERED,
        ]


@asynccontextmanager
async def _postgres_store(settings: Settings) -> AsyncIterator[Store]:
    """A PostgreSQL store on a throwaway schema of the local service, dropped afterwards."""
    async with trio_asyncio.open_loop():
        schema = f"ulak_test_{uuid.uuid4().hex[:16]}"
        await pg_admin("SELECT 1")  # fails the test clearly when the server is down
        store = await PostgresStore.open(PG_URL, schema=schema)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
                await pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_postgresql_sessions_killed_under_load_lose_no_status_change(
    tmp_path: Path,
) -> None:
    """The server ends the store's sessions (as on a restart or failover) again and again
    while messages are sent and their receipts come back: the pipeline waits and tries again,
    and every message still ends delivered, with its whole history."""
    delivered: set[str] = set()
    async with running(tmp_path, store_opener=_postgres_store, sim={"receipt_delay_s": 0.05}) as r:
        r.pipeline.status_listeners.append(
            lambda t: delivered.add(t.message_id) if t.status is Status.DELIVERED else None
        )
        batch = [
            MessageRequest(f"+90532{n:07d}", f"Sipariş {n}", MessageClass.TRANSACTIONAL)
            for n in range(400)
        ]
        items = await r.pipeline.accept(r.tenant, batch)
        ids = [item.result.id for item in items if item.result is not None]
        assert len(ids) == len(batch)
        kills = 0
        with trio.fail_after(60):
            while kills < 8:  # each time, once the work has gone on since the last kill
                seen = len(delivered)
                while len(delivered) < min(seen + 20, len(ids)):
                    await trio.sleep(0.005)
                await pg_admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'ulak' AND datname = current_database()"
                )
                kills += 1
        views = [await r.wait_status(i, lambda s: s.is_final) for i in ids]
    assert r.pipeline.counts.get("record_retries", 0) >= 1  # some kills hit a transaction
    assert {v.message.status for v in views} == {Status.DELIVERED}
    for view in views:
        assert [e.status for e in view.history if e.part == 0] == [
            Status.SUBMITTED,
            Status.DELIVERED,
        ]


async def test_a_durdur_reply_opts_the_number_out_of_marketing(tmp_path: Path) -> None:
    sim = {
        "mo_messages": [
            MoMessage(source_addr="905321234567", destination_addr="SHOP", text="Durdur")
        ]
    }
    async with running(tmp_path, sim=sim) as r:
        with trio.fail_after(10):
            while (await r.store.get_consent("shop", TO)) is None:
                await trio.sleep(0.02)
        record = await r.store.get_consent("shop", TO)
        assert record is not None and not record.opted_in
        [item] = await r.pipeline.accept(
            r.tenant, [MessageRequest(TO, "Kampanya!", MessageClass.MARKETING)]
        )
        assert item.error is not None and item.error.code == "opted_out"
        # Transactional traffic to the same number still goes.
        await r.send("Siparişiniz hazır.")


async def test_accepted_messages_survive_a_restart_and_are_sent_after_it(tmp_path: Path) -> None:
    async with running(tmp_path, binds=False) as r:
        ids = [await r.send(f"Bekleyen {n}") for n in range(30)]
        assert not r.sim.submitted
    async with running(tmp_path) as r:
        views = [await r.wait_status(i, lambda s: s.is_final) for i in ids]
        assert {v.message.status for v in views} == {Status.DELIVERED}
        assert len(r.sim.submitted) == 30


async def test_the_consent_ledger_decides_a_batch_after_a_restart(tmp_path: Path) -> None:
    """The policy starts empty at each start: a marketing batch is judged by the ledger in the
    store (the entry in force per number), read for the whole batch."""
    numbers = [f"+9053212345{n:02d}" for n in range(6)]
    async with open_store(_settings(tmp_path, 9)) as store:
        for n, number in enumerate(numbers[:4]):
            await store.set_consent(ConsentRecord("shop", number, True, "api", 1000.0))
            if n % 2:  # then opted out by a STOP reply
                await store.set_consent(ConsentRecord("shop", number, False, "mo:STOP", 2000.0))
    tenant = {"name": "shop", "api_key_sha256": "a" * 64, "default_sender": "SHOP"}
    tenants = [{**tenant, "require_opt_in": True}]
    async with running(tmp_path, binds=False, tenants=tenants) as r:
        requests = [MessageRequest(to, "Kampanya!", MessageClass.MARKETING) for to in numbers]
        items = await r.pipeline.accept(r.tenant, requests)
    codes = [item.error.code if item.error else "accepted" for item in items]
    assert codes == ["accepted", "opted_out", "accepted", "opted_out", "no_consent", "no_consent"]


async def test_a_new_message_goes_to_the_first_route_up_along_its_chain(tmp_path: Path) -> None:
    base = {"host": "127.0.0.1", "port": 9, "system_id": "u", "password": "p"}
    routes = [
        {"name": "a", "prefixes": ["+90"], "backup": "b", "national_shift": "turkish", **base},
        {"name": "b", "prefixes": ["+44"], "backup": "c", "national_shift": "turkish", **base},
        {"name": "c", "prefixes": ["+1"], **base},  # no Turkish tables
    ]
    text = "Şifreniz değişti"  # Ş and ğ: GSM 7-bit only with the Turkish shift
    async with running(tmp_path, binds=False, routes=routes) as r:
        up: set[str] = set()
        r.pipeline.route_up = lambda name: name in up
        ids = [await r.send(text)]  # nothing is up: it waits for its primary route
        up.add("c")
        ids.append(await r.send(text))
        up.add("b")
        ids.append(await r.send(text))
        up.add("a")
        ids.append(await r.send(text))
        pending = {name: r.pipeline.queues.pending(route=name) for name in "abc"}
        views = [await r.store.get_message(r.tenant.name, i) for i in ids]
    assert pending == {"a": 2, "b": 1, "c": 1}
    # Each is encoded for the route it goes to: on c, without the Turkish tables, UCS-2.
    encodings = [v.message.encoding for v in views if v is not None]
    assert encodings[1] == "ucs2"
    assert encodings[0] == encodings[2] == encodings[3] != "ucs2"


async def test_a_restored_message_whose_route_is_down_goes_only_to_a_backup_encoding_alike(
    tmp_path: Path,
) -> None:
    base = {"host": "127.0.0.1", "port": 9, "system_id": "u", "password": "p"}
    routes = [
        {"name": "a", "prefixes": ["+90"], "backup": "c", "national_shift": "turkish", **base},
        {"name": "b", "prefixes": ["+44"], "national_shift": "turkish", **base},
        {"name": "c", "prefixes": ["+1"], "backup": "b", **base},  # no Turkish tables
    ]
    async with running(tmp_path, binds=False, routes=routes) as r:
        await r.send("Şifreniz değişti")  # encoded for a, with the Turkish shift
    settings = _settings(tmp_path, 9, routes=routes)
    for up, where in (({"c"}, "a"), ({"b", "c"}, "b")):
        async with open_store(settings) as store:
            pipeline = Pipeline(settings, store)
            pipeline.route_up = up.__contains__
            assert await pipeline.restore() == 1
            # c is up but lacks the tables it was encoded with: only b may take it.
            assert pipeline.queues.pending(route=where) == 1, (up, where)


async def test_parts_queued_on_a_route_that_went_down_move_to_its_backup(tmp_path: Path) -> None:
    def route(name: str, **kw: Any) -> dict[str, Any]:
        base = {"host": "127.0.0.1", "port": 9, "system_id": "u", "password": "p"}
        return {"name": name, **base, **kw}

    routes = [
        route("a", prefixes=["+90"], backup="b"),
        # b encodes as a does; c does not (SAR segmentation): a's parts can go to b only.
        route("b", prefixes=["+44"], backup="c"),
        route("c", prefixes=["+1"], segmentation="sar"),
    ]
    pipeline_config = {"reroute_after_s": 0.2}
    async with running(tmp_path, binds=False, routes=routes, pipeline=pipeline_config) as r:
        up = {"a"}
        r.pipeline.route_up = lambda name: name in up
        otp = await r.send("Kodunuz: 482915", MessageClass.OTP)
        notice = await r.send("Siparişiniz kargoda.")
        assert r.pipeline.queues.pending(route="a") == 2
        up.clear()  # a goes down, and b and c are down too: nothing may move
        await trio.sleep(0.5)
        assert r.pipeline.queues.pending(route="a") == 2
        up.add("c")  # c is up but encodes otherwise: still nothing
        await trio.sleep(0.5)
        assert r.pipeline.queues.pending(route="a") == 2
        up.add("b")
        with trio.fail_after(10):
            while r.pipeline.queues.pending(route="b") < 2:
                await trio.sleep(0.02)
        assert r.pipeline.queues.pending(route="a") == 0
        assert r.pipeline.counts["parts_rerouted"] == 2
        first, second = r.pipeline.get_nowait("b"), r.pipeline.get_nowait("b")
        assert first is not None and second is not None
        # Built for b, OTP first.
        assert [first.route, second.route] == ["b", "b"]
        parts = [cast(QueuedPart, op.part_id) for op in (first, second)]
        assert [p.message_id for p in parts] == [otp, notice]
        assert [p.route for p in parts] == ["b", "b"]


class _PausedStore(StoreWrapper):
    """The real store, with ``unfinished()`` pausing after its first page (of the size the
    pipeline asks for) until ``go`` is set: the test can then accept a message while a restore
    is under way."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.paused = trio.Event()
        self.go = trio.Event()

    async def unfinished(self, batch: int = 10_000) -> AsyncIterator[list[Any]]:
        async for page in self._store.unfinished(batch):
            yield page
            self.paused.set()
            await self.go.wait()


async def _leave_unsent(folder: Path, count: int) -> Settings:
    """Store ``count`` messages in ``folder``'s database and stop before any is sent; the
    settings to open that database again (no simulator behind them), restoring 50 a page."""
    async with running(folder, binds=False) as r:
        for n in range(count):
            await r.send(f"Bekleyen {n}")
    return _settings(folder, 9, pipeline={"fetch_batch": 50})


async def _accept_one_new(pipeline: Pipeline, settings: Settings) -> None:
    request = MessageRequest(TO, "Yeni", MessageClass.TRANSACTIONAL)
    [item] = await pipeline.accept(settings.tenants[0], [request])
    assert item.result is not None


async def test_a_restore_beside_new_accepts_queues_every_message_once(tmp_path: Path) -> None:
    settings = await _leave_unsent(tmp_path, 120)
    async with open_store(settings) as real:
        store = _PausedStore(real)
        pipeline = Pipeline(settings, store)
        restored: list[int] = []

        async def restore(task_status: trio.TaskStatus[None]) -> None:
            restored.append(await pipeline.restore(task_status=task_status))

        async with trio.open_nursery() as nursery:
            await nursery.start(restore)
            await store.paused.wait()
            # The first page ([pipeline] fetch_batch) is queued; the rest waits.
            assert pipeline.queues.pending() == 50
            await _accept_one_new(pipeline, settings)
            store.go.set()  # the restore's later pages now include the new message
    # Queued by its accept, and not a second time by the restore that read it from the store.
    assert restored == [120]
    assert pipeline.queues.pending() == 121


class _SlowToReturnStore(_PausedStore):
    """A :class:`_PausedStore` whose ``accept`` commits, lets the restore go on, and returns
    only once the restore has read and queued the rest: the restore sees the new message in
    the store before its accept has queued it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.restored = trio.Event()

    async def accept(self, messages: Any) -> Any:
        results = await self._store.accept(messages)
        self.go.set()
        await self.restored.wait()
        return results


async def test_a_restore_reading_a_message_before_its_accept_queues_it_leaves_it_to_the_accept(
    tmp_path: Path,
) -> None:
    settings = await _leave_unsent(tmp_path, 60)
    async with open_store(settings) as real:
        store = _SlowToReturnStore(real)
        pipeline = Pipeline(settings, store)

        async def restore(task_status: trio.TaskStatus[None]) -> None:
            await pipeline.restore(task_status=task_status)
            store.restored.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(restore)
            await store.paused.wait()
            await _accept_one_new(pipeline, settings)
    assert pipeline.queues.pending() == 61  # the new message once, not twice


async def test_a_multipart_message_sent_partly_before_a_restart_still_ends(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, binds=False) as r:
        rest_after = await r.send("x" * 300)  # two parts: the first goes before the stop
        receipt_after = await r.send("y" * 300)  # both go; one receipt comes after the stop
        sent = []
        while (op := r.pipeline.get_nowait("sim")) is not None:
            sent.append(op)
        first, _, third, fourth = sent  # rest_after's part 0, its part 1, receipt_after's
        for op, smsc_id in ((first, "0E0E01"), (third, "0E0E11"), (fourth, "0E0E12")):
            r.pipeline.on_submitted(op, smsc_id, "t", trio.current_time())
        for smsc_id in ("0E0E01", "0E0E11"):
            await r.pipeline.on_deliver(_receipt_pdu(smsc_id, "DELIVRD"), "t")
    async with running(tmp_path, binds=False) as r:
        op = r.pipeline.get_nowait("sim")  # rest_after's part 1, sent again; nothing else
        assert op is not None and r.pipeline.get_nowait("sim") is None
        r.pipeline.on_submitted(op, "0E0E02", "t", trio.current_time())
        for smsc_id in ("0E0E02", "0E0E12"):  # the second found through the store
            await r.pipeline.on_deliver(_receipt_pdu(smsc_id, "DELIVRD"), "t")
        views = [await r.wait_status(i, lambda s: s.is_final) for i in (rest_after, receipt_after)]
    assert [v.message.status for v in views] == [Status.DELIVERED, Status.DELIVERED]


async def test_a_multipart_message_keeps_its_reference_across_a_restart(tmp_path: Path) -> None:
    """Parts sent after a restart carry the concatenation reference of the parts sent before
    it, so the handset can join them (the reference is stored with the message)."""
    numbers = ["+905321234501", "+905321234502", "+905321234503"]
    async with running(tmp_path, binds=False) as r:
        for n, to in enumerate(numbers):
            await r.send(f"{n}" * 300, to=to)  # 2 parts of GSM-7 each, with a UDH
        ops = [r.pipeline.get_nowait("sim") for _ in range(6)]
        assert all(op is not None for op in ops)
        before = {}
        for op in ops[:5]:  # all but the last message's second part reach the SMSC
            assert op is not None
            udh = op.pdu.short_message[:6]
            before[op.pdu.destination_addr, udh[5]] = udh[3]
            r.pipeline.on_submitted(op, f"{len(before):X}", "t", trio.current_time())
    last = numbers[-1].removeprefix("+")
    async with running(tmp_path, binds=False) as r:
        op = r.pipeline.get_nowait("sim")
        assert op is not None and r.pipeline.get_nowait("sim") is None  # only that part is left
        udh = op.pdu.short_message[:6]
        assert (op.pdu.destination_addr, udh[5]) == (last, 2)
        # The third message's reference, not the first one a fresh allocator hands out.
        assert udh[3] == before[last, 1] != before[numbers[0].removeprefix("+"), 1]


async def test_an_accept_cancelled_while_it_commits_still_queues_its_message(
    tmp_path: Path,
) -> None:
    # A caller that goes away (an HTTP client hanging up) while its messages commit must not
    # leave them stored but unqueued: they would be sent only after a restart.
    store = {"url": f"sqlite://{tmp_path / 'ulak.db'}", "commit_max_delay_ms": 1000}
    async with running(tmp_path, binds=False, store=store) as r:
        request = MessageRequest(TO, "Siparişiniz hazırlanıyor", MessageClass.TRANSACTIONAL)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def caller() -> None:
                with scope:
                    await r.pipeline.accept(r.tenant, [request])

            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()  # waiting for its group's commit
            assert r.pipeline.queues.pending() == 0
            scope.cancel()
        with trio.fail_after(10):
            while r.pipeline.queues.pending() == 0:
                await trio.sleep(0.01)
        part = r.pipeline.get_nowait("sim")
        assert part is not None
        view = await r.store.get_message(r.tenant.name, part.part_id.message_id)  # type: ignore[attr-defined]
        assert view is not None and view.message.text == request.text


async def test_a_message_past_its_validity_in_the_queue_fails(tmp_path: Path) -> None:
    now = [time.time()]
    async with running(tmp_path, binds=False, wall=lambda: now[0]) as r:
        message_id = await r.send("Geç kalan", valid_for_s=60)
        now[0] += 61
        assert r.pipeline.get_nowait("sim") is None
        view = await r.wait_status(message_id, lambda s: s.is_final)
    assert view.message.status is Status.FAILED
