"""Stage snapshots: opaque bytes a stage saves with the input position they stand for.

A stage that keeps state in memory (the matching stage's books) snapshots it every N
inputs and, on start, restores the newest snapshot at or before its tracked position and
replays only the inputs after it, so start-up time does not grow with history.

Snapshots live beside the event store, in the same SQLite file or PostgreSQL database
and schema, in one table keyed by ``(stage, position)``; ``stage`` is the stage's
tracking key (``"matching@trading:0"``, ``"matching@tradecore.matching.in:3"``), so each
partition keeps its own, and every call names it. Only the newest
``keep`` (2) per stage are kept: the newest, and one to fall back on. A snapshot is
written after its inputs' effects are committed, so it never stands for a position the
store has not reached; readers still ask for ``at_most`` their tracked position.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

TABLE = "stage_snapshots"
KEEP = 2


def _check(stage: str, keep: int) -> None:
    if not stage:
        raise ValueError("stage: must be a non-empty tracking key, e.g. 'matching@trading:0'")
    if keep < 1:
        raise ValueError(f"keep: must be at least 1, got {keep}")


class MemorySnapshots:
    """Snapshots in a dict: tests, and stores that do not outlive the process anyway."""

    def __init__(self, keep: int = KEEP) -> None:
        _check("memory", keep)
        self.keep = keep
        self.saved: dict[str, dict[int, bytes]] = {}

    def save(self, stage: str, position: int, data: bytes) -> None:
        _check(stage, self.keep)
        saved = self.saved.setdefault(stage, {})
        saved[position] = bytes(data)
        for old in sorted(saved)[: -self.keep]:
            del saved[old]

    def latest(self, stage: str, at_most: int) -> tuple[int, bytes] | None:
        saved = self.saved.get(stage, {})
        usable = [p for p in saved if p <= at_most]
        if not usable:
            return None
        position = max(usable)
        return position, saved[position]

    def positions(self, stage: str) -> list[int]:
        return sorted(self.saved.get(stage, {}))

    def close(self) -> None:
        return None


class SQLiteSnapshots:
    """Snapshots in a table of the event store's SQLite file, on their own connection
    (the store's recorder is not shared; WAL lets both write in turn)."""

    def __init__(self, path: str | Path, *, keep: int = KEEP, timeout_s: float = 30.0) -> None:
        _check("sqlite", keep)
        if str(path) == ":memory:" or str(path).startswith("file::memory:"):
            raise ValueError("path: snapshots need the store's file; an in-memory SQLite "
                             "database is private to its connection (use MemorySnapshots)")
        self.path = Path(path)
        self.keep = keep
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (stage TEXT NOT NULL, "
            "position INTEGER NOT NULL, data BLOB NOT NULL, created_at TEXT NOT NULL, "
            "PRIMARY KEY (stage, position))"
        )

    def save(self, stage: str, position: int, data: bytes) -> None:
        _check(stage, self.keep)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    f"INSERT OR REPLACE INTO {TABLE} (stage, position, data, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (stage, position, data, datetime.now(UTC).isoformat()),
                )
                self._db.execute(
                    f"DELETE FROM {TABLE} WHERE stage = ? AND position NOT IN "
                    f"(SELECT position FROM {TABLE} WHERE stage = ? "
                    "ORDER BY position DESC LIMIT ?)",
                    (stage, stage, self.keep),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def latest(self, stage: str, at_most: int) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT position, data FROM {TABLE} WHERE stage = ? AND position <= ? "
                "ORDER BY position DESC LIMIT 1",
                (stage, at_most),
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def positions(self, stage: str) -> list[int]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT position FROM {TABLE} WHERE stage = ? ORDER BY position",
                (stage,),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresSnapshots:
    """Snapshots in a table of the event store's PostgreSQL database and schema.

    Connects on first use (a CLI process that never snapshots opens no connection) and
    creates the table under an advisory lock: two processes starting at once would
    otherwise race on ``CREATE TABLE IF NOT EXISTS``."""

    def __init__(self, conninfo: str, *, schema: str = "public", keep: int = KEEP) -> None:
        _check("postgres", keep)
        self.keep = keep
        self._table = sql.Identifier(schema, TABLE)
        self._lock = threading.Lock()
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (stage text NOT NULL, "
                    "position bigint NOT NULL, data bytea NOT NULL, "
                    "created_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (stage, position))"
                ).format(self._table))
            self._conn = conn
        return conn

    def save(self, stage: str, position: int, data: bytes) -> None:
        _check(stage, self.keep)
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(sql.SQL(
                    "INSERT INTO {} (stage, position, data) VALUES (%s, %s, %s) "
                    "ON CONFLICT (stage, position) DO UPDATE SET data = EXCLUDED.data, "
                    "created_at = now()"
                ).format(self._table), (stage, position, data))
                conn.execute(sql.SQL(
                    "DELETE FROM {t} WHERE stage = %s AND position NOT IN "
                    "(SELECT position FROM {t} WHERE stage = %s ORDER BY position DESC "
                    "LIMIT %s)"
                ).format(t=self._table), (stage, stage, self.keep))

    def latest(self, stage: str, at_most: int) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._connection().execute(sql.SQL(
                "SELECT position, data FROM {} WHERE stage = %s AND position <= %s "
                "ORDER BY position DESC LIMIT 1"
            ).format(self._table), (stage, at_most)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def positions(self, stage: str) -> list[int]:
        with self._lock:
            rows = self._connection().execute(sql.SQL(
                "SELECT position FROM {} WHERE stage = %s ORDER BY position"
            ).format(self._table), (stage,)).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def snapshots_for_store(env: dict[str, str], *, keep: int = KEEP
                        ) -> SQLiteSnapshots | PostgresSnapshots | MemorySnapshots:
    """Snapshots beside the event store that ``env`` (``infra.eventstore.eventsourcing_env``)
    configures: the same SQLite file, or the same PostgreSQL database and schema. An
    in-memory SQLite store gets in-memory snapshots (nothing outlives the process anyway).
    """
    module = env.get("PERSISTENCE_MODULE", "")
    if "postgres" in module:
        conninfo = psycopg.conninfo.make_conninfo(
            host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"], dbname=env["POSTGRES_DBNAME"],
        )
        return PostgresSnapshots(conninfo, schema=env.get("POSTGRES_SCHEMA") or "public",
                                 keep=keep)
    path = env.get("SQLITE_DBNAME", "")
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        return MemorySnapshots(keep)
    return SQLiteSnapshots(path, keep=keep)
