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
    """Aggregates read and changed while processing one batch of notifications.

    They come from the application's decision cache (:meth:`TradingApplication.current`),
    which the stage shares with this process's commands under one lock: it is brought up
    to date with the log before every batch and dropped whole when a batch fails, so an
    aggregate changed by a failed batch is never used again. Anything another process
    changed after that makes the batch's save conflict, and the batch is decided again.
    """

    def __init__(self, app: TradingApplication, *, trust_placed: bool = True) -> None:
        self._app = app
        self._trust_placed = trust_placed
        self.loaded: dict[UUID, TradingAggregate] = {}

    def seen(self, event: Any) -> None:
        """Before handling ``event``: a new order is built from its Placed event (its
        version 1) rather than read back from the store."""
        if (self._trust_placed and isinstance(event, Order.Placed)
                and event.originator_id not in self.loaded):
            order: Any = event.mutate(None)
            self._app.adopt(order)

    def _get(self, id: UUID) -> Any:
        agg = self.loaded.get(id)
        if agg is None:
            agg = self._app.current(id)
            if agg is None:
                raise AggregateNotFoundError(id)
            self.loaded[id] = agg
        return agg

    def order(self, id: UUID) -> Order:
        return self._get(id)  # type: ignore[no-any-return]

    def account(self, id: UUID) -> Account:
        return self._get(id)  # type: ignore[no-any-return]

    def position(self, account_id: UUID, symbol: str, meta: Meta | None = None
                 ) -> Position | None:
        pid = ids.position_id(account_id, symbol)
        found: Any = self.loaded.get(pid) or self._app.current(pid)
        if found is not None:
            self.loaded[pid] = found
            return found  # type: ignore[no-any-return]
        if meta is None:
            return None
        position = Position.open(pid, account_id=account_id, symbol=symbol, meta=meta)
        self._app.adopt(position)
        self.loaded[pid] = position
        return position

    def market(self) -> Market | None:
        return self._app.current(ids.MARKET_ID)  # type: ignore[no-any-return]


class SagaStage:
    name = "saga"
    topics: Sequence[str] = TOPICS

    def __init__(self, app: TradingApplication, saga: OrderSaga) -> None:
        self.app = app
        self.saga = saga
        self._changed: tuple[list[Any], list[Any]] = ([], [])
        self._careful = True  # the next batch reads every order from the store

    def start(self, tracked: int, source: Source) -> None:
        """Nothing to rebuild: drop the decision cache (after a failure it may be ahead),
        and read the next batch's orders from the store, not from their Placed events."""
        self.app.forget()
        self._changed = ([], [])
        self._careful = True

    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]:
        """Run inside the application's ``deciding()`` (see ``EventStoreStep.guard``)."""
        uow = UnitOfWork(self.app, trust_placed=not self._careful)
        for _, event in batch:
            uow.seen(event)
            self.saga.handle(event, uow)
        events = [e for aggregate in uow.loaded.values() for e in aggregate.collect_events()]
        self._changed = (list(uow.loaded.values()), events)
        return events

    def committed(self, position: int) -> None:
        """Snapshot from the aggregates in memory (they are what was just stored)."""
        self._careful = False
        self.app.take_snapshots(*self._changed)
        self._changed = ([], [])


def saga_for(app: TradingApplication) -> SagaStage:
    """The saga stage over ``app``'s store; last prices as the venue published them."""
    return SagaStage(app, OrderSaga(app.universe.get, app.last_price, app.limits,
                                    app.schedule, app.clock))
