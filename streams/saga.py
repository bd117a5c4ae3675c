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
from aggregates.base import Meta, TradingAggregate, fast_forward
from aggregates.market import Market
from aggregates.order import Order
from aggregates.position import Position
from aggregates.saga import TOPICS, OrderSaga
from streams.bus import Source


class UnitOfWork:
    """Aggregates read and changed while processing one batch of notifications.

    They come from the stage's own cache, kept between batches: only the saga thread
    touches it, and it is dropped whenever a batch fails, so an aggregate changed by a
    failed batch is never used again. What other writers stored meanwhile is read before
    use: accounts, positions and the market (which commands change all the time) are
    fast-forwarded from the store the first time a batch touches them; an order is
    fast-forwarded when the event in hand is newer than the cached order. Anything still
    stale makes the batch's save conflict, and the batch is decided again on fresh state.
    """

    def __init__(self, app: TradingApplication, cache: dict[UUID, Any], *,
                 trust_placed: bool = True) -> None:
        self._app = app
        self._cache = cache
        self._trust_placed = trust_placed
        self.loaded: dict[UUID, TradingAggregate] = {}
        self.absent: set[UUID] = set()  # looked up in this batch and not found

    def seen(self, event: Any) -> None:
        """Before handling ``event``: its aggregate is at least as new as the event."""
        id = event.originator_id
        cached = self.loaded.get(id) or self._cache.get(id)
        if cached is None:
            if self._trust_placed and isinstance(event, Order.Placed):
                self._cache[id] = event.mutate(None)  # version 1, straight from the event
        elif cached.version < event.originator_version and not cached.pending_events:
            forwarded = self._forward(cached)
            self._cache[id] = forwarded
            if id in self.loaded:
                self.loaded[id] = forwarded

    def _forward(self, aggregate: Any) -> Any:
        return fast_forward(aggregate, self._app.events.get(aggregate.id, gt=aggregate.version))

    def _get(self, id: UUID, fresh: bool) -> Any:
        agg = self.loaded.get(id)
        if agg is None:
            agg = self._cache.get(id)
            if agg is None:
                agg = self._app.repository.get(id)  # a copy: ours to change
            elif fresh:
                agg = self._forward(agg)
            self._cache[id] = self.loaded[id] = agg
        return agg

    def order(self, id: UUID) -> Order:
        return self._get(id, False)  # type: ignore[no-any-return]

    def account(self, id: UUID) -> Account:
        return self._get(id, True)  # type: ignore[no-any-return]

    def position(self, account_id: UUID, symbol: str, meta: Meta | None = None
                 ) -> Position | None:
        pid = ids.position_id(account_id, symbol)
        if pid not in self.absent:
            try:
                return self._get(pid, True)  # type: ignore[no-any-return]
            except AggregateNotFoundError:
                self.absent.add(pid)
        if meta is None:
            return None
        self.absent.discard(pid)
        position = Position.open(pid, account_id=account_id, symbol=symbol, meta=meta)
        self.loaded[pid] = self._cache[pid] = position
        return position

    def market(self) -> Market | None:
        try:
            return self._get(ids.MARKET_ID, True)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None


class SagaStage:
    name = "saga"
    topics: Sequence[str] = TOPICS

    def __init__(self, app: TradingApplication, saga: OrderSaga,
                 cache_size: int = 50_000) -> None:
        self.app = app
        self.saga = saga
        self.cache_size = cache_size
        self._cache: dict[UUID, Any] = {}
        self._snapshot_due: list[TradingAggregate] = []
        self._careful = True  # the next batch reads every order from the store

    def start(self, tracked: int, source: Source) -> None:
        """Nothing to rebuild: drop the cache (after a failure it may be ahead), and read
        the next batch's orders from the store rather than from their Placed events."""
        self._cache = {}
        self._snapshot_due.clear()
        self._careful = True

    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]:
        if len(self._cache) > self.cache_size:
            self._cache = {}
        uow = UnitOfWork(self.app, self._cache, trust_placed=not self._careful)
        for _, event in batch:
            uow.seen(event)
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
        self._careful = False
        if self._snapshot_due and self.app.snapshots is not None:
            self.app.snapshots.put([Snapshot.take(a) for a in self._snapshot_due])
        self._snapshot_due = []


def saga_for(app: TradingApplication) -> SagaStage:
    """The saga stage over ``app``'s store; last prices as the venue published them."""
    return SagaStage(app, OrderSaga(app.universe.get, app.last_price, app.limits,
                                    app.schedule, app.clock))
