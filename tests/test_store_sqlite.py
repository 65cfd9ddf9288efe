"""The store contract on SQLite, plus what only SQLite has: its file, its schema versions, and
durability against ``kill -9`` of the process that accepted."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from queues.migrations import SCHEMA_VERSION
from queues.model import AcceptOutcome, ConsentRecord, MessageClass, Status, Transition
from queues.sqlite import SQLiteStore
from queues.store import Store, StoreError
from tests.store_contract import *  # noqa: F403
from tests.store_contract import ContractStore, Reopen

ROOT = Path(__file__).resolve().parent.parent


class _Stores:
    """Opens stores on one file and closes the last one at teardown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: SQLiteStore | None = None

    async def open(self) -> SQLiteStore:
        self.current = await SQLiteStore.open(str(self.path))
        return self.current

    async def reopen(self, store: ContractStore) -> ContractStore:
        await store.aclose()
        return await self.open()

    async def close(self) -> None:
        if self.current is not None:
            await self.current.aclose()


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[_Stores]:
    stores = _Stores(tmp_path / "ulak.db")
    yield stores
    with trio.CancelScope(shield=True):
        await stores.close()


@pytest.fixture
async def store(stores: _Stores) -> SQLiteStore:
    return await stores.open()


@pytest.fixture
def reopen(stores: _Stores) -> Reopen:
    return stores.reopen


async def test_sqlite_store_is_a_store(store: SQLiteStore) -> None:
    typed: ContractStore = store  # mypy checks the protocol (and `commits`) here
    plain: Store = typed
    assert plain is store
    assert typed.commits == 0


async def test_memory_database(tmp_path: Path) -> None:
    store = await SQLiteStore.open(":memory:")
    try:
        await test_accept_then_get_message(store)  # noqa: F405
        await test_find_part_by_smsc_id_variants(store)  # noqa: F405
    finally:
        await store.aclose()


async def test_schema_is_versioned_and_newer_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    store = await SQLiteStore.open(str(path))
    await store.aclose()
    await store.aclose()  # idempotent
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute(
            "INSERT INTO schema_version VALUES (?, 'from the future', 0)", (SCHEMA_VERSION + 1,)
        )
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore.open(str(path))


async def test_an_older_schema_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    from queues.migrations import MIGRATIONS, migrate
    from tests.store_contract import _message

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:2]) == 2  # as written by the previous release
    old = _message("t-old")
    conn.execute(
        "INSERT INTO messages (id, tenant, klass, msisdn, sender, text, encoding, parts,"
        " created_at, valid_until, status, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            old.id,
            old.tenant,
            old.klass.value,
            old.to,
            old.sender,
            old.text,
            old.encoding,
            old.parts,
            old.created_at,
            old.valid_until,
            old.status.value,
            old.created_at,
        ),
    )
    conn.close()
    store = await SQLiteStore.open(str(path))
    try:
        view = await store.get_message("t-old", old.id)
        assert view is not None and view.message == old  # concat_ref None: not known then
        assert [m.id async for batch in store.unfinished() for m in batch] == [old.id]
    finally:
        await store.aclose()


async def test_schema_4_keeps_one_history_row_per_event_of_a_one_part_message(
    tmp_path: Path,
) -> None:
    """Up to schema 3 a one-part message's history held each event twice (the part's row and
    a copy for the message); the step drops the copies and the history reads the same."""
    from queues.migrations import MIGRATIONS, migrate
    from tests.store_contract import ONE_PART_HISTORY, TWO_PART_HISTORY, _message

    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:3]) == 3
    one, two = _message("t-v3"), _message("t-v3", parts=2)
    for m, rows in ((one, ONE_PART_HISTORY), (two, TWO_PART_HISTORY)):
        conn.execute(
            "INSERT INTO messages (id, tenant, klass, msisdn, text, encoding, parts, created_at,"
            " valid_until, status, updated_at) VALUES (?,?,?,?,?,?,?,0,1,'delivered',0)",
            (m.id, m.tenant, m.klass.value, m.to, m.text, m.encoding, m.parts),
        )
        conn.executemany(
            "INSERT INTO transitions (message_id, part, status, at) VALUES (?,?,?,?)",
            [(m.id, part, status.value, at) for status, at, part in rows],
        )
    conn.close()
    store = await SQLiteStore.open(str(path))
    try:
        for m, rows in ((one, ONE_PART_HISTORY), (two, TWO_PART_HISTORY)):
            view = await store.get_message("t-v3", m.id)
            assert view is not None
            assert [(e.status, e.at, e.part) for e in view.history] == rows
        stored = store._conn.execute(
            "SELECT count(*) FROM transitions WHERE message_id = ?", (one.id,)
        ).fetchone()[0]
        assert stored == 3  # accepted, and one row for each of the two part events
    finally:
        await store.aclose()


async def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "c.db"))
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.set_consent(ConsentRecord("t", "+905321234567", True, "api", 1.0))


async def test_a_failing_job_fails_only_its_caller(store: SQLiteStore) -> None:
    """A duplicate message id aborts its group; the others in the group still commit."""
    from tests.store_contract import _message

    tenant = "t-dup"
    first = _message(tenant)
    await store.accept([first])
    good = [_message(tenant) for _ in range(5)]
    errors: list[BaseException] = []

    async def dup() -> None:
        try:
            await store.accept([first])
        except StoreError as exc:
            errors.append(exc)

    async def ok(i: int) -> None:
        (result,) = await store.accept([good[i]])
        assert result.outcome is AcceptOutcome.CREATED

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dup)
        for i in range(len(good)):
            nursery.start_soon(ok, i)
    assert len(errors) == 1
    for m in good:
        view = await store.get_message(tenant, m.id)
        assert view is not None
        assert view.message.status is Status.ACCEPTED


async def test_aclose_commits_pending_writes(tmp_path: Path) -> None:
    from tests.store_contract import _message

    path = tmp_path / "p.db"
    store = await SQLiteStore.open(str(path), max_delay_s=0.05)
    messages = [_message("t-close") for _ in range(10)]
    async with trio.open_nursery() as nursery:
        for m in messages:
            nursery.start_soon(store.accept, [m])
        await trio.testing.wait_all_tasks_blocked()
        await store.aclose()
    store = await SQLiteStore.open(str(path))
    try:
        for m in messages:
            assert await store.get_message("t-close", m.id) is not None
    finally:
        await store.aclose()


async def test_the_wal_starts_over_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the writer never idle, the checkpointer alone cannot restart the WAL (each of its
    checkpoints ends behind the writer), and the file grew by every commit. A long WAL is
    finished by the writer between two groups, and the next transaction writes it over."""
    from queues import sqlite as sqlite_module
    from tests.store_contract import _message

    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(sqlite_module, "_WAL_RESTART_FRAMES", 64)  # 256 KiB
    path = tmp_path / "w.db"
    store = await SQLiteStore.open(str(path), max_delay_s=0)
    written = 0
    try:

        async def writer() -> None:
            nonlocal written
            for _ in range(40):
                batch = [_message("t-wal", text="y" * 1500) for _ in range(50)]
                await store.accept(batch)
                written += sum(len(m.text) for m in batch)

        async with trio.open_nursery() as nursery:
            for _ in range(4):  # one commit always waiting behind the one being written
                nursery.start_soon(writer)
        wal = Path(f"{path}-wal").stat().st_size
    finally:
        await store.aclose()
    assert store.wal_restarts > 0
    # The texts alone are 12 MB, and the frames written for them (rows, indexes, pages written
    # again by later commits) about four times that: a WAL never started over is that long.
    # Written over from its start again and again, it stayed a fraction of it.
    assert written == 12_000_000
    assert wal < written


async def test_checkpoints_run_beside_the_writer_and_close_leaves_no_wal(tmp_path: Path) -> None:
    """The writer never checkpoints by itself (wal_autocheckpoint=0); the checkpointer copies
    the WAL into the database file while the store runs, and aclose truncates the WAL."""
    from tests.store_contract import _message

    path = tmp_path / "c.db"
    store = await SQLiteStore.open(str(path))
    try:
        empty = path.stat().st_size
        for _ in range(5):
            await store.accept([_message("t-ckpt", text="x" * 120) for _ in range(400)])
        assert Path(f"{path}-wal").stat().st_size > 0
        with trio.fail_after(30):
            while path.stat().st_size <= empty:  # only a checkpoint writes the database file
                await trio.sleep(0.02)
        # The writer connection never checkpoints by itself.
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        await store.aclose()
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    store = await SQLiteStore.open(str(path))
    try:
        assert len([m async for b in store.unfinished() for m in b]) == 2000
    finally:
        await store.aclose()


_CHILD = textwrap.dedent(
    """
    import sys, time, trio
    from queues.model import MessageClass, NewMessage
    from queues.sqlite import SQLiteStore

    async def main(path, n):
        store = await SQLiteStore.open(path)
        async def batch(start):
            await store.accept([
                NewMessage(f"m{i}", "t", MessageClass.OTP, "+905321234567", None, f"code {i}",
                           "gsm7", 1, 1.0 + i, 1e10)
                for i in range(start, min(start + 25, n))
            ])
        async with trio.open_nursery() as nursery:
            for start in range(0, n, 25):
                nursery.start_soon(batch, start)
        print("accepted", flush=True)
        time.sleep(600)  # no aclose, no checkpoint: killed here

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def test_nothing_accepted_is_lost_on_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    n = 500
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if line != "accepted\n":
            proc.kill()
            raise AssertionError(f"child said {line!r}; stderr: {proc.stderr.read()}")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    store = await SQLiteStore.open(str(path))
    try:
        ids = [m.id async for batch in store.unfinished(batch=64) for m in batch]
        assert ids == [f"m{i}" for i in range(n)]
    finally:
        await store.aclose()


async def test_an_otp_accept_joins_the_transaction_already_running(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OTP accept queued while a group is being written goes into that group's
    transaction, before its commit: one commit for both, not one after the other."""
    import threading

    import queues.sqlite as sqlite_module
    from tests.store_contract import _message

    writing = threading.Event()
    proceed = threading.Event()
    apply_transitions = sqlite_module._apply_transitions

    def held_apply(conn: Any, transitions: Any, *, again: bool = False) -> None:
        writing.set()  # the group under way: hold it open
        assert proceed.wait(10)
        apply_transitions(conn, transitions, again=again)

    monkeypatch.setattr(sqlite_module, "_apply_transitions", held_apply)
    tenant = "t-join"
    bulk = _message(tenant)
    await store.accept([bulk])
    before = store.commits
    otp = _message(tenant, klass=MessageClass.OTP)
    results: list[AcceptOutcome] = []

    async def accept_otp() -> None:
        (result,) = await store.accept([otp])
        results.append(result.outcome)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.record, [Transition(bulk.id, Status.QUEUED, 1.0)])
        await trio.to_thread.run_sync(writing.wait, 10)
        nursery.start_soon(accept_otp)
        await trio.testing.wait_all_tasks_blocked()  # the OTP job waits in its lane
        proceed.set()
    assert results == [AcceptOutcome.CREATED]
    assert store.commits == before + 1  # the transition and the OTP: one transaction
    view = await store.get_message(tenant, otp.id)
    assert view is not None and view.message.klass is MessageClass.OTP
    view = await store.get_message(tenant, bulk.id)
    assert view is not None and view.message.status is Status.QUEUED


class _HeldGroup:
    """Holds the writer thread in its first ``_apply_transitions`` until :meth:`release`, so a
    test can queue more work while a group of transitions is being written. ``fail_when``
    (given the transitions of a call) makes that call raise once, as a full disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        import threading

        import queues.sqlite as sqlite_module

        self.writing = threading.Event()
        self._proceed = threading.Event()
        self.calls = 0
        self.sizes: list[int] = []  # transitions per call
        self.committed_seen: list[int] = []  # OTP rows another connection saw, per later call
        self.otp_id = ""
        self.fail_when: Any = None
        self._path = path
        self._apply = sqlite_module._apply_transitions
        monkeypatch.setattr(sqlite_module, "_apply_transitions", self._held)

    def _held(self, conn: Any, transitions: Any, *, again: bool = False) -> None:
        self.calls += 1
        self.sizes.append(len(transitions))
        if self.calls == 1:
            self.writing.set()
            assert self._proceed.wait(10)
        elif self.otp_id:
            with sqlite3.connect(self._path) as other:  # what is committed, by now
                row = other.execute(
                    "SELECT count(*) FROM messages WHERE id = ?", (self.otp_id,)
                ).fetchone()
                self.committed_seen.append(row[0])
        if self.fail_when is not None and self.fail_when(transitions):
            self.fail_when = None
            raise sqlite3.OperationalError("database or disk is full")
        self._apply(conn, transitions, again=again)

    async def started(self) -> None:
        await trio.to_thread.run_sync(self.writing.wait, 10)

    def release(self) -> None:
        self._proceed.set()


async def _accepted(store: SQLiteStore, tenant: str, count: int) -> list[Any]:
    from tests.store_contract import _message

    messages = [_message(tenant) for _ in range(count)]
    await store.accept(messages)
    return messages


async def _history_counts(store: SQLiteStore, tenant: str, ids: list[str]) -> set[int]:
    """How many QUEUED rows each message's history holds (a set: {1} when all have one)."""
    counts = set()
    for message_id in ids:
        view = await store.get_message(tenant, message_id)
        assert view is not None and view.message.status is Status.QUEUED
        counts.add(sum(1 for e in view.history if e.status is Status.QUEUED))
    return counts


async def test_an_otp_accept_commits_early_in_the_middle_of_a_long_group_of_transitions(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a flood a group holds hundreds of transitions: an OTP accept that comes while
    it is written is committed after the slice under way, not after the whole group."""
    from tests.store_contract import _message

    held = _HeldGroup(monkeypatch, tmp_path / "ulak.db")
    tenant = "t-early"
    queued = await _accepted(store, tenant, 300)
    otp = _message(tenant, klass=MessageClass.OTP)
    held.otp_id = otp.id
    before = store.commits
    outcomes: list[AcceptOutcome] = []

    async def accept_otp() -> None:
        (result,) = await store.accept([otp])
        outcomes.append(result.outcome)

    with trio.fail_after(30):  # a job left unfinished would hang its caller
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.record, [Transition(m.id, Status.QUEUED, 1.0) for m in queued])
            await held.started()
            nursery.start_soon(accept_otp)
            await trio.testing.wait_all_tasks_blocked()  # the OTP job waits in its lane
            held.release()
    assert outcomes == [AcceptOutcome.CREATED]
    assert store.early_commits == 1
    assert store.commits == before + 2  # the first slice with the OTP, then the rest
    assert held.sizes == [256, 44]  # no OTP before: whole statements
    # The rest of the group was still to be written when the OTP was committed.
    assert held.committed_seen and held.committed_seen[0] == 1
    assert await _history_counts(store, tenant, [m.id for m in queued]) == {1}


async def test_a_first_lane_job_that_fails_in_an_early_commit_fails_alone_at_the_groups_end(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _HeldGroup(monkeypatch, tmp_path / "ulak.db")
    tenant = "t-early-dup"
    queued = await _accepted(store, tenant, 300)
    duplicate = queued[0]  # its id is taken: the accept fails
    errors: list[BaseException] = []

    async def accept_again() -> None:
        try:
            await store.accept([replace(duplicate, klass=MessageClass.OTP)])
        except StoreError as exc:
            errors.append(exc)

    with trio.fail_after(30):  # a job left unfinished would hang its caller
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.record, [Transition(m.id, Status.QUEUED, 1.0) for m in queued])
            await held.started()
            nursery.start_soon(accept_again)
            await trio.testing.wait_all_tasks_blocked()
            held.release()
    assert len(errors) == 1
    assert store.early_commits == 0
    assert await _history_counts(store, tenant, [m.id for m in queued]) == {1}


async def test_a_group_that_fails_after_an_early_commit_is_written_again_as_a_retry(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first slice of the group was committed with the OTP; then the group fails. Its
    jobs are written again one by one as retries: the committed slice's history rows are
    not added twice."""
    from tests.store_contract import _message

    held = _HeldGroup(monkeypatch, tmp_path / "ulak.db")
    tenant = "t-early-fail"
    first = await _accepted(store, tenant, 300)
    second = await _accepted(store, tenant, 10)
    second_ids = {m.id for m in second}
    held.fail_when = lambda ts: any(t.message_id in second_ids for t in ts)
    otp = _message(tenant, klass=MessageClass.OTP)

    with trio.fail_after(30):  # a job left unfinished would hang its caller
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.record, [Transition(m.id, Status.QUEUED, 1.0) for m in first])
            await held.started()
            nursery.start_soon(store.accept, [otp])
            # Joined at the end of the group, and failing there.
            nursery.start_soon(store.record, [Transition(m.id, Status.QUEUED, 2.0) for m in second])
            await trio.testing.wait_all_tasks_blocked()
            held.release()
    assert store.early_commits == 1
    assert held.fail_when is None  # the failure happened
    assert await _history_counts(store, tenant, [m.id for m in first + second]) == {1}
    view = await store.get_message(tenant, otp.id)
    assert view is not None and view.message.status is Status.ACCEPTED


async def test_while_otps_come_a_group_of_transitions_is_written_in_small_slices(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an OTP accept the writer looks for the next one every 64 transitions (so it
    waits less for the group under way); with none lately, every 256 (fewer statements)."""
    import queues.sqlite as sqlite_module
    from tests.store_contract import _message

    monkeypatch.setattr(sqlite_module, "_FIRST_RECENT_S", 3600.0)  # however slow this machine
    tenant = "t-slices"
    queued = await _accepted(store, tenant, 300)
    await store.accept([_message(tenant, klass=MessageClass.OTP)])
    held = _HeldGroup(monkeypatch, tmp_path / "ulak.db")
    held.release()  # nothing to hold up: only the sizes are looked at
    await store.record([Transition(m.id, Status.QUEUED, 1.0) for m in queued])
    assert held.sizes == [64, 64, 64, 64, 44]
    assert store.early_commits == 0  # no OTP came meanwhile: one transaction
    assert await _history_counts(store, tenant, [m.id for m in queued]) == {1}
