"""The embedded event store: eventsourcing's SQLite recorder with a chosen fsync policy.

eventsourcing opens file databases in WAL mode but leaves ``synchronous=FULL``, an
fsync on every commit (about 3 ms here, which caps the write path near 300 commits/s).
In WAL mode ``synchronous=NORMAL`` is SQLite's recommended setting: a commit survives
a crash of the application; only a power loss can drop the last commits before the
next checkpoint. ``TRADECORE_SQLITE_SYNCHRONOUS=FULL`` restores an fsync per commit.
"""

from __future__ import annotations

from typing import Any

from eventsourcing import sqlite as es_sqlite

SYNCHRONOUS = "SQLITE_SYNCHRONOUS"


class SQLiteFactory(es_sqlite.SQLiteFactory):
    def __init__(self, env: Any) -> None:
        super().__init__(env)
        mode = (self.env.get(SYNCHRONOUS) or "FULL").upper()
        if mode not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"sqlite_synchronous={mode!r}: expected NORMAL, FULL or EXTRA")
        pool = self.datastore.pool
        create = pool._create_connection

        def create_with_policy() -> es_sqlite.SQLiteConnection:
            connection = create()
            connection._sqlite_conn.execute(f"PRAGMA synchronous={mode}")
            return connection

        pool._create_connection = create_with_policy  # type: ignore[method-assign]
