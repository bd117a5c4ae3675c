"""The embedded event store's fsync policy, and the eventsourcing behaviour it relies on.

``infra.sqlite_store`` sets ``PRAGMA synchronous`` through the public
``SQLiteDatastore.get_connection``; if a new eventsourcing version stopped taking every
connection through it, or stopped reading the datastore from the factory, these tests
say so before a deployment silently fsyncs differently.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.sqlite import SQLiteDatastore

from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from infra.sqlite_store import SQLiteFactory, SynchronousDatastore

LEVELS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


class Note(Aggregate):
    def __init__(self, text: str) -> None:
        self.text = text


def _synchronous(datastore: SQLiteDatastore, *, commit: bool) -> int:
    with datastore.transaction(commit=commit) as cursor:
        cursor.execute("PRAGMA synchronous")
        return int(cursor.fetchone()[0])


def _env(path: Path, mode: str) -> dict[str, str]:
    env = eventsourcing_env(Settings(persistence="sqlite", sqlite_path=path))
    env["SQLITE_SYNCHRONOUS"] = mode
    return env


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
def test_the_configured_mode_is_on_every_connection_the_store_uses(
    tmp_path: Path, mode: str
) -> None:
    app: Application[UUID] = Application(env=_env(tmp_path / "events.sqlite", mode))
    try:
        factory = app.factory
        assert isinstance(factory, SQLiteFactory)
        datastore = factory.datastore
        assert isinstance(datastore, SynchronousDatastore)
        # the recorders got this datastore, not the one the library built first
        assert app.recorder.datastore is datastore  # type: ignore[attr-defined]

        app.save(Note("x"))  # a write goes through get_connection: the pragma is on it
        assert len(datastore._configured) >= 1
        assert _synchronous(datastore, commit=True) == LEVELS[mode]
        assert _synchronous(datastore, commit=False) == LEVELS[mode]

        # several connections at once (the pool opens more): each one is configured
        seen: list[int] = []
        barrier = threading.Barrier(3)

        def read() -> None:
            with datastore.get_connection(commit=False) as conn:
                barrier.wait(timeout=10)
                with conn.cursor() as cursor:
                    cursor.execute("PRAGMA synchronous")
                    seen.append(int(cursor.fetchone()[0]))

        threads = [threading.Thread(target=read) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert seen == [LEVELS[mode]] * 3
        assert len(datastore._configured) >= 3
    finally:
        app.close()


def test_the_default_is_the_library_s_full(tmp_path: Path) -> None:
    env: dict[str, Any] = {
        "PERSISTENCE_MODULE": "infra.sqlite_store:SQLiteFactory",
        "SQLITE_DBNAME": str(tmp_path / "e.sqlite"),
    }
    app: Application[UUID] = Application(env=env)
    try:
        datastore = app.factory.datastore  # type: ignore[attr-defined]
        assert _synchronous(datastore, commit=True) == LEVELS["FULL"]
    finally:
        app.close()


def test_settings_default_is_normal_and_bad_modes_are_refused(tmp_path: Path) -> None:
    env = eventsourcing_env(Settings(persistence="sqlite", sqlite_path=tmp_path / "e.sqlite"))
    assert env["SQLITE_SYNCHRONOUS"] == "NORMAL"
    with pytest.raises(ValueError, match="sqlite_synchronous='sometimes'"):
        Application(env=_env(tmp_path / "bad.sqlite", "sometimes"))


def test_lock_timeout_and_tracking_settings_survive_the_swap(tmp_path: Path) -> None:
    env = _env(tmp_path / "e.sqlite", "NORMAL")
    env["SQLITE_LOCK_TIMEOUT"] = "7"
    factory = SQLiteFactory(env)
    try:
        assert factory.datastore.pool.lock_timeout == 7
        assert factory.datastore.pool.db_name == str(tmp_path / "e.sqlite")
        assert factory.datastore.single_row_tracking is True
        assert factory.datastore.originator_id_type == "uuid"
    finally:
        factory.close()
