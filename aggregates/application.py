"""The trading application: the command side of the order flow.

Commands (open account, deposit, withdraw, place, amend, cancel, halts, session close)
are decided against *stored* state and saved with optimistic concurrency: every
aggregate a command changes is loaded from the event store (a cached copy is only
fast-forwarded from the store and never changed in place), and the store's unique
(aggregate id, version) refuses a save that raced another writer, whereupon the command
is decided again on fresh state. So any number of processes (API workers, the CLI,
``serve``) may write to one store at once.

Placing an order assesses pre-trade risk once and stores, in one transaction, the
order (``Order.Placed``) and what it reserves on the account and the position: a
refused order stores nothing, also when many orders race for the same cash or shares.
Everything after that (routing, matching, fills, settlement) is done by the stages of
:mod:`streams`, which follow this application's notification log.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from aggregates import ids
from aggregates.account import Account
from aggregates.base import Meta, TradingAggregate
from aggregates.clock import Clock, SystemClock
from aggregates.errors import Conflict, DomainError, NotFound, RuleViolation
from aggregates.fees import DEFAULT_SCHEDULE, CommissionSchedule, get_schedule
from aggregates.instruments import Universe
from aggregates.market import Market
from aggregates.order import Order, OrderType, Side, TimeInForce
from aggregates.position import Position
from aggregates.risk import OrderTerms, RiskLimits, SessionRules, assess
from aggregates.text import printable
from aggregates.venue import Venue

T = TypeVar("T")
DECISIONS_CACHED = 20_000

# An optimistic-concurrency conflict means another writer moved an aggregate first:
# decide again on fresh state. Many writers on one hot account can conflict repeatedly,
# so retries are generous and jittered.
_on_conflict = retry(retry=retry_if_exception_type(IntegrityError), stop=stop_after_attempt(50),
                     wait=wait_random(0, 0.005), reraise=True)


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
    position: int = 0  # the log position of the basket that stored it (0: not stored now)


class TradingApplication(Application[UUID]):
    name = "trading"
    env: ClassVar[dict[str, str]] = {
        # A cached aggregate is brought up to date from the store on every read
        # (fast-forward) and handed out as a copy, so a failed write never leaves a
        # changed aggregate behind: the store, not the cache, decides.
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "y",
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Account: 200, Position: 200, Market: 200}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        universe: Universe,
        limits: RiskLimits | None = None,
        schedule: CommissionSchedule | str = DEFAULT_SCHEDULE,
        snapshot_interval: int = 200,
        clock: Clock | None = None,
        session_rules: SessionRules = "ignore",
    ) -> None:
        self.snapshotting_intervals = (  # type: ignore[misc]
            {kind: snapshot_interval for kind in self.snapshotting_intervals}
            if snapshot_interval else {})
        super().__init__(env)
        self.universe = universe
        self.limits = limits or RiskLimits()
        self.schedule = get_schedule(schedule) if isinstance(schedule, str) else schedule
        # Commands are stamped with this clock's time (simulated in replays and
        # backtests) and, with session_rules="enforce", refused outside the TSE session.
        self.clock: Clock = clock or SystemClock()
        # Held while a command decides and stores. Stages of this process that change
        # the same aggregates (the saga) take it around their batch too: they would
        # otherwise keep losing optimistic-concurrency races to this process's commands
        # on hot accounts. Other processes are still decided by the store alone.
        self.writing = threading.RLock()
        # The aggregates this process decides on (commands, and the saga stage), kept
        # between decisions and brought up to date from the log before each (see
        # deciding): changed only under the lock, dropped whole on any failure.
        self._cache: dict[UUID, Any] = {}
        self._followed: int | None = None  # the log position the cache reflects
        self.conflicts = 0  # baskets decided again after another writer moved first
        self.session_rules: SessionRules = session_rules
        # The newest notification this process stored, and who wants to hear of new ones
        # (stages following the log in this process): a command answers with the
        # position its reader can wait for (read-your-writes).
        self.log_position = 0
        self.listeners: list[Callable[[int], None]] = []
        # After a command, the composition root may drive the stages in-process (the
        # CLI and tests do; a server's stage threads are woken through ``listeners``).
        self.after_command: Callable[[], object] | None = None
        self._open_market()

    def construct_recorder(self) -> Any:
        """A process recorder: stages store their effects with tracking records here."""
        return self.factory.process_recorder()

    # == commands =========================================================================
    def open_account(self, name: str, *, owner: str, meta: Meta, allow_short: bool = False
                     ) -> UUID:
        account_id = ids.account_id(name)
        account = Account.open(account_id, name=name, owner=owner, allow_short=allow_short,
                               meta=self._stamped(meta))
        try:
            self.store(account)  # the store's unique (id, version) finds a taken name
        except IntegrityError:
            raise Conflict("name", "unique account name", name,
                           f"account {name!r} already exists") from None
        return account_id

    def deposit(self, account_id: UUID, amount: int, meta: Meta) -> None:
        meta = self._stamped(meta)
        self._change(account_id, Account, "account_id", lambda a: a.deposit(amount, meta))

    def withdraw(self, account_id: UUID, amount: int, meta: Meta) -> None:
        meta = self._stamped(meta)
        self._change(account_id, Account, "account_id", lambda a: a.withdraw(amount, meta))

    def halt_account(self, account_id: UUID, reason: str, meta: Meta) -> None:
        meta = self._stamped(meta)
        self._change(account_id, Account, "account_id", lambda a: a.halt(reason, meta))

    def resume_account(self, account_id: UUID, meta: Meta) -> None:
        meta = self._stamped(meta)
        self._change(account_id, Account, "account_id", lambda a: a.resume(meta))

    def halt_symbol(self, symbol: str, reason: str, meta: Meta) -> None:
        self.universe.get(symbol)
        meta = self._stamped(meta)
        self._change(ids.MARKET_ID, Market, "market", lambda m: m.halt(symbol, reason, meta))

    def resume_symbol(self, symbol: str, meta: Meta) -> None:
        self.universe.get(symbol)
        meta = self._stamped(meta)
        self._change(ids.MARKET_ID, Market, "market", lambda m: m.resume(symbol, meta))

    def close_session(self, session_date: str, meta: Meta) -> None:
        """End of the trading day: the venue expires the DAY orders still resting."""
        meta = self._stamped(meta)
        self._change(ids.MARKET_ID, Market, "market",
                     lambda m: m.close_session(session_date, meta))

    def open_bars(self, session_date: str, bars: list[dict[str, Any]], meta: Meta, *,
                  participation_bp: int, slippage_ticks: int) -> None:
        """A backtest's session opens with these bars: the venue offers the outside
        world's liquidity from them, and the day's price limits move to each bar's
        ``base`` (the previous close), as they do at a real session's start."""
        meta = self._stamped(meta)
        for bar in bars:
            self.universe.get(str(bar.get("symbol")))  # an unknown symbol stores nothing
        self._change(ids.MARKET_ID, Market, "market", lambda m: m.open_bars(
            session_date, bars, participation_bp=participation_bp,
            slippage_ticks=slippage_ticks, meta=meta))
        self.universe.rebase({bar["symbol"]: bar["base"] for bar in bars})

    def place_order(self, account_id: UUID, *, meta: Meta, **terms: Any) -> Placement:
        """Place one order (see :class:`OrderRequest` for the terms); raise if refused."""
        outcome = self.place_orders([OrderRequest(account_id=account_id, meta=meta, **terms)])[0]
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement | DomainError]:
        """Place a basket: each order is checked on its own and refused alone; the
        accepted ones and their reservations are stored in one transaction.

        Orders of one basket that draw on the same account or position are assessed one
        after the other on the same (stored, then reserved) state, so together they
        never reserve more than there is. A client order id already used is idempotent
        when the terms are identical and a ``Conflict`` otherwise. Nothing is stored for
        a refused order.
        """
        # The first attempt assumes every client order id is new (no read per order);
        # when the save finds one taken, or another writer moved an account or position
        # first, the basket is decided again on fresh state, looking each order up.
        look_up = False
        for attempt in range(50):
            if attempt:  # another process won the race: let it finish before trying again
                time.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
            with self.deciding():
                outcomes, changed = self._decide(requests, look_up)
                try:
                    position = self.store(*changed) if changed else 0
                except IntegrityError:
                    self.forget()
                    self.conflicts += 1
                    look_up = True
                    continue
            self._after_command()
            return [replace(o, position=position) if isinstance(o, Placement) and o.created
                    else o for o in outcomes]
        raise Conflict("account_id", "decided within 50 attempts", None,
                       "too many concurrent writers on the same accounts; retry")

    def _decide(self, requests: Sequence[OrderRequest], look_up: bool
                ) -> tuple[list[Placement | DomainError], list[TradingAggregate]]:
        loaded: dict[UUID, Any] = {}
        orders: dict[UUID, tuple[Order, OrderRequest]] = {}
        outcomes: list[Placement | DomainError] = []
        market = self.current(ids.MARKET_ID)
        prices: dict[str, int | None] = {}  # the venue's last price, read once per basket
        for request in requests:
            try:
                outcomes.append(self._place(request, loaded, orders, market, prices, look_up))
            except DomainError as err:
                outcomes.append(err)
        changed: list[TradingAggregate] = [order for order, _ in orders.values()]
        changed += [agg for agg in loaded.values() if agg is not None and agg.pending_events]
        return outcomes, changed

    def _place(self, r: OrderRequest, loaded: dict[UUID, Any],
               orders: dict[UUID, tuple[Order, OrderRequest]], market: Market | None,
               prices: dict[str, int | None], look_up: bool) -> Placement:
        side, order_type, tif = (_enum(Side, r.side, "side"),
                                 _enum(OrderType, r.order_type, "order_type"),
                                 _enum(TimeInForce, r.tif, "tif"))
        if not isinstance(r.client_order_id, str) or not 0 < len(r.client_order_id) <= 64:
            raise RuleViolation("client_order_id", "1..64 characters", r.client_order_id)
        printable("client_order_id", r.client_order_id)  # before anything is reserved
        order_id = ids.order_id(r.account_id, r.client_order_id)
        meta = self._stamped(r.meta)
        if order_id in orders:
            return _resubmission(orders[order_id][0], r)
        if look_up:
            existing = self._find(order_id)
            if existing is not None:
                return _resubmission(existing, r)
        if r.account_id not in loaded:
            account = self.current(r.account_id)
            if not isinstance(account, Account):
                raise NotFound("account_id", "exists", str(r.account_id),
                               f"no account {r.account_id}")
            loaded[r.account_id] = account
        account = loaded[r.account_id]
        position: Position | None = None
        if side is Side.SELL:  # a buy neither needs nor holds shares
            position_id = ids.position_id(r.account_id, r.symbol)
            if position_id not in loaded:
                loaded[position_id] = self.current(position_id)
            position = loaded[position_id]
        if r.symbol not in prices and r.symbol in self.universe:
            prices[r.symbol] = self.last_price(r.symbol)
        try:
            reservation = assess(
                OrderTerms(r.symbol, side, order_type, tif, r.quantity, r.price),
                instrument=self.universe.get(r.symbol), account=account, position=position,
                last_price=prices.get(r.symbol),
                symbol_halted=market is not None and r.symbol in market.halted_symbols,
                limits=self.limits, schedule=self.schedule,
                now=meta.at, session_rules=self.session_rules,
            )
        except DomainError:
            # Idempotency before risk: the same order placed earlier now holds the funds
            # it needs, so a retry would be refused for buying power; answer it as a
            # resubmission instead.
            existing = None if look_up else self._find(order_id)
            if existing is not None:
                return _resubmission(existing, r)
            raise
        account.reserve(order_id, reservation.funds, meta)
        if reservation.shares:
            assert position is not None  # assess counts shares only from a position
            position.reserve(order_id, reservation.shares, meta)
        order = Order.place(order_id, account_id=r.account_id,
                            client_order_id=r.client_order_id, symbol=r.symbol, side=side,
                            order_type=order_type, tif=tif, quantity=r.quantity,
                            price=r.price, meta=meta, reserved_funds=reservation.funds,
                            reserved_shares=reservation.shares)
        orders[order_id] = (order, r)
        return Placement(order_id, created=True)

    def cancel_order(self, order_id: UUID, meta: Meta) -> None:
        meta = self._stamped(meta)
        self._change(order_id, Order, "order_id", lambda o: o.request_cancel(meta))

    def amend_order(self, order_id: UUID, *, quantity: int, price: int, meta: Meta) -> None:
        """Ask for a new total ``quantity`` and/or ``price`` (risk on the change is
        assessed by the saga, against the reservation the order holds then)."""
        meta = self._stamped(meta)

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

        self._change(order_id, Order, "order_id", amend)

    # == queries ==========================================================================
    def get_account(self, account_id: UUID) -> Account:
        return self._get(account_id, Account, "account_id")  # type: ignore[no-any-return]

    def get_order(self, order_id: UUID) -> Order:
        return self._get(order_id, Order, "order_id")  # type: ignore[no-any-return]

    def get_position(self, account_id: UUID, symbol: str) -> Position | None:
        return self._find(ids.position_id(account_id, symbol))  # type: ignore[no-any-return]

    def last_price(self, symbol: str) -> int | None:
        """The symbol's last trade price as the venue last published it (its newest
        report), or None before its first trade."""
        report = self._venue_report(symbol)
        return None if report is None else report.last_price

    def book(self, symbol: str, levels: int) -> tuple[dict[str, list[list[int]]], int | None]:
        """The book as the venue last published it: up to ``levels`` price levels a
        side (``[price, quantity, orders]``, best first) and the last trade price."""
        self.universe.get(symbol)
        report = self._venue_report(symbol)
        if report is None:
            return {"bids": [], "asks": []}, None
        depth = report.depth or {"bids": [], "asks": []}
        return ({side: [list(level) for level in depth.get(side, [])[:levels]]
                 for side in ("bids", "asks")}, report.last_price)

    def _venue_report(self, symbol: str) -> Venue.Reported | None:
        for report in self.events.get(ids.venue_id(symbol), desc=True, limit=1):
            return report  # type: ignore[return-value]
        return None

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

    def chain_head(self, aggregate_id: UUID) -> str:
        """The hash-chain digest of the aggregate's last stored event ("" when it has
        none chained): what a stage that writes a stream without loading its aggregate
        (the matching stage's venue reports) chains its next event to after a restart."""
        for event in self.events.get(aggregate_id, desc=True, limit=1):
            return str(event.__dict__.get("_chain", ""))
        return ""

    def head(self) -> int:
        """The newest notification in the store (any writer's)."""
        return int(self.recorder.max_notification_id() or 0)

    # == storing ==========================================================================
    def store(self, *aggregates: TradingAggregate) -> int:
        """Store the aggregates' new events in one transaction, snapshot those due, and
        tell this process's listeners how far the log now reaches; the position of the
        last event stored (0: nothing was new)."""
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if not events:
            return 0
        recordings = self.events.put(events)
        self.take_snapshots(aggregates, events)
        position = int(recordings[-1].notification.id)
        self.published(position)
        return position

    def take_snapshots(self, aggregates: Sequence[Any], events: Sequence[Any]) -> None:
        """Snapshot, from memory, each aggregate one of whose new ``events`` reached a
        multiple of its type's snapshot interval (they are what was just stored)."""
        if self.snapshots is None or not self.snapshotting_intervals:
            return
        by_id = {aggregate.id: aggregate for aggregate in aggregates}
        due: dict[UUID, Any] = {}
        for event in events:
            aggregate = by_id.get(event.originator_id)
            every = self.snapshotting_intervals.get(type(aggregate))
            if every and event.originator_version % every == 0:
                due[aggregate.id] = aggregate  # type: ignore[union-attr]
        if due:
            self.snapshots.put([Snapshot.take(a) for a in due.values()])

    def published(self, position: int) -> None:
        """Something in this process stored events up to ``position``."""
        if position > self.log_position:
            self.log_position = position
        for listener in self.listeners:
            listener(position)

    # == internals ========================================================================
    def _stamped(self, meta: Meta) -> Meta:
        """The command's metadata with the moment it is decided, from this app's clock."""
        return meta if meta.at is not None else replace(meta, at=self.clock.now())

    def _after_command(self) -> None:
        if self.after_command is not None:
            self.after_command()

    def _change(self, id: UUID, kind: type[T], field: str, change: Callable[[T], None]) -> None:
        """Load from the store, change, save; a concurrent writer's conflict is decided
        again on fresh state."""
        _on_conflict(self._change_once)(id, kind, field, change)
        self._after_command()

    def _change_once(self, id: UUID, kind: type[T], field: str, change: Callable[[T], None]
                     ) -> None:
        with self.deciding():
            aggregate: Any = self.current(id)
            if kind is Market and aggregate is None:
                aggregate = Market.create(self._stamped(Meta.command("system")))
            if not isinstance(aggregate, kind):
                raise NotFound(field, "exists", str(id), f"no {kind.__name__.lower()} {id}")
            change(aggregate)
            self.store(aggregate)  # type: ignore[arg-type]

    # == the decision cache ==============================================================
    @contextmanager
    def deciding(self) -> Iterator[None]:
        """Hold the lock, bring the decision cache up to date with the log, and drop the
        whole cache if anything fails (a refusal halfway, a conflict, a broken store), so
        an aggregate changed by a failed decision is never used again."""
        with self.writing:
            try:
                self._follow_log()
                yield
            except BaseException:
                self.forget()
                raise

    def current(self, id: UUID) -> Any:
        """The aggregate as the store has it, for a decision (inside :meth:`deciding`);
        None when it does not exist. Changes made to it are this decision's own."""
        aggregate = self._cache.get(id)
        if aggregate is None:
            if len(self._cache) > DECISIONS_CACHED:
                self.forget()
                self._follow_log()
            aggregate = self._load(id)
            if aggregate is None:
                return None
            self._cache[id] = aggregate
        return aggregate

    def _load(self, id: UUID) -> Any:
        """Rebuild from the newest snapshot and the events after it (what the library's
        repository does, minus its cache, copy and per-event protocol checks: the
        decision cache is the only cache commands use)."""
        aggregate: Any = None
        after = None
        if self.snapshots is not None:
            for snapshot in self.snapshots.get(id, desc=True, limit=1):
                aggregate = snapshot.mutate(None)  # type: ignore[attr-defined]
                after = snapshot.originator_version
        for event in self.events.get(id, gt=after):
            aggregate = event.mutate(aggregate)  # type: ignore[attr-defined]
        return aggregate

    def adopt(self, aggregate: TradingAggregate) -> None:
        """Keep an aggregate a decision created (or built from its first event)."""
        self._cache[aggregate.id] = aggregate

    def forget(self) -> None:
        """Drop the decision cache (after any failure: it may be ahead of the store)."""
        self._cache = {}
        self._followed = None

    def _follow_log(self) -> None:
        """Apply to the cached aggregates what other writers stored since the cache last
        looked (this process's own writes are already in them and are skipped by
        version, without decoding). One query when nobody else wrote, instead of one per
        aggregate; the log is gapless and in commit order (SQLite serialises writers,
        eventsourcing's PostgreSQL recorder locks the table to insert)."""
        head = int(self.recorder.max_notification_id() or 0)
        if self._followed is None or not self._cache:
            self._followed = head
            return
        cache, to_event = self._cache, self.mapper.to_domain_event
        start = self._followed + 1
        while start <= head:
            notifications = self.recorder.select_notifications(
                start=start, limit=5000, stop=head)
            if not notifications:
                break
            for n in notifications:
                aggregate = cache.get(n.originator_id)  # type: ignore[arg-type]
                if aggregate is not None and n.originator_version > aggregate.version:
                    if n.originator_version == aggregate.version + 1:
                        cache[aggregate.id] = to_event(n).mutate(aggregate)  # type: ignore[attr-defined]
                    else:  # cannot happen in a gapless log; be safe rather than wrong
                        del cache[aggregate.id]
            start = notifications[-1].id + 1
        self._followed = head

    def _get(self, id: UUID, kind: type[Any], field: str) -> Any:
        aggregate = self._find(id)
        if not isinstance(aggregate, kind):
            raise NotFound(field, "exists", str(id), f"no {kind.__name__.lower()} {id}")
        return aggregate

    def _find(self, id: UUID) -> Any:
        try:
            return self.repository.get(id)
        except AggregateNotFoundError:
            return None

    def _open_market(self) -> None:
        """The Market aggregate exists from the start, so no order looks it up in vain."""
        if self._market() is None:
            with suppress(IntegrityError):  # another process opened it first
                self.store(Market.create(self._stamped(Meta.command("system", "open-market"))))

    def _market(self) -> Market | None:
        return self._find(ids.MARKET_ID)  # type: ignore[no-any-return]


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
