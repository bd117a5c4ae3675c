"""The saga stage: runs :class:`aggregates.saga.OrderSaga` on the tracked processor.

It consumes the saga's topics from the log (placed, cancel and amend requests, venue
reports). For each batch it loads the aggregates it touches from the store (fresh, as
every writer does), lets the saga change them, and returns their new events; the
processor stores them with the tracking record in one transaction. A command writer
that changed one of those aggregates meanwhile makes the save conflict, and the batch
is decided again on fresh state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Snapshot

from aggregates import ids
from aggregates.account import Account
from aggregates.application import TradingApplication
from aggregates.base import Meta, TradingAggregate
from aggregates.market import Market
from aggregates.order import Order
from aggregates.position import Position
from aggregates.saga import TOPICS, OrderSaga
from streams.bus import Source


class UnitOfWork:
    """Aggregates loaded and changed while processing one batch of notifications."""

    def __init__(self, app: TradingApplication) -> None:
        self._app = app
        self.loaded: dict[UUID, TradingAggregate] = {}
        self.absent: set[UUID] = set()  # looked up in this batch and not found

    def _get(self, id: UUID) -> Any:
        agg = self.loaded.get(id)
        if agg is None:
            agg = self._app.repository.get(id)
            self.loaded[id] = agg
        return agg

    def order(self, id: UUID) -> Order:
        return self._get(id)  # type: ignore[no-any-return]

    def account(self, id: UUID) -> Account:
        return self._get(id)  # type: ignore[no-any-return]

    def position(self, account_id: UUID, symbol: str, meta: Meta | None = None
                 ) -> Position | None:
        pid = ids.position_id(account_id, symbol)
        if pid not in self.absent:
            try:
                return self._get(pid)  # type: ignore[no-any-return]
            except AggregateNotFoundError:
                self.absent.add(pid)
        if meta is None:
            return None
        self.absent.discard(pid)
        position = Position.open(pid, account_id=account_id, symbol=symbol, meta=meta)
        self.loaded[pid] = position
        return position

    def market(self) -> Market | None:
        try:
            return self._get(ids.MARKET_ID)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None


class SagaStage:
    name = "saga"
    topics: Sequence[str] = TOPICS

    def __init__(self, app: TradingApplication, saga: OrderSaga) -> None:
        self.app = app
        self.saga = saga
        self._snapshot_due: list[TradingAggregate] = []

    def start(self, tracked: int, source: Source) -> None:
        """The saga keeps nothing between batches: every batch reads the store."""
        self._snapshot_due.clear()

    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]:
        uow = UnitOfWork(self.app)
        for _, event in batch:
            self.saga.handle(event, uow)
        events: list[Any] = []
        due: list[TradingAggregate] = []
        every = self.app.snapshotting_intervals
        for aggregate in uow.loaded.values():
            pending = aggregate.collect_events()
            if not pending:
                continue
            events.extend(pending)
            interval = every.get(type(aggregate))
            if interval and any(e.originator_version % interval == 0 for e in pending):
                due.append(aggregate)
        self._snapshot_due = due
        return events

    def committed(self, position: int) -> None:
        """Snapshot from the aggregates in memory (they are what was just stored)."""
        if self._snapshot_due and self.app.snapshots is not None:
            self.app.snapshots.put([Snapshot.take(a) for a in self._snapshot_due])
        self._snapshot_due = []


def saga_for(app: TradingApplication) -> SagaStage:
    """The saga stage over ``app``'s store; last prices as the venue published them."""
    return SagaStage(app, OrderSaga(app.universe.get, app.last_price, app.limits,
                                    app.schedule, app.clock))
