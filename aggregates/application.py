"""The trading application: command handlers, and the saga that follows its own log.

Commands (open account, deposit, withdraw, place, amend, cancel, halts, session close)
validate against current state and store events; nothing is stored when they raise.
The saga (:mod:`aggregates.saga`) then follows this application's notification log:
it reads a batch of notifications, applies each through a unit of work, and stores all
resulting events together with a tracking record of the last notification in one
transaction. A crash anywhere loses the whole uncommitted batch and nothing else; on
restart the venue's state is rebuilt from the routed events already processed and the
saga resumes after the tracked position, so no fill is applied twice or lost.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.system import ProcessApplication
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from aggregates import ids
from aggregates.account import Account
from aggregates.base import Meta, TradingAggregate
from aggregates.errors import Conflict, DomainError, NotFound, RuleViolation
from aggregates.fees import DEFAULT_SCHEDULE, CommissionSchedule, get_schedule
from aggregates.instruments import Universe
from aggregates.market import Market
from aggregates.matching import Depth, MatchingDesk, MatchingEngine, make_engine
from aggregates.order import Order, OrderType, Side, TimeInForce
from aggregates.position import Position
from aggregates.risk import OrderTerms, RiskLimits, assess
from aggregates.saga import ROUTED_TOPICS, OrderSaga


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One order as a client sends it. Prices are integer price units (0 for market)."""

    account_id: UUID
    client_order_id: str
    symbol: str
    side: Side | str
    quantity: int
    meta: Meta
    price: int = 0
    order_type: OrderType | str = OrderType.LIMIT
    tif: TimeInForce | str = TimeInForce.DAY


@dataclass(frozen=True, slots=True)
class Placement:
    order_id: UUID
    created: bool  # False: an identical resubmission of an existing client order id


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


class TradingApplication(ProcessApplication[UUID]):
    name = "trading"
    env: ClassVar[dict[str, str]] = {
        # The write lock serialises writers in this process; cached aggregates are
        # mutated in place and the cache is cleared whenever a write fails.
        "AGGREGATE_CACHE_MAXSIZE": "50000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }
    # Enables the snapshot store; when to snapshot is ``snapshot_interval`` (per instance).
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Account: 200, Position: 200}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        universe: Universe,
        engine: MatchingEngine | str = "reference",
        limits: RiskLimits | None = None,
        schedule: CommissionSchedule | str = DEFAULT_SCHEDULE,
        batch_size: int = 256,
        auto_process: bool = True,
        snapshot_interval: int = 200,
    ) -> None:
        self.snapshot_interval = snapshot_interval
        super().__init__(env)
        self.universe = universe
        self.limits = limits or RiskLimits()
        self.schedule = get_schedule(schedule) if isinstance(schedule, str) else schedule
        self._engine_spec = engine
        self.batch_size = batch_size
        self.auto_process = auto_process
        self._lock = threading.RLock()
        # Events this process just stored, by notification id: the saga takes them from
        # here instead of re-reading and decoding the log, whenever they are exactly the
        # next ones after its tracked position (else it reads the store).
        self._fresh: deque[tuple[int, Any]] = deque()
        self._tracked: int | None = None
        # The newest notification this process stored, and who wants to hear of new ones
        # (projectors following the log): a command answers with the position its reader
        # can wait for (read-your-writes).
        self.log_position = 0
        self.listeners: list[Callable[[int], None]] = []
        self.desk = self._new_desk()
        self.saga = OrderSaga(universe.get, self.desk, self.limits, self.schedule)
        self._rebuild_desk()
        self._open_market()

    # == commands =========================================================================
    def open_account(self, name: str, *, owner: str, meta: Meta, allow_short: bool = False
                     ) -> UUID:
        account_id = ids.account_id(name)
        with self._writing():
            account = Account.open(account_id, name=name, owner=owner,
                                   allow_short=allow_short, meta=meta)
            try:
                self.save(account)  # the store's unique (id, version) finds a taken name
            except IntegrityError:
                raise Conflict("name", "unique account name", name,
                               f"account {name!r} already exists") from None
        return account_id

    def deposit(self, account_id: UUID, amount: int, meta: Meta) -> None:
        self._change(account_id, lambda a: a.deposit(amount, meta))

    def withdraw(self, account_id: UUID, amount: int, meta: Meta) -> None:
        self._change(account_id, lambda a: a.withdraw(amount, meta))

    def halt_account(self, account_id: UUID, reason: str, meta: Meta) -> None:
        self._change(account_id, lambda a: a.halt(reason, meta))

    def resume_account(self, account_id: UUID, meta: Meta) -> None:
        self._change(account_id, lambda a: a.resume(meta))

    def halt_symbol(self, symbol: str, reason: str, meta: Meta) -> None:
        self.universe.get(symbol)
        self._change_market(lambda m: m.halt(symbol, reason, meta), meta)
        self._after_command()

    def resume_symbol(self, symbol: str, meta: Meta) -> None:
        self.universe.get(symbol)
        self._change_market(lambda m: m.resume(symbol, meta), meta)
        self._after_command()

    def close_session(self, session_date: str, meta: Meta) -> None:
        """End of the trading day: DAY orders still resting expire (via the saga)."""
        self._change_market(lambda m: m.close_session(session_date, meta), meta)
        self._after_command()

    def place_order(self, account_id: UUID, *, meta: Meta, **terms: Any) -> Placement:
        """Place one order (see :class:`OrderRequest` for the terms); raise if refused."""
        outcome = self.place_orders([OrderRequest(account_id=account_id, meta=meta, **terms)])[0]
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement | DomainError]:
        """Place a basket: each order is checked on its own and refused alone; the
        accepted ones are stored in one transaction (group commit).

        A client order id already used is idempotent when the terms are identical and a
        ``Conflict`` otherwise. Nothing is stored for a refused order.
        """
        outcomes: list[Placement | DomainError] = []
        fresh: dict[UUID, tuple[Order, OrderRequest]] = {}
        with self._writing():
            for request in requests:
                try:
                    outcomes.append(self._prepare(request, fresh))
                except DomainError as err:
                    outcomes.append(err)
            orders = [order for order, _ in fresh.values()]
            try:
                # Optimistic: the store's unique (id, version) finds a client order id used
                # before this process cached it, without a read on the common path.
                self.save(*orders)
            except IntegrityError:
                # A client order id was used before this process cached it. The failed save
                # drained the new orders' pending events: redo the basket one order at a
                # time, reading each id from the store first.
                self._forget_cache()
                outcomes = [self._place_alone(request) for request in requests]
        self._after_command()
        return outcomes

    def _prepare(self, r: OrderRequest, fresh: dict[UUID, tuple[Order, OrderRequest]]
                 ) -> Placement:
        side, order_type, tif = (_enum(Side, r.side, "side"),
                                 _enum(OrderType, r.order_type, "order_type"),
                                 _enum(TimeInForce, r.tif, "tif"))
        if not r.client_order_id or len(r.client_order_id) > 64:
            raise RuleViolation("client_order_id", "1..64 characters", r.client_order_id)
        order_id = ids.order_id(r.account_id, r.client_order_id)
        account = self._get(r.account_id, Account, "account_id")
        earlier = fresh[order_id][0] if order_id in fresh else self._cached(order_id)
        if earlier is not None:
            return _resubmission(earlier, r)
        try:
            market = self._market()
            assess(
                OrderTerms(r.symbol, side, order_type, tif, r.quantity, r.price),
                instrument=self.universe.get(r.symbol), account=account,
                position=self._position(r.account_id, r.symbol),
                last_price=self.desk.last_price(r.symbol),
                symbol_halted=market is not None and r.symbol in market.halted_symbols,
                limits=self.limits, schedule=self.schedule,
            )
        except DomainError as refusal:
            # Idempotency before risk: an order already placed (by a process that has not
            # cached it here) now holds the funds it needs; answer as a resubmission.
            try:
                existing: Order = self.repository.get(order_id)
            except AggregateNotFoundError:
                raise refusal from None
            return _resubmission(existing, r)
        fresh[order_id] = (Order.place(order_id, account_id=r.account_id,
                                       client_order_id=r.client_order_id, symbol=r.symbol,
                                       side=side, order_type=order_type, tif=tif,
                                       quantity=r.quantity, price=r.price, meta=r.meta), r)
        return Placement(order_id, created=True)

    def _place_alone(self, request: OrderRequest) -> Placement | DomainError:
        try:
            order_id = ids.order_id(request.account_id, request.client_order_id)
            try:
                return _resubmission(self.repository.get(order_id), request)
            except AggregateNotFoundError:
                fresh: dict[UUID, tuple[Order, OrderRequest]] = {}
                placement = self._prepare(request, fresh)
                self.save(*(order for order, _ in fresh.values()))
                return placement
        except DomainError as err:
            return err

    def cancel_order(self, order_id: UUID, meta: Meta) -> None:
        self._change(order_id, lambda o: o.request_cancel(meta), kind=Order, field="order_id")
        self._after_command()

    def amend_order(self, order_id: UUID, *, quantity: int, price: int, meta: Meta) -> None:
        """Ask for a new total ``quantity`` and/or ``price`` (risk is checked by the saga)."""
        def amend(order: Order) -> None:
            if order.order_type is OrderType.MARKET:
                raise RuleViolation("order_id", "only limit orders can be amended", str(order_id))
            instrument = self.universe.get(order.symbol)
            if not isinstance(quantity, int) or quantity <= order.filled_quantity:
                raise RuleViolation("quantity", "above the filled quantity", quantity)
            instrument.check_quantity(quantity)
            instrument.check_price(price)
            if (quantity, price) == (order.quantity, order.price):
                raise RuleViolation("quantity", "amend changes quantity or price", quantity)
            order.request_amend(quantity, price, meta)

        self._change(order_id, amend, kind=Order, field="order_id")
        self._after_command()

    # == queries ==========================================================================
    def get_account(self, account_id: UUID) -> Account:
        return self._get(account_id, Account, "account_id")

    def get_order(self, order_id: UUID) -> Order:
        return self._get(order_id, Order, "order_id")

    def get_position(self, account_id: UUID, symbol: str) -> Position | None:
        return self._position(account_id, symbol)

    def book(self, symbol: str, levels: int) -> tuple[Depth, int | None]:
        """The venue's book for ``symbol`` now (top levels) and its last trade price."""
        self.universe.get(symbol)
        with self._lock:
            return self.desk.depth(symbol, levels), self.desk.last_price(symbol)

    def ids_of(self, kind: type[TradingAggregate]) -> list[UUID]:
        """Ids of every aggregate of ``kind`` ever created (a scan of the log, for audits)."""
        created = "Placed" if kind is Order else ("Opened" if kind in (Account, Position)
                                                  else "Created")
        topic = f"{kind.__module__}:{kind.__qualname__}.{created}"
        found: list[UUID] = []
        start = 1
        while True:
            batch = self.recorder.select_notifications(start=start, limit=1000, topics=[topic])
            if not batch:
                return found
            found.extend(n.originator_id for n in batch)  # type: ignore[misc]
            start = batch[-1].id + 1

    def history(self, aggregate_id: UUID) -> list[Any]:
        """Every stored event of one aggregate, oldest first: its audit trail."""
        return list(self.events.get(aggregate_id))

    # == the saga =========================================================================
    def process(self, max_batches: int | None = None) -> int:
        """Run the saga until it has caught up with the log; returns notifications done."""
        done = batches = 0
        with self._lock:
            while max_batches is None or batches < max_batches:
                position = self.processed_position()
                batch = self._next_batch(position)
                if not batch:
                    break
                uow = UnitOfWork(self)
                try:
                    for _, event in batch:
                        self.saga.handle(event, uow)
                    processing = ProcessingEvent[UUID](Tracking(self.name, batch[-1][0]))
                    for aggregate in uow.loaded.values():
                        pending = aggregate.collect_events()
                        if pending:
                            processing.events.extend(pending)
                            processing.aggregates[aggregate.id] = aggregate
                    recordings = self._record(processing)
                    self._tracked = batch[-1][0]
                    self._fresh.extend((r.notification.id, r.domain_event) for r in recordings)
                    self._take_snapshots(processing)
                except BaseException:
                    self._recover()
                    raise
                done += len(batch)
                batches += 1
        return done

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot from the aggregate in memory (the library would re-read it from the store)."""
        if self.snapshots is None:
            return
        due = set()
        for event in processing_event.events:
            aggregate = processing_event.aggregates.get(event.originator_id)
            every = self.snapshot_interval
            if (every and isinstance(aggregate, Account | Position)
                    and event.originator_version % every == 0):
                due.add(event.originator_id)
        snapshots = [Snapshot.take(processing_event.aggregates[i]) for i in due]
        if snapshots:
            self.snapshots.put(snapshots)

    def _next_batch(self, position: int) -> list[tuple[int, Any]]:
        fresh = self._fresh
        while fresh and fresh[0][0] <= position:
            fresh.popleft()
        batch: list[tuple[int, Any]] = []
        expected = position + 1
        while fresh and len(batch) < self.batch_size and fresh[0][0] == expected:
            batch.append(fresh.popleft())
            expected += 1
        if batch:
            return batch
        notifications = self.recorder.select_notifications(
            start=position + 1, limit=self.batch_size
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Any]:
        recordings = super()._record(processing_event)
        if recordings:
            self.log_position = max(self.log_position, recordings[-1].notification.id)
            for listener in self.listeners:
                listener(self.log_position)
        return recordings

    def _notify(self, recordings: list[Any]) -> None:
        super()._notify(recordings)
        self._fresh.extend((r.notification.id, r.domain_event) for r in recordings)

    def processed_position(self) -> int:
        """The last notification the saga has processed, kept in memory after each commit.

        One saga process per store (the library's follower model): a second one would
        process the same notifications. A deployment runs exactly one saga worker.
        """
        if self._tracked is None:
            self._tracked = self.recorder.max_tracking_id(self.name) or 0
        return self._tracked

    # == internals ========================================================================
    def _after_command(self) -> None:
        if self.auto_process:
            self.process()

    def _new_desk(self) -> MatchingDesk:
        spec = self._engine_spec
        engine = make_engine(spec) if isinstance(spec, str) else spec
        return MatchingDesk(engine, self.universe.get)

    def _rebuild_desk(self) -> None:
        """Feed the venue the routed events already processed, discarding their effects."""
        upto = self.processed_position()
        topics = [f"{Order.__module__}:{name}" for name in ROUTED_TOPICS]
        start = 1
        while start <= upto:
            notifications = self.recorder.select_notifications(
                start=start, limit=1000, stop=upto, topics=topics
            )
            if not notifications:
                break
            for notification in notifications:
                self.saga.to_venue(self.mapper.to_domain_event(notification))
            start = notifications[-1].id + 1

    def _recover(self) -> None:
        """After a failed write: forget in-memory state and rebuild it from the store."""
        self._fresh.clear()
        self._tracked = None
        self._forget_cache()
        self.desk = self._new_desk()
        self.saga.desk = self.desk
        self._rebuild_desk()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except BaseException:
                self._forget_cache()
                raise

    def _forget_cache(self) -> None:
        """Cached aggregates are changed in place: after a failed write they may be ahead."""
        if self.repository.cache is not None:
            self.repository.cache.clear()  # type: ignore[attr-defined]

    @retry(retry=retry_if_exception_type(IntegrityError), stop=stop_after_attempt(5),
           reraise=True)
    def _change(self, id: UUID, change: Any, *, kind: type[Any] = Account,
                field: str = "account_id") -> None:
        """Load, change, save; an optimistic-concurrency conflict reloads and retries."""
        with self._writing():
            aggregate = self._get(id, kind, field)
            change(aggregate)
            self.save(aggregate)

    @retry(retry=retry_if_exception_type(IntegrityError), stop=stop_after_attempt(5),
           reraise=True)
    def _change_market(self, change: Any, meta: Meta) -> None:
        """Like :meth:`_change` for the Market (the saga runs after, outside the retry)."""
        with self._writing():
            market = self._market() or Market.create(meta)
            change(market)
            self.save(market)

    def _get(self, id: UUID, kind: type[Any], field: str) -> Any:
        try:
            aggregate: Any = self.repository.get(id)
        except AggregateNotFoundError:
            raise NotFound(field, "exists", str(id), f"no {kind.__name__.lower()} {id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(field, "exists", str(id), f"no {kind.__name__.lower()} {id}")
        return aggregate

    def _position(self, account_id: UUID, symbol: str) -> Position | None:
        try:
            return self.repository.get(ids.position_id(account_id, symbol))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None

    def _cached(self, id: UUID) -> Any:
        cache = self.repository.cache
        if cache is None:
            return None
        try:
            return cache.get(id)
        except KeyError:
            return None

    def _open_market(self) -> None:
        """The Market aggregate exists from the start, so no order looks it up in vain."""
        if self._market() is None:
            with suppress(IntegrityError):  # another process opened it first
                self.save(Market.create(Meta.command("system", "open-market")))

    def _market(self) -> Market | None:
        try:
            return self.repository.get(ids.MARKET_ID)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None


def _resubmission(existing: Order, r: OrderRequest) -> Placement:
    """A client order id seen before: the same order again, or a conflict."""
    if existing.same_terms(r.symbol, _enum(Side, r.side, "side"),
                           _enum(OrderType, r.order_type, "order_type"),
                           _enum(TimeInForce, r.tif, "tif"), r.quantity, r.price):
        return Placement(existing.id, created=False)
    raise Conflict("client_order_id", "unique per account unless identical", r.client_order_id,
                   f"client order id {r.client_order_id!r} was used for a different order")


def _enum(kind: Any, value: Any, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise RuleViolation(field, f"one of {allowed}", value) from None
