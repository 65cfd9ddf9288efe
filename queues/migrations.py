"""Versioned schema of the SQLite store.

Each :class:`Migration` is one numbered step; ``schema_version`` holds a row per applied step.
:func:`migrate` applies the pending steps at open, each in its own transaction (SQLite DDL is
transactional, so a step is applied whole or not at all), and refuses a database written by a
newer version of Ulak: running old code on a newer schema could corrupt it silently.

The PostgreSQL store keeps its own SQL (:mod:`queues.postgres`) with the same version numbers
and the same tables; a new step is added to both.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from queues.store import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "current_version", "migrate"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its number, what it does, and its statements (run in order)."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "messages, parts, transitions, consent ledger, OTP requests",
        (
            """
            CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                klass TEXT NOT NULL,
                msisdn TEXT NOT NULL,
                sender TEXT,
                text TEXT NOT NULL,
                encoding TEXT NOT NULL,
                parts INTEGER NOT NULL,
                created_at REAL NOT NULL,
                valid_until REAL NOT NULL,
                not_before REAL,
                reference TEXT,
                callback_url TEXT,
                idempotency_key TEXT,
                request_hash TEXT,
                status TEXT NOT NULL,
                updated_at REAL NOT NULL,
                UNIQUE (tenant, idempotency_key)
            )
            """,
            # `unfinished` reads the non-final messages oldest first: a partial index holds only
            # them, so restart cost follows the backlog, not the history.
            """
            CREATE INDEX messages_unfinished ON messages (created_at, id)
            WHERE status IN ('accepted', 'deferred', 'queued', 'submitted')
            """,
            """
            CREATE TABLE parts (
                message_id TEXT NOT NULL,
                idx INTEGER NOT NULL,
                status TEXT NOT NULL,
                smsc_id TEXT,
                smsc_key TEXT,
                error TEXT,
                submitted_at REAL,
                PRIMARY KEY (message_id, idx)
            ) WITHOUT ROWID
            """,
            # smsc_key is the canonical SMSC id (protocols.receipts.canonical_message_id): a
            # receipt finds its part by any of its message_id_keys.
            "CREATE INDEX parts_smsc_key ON parts (smsc_key) WHERE smsc_key IS NOT NULL",
            "CREATE INDEX parts_submitted ON parts (submitted_at) WHERE submitted_at IS NOT NULL",
            # The history; the implicit rowid keeps insertion order for equal times.
            """
            CREATE TABLE transitions (
                message_id TEXT NOT NULL,
                part INTEGER,
                status TEXT NOT NULL,
                at REAL NOT NULL,
                error TEXT
            )
            """,
            "CREATE INDEX transitions_message ON transitions (message_id)",
            """
            CREATE TABLE consent (
                tenant TEXT NOT NULL,
                msisdn TEXT NOT NULL,
                opted_in INTEGER NOT NULL,
                source TEXT NOT NULL,
                at REAL NOT NULL
            )
            """,
            "CREATE INDEX consent_number ON consent (tenant, msisdn, at)",
            """
            CREATE TABLE otp (
                request_id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                msisdn TEXT NOT NULL,
                code_hash BLOB NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                used_at REAL,
                message_id TEXT
            )
            """,
        ),
    ),
    Migration(
        2,
        "TOTP enrollments",
        (
            # "user" is quoted: it is a keyword in PostgreSQL, and the two schemas match.
            """
            CREATE TABLE totp (
                tenant TEXT NOT NULL,
                "user" TEXT NOT NULL,
                secret_enc BLOB NOT NULL,
                last_step INTEGER,
                PRIMARY KEY (tenant, "user")
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        3,
        "the concatenation reference of a multipart message",
        ("ALTER TABLE messages ADD COLUMN concat_ref INTEGER",),
    ),
    Migration(
        4,
        "one history row per event of a one-part message",
        (
            # A one-part message's part and message rows change together (Transition.whole);
            # its history kept two rows per event, the message's a copy of the part's. The
            # copies go: the history is read with one row standing for both (queues.store).
            """
            DELETE FROM transitions
            WHERE part IS NULL AND EXISTS (
                SELECT 1 FROM transitions p JOIN messages m ON m.id = p.message_id
                WHERE p.message_id = transitions.message_id AND p.part = 0 AND m.parts = 1
                    AND p.status = transitions.status AND p.at = transitions.at
            )
            """,
        ),
    ),
    Migration(
        5,
        "early receipts answered before a part claimed them",
        (
            # smsc_key is the canonical id (protocols.receipts.canonical_message_id).
            """
            CREATE TABLE held_receipts (
                smsc_key TEXT PRIMARY KEY,
                smsc_id TEXT NOT NULL,
                state INTEGER NOT NULL,
                err TEXT,
                received_at REAL NOT NULL
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        6,
        "webhook events not delivered yet",
        (
            """
            CREATE TABLE webhooks (
                event_id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                url TEXT NOT NULL,
                body BLOB NOT NULL,
                created_at REAL NOT NULL
            ) WITHOUT ROWID
            """,
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The version this code writes and reads."""

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied step (0 for a new database)."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the pending steps and return the resulting version.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each step runs in its own
    ``BEGIN IMMEDIATE`` transaction, which also serialises two processes opening one new file.

    Raises:
        StoreError: the database is newer than this code.
    """
    conn.execute(_VERSION_TABLE)
    latest = migrations[-1].version if migrations else 0
    _check_not_newer(current_version(conn), latest)
    for step in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = current_version(conn)
            _check_not_newer(version, latest)
            if step.version > version:
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at)"
                    " VALUES (?, ?, ?)",
                    (step.version, step.description, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return current_version(conn)


def _check_not_newer(version: int, latest: int) -> None:
    if version > latest:
        raise StoreError(
            f"database schema version {version} is newer than this code ({latest});"
            " upgrade Ulak or restore a matching backup"
        )
