"""Retention: drop time-series rows older than a horizon.

With TimescaleDB, ``drop_chunks`` removes whole chunks (cheap, no vacuum debt); plain
PostgreSQL and SQLite delete the rows. Current-state tables (orders, positions,
balances) are never trimmed, and the event store keeps everything: a rebuild brings
dropped rows back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from projections.schema import HYPERTABLES
from projections.store import ReadStore


def drop_older_than(store: ReadStore, age: timedelta, *, now: datetime | None = None
                    ) -> dict[str, int]:
    """Drop rows older than ``age`` from every time-series table; returns what went.

    For TimescaleDB the count is of chunks dropped, otherwise of rows deleted.
    """
    if age <= timedelta(0):
        raise ValueError(f"age: must be positive, got {age}")
    horizon = (now or datetime.now(UTC)) - age
    dropped: dict[str, int] = {}
    with store.transaction():
        for table in HYPERTABLES:
            if store.timescale:
                chunks = store.fetchall("SELECT drop_chunks(%s::regclass, older_than => %s)",
                                        (table, horizon))
                dropped[table] = len(chunks)
            else:
                cursor = store.execute(f"DELETE FROM {table} WHERE ts < %s",
                                       (store.ts(horizon),))
                dropped[table] = int(cursor.rowcount)
    return dropped
