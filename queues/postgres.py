"""The PostgreSQL durable store: asyncpg under trio-asyncio, one writer task, group commit.

asyncpg is an asyncio library (DESIGN §6). The daemon opens one ``trio_asyncio.open_loop()``
at its top; :meth:`PostgresStore.open` captures that loop, and every crossing into asyncio
happens here, through :meth:`_aio`: all SQL runs in asyncio coroutines (one crossing per group
commit or per read), and callers see plain trio coroutine functions.

Writes (``accept``, ``record``, consent and OTP) are jobs on a queue. One writer task (a trio
system task, so the store's life is not tied to a caller's nursery) takes everything pending,
up to ``max_batch`` messages, and applies it in one transaction with ``executemany`` per table;
only after the COMMIT does it wake the callers of that group. A caller cancelled while it
waits leaves its job queued: the writer commits it all the same and never depends on a caller
still listening. Reads go through the connection pool.

The schema is versioned (``schema_version``) with the same step numbers as the SQLite store
(:mod:`queues.migrations`). Steps are applied at open in one transaction holding an advisory
lock, so two instances starting together on one schema do not race.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
import trio
import trio_asyncio

from protocols.receipts import canonical_message_id
from queues.group_commit import (
    GroupCommit,
    GroupCommitWrites,
    WriteJob,
    runs_of_kind,
    share_outcomes,
)
from queues.migrations import Migration
from queues.model import (
    FINAL_STATUSES_SQL,
    AcceptOutcome,
    AcceptResult,
    ConsentRecord,
    MessageClass,
    MessageRecord,
    MessageView,
    NewMessage,
    OtpRecord,
    PartRef,
    PartView,
    Status,
    Transition,
)
from queues.store import (
    HeldReceipt,
    StoreClosedError,
    StoredWebhook,
    StoreError,
    TotpEnrollment,
    history,
    stored_outcome,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
if TYPE_CHECKING:  # the stubs make these generic; the runtime classes are not
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]

_UNFINISHED = "status IN ('accepted', 'deferred', 'queued', 'submitted')"
_NOT_SENT = ["accepted", "deferred", "queued"]
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONNECT_TIMEOUT_S = 10.0

_MESSAGE_COLUMNS = (
    "id, tenant, klass, msisdn, sender, text, encoding, parts, created_at, valid_until,"
    " not_before, reference, callback_url, idempotency_key, request_hash, status, concat_ref"
)

# Same step numbers and tables as queues.migrations (SQLite); a new step is added to both.
# Times are float8 epoch seconds, as the model keeps them. Ids compare in the "C" collation so
# that keyset pagination in `unfinished` does not depend on the server's locale.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "messages, parts, transitions, consent ledger, OTP requests",
        (
            """
            CREATE TABLE messages (
                id text COLLATE "C" PRIMARY KEY,
                tenant text NOT NULL,
                klass text NOT NULL,
                msisdn text NOT NULL,
                sender text,
                text text NOT NULL,
                encoding text NOT NULL,
                parts integer NOT NULL,
                created_at double precision NOT NULL,
                valid_until double precision NOT NULL,
                not_before double precision,
                reference text,
                callback_url text,
                idempotency_key text,
                request_hash text,
                status text NOT NULL,
                updated_at double precision NOT NULL,
                UNIQUE (tenant, idempotency_key)
            )
            """,
            # Restart reads only the backlog, not the history.
            f"CREATE INDEX messages_unfinished ON messages (created_at, id) WHERE {_UNFINISHED}",
            """
            CREATE TABLE parts (
                message_id text COLLATE "C" NOT NULL,
                idx integer NOT NULL,
                status text NOT NULL,
                smsc_id text,
                smsc_key text,
                error text,
                submitted_at double precision,
                PRIMARY KEY (message_id, idx)
            )
            """,
            # smsc_key is protocols.receipts.canonical_message_id of the submit_sm_resp id.
            "CREATE INDEX parts_smsc_key ON parts (smsc_key) WHERE smsc_key IS NOT NULL",
            "CREATE INDEX parts_submitted ON parts (submitted_at) WHERE submitted_at IS NOT NULL",
            # seq keeps insertion order for equal times.
            """
            CREATE TABLE transitions (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                message_id text COLLATE "C" NOT NULL,
                part integer,
                status text NOT NULL,
                at double precision NOT NULL,
                error text
            )
            """,
            "CREATE INDEX transitions_message ON transitions (message_id, at, seq)",
            """
            CREATE TABLE consent (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tenant text NOT NULL,
                msisdn text NOT NULL,
                opted_in boolean NOT NULL,
                source text NOT NULL,
                at double precision NOT NULL
            )
            """,
            "CREATE INDEX consent_number ON consent (tenant, msisdn, at, seq)",
            """
            CREATE TABLE otp (
                request_id text PRIMARY KEY,
                tenant text NOT NULL,
                msisdn text NOT NULL,
                code_hash bytea NOT NULL,
                created_at double precision NOT NULL,
                expires_at double precision NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                used_at double precision,
                message_id text
            )
            """,
        ),
    ),
    Migration(
        2,
        "TOTP enrollments",
        (
            """
            CREATE TABLE totp (
                tenant text NOT NULL,
                "user" text NOT NULL,
                secret_enc bytea NOT NULL,
                last_step bigint,
                PRIMARY KEY (tenant, "user")
            )
            """,
        ),
    ),
    Migration(
        3,
        "the concatenation reference of a multipart message",
        ("ALTER TABLE messages ADD COLUMN concat_ref integer",),
    ),
    Migration(
        4,
        "one history row per event of a one-part message",
        (
            """
            DELETE FROM transitions t
            WHERE t.part IS NULL AND EXISTS (
                SELECT 1 FROM transitions p JOIN messages m ON m.id = p.message_id
                WHERE p.message_id = t.message_id AND p.part = 0 AND m.parts = 1
                    AND p.status = t.status AND p.at = t.at
            )
            """,
        ),
    ),
    Migration(
        5,
        "early receipts answered before a part claimed them",
        (
            """
            CREATE TABLE held_receipts (
                smsc_key text COLLATE "C" PRIMARY KEY,
                smsc_id text NOT NULL,
                state integer NOT NULL,
                err text,
                received_at double precision NOT NULL
            )
            """,
        ),
    ),
    Migration(
        6,
        "webhook events not delivered yet",
        (
            """
            CREATE TABLE webhooks (
                event_id text COLLATE "C" PRIMARY KEY,
                tenant text NOT NULL,
                url text NOT NULL,
                body bytea NOT NULL,
                created_at double precision NOT NULL
            )
            """,
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The version this code writes and reads."""


class PostgresStore(GroupCommitWrites):
    """:class:`queues.store.Store` on PostgreSQL (see the module docstring).

    Attributes:
        commits: write transactions committed so far (group commit makes this far smaller
            than the number of write calls under load).
    """

    def __init__(
        self,
        loop: Any,
        pool: Pool,
        *,
        schema: str,
        max_batch: int,
        max_delay_s: float,
    ) -> None:
        # Use `open`: the pool must already exist and the schema be migrated. `loop` is the
        # trio_asyncio loop (untyped: trio_asyncio ships no type information).
        self.commits = 0
        self.schema = schema
        self._loop = loop
        self._pool = pool
        self._commit = GroupCommit(
            self._write_on_loop,
            max_batch=max_batch,
            max_delay_s=max_delay_s,
            name="PostgreSQL",
            failure=_store_error,
            # asyncio.CancelledError (a BaseException) comes when the asyncio loop shuts down
            # under a running group: escaping a system task, it would crash the whole trio run.
            catch=(Exception, asyncio.CancelledError),
            # An OTP accept commits on a connection of its own beside a group of thousands of
            # transitions, instead of after it (PostgreSQL runs the two side by side).
            first_apart=True,
        )
        self._closed = False

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        max_batch: int = 1000,
        max_delay_s: float = 0.002,
    ) -> PostgresStore:
        """Connect, create ``schema`` if missing, migrate it, and start the writer.

        Must run inside ``async with trio_asyncio.open_loop():``; the store keeps using that
        loop, so it must stay open until :meth:`aclose` returns.

        Args:
            dsn: a ``postgresql://`` URL (asyncpg syntax).
            schema: where every table lives (each pool connection's ``search_path``).
            pool_size: at most this many connections (the writer takes one per group).
            max_batch: at most this many messages (or transitions) per transaction.
            max_delay_s: how long the first write of an idle store waits for others to join.

        Raises:
            StoreError: no trio-asyncio loop, a bad schema name, the server cannot be reached,
                or the schema is newer than this code.
        """
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"invalid PostgreSQL schema name {schema!r}")
        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise StoreError(
                "PostgresStore.open must be called inside `async with trio_asyncio.open_loop():`"
                " (asyncpg runs on that asyncio loop)"
            )
        try:
            pool = await loop.run_aio_coroutine(_connect(dsn, schema, pool_size))
        except (TimeoutError, OSError, ValueError, asyncpg.PostgresError) as exc:
            # ValueError: asyncpg's ClientConfigurationError, a malformed DSN.
            raise StoreError(f"PostgreSQL: cannot connect: {exc}") from exc
        try:
            await loop.run_aio_coroutine(_migrate(pool, schema))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await loop.run_aio_coroutine(pool.close())
            if isinstance(exc, asyncpg.PostgresError | OSError):
                raise StoreError(f"PostgreSQL: cannot migrate schema {schema}: {exc}") from exc
            raise
        store = cls(loop, pool, schema=schema, max_batch=max_batch, max_delay_s=max_delay_s)
        trio.lowlevel.spawn_system_task(store._commit.run, name=f"postgres writer {schema}")
        return store

    async def _aio(self, coro: Coroutine[Any, Any, T]) -> T:
        """The one crossing into asyncio: run ``coro`` on the store's loop."""
        result: T = await self._loop.run_aio_coroutine(coro)
        return result

    # --- the writer, on the asyncio side ----------------------------------------------------

    async def _write_on_loop(self, group: list[WriteJob]) -> None:
        await self._aio(self._write_group(group))

    async def _write_group(self, group: list[WriteJob]) -> None:
        """Apply a group in one transaction; if it fails, apply its jobs one by one so that
        one bad job (say, a duplicate message id) fails only its own caller."""
        conn = await self._pool.acquire()
        try:
            try:
                await self._transaction(conn, group)
            except Exception as exc:
                if len(group) == 1 or conn.is_closed():
                    for job in group:
                        job.error = _store_error(exc)
                    if _connection_lost(exc):  # the idle sessions are likely gone as well
                        await self._pool.expire_connections()
                    return
                logger.warning("group commit of %d jobs failed, retrying one by one", len(group))
                for job in group:
                    try:
                        await self._transaction(conn, [job])
                    except Exception as job_exc:
                        job.error = _store_error(job_exc)
        finally:
            try:
                await self._pool.release(conn)
            except Exception as exc:
                # The pool drops the connection and opens another; what was committed stays
                # committed (failing the group here made its callers store it twice).
                logger.warning("PostgreSQL connection lost after a write: %s", exc)

    async def _transaction(self, conn: Conn, group: list[WriteJob]) -> None:
        results: dict[int, list[AcceptResult]] = {}
        async with conn.transaction():
            # One executemany per table for each run of jobs of one kind.
            for kind, run in runs_of_kind(group):
                if kind == "accept":
                    messages = [m for job in run for m in job.messages]
                    outcomes = await _insert_messages(conn, messages)
                    share_outcomes(run, outcomes, results)
                elif kind == "record":
                    transitions = [t for job in run for t in job.transitions]
                    await _apply_transitions(conn, transitions, again=run[0].again)
                elif kind == "consent":
                    await _insert_consent(conn, [job.consent for job in run if job.consent])
                elif kind == "totp_put":
                    for job in run:
                        assert job.totp is not None
                        await _put_totp(conn, job.totp)
                elif kind == "hooks_put":
                    hooks = [h for job in run for h in job.hooks]
                    await conn.execute(
                        "INSERT INTO webhooks (event_id, tenant, url, body, created_at)"
                        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[],"
                        " $5::float8[]) ON CONFLICT (event_id) DO NOTHING",
                        [h.event_id for h in hooks],
                        [h.tenant for h in hooks],
                        [h.url for h in hooks],
                        [h.body for h in hooks],
                        [h.created_at for h in hooks],
                    )
                elif kind == "hooks_drop":
                    await conn.execute(
                        "DELETE FROM webhooks WHERE event_id = ANY($1::text[])",
                        [i for job in run for i in job.hook_ids],
                    )
                elif kind in ("hold", "drop_held"):
                    for job in run:
                        await _apply_held(conn, job)
                else:
                    for job in run:
                        await _apply_otp(conn, job)
        self.commits += 1
        for job in group:
            job.results = results.get(id(job), [])
            job.error = None

    # --- reads ------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if self._commit.closing:
            raise StoreClosedError("the store is closed")

        async def run() -> T:
            # One snapshot for the read's several SELECTs.
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await fn(conn)

        for attempt in (1, 2):
            try:
                return await self._aio(run())
            except Exception as exc:
                error = _store_error(exc)
                if error is exc:
                    raise
                if attempt == 1 and _connection_lost(exc):
                    # The server dropped the pool's sessions (a restart, a failover): the
                    # idle ones are dead too, and a read is safe to run again.
                    await self._aio(self._pool.expire_connections())
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    async def find_part(self, smsc_id_keys: Sequence[str]) -> PartRef | None:
        keys = list(dict.fromkeys(smsc_id_keys))
        if not keys:
            await trio.lowlevel.checkpoint()
            return None

        async def read(conn: Conn) -> PartRef | None:
            rows = await conn.fetch(
                "SELECT p.message_id, p.idx, m.parts, m.tenant, p.status, p.smsc_key,"
                " p.submitted_at FROM parts p JOIN messages m ON m.id = p.message_id"
                " WHERE p.smsc_key = ANY($1::text[])",
                keys,
            )
            if not rows:
                return None
            # Several candidates (message_id_keys on false matches): prefer the one written in
            # the receipt's own form, then a part still waiting, then the latest submitted.
            best = max(
                rows,
                key=lambda r: (r[5] == keys[0], not Status(r[4]).is_final, r[6] or 0.0),
            )
            return PartRef(best[0], best[1], best[2], best[3], Status(best[4]))

        return await self._read(read)

    async def callback_targets(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, str, int]]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}

        async def read(conn: Conn) -> dict[str, tuple[str, str | None, str, int]]:
            rows = await conn.fetch(
                "SELECT id, tenant, callback_url, msisdn, parts FROM messages"
                " WHERE id = ANY($1::text[])",
                ids,
            )
            return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

        return await self._read(read)

    async def get_message(self, tenant: str, message_id: str) -> MessageView | None:
        async def read(conn: Conn) -> MessageView | None:
            row = await conn.fetchrow(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND tenant = $2",
                message_id,
                tenant,
            )
            if row is None:
                return None
            parts = tuple(
                PartView(r[0], Status(r[1]), r[2], r[3])
                for r in await conn.fetch(
                    "SELECT idx, status, smsc_id, error FROM parts"
                    " WHERE message_id = $1 ORDER BY idx",
                    message_id,
                )
            )
            message = _message(row)
            rows = await conn.fetch(
                "SELECT status, at, part, error FROM transitions"
                " WHERE message_id = $1 ORDER BY at, seq",
                message_id,
            )
            events = history((tuple(r) for r in rows), message.parts)
            return MessageView(message, parts, events)

        return await self._read(read)

    async def unfinished(self, batch: int = 10_000) -> AsyncIterator[list[MessageRecord]]:
        # Keyset pagination on (created_at, id): each batch is a short read, and messages that
        # become final meanwhile simply drop out.
        after: tuple[float, str] | None = None
        while True:

            async def read(
                conn: Conn, after: tuple[float, str] | None = after
            ) -> list[asyncpg.Record]:
                if after is None:
                    return await conn.fetch(
                        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {_UNFINISHED}"
                        " ORDER BY created_at, id LIMIT $1",
                        batch,
                    )
                return await conn.fetch(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {_UNFINISHED}"
                    " AND (created_at, id) > ($1::float8, $2::text)"
                    " ORDER BY created_at, id LIMIT $3",
                    *after,
                    batch,
                )

            rows = await self._read(read)
            if not rows:
                return
            records = [_message(row) for row in rows]
            yield records
            if len(rows) < batch:
                return
            after = (records[-1].created_at, records[-1].id)

    async def parts_to_send(self, message_id: str) -> list[int]:
        async def read(conn: Conn) -> list[int]:
            rows = await conn.fetch(
                "SELECT idx FROM parts WHERE message_id = $1 AND status = ANY($2::text[])"
                " ORDER BY idx",
                message_id,
                _NOT_SENT,
            )
            return [int(r[0]) for r in rows]

        return await self._read(read)

    async def marketing_sends_since(self, since: float) -> list[tuple[str, str, float]]:
        async def read(conn: Conn) -> list[tuple[str, str, float]]:
            # A message counts once, at its first part's submission.
            rows = await conn.fetch(
                "SELECT m.tenant, m.msisdn, min(p.submitted_at) AS first FROM messages m"
                " JOIN parts p ON p.message_id = m.id"
                " WHERE m.klass = $1 AND m.id IN"
                " (SELECT message_id FROM parts WHERE submitted_at >= $2)"
                " GROUP BY m.id HAVING min(p.submitted_at) >= $2 ORDER BY first, m.id",
                MessageClass.MARKETING.value,
                since,
            )
            return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

        return await self._read(read)

    async def get_consent(self, tenant: str, msisdn: str) -> ConsentRecord | None:
        async def read(conn: Conn) -> ConsentRecord | None:
            row = await conn.fetchrow(
                "SELECT tenant, msisdn, opted_in, source, at FROM consent"
                " WHERE tenant = $1 AND msisdn = $2 ORDER BY at DESC, seq DESC LIMIT 1",
                tenant,
                msisdn,
            )
            return None if row is None else _consent(row)

        return await self._read(read)

    async def stored_outcomes(self, messages: Sequence[NewMessage]) -> list[AcceptResult | None]:
        found = await self._read(lambda conn: _stored_keys(conn, list(messages)))
        return [stored_outcome(m, found) for m in messages]

    async def consents_of(self, tenant: str, msisdns: Sequence[str]) -> dict[str, ConsentRecord]:
        numbers = list(dict.fromkeys(msisdns))
        if not numbers:
            return {}

        async def read(conn: Conn) -> dict[str, ConsentRecord]:
            rows = await conn.fetch(
                "SELECT DISTINCT ON (msisdn) tenant, msisdn, opted_in, source, at FROM consent"
                " WHERE tenant = $1 AND msisdn = ANY($2::text[])"
                " ORDER BY msisdn, at DESC, seq DESC",
                tenant,
                numbers,
            )
            return {r[1]: _consent(r) for r in rows}

        return await self._read(read)

    async def consent_history(self, tenant: str, msisdn: str) -> list[ConsentRecord]:
        async def read(conn: Conn) -> list[ConsentRecord]:
            rows = await conn.fetch(
                "SELECT tenant, msisdn, opted_in, source, at FROM consent"
                " WHERE tenant = $1 AND msisdn = $2 ORDER BY at, seq",
                tenant,
                msisdn,
            )
            return [_consent(r) for r in rows]

        return await self._read(read)

    async def get_otp(self, tenant: str, request_id: str) -> OtpRecord | None:
        async def read(conn: Conn) -> OtpRecord | None:
            row = await conn.fetchrow(
                "SELECT request_id, tenant, msisdn, code_hash, created_at, expires_at, attempts,"
                " used_at, message_id FROM otp WHERE request_id = $1 AND tenant = $2",
                request_id,
                tenant,
            )
            if row is None:
                return None
            return OtpRecord(
                row[0], row[1], row[2], bytes(row[3]), row[4], row[5], row[6], row[7], row[8]
            )

        return await self._read(read)

    async def held_receipts(self) -> list[HeldReceipt]:
        async def read(conn: Conn) -> list[HeldReceipt]:
            rows = await conn.fetch(
                "SELECT smsc_id, state, err, received_at FROM held_receipts"
                " ORDER BY received_at, smsc_key"
            )
            return [HeldReceipt(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._read(read)

    async def pending_webhooks(self) -> list[StoredWebhook]:
        async def read(conn: Conn) -> list[StoredWebhook]:
            rows = await conn.fetch(
                "SELECT event_id, tenant, url, body, created_at FROM webhooks"
                " ORDER BY created_at, event_id"
            )
            return [StoredWebhook(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

        return await self._read(read)

    async def get_totp(self, tenant: str, user: str) -> TotpEnrollment | None:
        async def read(conn: Conn) -> TotpEnrollment | None:
            row = await conn.fetchrow(
                'SELECT tenant, "user", secret_enc, last_step FROM totp'
                ' WHERE tenant = $1 AND "user" = $2',
                tenant,
                user,
            )
            if row is None:
                return None
            return TotpEnrollment(row[0], row[1], bytes(row[2]), row[3])

        return await self._read(read)

    # --- life cycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Commit every pending write, stop the writer and close the pool (which waits for
        reads in progress to hand their connections back)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        await self._commit.close()
        self._closed = True
        await self._aio(self._pool.close())


# --- asyncio-side helpers -------------------------------------------------------------------


def _quote(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


async def _connect(dsn: str, schema: str, pool_size: int) -> Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=pool_size,
        timeout=_CONNECT_TIMEOUT_S,
        # application_name: how an operator tells the gateway's sessions in pg_stat_activity.
        server_settings={"search_path": _quote(schema), "application_name": "ulak"},
    )
    assert pool is not None  # create_pool returns None only when awaited without init
    return pool


def _lock_key(schema: str) -> int:
    """A 64-bit advisory lock id for migrating ``schema`` (other schemas migrate freely)."""
    digest = hashlib.blake2b(f"ulak-migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _migrate(pool: Pool, schema: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the pending steps in one transaction and return the resulting version.

    The transaction-scoped advisory lock comes first: creating the schema itself races (a
    unique violation in the catalog) when two instances create one schema at once.
    """
    latest = migrations[-1].version if migrations else 0
    quoted = _quote(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        # CREATE SCHEMA checks the CREATE privilege even when the schema exists: a role that
        # may only use a schema made for it must not need that privilege.
        if not await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {quoted}")
        # Resolve unqualified names against the schema created just now.
        await conn.execute(f"SET LOCAL search_path TO {quoted}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY,"
            " description text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
        version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if version > latest:
            raise StoreError(
                f"database schema {schema} version {version} is newer than this code"
                f" ({latest}); upgrade Ulak or restore a matching backup"
            )
        for step in migrations:
            if step.version <= version:
                continue
            for statement in step.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
                step.version,
                step.description,
                time.time(),
            )
            version = step.version
    return version


async def _insert_messages(conn: Conn, messages: list[NewMessage]) -> list[AcceptResult]:
    """Insert what is new; REPLAYED/CONFLICT for a key already stored or earlier in the list.

    The lookup and the inserts share the writer's transaction; another instance inserting the
    same key meanwhile makes the INSERT fail on the unique constraint, and the job retried on
    its own then finds the key.
    """
    seen = await _stored_keys(conn, messages)
    results: list[AcceptResult] = []
    new: list[NewMessage] = []
    for m in messages:
        if m.idempotency_key is not None:
            key = (m.tenant, m.idempotency_key)
            replay = stored_outcome(m, seen)
            if replay is not None:
                results.append(replay)
                continue
            seen[key] = (m.id, m.request_hash)
        new.append(m)
        results.append(AcceptResult(m.id, AcceptOutcome.CREATED))
    if not new:
        return results
    # One statement per table with a column array each (unnest): measured here about 2.7x the
    # rows/s of executemany, which still pays a Bind/Execute per row.
    await conn.execute(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}, updated_at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[], $7::text[], $8::integer[], $9::float8[], $10::float8[], $11::float8[],"
        " $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::integer[],"
        " $18::float8[])",
        [m.id for m in new],
        [m.tenant for m in new],
        [m.klass.value for m in new],
        [m.to for m in new],
        [m.sender for m in new],
        [m.text for m in new],
        [m.encoding for m in new],
        [m.parts for m in new],
        [float(m.created_at) for m in new],
        [float(m.valid_until) for m in new],
        [None if m.not_before is None else float(m.not_before) for m in new],
        [m.reference for m in new],
        [m.callback_url for m in new],
        [m.idempotency_key for m in new],
        [m.request_hash for m in new],
        [m.status.value for m in new],
        [m.concat_ref for m in new],
        [float(m.created_at) for m in new],
    )
    parts = [(m.id, idx, m.status.value) for m in new for idx in range(m.parts)]
    await conn.execute(
        "INSERT INTO parts (message_id, idx, status)"
        " SELECT * FROM unnest($1::text[], $2::integer[], $3::text[])",
        *(list(column) for column in zip(*parts, strict=True)),
    )
    await conn.execute(
        "INSERT INTO transitions (message_id, status, at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])",
        [m.id for m in new],
        [m.status.value for m in new],
        [float(m.created_at) for m in new],
    )
    return results


async def _stored_keys(
    conn: Conn, messages: list[NewMessage]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    pairs = {(m.tenant, m.idempotency_key) for m in messages if m.idempotency_key is not None}
    if not pairs:
        return {}
    tenants, keys = zip(*sorted(pairs), strict=True)
    rows = await conn.fetch(
        "SELECT m.tenant, m.idempotency_key, m.id, m.request_hash FROM messages m"
        " JOIN unnest($1::text[], $2::text[]) AS k(tenant, key)"
        " ON m.tenant = k.tenant AND m.idempotency_key = k.key",
        list(tenants),
        list(keys),
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


async def _apply_transitions(
    conn: Conn, transitions: list[Transition], *, again: bool = False
) -> None:
    """Apply transitions in order, one statement per table.

    One UPDATE sets a row once, so the transitions of a part are folded here first: the last
    status and error win, and an ``smsc_id`` or submission time, once given, stays (as if
    each were applied in turn with ``coalesce``).
    """
    parts: dict[tuple[str, int], tuple[str, str | None, str | None, str | None, float | None]]
    parts = {}
    messages: dict[str, tuple[str, float]] = {}
    for t in transitions:
        if t.part is None or t.whole:
            messages[t.message_id] = (t.status.value, float(t.at))
            if t.part is None:
                continue
        key = (t.message_id, t.part)
        smsc_id = t.smsc_id
        smsc_key = None
        if smsc_id is not None:
            smsc_key = canonical_message_id(smsc_id) or None  # an empty id has no key
        submitted_at = float(t.at) if t.status is Status.SUBMITTED else None
        before = parts.get(key)
        if before is not None:
            smsc_id = smsc_id if smsc_id is not None else before[1]
            smsc_key = smsc_key if smsc_key is not None else before[2]
            submitted_at = submitted_at if submitted_at is not None else before[4]
        parts[key] = (t.status.value, smsc_id, smsc_key, t.error, submitted_at)
    kept = _kept if again else _set
    # Sorted, so that two instances updating the same rows lock them in one order.
    if parts:
        rows = sorted(parts.items())
        await conn.execute(
            f"UPDATE parts p SET status = {kept('p', 'status')},"
            " smsc_id = coalesce(u.smsc_id, p.smsc_id),"
            f" smsc_key = coalesce(u.smsc_key, p.smsc_key), error = {kept('p', 'error')},"
            " submitted_at = coalesce(u.submitted_at, p.submitted_at)"
            " FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::float8[])"
            " AS u(message_id, idx, status, smsc_id, smsc_key, error, submitted_at)"
            " WHERE p.message_id = u.message_id AND p.idx = u.idx",
            [k[0] for k, _ in rows],
            [k[1] for k, _ in rows],
            *([v[i] for _, v in rows] for i in range(5)),
        )
    if messages:
        ordered = sorted(messages.items())
        await conn.execute(
            f"UPDATE messages m SET status = {kept('m', 'status')}, updated_at = u.at"
            " FROM unnest($1::text[], $2::text[], $3::float8[]) AS u(id, status, at)"
            " WHERE m.id = u.id",
            [k for k, _ in ordered],
            [v[0] for _, v in ordered],
            [v[1] for _, v in ordered],
        )
    # The history keeps every transition, in the order given (seq), of known messages only;
    # again, only the events not in it yet (that call may have committed).
    stored_already = (
        " AND NOT EXISTS (SELECT 1 FROM transitions h WHERE h.message_id = u.message_id"
        " AND h.part IS NOT DISTINCT FROM u.part AND h.status = u.status AND h.at = u.at)"
    )
    await conn.execute(
        "INSERT INTO transitions (message_id, part, status, at, error)"
        " SELECT u.message_id, u.part, u.status, u.at, u.error"
        " FROM unnest($1::text[], $2::integer[], $3::text[], $4::float8[], $5::text[])"
        " WITH ORDINALITY AS u(message_id, part, status, at, error, n)"
        " WHERE EXISTS (SELECT 1 FROM messages m WHERE m.id = u.message_id)"
        + (stored_already if again else "")
        + " ORDER BY u.n",
        [t.message_id for t in transitions],
        [t.part for t in transitions],
        [t.status.value for t in transitions],
        [float(t.at) for t in transitions],
        [t.error for t in transitions],
    )


def _kept(row: str, column: str) -> str:
    """SQL for ``column`` of ``row`` set to ``u.column`` unless the row's status is final and
    ``u.status`` is not. A final status stays (with its error): a batch of transitions retried
    after a failed commit may land after a later batch that finished the part. (Batches not
    retried are written in order, and skip the test.)"""
    final = FINAL_STATUSES_SQL
    return (
        f"CASE WHEN {row}.status IN {final} AND u.status NOT IN {final}"
        f" THEN {row}.{column} ELSE u.{column} END"
    )


def _set(row: str, column: str) -> str:
    return f"u.{column}"


async def _insert_consent(conn: Conn, records: list[ConsentRecord]) -> None:
    await conn.executemany(
        "INSERT INTO consent (tenant, msisdn, opted_in, source, at) VALUES ($1, $2, $3, $4, $5)",
        [(c.tenant, c.msisdn, c.opted_in, c.source, float(c.at)) for c in records],
    )


async def _put_totp(conn: Conn, t: TotpEnrollment) -> None:
    await conn.execute(
        'INSERT INTO totp (tenant, "user", secret_enc, last_step) VALUES ($1, $2, $3, $4)'
        ' ON CONFLICT (tenant, "user")'
        " DO UPDATE SET secret_enc = excluded.secret_enc, last_step = excluded.last_step",
        t.tenant,
        t.user,
        t.secret_enc,
        t.last_step,
    )


async def _apply_held(conn: Conn, job: WriteJob) -> None:
    if job.held is not None:
        h = job.held
        await conn.execute(
            "INSERT INTO held_receipts (smsc_key, smsc_id, state, err, received_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (smsc_key) DO UPDATE SET"
            " smsc_id = excluded.smsc_id, state = excluded.state, err = excluded.err,"
            " received_at = excluded.received_at",
            canonical_message_id(h.smsc_id),
            h.smsc_id,
            h.state,
            h.err,
            float(h.received_at),
        )
        return
    assert job.drop_held is not None
    smsc_ids, before = job.drop_held
    await conn.execute(
        "DELETE FROM held_receipts WHERE received_at < $1 OR smsc_key = ANY($2::text[])",
        float(before),
        [canonical_message_id(i) for i in smsc_ids],
    )


async def _apply_otp(conn: Conn, job: WriteJob) -> None:
    o = job.otp
    assert o is not None
    if job.kind == "otp_put":
        await conn.execute(
            "INSERT INTO otp (request_id, tenant, msisdn, code_hash, created_at, expires_at,"
            " attempts, used_at, message_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            o.request_id,
            o.tenant,
            o.msisdn,
            o.code_hash,
            float(o.created_at),
            float(o.expires_at),
            o.attempts,
            None if o.used_at is None else float(o.used_at),
            o.message_id,
        )
    else:
        await conn.execute(
            "UPDATE otp SET attempts = $1, used_at = $2, message_id = coalesce($3, message_id)"
            " WHERE request_id = $4 AND tenant = $5",
            o.attempts,
            None if o.used_at is None else float(o.used_at),
            o.message_id,
            o.request_id,
            o.tenant,
        )


def _message(row: asyncpg.Record) -> MessageRecord:
    return MessageRecord(
        id=row[0],
        tenant=row[1],
        klass=MessageClass(row[2]),
        to=row[3],
        sender=row[4],
        text=row[5],
        encoding=row[6],
        parts=row[7],
        created_at=row[8],
        valid_until=row[9],
        not_before=row[10],
        reference=row[11],
        callback_url=row[12],
        idempotency_key=row[13],
        request_hash=row[14],
        status=Status(row[15]),
        concat_ref=row[16],
    )


def _consent(row: asyncpg.Record) -> ConsentRecord:
    return ConsentRecord(row[0], row[1], bool(row[2]), row[3], row[4])


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the session is gone (rather than that the statement failed)."""
    if isinstance(exc, asyncpg.PostgresError):
        # 08: connection exception; 57P01-57P03: the server shutting down or not up yet.
        code = exc.sqlstate or ""
        return code.startswith(("08", "57P"))
    return isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError)


def _store_error(exc: BaseException) -> BaseException:
    # InternalClientError: asyncpg's protocol caught mid-operation by a dropped connection.
    client = asyncpg.InterfaceError | asyncpg.InternalClientError
    if isinstance(exc, asyncpg.PostgresError | client | OSError | TimeoutError):
        return StoreError(f"PostgreSQL: {exc}")
    return exc
