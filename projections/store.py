"""Where read models live: one small interface over SQLite (embedded) and PostgreSQL.

Projectors and queries write SQL once, with ``%s`` placeholders and ``ON CONFLICT``
upserts, which both engines understand; this module hides the three differences that
remain: the placeholder style, how time is stored (``timestamptz`` in PostgreSQL, integer
microseconds since the epoch in SQLite, so bucketing is integer arithmetic), and how
many rows go in fast (``COPY`` in PostgreSQL, ``executemany`` in SQLite).

Whether TimescaleDB is there is asked of the database itself (``pg_extension``), never
configured, so the same code runs on TimescaleDB, plain PostgreSQL and SQLite.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg

from infra.eventstore import postgres_url
from infra.settings import Settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

Dialect = Literal["sqlite", "postgres"]


class ReadStore:
    """A connection to the read-model database, used by one thread at a time.

    Each thread that needs one (the projector, each API worker) opens its own with
    :meth:`reopen`; SQLite runs in WAL mode so readers never block the projector.
    """

    def __init__(self, dialect: Dialect, conn: Any, *, location: str,
                 schema: str | None = None) -> None:
        self.dialect = dialect
        self.conn = conn
        self.location = location  # the file or URL it was opened from
        self.schema = schema
        self.timescale = dialect == "postgres" and self._has_timescale()

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def sqlite(cls, path: Path | str) -> ReadStore:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls("sqlite", conn, location=str(path))

    @classmethod
    def postgres(cls, url: str, schema: str) -> ReadStore:
        # named after its schema in pg_stat_activity: an operator (or a test) can tell
        # which deployment's read-model connections are which
        conn = psycopg.connect(url, autocommit=True,
                               application_name=f"tradecore-rm:{schema}"[:63])
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET search_path TO "{schema}", public')
        # Read models are rebuilt from the event store, and a commit lost in a crash
        # takes its tracking row with it (re-projected on restart): no need to wait for
        # the WAL flush on every batch.
        conn.execute("SET synchronous_commit = off")
        return cls("postgres", conn, location=url, schema=schema)

    @classmethod
    def from_settings(cls, settings: Settings, *, schema: str | None = None) -> ReadStore:
        """SQLite beside the embedded event store, or the read-model schema in PostgreSQL."""
        if settings.persistence == "sqlite":
            return cls.sqlite(settings.readmodel_sqlite_path)
        return cls.postgres(postgres_url(settings), schema or settings.readmodel_schema)

    def reopen(self) -> ReadStore:
        """Another connection to the same database (for another thread)."""
        if self.dialect == "sqlite":
            return ReadStore.sqlite(self.location)
        assert self.schema is not None
        return ReadStore.postgres(self.location, self.schema)

    def close(self) -> None:
        self.conn.close()

    @property
    def lost(self) -> bool:
        """The connection was cut under it (the server restarted, the backend was
        terminated): only a new connection helps."""
        return self.dialect == "postgres" and bool(self.conn.closed)

    def _has_timescale(self) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        return row is not None

    # -- statements ------------------------------------------------------------------
    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.dialect == "sqlite" else statement

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self.sql(statement), params)

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(statement, params).fetchall())

    def fetchone(self, statement: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.execute(statement, params).fetchone()
        return tuple(row) if row is not None else None

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == "sqlite":
            self.conn.executemany(self.sql(statement), rows)
        else:
            with self.conn.cursor() as cursor:
                cursor.executemany(statement, rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows: ``COPY`` into PostgreSQL, one prepared insert into SQLite."""
        if not rows:
            return
        names = ", ".join(columns)
        if self.dialect == "postgres":
            with self.conn.cursor() as cursor, cursor.copy(
                f"COPY {table} ({names}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            self.conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                yield

    # -- time ------------------------------------------------------------------------
    def ts(self, moment: datetime) -> Any:
        """A timestamp as this database stores it."""
        if self.dialect == "sqlite":
            return (moment - EPOCH) // MICROSECOND
        return moment

    def moment(self, stored: Any) -> datetime:
        """A stored timestamp back as an aware UTC datetime."""
        if isinstance(stored, datetime):
            return stored.astimezone(UTC)
        return EPOCH + int(stored) * MICROSECOND


class StorePool:
    """One :class:`ReadStore` per thread, opened on first use (API worker threads)."""

    def __init__(self, first: ReadStore) -> None:
        self._first = first
        self._local = threading.local()
        self._all: list[ReadStore] = []
        self._lock = threading.Lock()

    def get(self) -> ReadStore:
        store: ReadStore | None = getattr(self._local, "store", None)
        if store is None:
            store = self._first.reopen()
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()
