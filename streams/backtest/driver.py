"""The daily backtest driver: history through the live order flow, on a simulated clock.

For each session from ``start`` to ``end`` (Tokyo dates; the clock runs on the data's
time, never the wall clock):

1. 09:00 JST: the session's bars for the symbols the strategy wants to trade are
   recorded with the ``open_bars`` command (``Market.BarsOpened``); the matching stage
   turns them into the outside world's liquidity (the fill model: ``docs/backtests.md``)
   and the day's price limits move to the previous closes.
2. The orders the strategy decided at the previous close are placed through
   ``TradingApplication.place_orders`` (risk, reservations, idempotency by client order
   id ``strategy:date:symbol``): sells first, then buys sized to the cash the sells
   left. The saga routes them, the venue fills them against the outside liquidity, the
   saga settles only our side.
3. 15:00 JST: ``close_session`` expires what is left, the outside liquidity included.
4. The strategy sees the session's close (and nothing later) and decides the next one.

Everything runs stepped in this thread (``streams.embedded.Stages.settle`` after every
command), so a run is a pure function of its inputs: the same backtest stores the same
events, byte for byte. The run is written to a temporary folder beside ``out`` and
renamed into place only when complete.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np

from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.clock import SimulatedClock
from aggregates.errors import DomainError, RuleViolation
from aggregates.fees import DEFAULT_SCHEDULE
from aggregates.instruments import TOKYO
from aggregates.order import OrderStatus
from aggregates.risk import RiskLimits
from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from streams.backtest.data import DailyBars, load_bars
from streams.signals import client_order_id, portfolio_of
from streams.strategies.base import (
    MarketHistory,
    OrderIntent,
    Portfolio,
    Strategy,
    orders_for_targets,
)

PRINCIPAL = "backtest"
OPEN_AT = clock_time(9, 0)
CLOSE_AT = clock_time(15, 0)
EVENTS_FILE = "events.sqlite"
READMODELS_FILE = "readmodels.sqlite"
PROJECTION_BATCH = 5000  # events per read-model transaction (20,000 measured no faster)
PROJECTION_CACHE_KIB = 256 * 1024  # SQLite page cache of the run's read-model rebuild


class BacktestError(RuleViolation):
    """A backtest that cannot run or could not finish: the field and the rule."""


@dataclass(frozen=True, slots=True)
class FillModel:
    """How the outside world trades with us (see ``docs/backtests.md``)."""

    participation_bp: int = 1000  # 10% of a bar's volume each side, at most
    slippage_ticks: int = 1  # the outside ask/bid sit this many ticks from the open

    def check(self) -> None:
        if not 0 < self.participation_bp <= 10_000:
            raise BacktestError("participation", "in (0, 100] percent",
                                self.participation_bp / 100)
        if not 1 <= self.slippage_ticks <= 100:
            raise BacktestError("slippage_ticks", "an integer in 1..100", self.slippage_ticks)


@dataclass(frozen=True)
class BacktestSpec:
    data: Path  # the J-Quants folder (daily_quotes, listed_info)
    start: date
    end: date
    cash: int = 100_000_000
    fill: FillModel = field(default_factory=FillModel)
    schedule: str = DEFAULT_SCHEDULE
    readmodels: bool = True  # project the read models into the run (auditable queries)


@dataclass
class DayRecord:
    day: date
    equity: int  # yen, at the session's closes
    cash: int
    fees: int  # yen paid this session
    bought: int  # yen notional bought this session
    sold: int
    placed: int
    filled: int  # orders with any fill
    rejected: int


@dataclass
class BacktestResult:
    out: Path
    strategy: str
    spec: dict[str, Any]
    days: list[DayRecord]
    orders: Counter[str]  # placed, filled, partially_filled, expired, rejected, skipped
    reasons: Counter[str]  # why orders were rejected or skipped
    events: int
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds: where the time went


def _moment(day: date, at: clock_time) -> datetime:
    return datetime.combine(day, at, tzinfo=TOKYO).astimezone(UTC)


class _Run:
    """One backtest in one store: the driver's state between sessions."""

    def __init__(self, strategy: Strategy, spec: BacktestSpec, bars: DailyBars, folder: Path
                 ) -> None:
        from streams.embedded import in_process

        self.strategy, self.spec, self.bars = strategy, spec, bars
        first = bars.dates[bars.dates.index(self._sessions()[0])]
        self.clock = SimulatedClock(_moment(first, clock_time(0, 0)))
        settings = Settings(persistence="sqlite", sqlite_path=folder / EVENTS_FILE)
        env = eventsourcing_env(settings)
        # a run is thrown away unless it completes (then the file is closed, so flushed):
        # an fsync per commit would buy nothing
        env["SQLITE_SYNCHRONOUS"] = "OFF"
        self.app = TradingApplication(env, universe=bars.universe,
                                      limits=RiskLimits(), schedule=spec.schedule,
                                      clock=self.clock)
        self.stages = in_process(self.app)
        self.account = self.app.open_account(
            f"backtest-{strategy.name}", owner=PRINCIPAL, meta=self._meta("open-account"))
        self.app.deposit(self.account, spec.cash, self._meta("deposit"))
        self.history = MarketHistory(
            bars.dates, bars.symbols, bars.close, bars.volume, codes=bars.codes,
            quotes=lambda day: bars.quotes.filter(bars.quotes["Date"] <= day))
        self.column = {s: j for j, s in enumerate(bars.symbols)}
        self.held: set[str] = set()
        self.orders: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.days: list[DayRecord] = []
        self._last_close: dict[str, int] = {}  # price units, the newest close per symbol
        self._closes: tuple[int, list[tuple[str, int]]] = (-1, [])  # session, its closes

    def _sessions(self) -> list[date]:
        return [d for d in self.bars.dates if self.spec.start <= d <= self.spec.end]

    def _meta(self, command_id: str) -> Meta:
        return Meta.command(PRINCIPAL, command_id, at=self.clock.now())

    # -- the portfolio as the strategy may see it --------------------------------------
    def portfolio(self, marks: dict[str, int]) -> Portfolio:
        return portfolio_of(self.app, self.account, self.held, marks)

    def _account_totals(self) -> tuple[int, int, int, int]:
        with self.app.deciding():
            a = self.app.current(self.account)
            return int(a.cash), int(a.fees), int(a.bought), int(a.sold)

    # -- one session -------------------------------------------------------------------
    def session(self, i: int, decision: Any) -> None:
        day = self.bars.dates[i]
        self.clock.set(_moment(day, OPEN_AT))
        intents = [] if isinstance(decision, Mapping) else list(decision)
        targets = decision if isinstance(decision, Mapping) else None
        wanted = set(targets or ()) | self.held | {o.symbol for o in intents
                                                   if isinstance(o, OrderIntent)}
        bars: dict[str, dict[str, Any]] = {}
        for symbol in sorted(s for s in wanted if s in self.column):
            base = self._last_close.get(symbol)
            if base is None:
                continue  # no close seen yet: no limits to trade within
            bar = self.bars.bar(i, self.column[symbol], base)
            if bar is not None:
                bars[symbol] = bar
        prices = {symbol: bar["open"] for symbol, bar in bars.items()}
        fees0 = self._account_totals()
        placed: list[UUID] = []
        if targets is not None:
            orders, skipped = orders_for_targets(
                targets, self.portfolio(prices), prices, self.bars.universe.get,
                self.app.schedule, slippage_ticks=self.spec.fill.slippage_ticks)
            self._skip(skipped)
            # the venue hears only of the bars of the symbols ordered today
            opened = self._open(day, bars, {o.symbol for o in orders})
            placed += self._place(day, [o for o in orders if o.side == "sell"])
            # buys sized again on the cash the sells actually brought
            orders, _ = orders_for_targets(
                targets, self.portfolio(prices), prices, self.bars.universe.get,
                self.app.schedule, slippage_ticks=self.spec.fill.slippage_ticks)
            buys = [o for o in orders if o.side == "buy"]
            # a buy the sells' cash made possible in a symbol without a bar today waits
            self._skip([(o.symbol, "no bar opened for it this session")
                        for o in buys if o.symbol not in opened])
            placed += self._place(day, [o for o in buys if o.symbol in opened])
        elif intents:
            self._open(day, bars, {o.symbol for o in intents if isinstance(o, OrderIntent)})
            placed += self._place(day, intents, prices)
        self.clock.set(_moment(day, CLOSE_AT))
        self.app.close_session(day.isoformat(), self._meta(f"close:{day}"))
        filled = self._tally(placed)
        self._see_closes(i)
        cash, fees, bought, sold = self._account_totals()
        portfolio = self.portfolio(self._last_close)
        self.held = set(portfolio.positions)  # every order is final after the close
        self.days.append(DayRecord(
            day, portfolio.equity + (cash - portfolio.cash), cash, fees - fees0[1],
            bought - fees0[2], sold - fees0[3], len(placed), filled,
            self._rejected_today))

    def _see_closes(self, i: int) -> None:
        """Session ``i``'s closes (on the tick grid) become the newest closes. Both the
        session's end and the decision after it need them: put on the grid once."""
        if self._closes[0] != i:
            bars = self.bars
            self._closes = (i, [(bars.symbols[j], bars.on_tick(bars.symbols[j],
                                                               float(bars.close[i, j])))
                                for j in np.flatnonzero(np.isfinite(bars.close[i]))])
        self._last_close.update(self._closes[1])

    def _open(self, day: date, bars: dict[str, dict[str, Any]], symbols: set[str]
              ) -> set[str]:
        """Record the session's bars of ``symbols`` (those that have one); which did."""
        chosen = [bars[s] for s in sorted(symbols) if s in bars]
        if chosen:
            self.app.open_bars(day.isoformat(), chosen, self._meta(f"bars:{day}"),
                               participation_bp=self.spec.fill.participation_bp,
                               slippage_ticks=self.spec.fill.slippage_ticks)
        return {b["symbol"] for b in chosen}

    def _skip(self, skipped: list[tuple[str, str]]) -> None:
        for _, reason in skipped:
            self.orders["skipped"] += 1
            self.reasons[f"skipped: {reason}"] += 1

    def _place(self, day: date, intents: list[Any], prices: dict[str, int] | None = None
               ) -> list[UUID]:
        """Place a basket through the command path; refused orders are counted."""
        requests, refused = [], 0
        for intent in intents:
            if not isinstance(intent, OrderIntent) or not _typed(intent):
                refused += 1
                self.reasons["rejected: not an OrderIntent of str symbol, side and type "
                             "and int quantity and price"] += 1
                continue
            if prices is not None and intent.symbol not in prices and \
                    intent.symbol in self.bars.universe:
                self.orders["skipped"] += 1
                self.reasons["skipped: no price for the session (no bar)"] += 1
                continue
            key = client_order_id(self.strategy.name, day, intent.symbol)
            requests.append(OrderRequest(
                account_id=self.account, client_order_id=key, symbol=str(intent.symbol),
                side=intent.side, quantity=intent.quantity, price=intent.price,
                order_type=intent.order_type, meta=self._meta(key)))
        outcomes = self.app.place_orders(requests) if requests else []
        placed = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                refused += 1
                self.reasons[f"rejected: {outcome.field}: {outcome.rule}"] += 1
            else:
                placed.append(outcome.order_id)
                self.held.add(request.symbol)
        self.orders["rejected"] += refused
        self._rejected_today = getattr(self, "_rejected_today", 0) + refused
        return placed

    def _tally(self, placed: list[UUID]) -> int:
        filled = 0
        with self.app.deciding():
            for order_id in placed:
                order = self.app.current(order_id)
                self.orders["placed"] += 1
                status = order.status
                if order.filled_quantity:
                    filled += 1
                if status is OrderStatus.FILLED:
                    self.orders["filled"] += 1
                elif order.filled_quantity:
                    self.orders["partially_filled"] += 1
                elif status is OrderStatus.REJECTED:
                    self.orders["rejected"] += 1
                    self.reasons[f"rejected: {order.reject_reason}"] += 1
                else:
                    self.orders[status.value] += 1
        return filled

    def run(self) -> None:
        sessions = self._sessions()
        first = self.bars.dates.index(sessions[0])
        decision: Any = {}
        for i in range(first - 1 if first else 0, first):  # the close before the start
            decision = self._decide(i)
        for i in range(first, first + len(sessions)):
            self._rejected_today = 0
            self.session(i, decision)
            decision = self._decide(i)

    def _decide(self, i: int) -> Any:
        day = self.bars.dates[i]
        self.history.upto = i
        self._see_closes(i)
        try:
            decision = self.strategy.decide(day, self.history, self.portfolio(self._last_close))
        except Exception as exc:
            raise BacktestError(
                "strategy", "decides without raising", self.strategy.name,
                f"strategy {self.strategy.name!r} raised on {day}: "
                f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(decision, Mapping | list | tuple):
            raise BacktestError(
                "strategy", "returns target weights or a list of order intents",
                self.strategy.name, f"strategy {self.strategy.name!r} on {day} returned "
                f"{type(decision).__name__}, not target weights or a list of order intents")
        if isinstance(decision, Mapping):
            bad = [s for s, w in decision.items() if not isinstance(s, str)
                   or not isinstance(w, int | float) or not np.isfinite(w) or w < 0]
            if bad or sum(decision.values()) > 1.0 + 1e-9:
                raise BacktestError(
                    "strategy", "target weights are finite, >= 0 and sum to at most 1",
                    self.strategy.name, f"strategy {self.strategy.name!r} on {day}: target "
                    f"weights must be finite, >= 0 and sum to at most 1 (bad: {bad[:5]}, "
                    f"sum {sum(w for w in decision.values() if isinstance(w, int | float))})")
        return decision


def _typed(intent: OrderIntent) -> bool:
    return (all(isinstance(v, str) for v in (intent.symbol, intent.side, intent.order_type))
            and all(type(v) is int for v in (intent.quantity, intent.price)))


def run_backtest(strategy: Strategy, spec: BacktestSpec, out: Path) -> BacktestResult:
    """Run ``strategy`` over ``spec`` and write the run to ``out`` (which must not exist):
    the event store, the read models, the report. Nothing is left at ``out`` unless the
    run completed; a failure raises :class:`BacktestError` (or the data's error)."""
    from streams.backtest.report import write_report

    started = time.perf_counter()
    spec.fill.check()
    if spec.cash <= 0:
        raise BacktestError("cash", "a positive number of yen", spec.cash)
    out = Path(out)
    if out.exists():
        raise BacktestError("out", "a folder that does not exist yet", str(out),
                            f"--out {out} exists: a run never overwrites another")
    bars = load_bars(Path(spec.data), spec.start, spec.end)
    phases = {"data": time.perf_counter() - started}
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        mark = time.perf_counter()
        run = _Run(strategy, spec, bars, folder)
        try:
            with _frozen_for_collector():
                run.run()
                events = run.app.head()
                phases["order_flow"] = time.perf_counter() - mark
                mark = time.perf_counter()
                if spec.readmodels:
                    gc.freeze()  # and what the run built: it all outlives the projection
                    _project(run.app, folder / READMODELS_FILE)
                phases["read_models"] = time.perf_counter() - mark
        finally:
            run.app.close()
        spec_dict = {k: (str(v) if isinstance(v, Path | date) else v)
                     for k, v in asdict(spec).items()}
        result = BacktestResult(out, strategy.name, spec_dict, run.days, run.orders,
                                run.reasons, events, 0.0, phases)
        mark = time.perf_counter()
        write_report(result, folder)
        phases["report"] = time.perf_counter() - mark
        result.seconds = time.perf_counter() - started
        folder.rename(out)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return result


@contextmanager
def _frozen_for_collector() -> Iterator[None]:
    """Keep the garbage collector off what already lives (the imported modules, the
    bars, the application; :func:`gc.freeze`): none of it becomes garbage during the run,
    yet every full collection would scan it all again (2 years: the collector's time in
    the order flow 0.70 s -> 0.45 s; in the projection, with the run's objects frozen
    too, 2.0 s -> 0.6 s of 5.1 s). Unfrozen afterwards, unless someone froze before."""
    ours = gc.get_freeze_count() == 0
    gc.freeze()
    try:
        yield
    finally:
        if ours:
            gc.unfreeze()


def _project(app: TradingApplication, path: Path) -> None:
    """The read models of the run, projected from its events (as `projections rebuild`)."""
    from projections.projectors import Projector, RecorderLog
    from projections.schema import upgrade
    from projections.store import ReadStore

    store = ReadStore.sqlite(path)
    try:
        # like the event store: thrown away unless the run completes, so no fsync at the
        # WAL's checkpoints; the indexes keyed by order id outgrow SQLite's default 2 MB
        # page cache within a year of orders, so give the rebuild room
        store.conn.execute("PRAGMA synchronous=OFF")
        store.conn.execute(f"PRAGMA cache_size=-{PROJECTION_CACHE_KIB}")
        upgrade(store)
        projector = Projector(store, RecorderLog(app.recorder, app.mapper),
                              batch_size=PROJECTION_BATCH)
        # the run's own store, written under today's topics: read only what is projected
        projector.log = RecorderLog(app.recorder, app.mapper, topics=projector.topics())
        projector.catch_up()
    finally:
        store.conn.close()


def summary_json(result: BacktestResult) -> str:
    """The run's figures as one JSON object (``summary.json`` in the run)."""
    from streams.backtest.report import yearly

    return json.dumps({
        "strategy": result.strategy, "spec": result.spec,
        "final_equity": result.days[-1].equity if result.days else result.spec["cash"],
        "sessions": len(result.days), "events": result.events,
        "orders": dict(sorted(result.orders.items())),
        "reasons": dict(sorted(result.reasons.items())),
        "years": yearly(result.days, int(result.spec["cash"])),
    }, indent=2, sort_keys=True, default=str)


__all__ = ["BacktestError", "BacktestResult", "BacktestSpec", "FillModel",
           "run_backtest", "summary_json"]
