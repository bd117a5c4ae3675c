"""Read-model stores for tests: SQLite, TimescaleDB, and plain PostgreSQL (the fallback).

The PostgreSQL ones are fresh schemas on the throwaway cluster (``infra/postgres.sh``):
the app database has the TimescaleDB extension; ``tradecore_plain`` is a database on the
same cluster without it, so the fallback path runs against a real server too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from infra.services import ensure_postgres, ensure_timescaledb
from projections.store import ReadStore

PLAIN_DB = "tradecore_plain"


def timescale_url() -> str:
    return ensure_timescaledb()


def plain_url() -> str:
    url = ensure_postgres()
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        (PLAIN_DB,)).fetchone() is None:
            with suppress(psycopg.errors.DuplicateDatabase):  # another process was first
                conn.execute(f'CREATE DATABASE "{PLAIN_DB}"')
    return url.rsplit("/", 1)[0] + "/" + PLAIN_DB


StoreFactory = Callable[[], ReadStore]


@pytest.fixture(params=["sqlite",
                        pytest.param("timescaledb", marks=pytest.mark.postgres),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes empty read-model stores of one kind (each call a new database/schema)."""
    made: list[ReadStore] = []
    kind = request.param
    url = {"sqlite": None, "timescaledb": timescale_url, "postgres": plain_url}[kind]
    base = url() if url else None

    def make() -> ReadStore:
        if base is None:
            store = ReadStore.sqlite(tmp_path / f"rm-{uuid.uuid4().hex[:8]}.sqlite")
        else:
            store = ReadStore.postgres(base, f"rm_{uuid.uuid4().hex[:12]}")
            assert store.timescale == (kind == "timescaledb")
        made.append(store)
        return store

    yield make
    for store in made:
        if store.schema:
            store.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
        store.close()
