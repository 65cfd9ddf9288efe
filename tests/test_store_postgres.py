"""The store contract on PostgreSQL, plus what only PostgreSQL has: the trio-asyncio loop it
needs, its schema versions and the migration lock.

Each test gets a throwaway schema on the server at ``ULAK_DATABASE_URL``, dropped at teardown.
An unreachable server fails the test: nothing here is skipped.

The trio-asyncio loop is opened by the ``stores`` fixture itself and stays open until the
fixture's teardown. This works under pytest-trio because it runs every fixture and the test in
one shared ``contextvars`` context, so the loop the fixture's ``open_loop`` sets as current is
also current in the ``store`` fixture and in the test; the store also keeps a reference to its
loop, so its writer task does not depend on the context at all.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
import trio.testing
import trio_asyncio

from protocols.receipts import message_id_keys
from queues.migrations import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from queues.model import AcceptOutcome, ConsentRecord, MessageClass, PartView, Status, Transition
from queues.postgres import SCHEMA_VERSION, PostgresStore
from queues.store import Store, StoreError
from tests.store_contract import *  # noqa: F403
from tests.store_contract import ContractStore, Reopen, _message

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get("ULAK_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin(sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on a fresh connection (fixture setup and checks, not the store)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(DATABASE_URL, timeout=10)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    try:
        result: list[asyncpg.Record] = await trio_asyncio.aio_as_trio(run)()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL at ULAK_DATABASE_URL={DATABASE_URL!r} is not usable: {exc!r}."
            " Start it (see /work/.library/env) or point ULAK_DATABASE_URL at one."
        )
    return result


class _Stores:
    """Opens stores on one schema and closes the last one at teardown."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.current: PostgresStore | None = None

    async def open(self, **options: Any) -> PostgresStore:
        self.current = await PostgresStore.open(DATABASE_URL, schema=self.schema, **options)
        return self.current

    async def reopen(self, store: ContractStore) -> ContractStore:
        await store.aclose()
        return await self.open()

    async def close(self) -> None:
        if self.current is not None:
            await self.current.aclose()


@pytest.fixture
async def stores() -> AsyncIterator[_Stores]:
    async with trio_asyncio.open_loop():
        schema = f"ulak_test_{uuid.uuid4().hex[:16]}"
        await _admin("SELECT 1")  # fails the test clearly when the server is down
        stores = _Stores(schema)
        try:
            yield stores
        finally:
            with trio.CancelScope(shield=True):
                await stores.close()
                await _admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def store(stores: _Stores) -> PostgresStore:
    return await stores.open()


@pytest.fixture
def reopen(stores: _Stores) -> Reopen:
    return stores.reopen


async def test_postgres_store_is_a_store(store: PostgresStore) -> None:
    typed: ContractStore = store  # mypy checks the protocol (and `commits`) here
    plain: Store = typed
    assert plain is store
    assert typed.commits == 0


async def test_open_outside_trio_asyncio_loop_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match=r"trio_asyncio\.open_loop"):
        await PostgresStore.open(DATABASE_URL, schema="ulak_never_created")


async def test_unreachable_server_is_a_store_error() -> None:
    async with trio_asyncio.open_loop():
        with pytest.raises(StoreError, match="cannot connect"):
            await PostgresStore.open("postgresql://postgres@127.0.0.1:1/test")


async def test_bad_schema_name_is_refused() -> None:
    async with trio_asyncio.open_loop():
        with pytest.raises(StoreError, match="schema name"):
            await PostgresStore.open(DATABASE_URL, schema='x"; DROP TABLE y; --')


async def test_schema_is_versioned_and_newer_refused(stores: _Stores) -> None:
    assert SCHEMA_VERSION == SQLITE_SCHEMA_VERSION  # one numbering for both stores
    store = await stores.open()
    await store.aclose()
    await store.aclose()  # idempotent
    rows = await _admin(f'SELECT version FROM "{stores.schema}".schema_version ORDER BY version')
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    await (await stores.open()).aclose()  # reopening an up-to-date schema changes nothing
    await _admin(
        f"INSERT INTO \"{stores.schema}\".schema_version VALUES ($1, 'from the future', 0)",
        SCHEMA_VERSION + 1,
    )
    stores.current = None
    with pytest.raises(StoreError, match="newer"):
        await stores.open()


async def test_two_instances_migrate_one_schema_at_once(stores: _Stores) -> None:
    opened: list[PostgresStore] = []

    async def one() -> None:
        opened.append(await PostgresStore.open(DATABASE_URL, schema=stores.schema))

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        assert len(opened) == 3
        rows = await _admin(f'SELECT version FROM "{stores.schema}".schema_version')
        assert sorted(r[0] for r in rows) == list(range(1, SCHEMA_VERSION + 1))
        # Both see one database: what one writes, the others read.
        await test_accept_then_get_message(opened[0])  # noqa: F405
        message = _message("t-shared")
        await opened[1].accept([message])
        assert await opened[2].get_message("t-shared", message.id) is not None
    finally:
        with trio.CancelScope(shield=True):
            for s in opened:
                await s.aclose()


async def test_schema_4_keeps_one_history_row_per_event_of_a_one_part_message(
    stores: _Stores,
) -> None:
    """As on SQLite: a schema 3 history with a one-part message's events stored twice reads
    the same after the step, from one row per event."""
    from queues.postgres import MIGRATIONS, _connect, _migrate
    from tests.store_contract import ONE_PART_HISTORY, TWO_PART_HISTORY

    async def write_v3() -> None:
        pool = await _connect(DATABASE_URL, stores.schema, 1)
        try:
            assert await _migrate(pool, stores.schema, MIGRATIONS[:3]) == 3
            async with pool.acquire() as conn:
                for m, rows in ((one, ONE_PART_HISTORY), (two, TWO_PART_HISTORY)):
                    await conn.execute(
                        "INSERT INTO messages (id, tenant, klass, msisdn, text, encoding, parts,"
                        " created_at, valid_until, status, updated_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 1, 'delivered', 0)",
                        m.id, m.tenant, m.klass.value, m.to, m.text, m.encoding, m.parts,
                    )  # fmt: skip
                    await conn.executemany(
                        "INSERT INTO transitions (message_id, part, status, at)"
                        " VALUES ($1, $2, $3, $4)",
                        [(m.id, part, status.value, at) for status, at, part in rows],
                    )
        finally:
            await pool.close()

    one, two = _message("t-v3"), _message("t-v3", parts=2)
    await trio_asyncio.aio_as_trio(write_v3)()
    store = await stores.open()
    for m, rows in ((one, ONE_PART_HISTORY), (two, TWO_PART_HISTORY)):
        view = await store.get_message("t-v3", m.id)
        assert view is not None
        assert [(e.status, e.at, e.part) for e in view.history] == rows
    [count] = await _admin(
        f'SELECT count(*) FROM "{stores.schema}".transitions WHERE message_id = $1', one.id
    )
    assert count[0] == 3  # accepted, and one row for each of the two part events


async def test_tables_live_in_the_given_schema(store: PostgresStore) -> None:
    rows = await _admin(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        store.schema,
    )
    assert {r[0] for r in rows} == {
        "schema_version",
        "messages",
        "parts",
        "transitions",
        "consent",
        "otp",
        "totp",
        "held_receipts",
        "webhooks",
    }


async def test_closed_store_refuses_writes_and_reads(store: PostgresStore) -> None:
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.set_consent(ConsentRecord("t", "+905321234567", True, "api", 1.0))
    with pytest.raises(StoreError, match="closed"):
        await store.get_consent("t", "+905321234567")


async def test_a_failing_job_fails_only_its_caller(store: PostgresStore) -> None:
    """A duplicate message id aborts its group; the others in the group still commit."""
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
    assert "duplicate key" in str(errors[0])
    for m in good:
        view = await store.get_message(tenant, m.id)
        assert view is not None
        assert view.message.status is Status.ACCEPTED


async def test_aclose_commits_pending_writes(stores: _Stores) -> None:
    store = await stores.open(max_delay_s=0.05)
    messages = [_message("t-close") for _ in range(10)]
    async with trio.open_nursery() as nursery:
        for m in messages:
            nursery.start_soon(store.accept, [m])
        await trio.testing.wait_all_tasks_blocked()
        await store.aclose()
    store = await stores.open()
    for m in messages:
        assert await store.get_message("t-close", m.id) is not None


async def test_groups_are_bounded_by_max_batch(stores: _Stores) -> None:
    store = await stores.open(max_batch=10, max_delay_s=0.05)
    tenant = "t-batch"
    messages = [_message(tenant) for _ in range(40)]
    async with trio.open_nursery() as nursery:
        for m in messages:
            nursery.start_soon(store.accept, [m])
    assert store.commits >= 4
    ids = [m.id async for batch in store.unfinished(batch=7) for m in batch if m.tenant == tenant]
    assert sorted(ids) == sorted(m.id for m in messages)


async def test_cancelled_reads_leave_the_pool_working(store: PostgresStore) -> None:
    """Reads cancelled mid-flight (their asyncio tasks cancelled under asyncpg) must hand their
    connections back in a usable state."""
    tenant = "t-cancel"
    message = _message(tenant, parts=2)
    await store.accept([message])
    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(store.get_message, tenant, message.id)
            nursery.start_soon(store.marketing_sends_since, 0.0)
        for _ in range(5):
            await trio.sleep(0)
        nursery.cancel_scope.cancel()
    for _ in range(15):  # more than the pool's connections
        view = await store.get_message(tenant, message.id)
        assert view is not None
        assert len(view.parts) == 2


async def test_malformed_dsn_is_a_store_error() -> None:
    async with trio_asyncio.open_loop():
        with pytest.raises(StoreError, match="cannot connect"):
            await PostgresStore.open("postgresql://postgres@127.0.0.1:notaport/test")


async def test_transitions_of_one_part_in_one_call_apply_in_order(store: PostgresStore) -> None:
    """Several transitions of one part in one call (and so one UPDATE) end as if applied one
    by one: the last status and error win, the SMSC id and submission time stay."""
    tenant = "t-fold"
    message = _message(tenant, klass=MessageClass.MARKETING, parts=2)
    await store.accept([message])
    t = message.created_at
    await store.record(
        [
            Transition(message.id, Status.QUEUED, t + 1, part=0),
            Transition(message.id, Status.SUBMITTED, t + 2, part=0, smsc_id="00A1B2"),
            Transition(message.id, Status.UNDELIVERABLE, t + 3, part=0, error="0x0b"),
            Transition(message.id, Status.SUBMITTED, t + 2, part=1, smsc_id="c3"),
            Transition(message.id, Status.QUEUED, t + 4),
            Transition(message.id, Status.SUBMITTED, t + 5),
        ]
    )
    view = await store.get_message(tenant, message.id)
    assert view is not None
    assert view.message.status is Status.SUBMITTED
    assert view.parts == (
        PartView(0, Status.UNDELIVERABLE, "00A1B2", "0x0b"),
        PartView(1, Status.SUBMITTED, "c3", None),
    )
    assert len(view.history) == 7
    ref = await store.find_part(message_id_keys("a1b2"))
    assert ref is not None
    assert (ref.message_id, ref.part, ref.status) == (message.id, 0, Status.UNDELIVERABLE)
    sends = [s for s in await store.marketing_sends_since(t) if s[0] == tenant]
    assert sends == [(tenant, message.to, t + 2)]


_CHILD = textwrap.dedent(
    """
    import sys, time, trio, trio_asyncio
    from queues.model import MessageClass, NewMessage
    from queues.postgres import PostgresStore

    async def main(dsn, schema, n):
        async with trio_asyncio.open_loop():
            store = await PostgresStore.open(dsn, schema=schema)
            async def batch(start):
                await store.accept([
                    NewMessage(f"m{i}", "t", MessageClass.OTP, "+905321234567", None,
                               f"code {i}", "gsm7", 1, 1.0 + i, 1e10)
                    for i in range(start, min(start + 25, n))
                ])
            async with trio.open_nursery() as nursery:
                for start in range(0, n, 25):
                    nursery.start_soon(batch, start)
            print("accepted", flush=True)
            time.sleep(600)  # no aclose: killed here

    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


async def test_nothing_accepted_is_lost_on_kill_9(stores: _Stores) -> None:
    """Accept returns after COMMIT: killing the client right after loses nothing."""
    n = 500
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, DATABASE_URL, stores.schema, str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = await trio.to_thread.run_sync(select.select, [proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if line != "accepted\n":
            proc.kill()
            raise AssertionError(f"child said {line!r}; stderr: {proc.stderr.read()}")
        os.kill(proc.pid, signal.SIGKILL)
        assert await trio.to_thread.run_sync(proc.wait) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    store = await stores.open()
    ids = [m.id async for batch in store.unfinished(batch=64) for m in batch]
    assert ids == [f"m{i}" for i in range(n)]
