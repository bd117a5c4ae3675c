"""Which projections could scale by partition: the evidence.

A projection can be split over N workers, each owning a share of the aggregates (by hash
of the aggregate id, as the Kafka topics ``events.<aggregate>`` are keyed), only if its
rows depend on one aggregate's events alone: then the N shares projected apart, put
together, are the whole projected at once. This projects each share of the log into a
database of its own and compares the union of the shares' rows with one projector's.

- ``balances`` and ``halts``: equal (per aggregate: partitionable);
- ``orders``: not equal (``bars`` sum the taker fills of every order of a symbol);
- ``positions``: not equal (``marks`` and every ``pnl`` row look across accounts).
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from projections.projectors import Projector, RecorderLog, all_projections, select
from projections.schema import upgrade
from projections.store import ReadStore
from tests.projections.conftest import StoreFactory
from tests.projections.test_bulk_rebuild import flow, trade_more

SHARES = 3


@dataclass(frozen=True)
class OtherShare:
    """An event of an aggregate another share owns: no projection handles it."""

    timestamp: datetime


class ShareOfLog:
    """The log as the worker owning share ``share`` of ``SHARES`` would see it."""

    def __init__(self, log: RecorderLog, share: int) -> None:
        self.log, self.share = log, share

    def select(self, start: int, limit: int) -> list[tuple[int, Any]]:
        return [(seq, event if owner(event) == self.share else OtherShare(event.timestamp))
                for seq, event in self.log.select(start, limit)]

    def head(self) -> int:
        return self.log.head()


def owner(event: Any) -> int:
    return zlib.crc32(str(event.originator_id).encode()) % SHARES


def rows(store: ReadStore, tables: tuple[str, ...]) -> dict[str, Counter[str]]:
    """Each table's rows, counted (as text: PostgreSQL's JSONB detail is a dict)."""
    return {t: Counter(repr(tuple(r)) for r in store.fetchall(f"SELECT * FROM {t}"))
            for t in tables}


@pytest.mark.parametrize("name, partitionable", [
    ("balances", True), ("halts", True), ("orders", False), ("positions", False)])
def test_only_per_aggregate_projections_equal_the_union_of_their_shares(
        new_store: StoreFactory, name: str, partitionable: bool) -> None:
    app = flow()
    trade_more(app, "x")
    log = RecorderLog(app.recorder, app.mapper)
    [projection] = select(all_projections(), [name])
    whole = new_store()
    upgrade(whole)
    Projector(whole, log, projections=[projection], batch_size=50).catch_up()
    union: dict[str, Counter[str]] = {t: Counter() for t in projection.tables}
    owners = Counter(owner(event) for _, event in log.select(1, 100_000))
    assert all(owners[share] for share in range(SHARES))  # every share has aggregates
    for share in range(SHARES):
        part = new_store()
        upgrade(part)
        [own] = select(all_projections(), [name])
        Projector(part, ShareOfLog(log, share), projections=[own], batch_size=50).catch_up()
        for table, found in rows(part, projection.tables).items():
            union[table] += found
    assert sum(sum(c.values()) for c in union.values()) > 0
    assert (union == rows(whole, projection.tables)) is partitionable
