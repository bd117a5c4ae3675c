"""The embedded event store: eventsourcing's SQLite recorder with a chosen fsync policy.

eventsourcing opens file databases in WAL mode but leaves ``synchronous=FULL``, an
fsync on every commit (about 3 ms here, which caps the write path near 300 commits/s).
In WAL mode ``synchronous=NORMAL`` is SQLite's recommended setting: a commit survives
a crash of the application; only a power loss can drop the last commits before the
next checkpoint. ``TRADECORE_SQLITE_SYNCHRONOUS=FULL`` restores an fsync per commit.

How, without touching the library's private methods: ``PRAGMA synchronous`` is a
per-connection setting, and every recorder takes its connections through the public
``SQLiteDatastore.get_connection`` (``transaction`` calls it too). This datastore sets
the pragma on each connection the first time it hands it out. The factory is the
library's own, selected through its public ``PERSISTENCE_MODULE`` topic; it swaps in
this datastore, built with the same settings, before any connection is opened.
``tests/infra/test_sqlite_store.py`` pins the library behaviour this relies on.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing import sqlite as es_sqlite

SYNCHRONOUS = "SQLITE_SYNCHRONOUS"
MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SynchronousDatastore(es_sqlite.SQLiteDatastore):
    """An ``SQLiteDatastore`` whose connections run ``PRAGMA synchronous=<mode>``."""

    def __init__(self, db_name: str, *, synchronous: str, **kwargs: Any) -> None:
        super().__init__(db_name, **kwargs)  # opens nothing yet
        mode = synchronous.upper()
        if mode not in MODES:
            raise ValueError(
                f"sqlite_synchronous={synchronous!r} breaks rule 'one of {', '.join(MODES)}'"
            )
        self.synchronous = mode
        self._configured: weakref.WeakSet[es_sqlite.SQLiteConnection] = weakref.WeakSet()

    @contextmanager
    def get_connection(self, *, commit: bool) -> Iterator[es_sqlite.SQLiteConnection]:
        with super().get_connection(commit=commit) as conn:
            if conn not in self._configured:
                # autocommit connection, outside any transaction: the pragma applies now
                with conn.cursor() as cursor:
                    cursor.execute(f"PRAGMA synchronous={self.synchronous}")
                self._configured.add(conn)
            yield conn


class SQLiteFactory(es_sqlite.SQLiteFactory):
    """``PERSISTENCE_MODULE=infra.sqlite_store:SQLiteFactory``; reads ``SQLITE_SYNCHRONOUS``
    (default ``FULL``, the library's behaviour) besides the library's own SQLite keys."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        built = self.datastore
        try:
            self.datastore = SynchronousDatastore(
                built.pool.db_name,
                synchronous=self.env.get(SYNCHRONOUS) or "FULL",
                lock_timeout=built.pool.lock_timeout,
                single_row_tracking=built.single_row_tracking,
                originator_id_type=built.originator_id_type,
            )
        finally:
            built.close()  # it never opened a connection
