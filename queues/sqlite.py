"""The embedded durable store: one SQLite file in WAL mode, one writer, group commit.

Writes (``accept``, ``record``, consent and OTP) are jobs on a queue. One writer task takes
everything pending (up to ``max_batch`` messages), runs it in one transaction on the single
write connection in a worker thread, commits, and only then wakes the callers of that group:
a caller returns after the fsync that holds its rows, and one fsync serves the whole group.
The worker threads share a capacity limiter of 1, so groups are applied strictly in order.

Reads use their own connections (WAL lets them run beside the writer and see the last
commit), also in worker threads, so no SQLite call ever blocks the trio thread.

The writer is a trio system task started by :meth:`SQLiteStore.open` and joined by
:meth:`SQLiteStore.aclose`: the store's ``open``/``aclose`` life cycle is not tied to a
nursery of the caller's, and callers cancelled while they wait must not stop the writer that
serves the others (their rows are still committed; only the answer is dropped).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import trio

from protocols.receipts import canonical_message_id
from queues.group_commit import (
    GroupCommit,
    GroupCommitWrites,
    WriteJob,
    runs_of_kind,
    share_outcomes,
)
from queues.migrations import migrate
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

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Must read exactly as in the partial index `messages_unfinished` (migrations), or SQLite
# cannot use that index.
_UNFINISHED = "status IN ('accepted', 'deferred', 'queued', 'submitted')"
_NOT_SENT = ("accepted", "deferred", "queued")
_READERS = 4
_CHECKPOINT_INTERVAL_S = 0.1
_WAL_SIZE_LIMIT = 64 << 20  # bytes the WAL file is cut back to after a checkpoint restarts it
_WAL_RESTART_FRAMES = 2048  # a WAL this long (8 MiB of 4 KiB pages) is restarted from its start
_ROWS_PER_STATEMENT = 256  # x 18 columns stays far below SQLite's 32766 host parameters
# Transitions written between two looks for first-lane jobs to commit early: a few ms under
# load while OTPs come (for _FIRST_RECENT_S after the last one), else whole statements (each
# statement more costs a GIL hand-over under load: ~6% of the throughput at 64 rows).
_EARLY_SLICE = 64
_QUIET_SLICE = _ROWS_PER_STATEMENT
_FIRST_RECENT_S = 1.0
_KEY_CHUNK = 500  # well under SQLite's host-parameter limit

_MESSAGE_COLUMNS = (
    "id, tenant, klass, msisdn, sender, text, encoding, parts, created_at, valid_until,"
    " not_before, reference, callback_url, idempotency_key, request_hash, status, concat_ref"
)


class SQLiteStore(GroupCommitWrites):
    """:class:`queues.store.Store` on one SQLite file (see the module docstring).

    Attributes:
        commits: transactions committed by the writer so far (group commit makes this far
            smaller than the number of write calls under load).
        wal_restarts: times the writer copied the end of a long WAL so that its next
            transaction would start the WAL over (see ``_checkpoint_loop``).
        early_commits: commits made in the middle of a group of transitions for the
            first-lane jobs (an OTP accept) that came meanwhile (see ``_write_records``).
    """

    def __init__(self, connections: _Connections, *, max_batch: int, max_delay_s: float) -> None:
        # Use `open`: the connections must already be configured and migrated.
        self.commits = 0
        writer, readers, self._checkpointer = connections
        self._conn = writer
        self._readers = readers
        self._shared_reader = readers == [writer]
        self._checkpoints = trio.CancelScope()
        self._checkpoints_done = trio.Event()
        self._restart_wal = False  # set by the checkpointer, acted on by the writer thread
        self.wal_restarts = 0
        self.early_commits = 0
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(len(readers))
        # OTP accepts and the small writes go first, then transitions, then bulk accepts
        # (group_commit's lanes), so an OTP or a receipt never waits behind a big batch.
        self._commit = GroupCommit(
            self._write_in_thread,
            max_batch=max_batch,
            max_delay_s=max_delay_s,
            name="SQLite",
            failure=lambda exc: exc,
        )
        self._closed = False
        self._reads = 0
        self._reads_done = trio.Event()

    @classmethod
    async def open(
        cls, path: str, *, max_batch: int = 1000, max_delay_s: float = 0.002
    ) -> SQLiteStore:
        """Open (creating and migrating as needed) the database at ``path``.

        Args:
            path: a file path, or ``":memory:"`` (tests; reads then share the write connection).
            max_batch: at most this many messages (or transitions) per transaction.
            max_delay_s: how long the first write of an idle store waits for others to join.

        Raises:
            StoreError: the file cannot be opened, or its schema is newer than this code.
        """
        connections = await trio.to_thread.run_sync(_connect, path)
        store = cls(connections, max_batch=max_batch, max_delay_s=max_delay_s)
        trio.lowlevel.spawn_system_task(store._commit.run, name=f"sqlite writer {path}")
        if connections.checkpointer is not None:
            trio.lowlevel.spawn_system_task(
                store._checkpoint_loop, connections.checkpointer, name=f"sqlite checkpoints {path}"
            )
        else:
            store._checkpoints_done.set()
        return store

    async def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        """Copy committed WAL frames into the database now and then, beside the writer (a
        PASSIVE checkpoint never blocks it).

        The WAL restarts from its start only when a write begins with every frame copied,
        which under steady load never happens by itself: the writer commits again while each
        checkpoint runs, and the WAL grew by hundreds of megabytes a minute, every commit
        appending to the file (new blocks for the file system to allocate and zero) rather
        than overwriting pages it had already. So once the WAL is long, the writer is asked
        to copy what this checkpoint left (the frames of the last few commits) between two
        groups itself; its next transaction then starts the WAL over."""
        try:
            with self._checkpoints:
                done = self.commits
                while True:
                    await trio.sleep(_CHECKPOINT_INTERVAL_S)
                    if self.commits != done:
                        done = self.commits
                        try:
                            frames = await trio.to_thread.run_sync(_checkpoint, conn, "PASSIVE")
                        except sqlite3.Error as exc:
                            logger.warning("SQLite checkpoint failed (will retry): %s", exc)
                            continue
                        if frames >= _WAL_RESTART_FRAMES:
                            self._restart_wal = True
        finally:
            self._checkpoints_done.set()

    # --- the writer thread ------------------------------------------------------------------

    async def _write_in_thread(self, group: list[WriteJob]) -> None:
        await trio.to_thread.run_sync(self._write_group, group, limiter=self._write_limiter)

    def _write_group(self, group: list[WriteJob]) -> None:
        """Apply a group in one transaction; if it fails, apply its jobs one by one so that
        one bad job (say, a duplicate message id) fails only its own caller."""
        early_before = self.early_commits
        try:
            self._transaction(group, join=True)
        except Exception as exc:
            if self.early_commits != early_before:
                # Part of the group was committed: its transitions are written again with
                # the care of a retry (no final status undone, no history row twice).
                for job in group:
                    job.again = True
            if len(group) == 1:
                group[0].error = _store_error(exc)
                return
            logger.warning("group commit of %d jobs failed, retrying one by one", len(group))
            for job in group:
                try:
                    self._transaction([job])
                except Exception as job_exc:
                    job.error = _store_error(job_exc)

    def _transaction(self, group: list[WriteJob], *, join: bool = False) -> None:
        """Write ``group`` in one transaction. With ``join``, OTP accepts, transitions and the
        other first- and urgent-lane writes that queued meanwhile are written too, just before
        the commit, and added to ``group`` (:meth:`GroupCommit.join_waiting`): they wait for
        this commit alone, not for it and then one of their own."""
        conn = self._conn
        results: dict[int, list[AcceptResult]] = {}
        if self._restart_wal:
            self._restart_wal = False
            with contextlib.suppress(sqlite3.Error):  # the next request will do as well
                _checkpoint(conn, "PASSIVE")
                self.wal_restarts += 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            if join and all(job.kind == "record" for job in group):
                self._write_records(group)
            else:
                _write_jobs(conn, group, results)
            if join:
                _write_jobs(conn, self._commit.join_waiting(group), results)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        for job in group:
            job.results = results.get(id(job), [])
            job.error = None

    def _write_records(self, group: list[WriteJob]) -> None:
        """Write a group of transitions a slice at a time, and commit early whenever a
        first-lane job (an OTP accept) has come meanwhile: under a flood a group holds
        hundreds of transitions, ~10 ms of writing that the OTP would otherwise wait for.
        The slices keep the transitions' order, so the rows end as if written at once."""
        conn = self._conn
        runs = [
            (run[0].again, [t for job in run for t in job.transitions])
            for _, run in runs_of_kind(group)
        ]
        left = sum(len(transitions) for _, transitions in runs)
        early = True
        recent = time.monotonic() - self._commit.first_at < _FIRST_RECENT_S
        size = _EARLY_SLICE if recent else _QUIET_SLICE
        for again, transitions in runs:
            for start in range(0, len(transitions), size):
                piece = transitions[start : start + size]
                _apply_transitions(conn, piece, again=again)
                left -= len(piece)
                if early and left and self._commit.first_waiting():
                    early = self._commit_first_early()

    def _commit_first_early(self) -> bool:
        """Write the waiting first-lane jobs into the open transaction, commit it, hand the
        jobs to the trio thread, and begin the next transaction for the rest of the group.
        False, with the jobs given back to wait for the group's end (where a failure is their
        own), if writing them fails."""
        conn = self._conn
        commit = self._commit
        first = commit.take_first()
        results: dict[int, list[AcceptResult]] = {}
        conn.execute("SAVEPOINT first_lane")
        try:
            _write_jobs(conn, first, results)
        except Exception:
            conn.execute("ROLLBACK TO first_lane")
            conn.execute("RELEASE first_lane")
            commit.give_back_first(first)
            return False
        conn.execute("RELEASE first_lane")
        try:
            conn.execute("COMMIT")
        except BaseException:
            commit.give_back_first(first)
            raise
        self.commits += 1
        self.early_commits += 1
        for job in first:
            job.results = results.get(id(job), [])
            job.error = None
        commit.finish_soon(first)
        conn.execute("BEGIN IMMEDIATE")
        return True

    # --- reads ------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._commit.closing:
            raise StoreClosedError("the store is closed")
        self._reads += 1
        try:
            if self._shared_reader:
                # ":memory:": one connection, so reads queue with the writer's groups.
                return await trio.to_thread.run_sync(
                    _in_snapshot, fn, self._conn, limiter=self._write_limiter
                )
            async with self._read_limiter:
                conn = self._readers.pop()
                try:
                    return await trio.to_thread.run_sync(_in_snapshot, fn, conn)
                finally:
                    self._readers.append(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc
        finally:
            self._reads -= 1
            if self._reads == 0:
                self._reads_done.set()

    async def find_part(self, smsc_id_keys: Sequence[str]) -> PartRef | None:
        keys = list(dict.fromkeys(smsc_id_keys))
        if not keys:
            await trio.lowlevel.checkpoint()
            return None

        def read(conn: sqlite3.Connection) -> PartRef | None:
            marks = ",".join("?" * len(keys))
            rows = conn.execute(
                "SELECT p.message_id, p.idx, m.parts, m.tenant, p.status, p.smsc_key,"
                " p.submitted_at FROM parts p JOIN messages m ON m.id = p.message_id"
                f" WHERE p.smsc_key IN ({marks})",
                keys,
            ).fetchall()
            if not rows:
                return None
            # Several candidates (see message_id_keys on false matches): prefer the one written
            # in the receipt's own form, then a part still waiting, then the latest submitted.
            best = max(
                rows,
                key=lambda r: (r[5] == keys[0], not Status(r[4]).is_final, r[6] or 0.0),
            )
            return PartRef(best[0], best[1], best[2], best[3], Status(best[4]))

        return await self._read(read)

    async def get_message(self, tenant: str, message_id: str) -> MessageView | None:
        def read(conn: sqlite3.Connection) -> MessageView | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND tenant = ?",
                (message_id, tenant),
            ).fetchone()
            if row is None:
                return None
            parts = tuple(
                PartView(idx, Status(status), smsc_id, error)
                for idx, status, smsc_id, error in conn.execute(
                    "SELECT idx, status, smsc_id, error FROM parts"
                    " WHERE message_id = ? ORDER BY idx",
                    (message_id,),
                )
            )
            message = _message(row)
            events = history(
                conn.execute(
                    "SELECT status, at, part, error FROM transitions"
                    " WHERE message_id = ? ORDER BY at, rowid",
                    (message_id,),
                ),
                message.parts,
            )
            return MessageView(message, parts, events)

        return await self._read(read)

    async def callback_targets(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, str, int]]:
        ids = list(dict.fromkeys(message_ids))

        def read(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None, str, int]]:
            found: dict[str, tuple[str, str | None, str, int]] = {}
            for chunk, marks in _in_chunks(ids):
                for message_id, tenant, url, msisdn, parts in conn.execute(
                    "SELECT id, tenant, callback_url, msisdn, parts FROM messages"
                    f" WHERE id IN ({marks})",
                    chunk,
                ):
                    found[message_id] = (tenant, url, msisdn, parts)
            return found

        return await self._read(read) if ids else {}

    async def unfinished(self, batch: int = 10_000) -> AsyncIterator[list[MessageRecord]]:
        # Keyset pagination on (created_at, id): each batch is a short read, and messages that
        # become final meanwhile simply drop out.
        after: tuple[float, str] | None = None
        while True:

            def read(
                conn: sqlite3.Connection, after: tuple[float, str] | None = after
            ) -> list[Any]:
                if after is None:
                    return conn.execute(
                        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {_UNFINISHED}"
                        " ORDER BY created_at, id LIMIT ?",
                        (batch,),
                    ).fetchall()
                return conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {_UNFINISHED}"
                    " AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
                    (*after, batch),
                ).fetchall()

            rows = await self._read(read)
            if not rows:
                return
            records = [_message(row) for row in rows]
            yield records
            if len(rows) < batch:
                return
            after = (records[-1].created_at, records[-1].id)

    async def parts_to_send(self, message_id: str) -> list[int]:
        def read(conn: sqlite3.Connection) -> list[int]:
            return [
                int(idx)
                for (idx,) in conn.execute(
                    "SELECT idx FROM parts WHERE message_id = ? AND status IN (?, ?, ?)"
                    " ORDER BY idx",
                    (message_id, *_NOT_SENT),
                )
            ]

        return await self._read(read)

    async def marketing_sends_since(self, since: float) -> list[tuple[str, str, float]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
            # A message counts once, at its first part's submission.
            rows = conn.execute(
                "SELECT m.tenant, m.msisdn, min(p.submitted_at) AS first FROM messages m"
                " JOIN parts p ON p.message_id = m.id"
                " WHERE m.klass = ? AND m.id IN"
                " (SELECT message_id FROM parts WHERE submitted_at >= ?)"
                " GROUP BY m.id HAVING first >= ? ORDER BY first, m.id",
                (MessageClass.MARKETING.value, since, since),
            ).fetchall()
            return [(str(t), str(n), float(at)) for t, n, at in rows]

        return await self._read(read)

    async def get_consent(self, tenant: str, msisdn: str) -> ConsentRecord | None:
        def read(conn: sqlite3.Connection) -> ConsentRecord | None:
            row = conn.execute(
                "SELECT tenant, msisdn, opted_in, source, at FROM consent"
                " WHERE tenant = ? AND msisdn = ? ORDER BY at DESC, rowid DESC LIMIT 1",
                (tenant, msisdn),
            ).fetchone()
            return None if row is None else _consent(row)

        return await self._read(read)

    async def stored_outcomes(self, messages: Sequence[NewMessage]) -> list[AcceptResult | None]:
        found = await self._read(lambda conn: _stored_keys(conn, list(messages)))
        return [stored_outcome(m, found) for m in messages]

    async def consents_of(self, tenant: str, msisdns: Sequence[str]) -> dict[str, ConsentRecord]:
        numbers = list(dict.fromkeys(msisdns))

        def read(conn: sqlite3.Connection) -> dict[str, ConsentRecord]:
            found: dict[str, ConsentRecord] = {}
            for chunk, marks in _in_chunks(numbers):
                # Oldest first, so the entry in force (latest at, then latest rowid) is the
                # one left in the dict.
                for row in conn.execute(
                    "SELECT tenant, msisdn, opted_in, source, at FROM consent WHERE tenant = ?"
                    f" AND msisdn IN ({marks}) ORDER BY at, rowid",
                    [tenant, *chunk],
                ):
                    found[row[1]] = _consent(row)
            return found

        return await self._read(read) if numbers else {}

    async def consent_history(self, tenant: str, msisdn: str) -> list[ConsentRecord]:
        def read(conn: sqlite3.Connection) -> list[ConsentRecord]:
            return [
                _consent(row)
                for row in conn.execute(
                    "SELECT tenant, msisdn, opted_in, source, at FROM consent"
                    " WHERE tenant = ? AND msisdn = ? ORDER BY at, rowid",
                    (tenant, msisdn),
                )
            ]

        return await self._read(read)

    async def get_otp(self, tenant: str, request_id: str) -> OtpRecord | None:
        def read(conn: sqlite3.Connection) -> OtpRecord | None:
            row = conn.execute(
                "SELECT request_id, tenant, msisdn, code_hash, created_at, expires_at, attempts,"
                " used_at, message_id FROM otp WHERE request_id = ? AND tenant = ?",
                (request_id, tenant),
            ).fetchone()
            if row is None:
                return None
            return OtpRecord(
                row[0], row[1], row[2], bytes(row[3]), row[4], row[5], row[6], row[7], row[8]
            )

        return await self._read(read)

    async def held_receipts(self) -> list[HeldReceipt]:
        def read(conn: sqlite3.Connection) -> list[HeldReceipt]:
            rows = conn.execute(
                "SELECT smsc_id, state, err, received_at FROM held_receipts"
                " ORDER BY received_at, smsc_key"
            )
            return [HeldReceipt(*row) for row in rows]

        return await self._read(read)

    async def pending_webhooks(self) -> list[StoredWebhook]:
        def read(conn: sqlite3.Connection) -> list[StoredWebhook]:
            rows = conn.execute(
                "SELECT event_id, tenant, url, body, created_at FROM webhooks"
                " ORDER BY created_at, event_id"
            ).fetchall()
            return [StoredWebhook(e, t, u, bytes(b), c) for e, t, u, b, c in rows]

        return await self._read(read)

    async def get_totp(self, tenant: str, user: str) -> TotpEnrollment | None:
        def read(conn: sqlite3.Connection) -> TotpEnrollment | None:
            row = conn.execute(
                'SELECT tenant, "user", secret_enc, last_step FROM totp'
                ' WHERE tenant = ? AND "user" = ?',
                (tenant, user),
            ).fetchone()
            return None if row is None else TotpEnrollment(row[0], row[1], bytes(row[2]), row[3])

        return await self._read(read)

    # --- life cycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Commit every pending write, stop the writer and close the connections."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        await self._commit.close()
        # Reads already in a worker thread finish before their connection is closed.
        while self._reads:
            self._reads_done = trio.Event()
            await self._reads_done.wait()
        self._closed = True

        self._checkpoints.cancel()
        await self._checkpoints_done.wait()

        def close() -> None:
            if self._checkpointer is not None:
                # Leave a short WAL behind (the next open need not replay megabytes).
                with contextlib.suppress(sqlite3.Error):
                    _checkpoint(self._conn, "TRUNCATE")
            others = [self._conn, *self._readers]
            if self._checkpointer is not None:
                others.append(self._checkpointer)
            for conn in {id(c): c for c in others}.values():
                conn.close()

        await trio.to_thread.run_sync(close, limiter=self._write_limiter)


# --- helpers run in worker threads ----------------------------------------------------------


_MIN_SQLITE = (3, 33, 0)  # UPDATE ... FROM


class _Connections(NamedTuple):
    writer: sqlite3.Connection
    readers: list[sqlite3.Connection]
    checkpointer: sqlite3.Connection | None  # None for ":memory:" (no WAL)


def _connect(path: str) -> _Connections:
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise StoreError(
            f"SQLite {sqlite3.sqlite_version} is too old: Ulak needs"
            f" {'.'.join(map(str, _MIN_SQLITE))} or newer (Python's sqlite3 module links it)"
        )
    try:
        writer = _connection(path)
        if path != ":memory:":
            mode = writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch SQLite to WAL mode (got {mode})")
        # "Accept means durable" (DESIGN §2): with WAL, synchronous=NORMAL fsyncs only at
        # checkpoints, so a power cut could lose commits that were acknowledged; FULL fsyncs
        # the WAL at every commit, one fsync per group.
        writer.execute("PRAGMA synchronous=FULL")
        # Checkpoints (copying the WAL into the database, with its own fsync) are the
        # checkpointer's job, off the commit path: left to the writer, every few thousand
        # messages one commit (an OTP's, perhaps) would also copy and sync megabytes. The
        # writer copies only the last few commits' frames, when asked (`_checkpoint_loop`).
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        migrate(writer)
        if path == ":memory:":
            return _Connections(writer, [writer], None)
        readers = []
        for _ in range(_READERS):
            reader = _connection(path)
            reader.execute("PRAGMA query_only=1")
            readers.append(reader)
        checkpointer = _connection(path)
        checkpointer.execute("PRAGMA synchronous=FULL")
        return _Connections(writer, readers, checkpointer)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc


def _connection(path: str) -> sqlite3.Connection:
    # Autocommit mode: transactions are begun explicitly (BEGIN IMMEDIATE for the writer).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _checkpoint(conn: sqlite3.Connection, mode: str) -> int:
    """Run a checkpoint; the number of frames in the WAL (-1 without one)."""
    row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    return int(row[1])


def _in_snapshot(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """Run a read in one transaction, so its several SELECTs see one commit."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("ROLLBACK")


def _write_jobs(
    conn: sqlite3.Connection, jobs: list[WriteJob], results: dict[int, list[AcceptResult]]
) -> None:
    """Write ``jobs`` in the open transaction; accept results go to ``results[id(job)]``."""
    for kind, run in runs_of_kind(jobs):
        if kind == "accept":
            outcomes = _insert_messages(conn, [m for job in run for m in job.messages])
            share_outcomes(run, outcomes, results)
        elif kind == "record":
            transitions = [t for job in run for t in job.transitions]
            _apply_transitions(conn, transitions, again=run[0].again)
        elif kind == "hooks_put":
            _values(
                conn,
                "INSERT OR IGNORE INTO webhooks (event_id, tenant, url, body, created_at) VALUES ",
                "(?, ?, ?, ?, ?)",
                [
                    (h.event_id, h.tenant, h.url, h.body, h.created_at)
                    for job in run
                    for h in job.hooks
                ],
            )
        elif kind == "hooks_drop":
            ids = [i for job in run for i in job.hook_ids]
            for chunk, marks in _in_chunks(ids):
                conn.execute(f"DELETE FROM webhooks WHERE event_id IN ({marks})", chunk)
        else:
            for job in run:
                _apply_single(conn, job)


def _insert_messages(conn: sqlite3.Connection, messages: list[NewMessage]) -> list[AcceptResult]:
    """Insert what is new; REPLAYED/CONFLICT for a key already stored or earlier in the list."""
    seen = _stored_keys(conn, messages)
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
    _values(
        conn,
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}, updated_at) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                m.id,
                m.tenant,
                m.klass.value,
                m.to,
                m.sender,
                m.text,
                m.encoding,
                m.parts,
                m.created_at,
                m.valid_until,
                m.not_before,
                m.reference,
                m.callback_url,
                m.idempotency_key,
                m.request_hash,
                m.status.value,
                m.concat_ref,
                m.created_at,
            )
            for m in new
        ],
    )
    _values(
        conn,
        "INSERT INTO parts (message_id, idx, status) VALUES ",
        "(?, ?, ?)",
        [(m.id, idx, m.status.value) for m in new for idx in range(m.parts)],
    )
    _values(
        conn,
        "INSERT INTO transitions (message_id, part, status, at, error) VALUES ",
        "(?, NULL, ?, ?, NULL)",
        [(m.id, m.status.value, m.created_at) for m in new],
    )
    return results


def _stored_keys(
    conn: sqlite3.Connection, messages: list[NewMessage]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    by_tenant: dict[str, set[str]] = {}
    for m in messages:
        if m.idempotency_key is not None:
            by_tenant.setdefault(m.tenant, set()).add(m.idempotency_key)
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    for tenant, key_set in by_tenant.items():
        keys = sorted(key_set)
        for chunk, marks in _in_chunks(keys):
            for key, message_id, request_hash in conn.execute(
                "SELECT idempotency_key, id, request_hash FROM messages"
                f" WHERE tenant = ? AND idempotency_key IN ({marks})",
                (tenant, *chunk),
            ):
                found[(tenant, key)] = (message_id, request_hash)
    return found


def _apply_transitions(
    conn: sqlite3.Connection, transitions: list[Transition], *, again: bool = False
) -> None:
    """Every transition goes into the history; each part and message row is updated once, to
    its last state in the list (a part submitted and delivered within one group is written
    once). Its SMSC id and submission time are the last ones given, as if applied in turn."""
    parts: dict[tuple[str, int], list[Any]] = {}
    messages: dict[str, list[Any]] = {}
    for t in transitions:
        if t.part is None or t.whole:
            messages[t.message_id] = [t.status.value, t.at, t.message_id]
            if t.part is None:
                continue
        key = None
        if t.smsc_id is not None:
            key = canonical_message_id(t.smsc_id) or None  # an empty id has no key
        submitted_at = t.at if t.status is Status.SUBMITTED else None
        row = parts.get((t.message_id, t.part))
        if row is None:
            parts[(t.message_id, t.part)] = [
                t.status.value,
                t.smsc_id,
                key,
                t.error,
                submitted_at,
                t.message_id,
                t.part,
            ]
            continue
        row[0], row[3] = t.status.value, t.error
        if t.smsc_id is not None:
            row[1], row[2] = t.smsc_id, key
        if submitted_at is not None:
            row[4] = submitted_at
    # Submissions set the indexed columns (smsc_key, submitted_at); other changes leave them
    # out of the statement, since SQLite rewrites the index entries of every column a
    # statement assigns, changed or not (a receipt's update cost two index moves more).
    kept = _kept if again else _set
    submitted = [row for row in parts.values() if row[1] is not None or row[4] is not None]
    _values(
        conn,
        f"UPDATE parts SET status = {kept('parts.status', 't.column1')},"
        " smsc_id = coalesce(t.column2, smsc_id), smsc_key = coalesce(t.column3, smsc_key),"
        f" error = {kept('parts.error', 't.column4')},"
        " submitted_at = coalesce(t.column5, submitted_at) FROM (VALUES ",
        "(?, ?, ?, ?, ?, ?, ?)",
        submitted,
        ") AS t WHERE parts.message_id = t.column6 AND parts.idx = t.column7",
    )
    _values(
        conn,
        f"UPDATE parts SET status = {kept('parts.status', 't.column1')},"
        f" error = {kept('parts.error', 't.column2')} FROM (VALUES ",
        "(?, ?, ?, ?)",
        [
            (row[0], row[3], row[5], row[6])
            for row in parts.values()
            if row[1] is None and row[4] is None
        ],
        ") AS t WHERE parts.message_id = t.column3 AND parts.idx = t.column4",
    )
    _values(
        conn,
        "UPDATE messages SET status ="
        f" {kept('messages.status', 't.column1', status='messages.status')},"
        " updated_at = t.column2 FROM (VALUES ",
        "(?, ?, ?)",
        list(messages.values()),
        ") AS t WHERE messages.id = t.column3",
    )
    # Again: only the events not in the history yet (that call may have committed).
    stored_already = (
        " AND NOT EXISTS (SELECT 1 FROM transitions h WHERE h.message_id = t.column1"
        " AND h.part IS t.column2 AND h.status = t.column3 AND h.at = t.column4)"
    )
    _values(
        conn,
        "INSERT INTO transitions (message_id, part, status, at, error)"
        " SELECT column1, column2, column3, column4, column5 FROM (VALUES ",
        "(?, ?, ?, ?, ?)",
        [(t.message_id, t.part, t.status.value, t.at, t.error) for t in transitions],
        ") AS t WHERE EXISTS (SELECT 1 FROM messages WHERE id = t.column1)"
        + (stored_already if again else ""),
    )


def _kept(column: str, new: str, *, status: str = "parts.status") -> str:
    """SQL for ``column`` set to ``new`` unless the row's status is final and the new status
    (``t.column1``) is not. A final status stays (with its error): a batch of transitions
    retried after a failed commit may land after a later batch that finished the part.
    (Batches not retried are written in order, and skip the test.)"""
    return (
        f"CASE WHEN {status} IN {FINAL_STATUSES_SQL} AND t.column1 NOT IN {FINAL_STATUSES_SQL}"
        f" THEN {column} ELSE {new} END"
    )


def _set(column: str, new: str, *, status: str = "parts.status") -> str:
    return new


def _in_chunks(values: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """``values`` in slices small enough to bind, each with its ``?,?,...`` for an ``IN``."""
    for start in range(0, len(values), _KEY_CHUNK):
        chunk = values[start : start + _KEY_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _values(
    conn: sqlite3.Connection,
    head: str,
    row: str,
    rows: Sequence[Sequence[Any]],
    tail: str = "",
) -> None:
    """Run ``head row, row, ... tail`` with ``rows`` bound, up to 256 rows per statement.

    Multi-row VALUES rather than ``executemany``: executemany takes the GIL back after every
    row, and with the trio thread busy each of those waits for a switch, so a group of
    thousands of rows took seconds under load; here a statement binds its rows at once and
    runs with the GIL released. (One JSON parameter read with ``json_each`` would do the
    same, but extracting each field parses the row's JSON again: twice the time.) Full
    statements have one SQL text, so the connection's statement cache keeps them prepared.
    """
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        conn.execute(
            head + ", ".join([row] * len(chunk)) + tail,
            [value for r in chunk for value in r],
        )


def _apply_single(conn: sqlite3.Connection, job: WriteJob) -> None:
    if job.kind == "hold":
        h = job.held
        assert h is not None
        conn.execute(
            "INSERT OR REPLACE INTO held_receipts (smsc_key, smsc_id, state, err, received_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (canonical_message_id(h.smsc_id), h.smsc_id, h.state, h.err, h.received_at),
        )
        return
    if job.kind == "drop_held":
        assert job.drop_held is not None
        smsc_ids, before = job.drop_held
        keys = [canonical_message_id(i) for i in smsc_ids]
        conn.execute("DELETE FROM held_receipts WHERE received_at < ?", (before,))
        for chunk, marks in _in_chunks(keys):
            conn.execute(f"DELETE FROM held_receipts WHERE smsc_key IN ({marks})", chunk)
        return
    if job.kind == "consent":
        c = job.consent
        assert c is not None
        conn.execute(
            "INSERT INTO consent (tenant, msisdn, opted_in, source, at) VALUES (?, ?, ?, ?, ?)",
            (c.tenant, c.msisdn, int(c.opted_in), c.source, c.at),
        )
        return
    if job.kind == "totp_put":
        t = job.totp
        assert t is not None
        conn.execute(
            'INSERT INTO totp (tenant, "user", secret_enc, last_step) VALUES (?, ?, ?, ?)'
            ' ON CONFLICT (tenant, "user")'
            " DO UPDATE SET secret_enc = excluded.secret_enc, last_step = excluded.last_step",
            (t.tenant, t.user, t.secret_enc, t.last_step),
        )
        return
    o = job.otp
    assert o is not None
    if job.kind == "otp_put":
        conn.execute(
            "INSERT INTO otp (request_id, tenant, msisdn, code_hash, created_at, expires_at,"
            " attempts, used_at, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                o.request_id,
                o.tenant,
                o.msisdn,
                o.code_hash,
                o.created_at,
                o.expires_at,
                o.attempts,
                o.used_at,
                o.message_id,
            ),
        )
    else:
        conn.execute(
            "UPDATE otp SET attempts = ?, used_at = ?, message_id = coalesce(?, message_id)"
            " WHERE request_id = ? AND tenant = ?",
            (o.attempts, o.used_at, o.message_id, o.request_id, o.tenant),
        )


def _message(row: Sequence[Any]) -> MessageRecord:
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


def _consent(row: Sequence[Any]) -> ConsentRecord:
    return ConsentRecord(row[0], row[1], bool(row[2]), row[3], row[4])


def _store_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite: {exc}")
    return exc
