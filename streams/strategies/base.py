"""The strategy interface: what a strategy sees and what it may ask for.

A strategy is a plain class with a ``name`` and one method, :meth:`Strategy.decide`:
given the session date, the market history up to and including that session's close
(never later) and a read-only view of the portfolio, it returns either **target
weights** (fraction of equity per symbol; what is not named is sold) or explicit
**order intents**. The same interface serves the daily backtest and the streaming
strategy agent; neither the backtest's fill model nor its clock leak into it.

:func:`orders_for_targets` turns target weights into orders the exchange accepts:
whole lots, prices on the tick grid (the reference price plus a few ticks of
slippage, so the order is marketable against the quoted side), sells before buys, and
buys scaled down so their cost (notional plus estimated commission) fits the cash the
sells leave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

import numpy as np

from aggregates.errors import DomainError
from aggregates.fees import CommissionSchedule
from aggregates.instruments import PRICE_SCALE, Instrument, round_to_tick
from aggregates.risk import notional_yen


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One order a strategy wants: integer price units (0: market), shares."""

    symbol: str
    side: str  # "buy" | "sell"
    quantity: int
    price: int = 0
    order_type: str = "limit"


@dataclass(frozen=True, slots=True)
class Portfolio:
    """What the strategy may know of its account: cash free to spend (yen), shares held
    per symbol, and the price units each holding is marked at."""

    cash: int
    positions: Mapping[str, int]
    marks: Mapping[str, int] = field(default_factory=dict)

    @property
    def equity(self) -> int:
        """Cash plus holdings at their marks (yen)."""
        held = sum(q * self.marks.get(s, 0) for s, q in self.positions.items())
        return self.cash + held // PRICE_SCALE


class MarketHistory:
    """Daily bars up to one session, as aligned arrays (dates x symbols).

    ``closes`` are split-adjusted closes in yen (NaN where a symbol did not trade);
    ``volumes`` shares. The backtest advances ``upto``; a strategy reads only rows up to
    it through :meth:`window` and :attr:`latest_closes`, so it cannot look ahead.
    ``quotes`` (optional) returns the raw J-Quants frame up to the session, for
    strategies that build their own features (the model strategy).
    """

    def __init__(self, dates: Sequence[date], symbols: Sequence[str], closes: np.ndarray,
                 volumes: np.ndarray, *, quotes: Callable[[date], Any] | None = None,
                 codes: Sequence[str] = ()) -> None:
        self.dates = list(dates)
        self.symbols = list(symbols)
        # J-Quants 5-digit code -> the symbol orders name (for strategies reading quotes)
        self.symbol_for_code: dict[str, str] = dict(zip(codes, symbols, strict=False))
        self._closes = closes
        self._volumes = volumes
        self._quotes = quotes
        self.upto = -1  # index of the current session in dates

    @property
    def day(self) -> date:
        return self.dates[self.upto]

    def window(self, days: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``days`` sessions' closes and volumes, up to the current one."""
        start = max(0, self.upto + 1 - days)
        return self._closes[start:self.upto + 1], self._volumes[start:self.upto + 1]

    @property
    def latest_closes(self) -> np.ndarray:
        return self._closes[self.upto]

    def quotes(self) -> Any:
        """The raw daily quotes up to the current session (polars), if provided."""
        if self._quotes is None:
            raise LookupError("quotes: this market history carries no raw quotes")
        return self._quotes(self.day)


Decision = Mapping[str, float] | Sequence[OrderIntent]
"""Target weights by symbol (summing to at most 1), or explicit order intents."""


@runtime_checkable
class Strategy(Protocol):
    """Decides after a session's close what to hold (or trade) at the next session."""

    name: str

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Decision: ...


def _shift(price: int, ticks: int, instrument: Instrument, direction: str) -> int:
    """``price`` moved ``ticks`` ticks up or down along the instrument's tick grid."""
    table = instrument.tick_table
    moved = round_to_tick(price, table, "up" if direction == "up" else "down")
    for _ in range(ticks):
        if direction == "up":
            moved = round_to_tick(moved + 1, table, "up")
        elif moved > 1:
            moved = round_to_tick(moved - 1, table, "down")
    return moved


def orders_for_targets(targets: Mapping[str, float], portfolio: Portfolio,
                       prices: Mapping[str, int], instrument: Callable[[str], Instrument],
                       schedule: CommissionSchedule, *, slippage_ticks: int = 1
                       ) -> tuple[list[OrderIntent], list[tuple[str, str]]]:
    """The orders that move ``portfolio`` to ``targets`` at ``prices`` (price units),
    and the targets that could not be ordered with the reason (no price, unknown symbol).

    Weights are of equity at ``prices``; quantities are rounded down to whole lots; a
    buy is a limit ``slippage_ticks`` ticks above the price, a sell that many below (so
    both meet the quoted side); sells come first, and the buys are scaled down together
    so that their notional plus commission fits the cash after the sells.
    """
    skipped: list[tuple[str, str]] = []
    equity = portfolio.cash + sum(
        q * prices.get(s, portfolio.marks.get(s, 0)) for s, q in portfolio.positions.items()
    ) // PRICE_SCALE
    wanted: dict[str, int] = {}
    for symbol, weight in sorted(targets.items()):
        if not weight or weight < 0:
            continue
        price = prices.get(symbol)
        try:
            rules = instrument(symbol)
        except (LookupError, DomainError):
            skipped.append((symbol, "unknown symbol"))
            continue
        if not price:
            skipped.append((symbol, "no price for the session (no bar)"))
            continue
        lots = int(weight * equity * PRICE_SCALE // (price * rules.lot_size))
        wanted[symbol] = lots * rules.lot_size
    sells: list[OrderIntent] = []
    buys: list[tuple[str, int, int]] = []
    cash = portfolio.cash
    for symbol in sorted(set(portfolio.positions) | set(wanted)):
        held = portfolio.positions.get(symbol, 0)
        delta = wanted.get(symbol, 0) - held
        if delta == 0:
            continue
        price = prices.get(symbol)
        if not price:
            if delta < 0:
                skipped.append((symbol, "no price for the session (no bar)"))
            continue
        rules = instrument(symbol)
        if delta < 0:
            limit = _shift(price, slippage_ticks, rules, "down")
            sells.append(OrderIntent(symbol, "sell", -delta, limit))
            notional = notional_yen(limit, -delta)
            cash += notional - schedule.commission(notional)
        else:
            limit = _shift(price, slippage_ticks, rules, "up")
            buys.append((symbol, delta, limit))
    cost = sum(notional_yen(p, q) + schedule.commission(notional_yen(p, q)) for _, q, p in buys)
    scale = 1.0 if cost <= cash or cost == 0 else max(cash, 0) / cost
    orders = list(sells)
    for symbol, quantity, limit in buys:
        lot = instrument(symbol).lot_size
        fitted = int(quantity * scale) // lot * lot
        if fitted > 0:
            orders.append(OrderIntent(symbol, "buy", fitted, limit))
    # commission steps can still make the scaled buys overshoot: trim the last lot by lot
    while orders and _buy_cost(orders, schedule) > cash:
        last = orders[-1]
        if last.side != "buy":
            break
        lot = instrument(last.symbol).lot_size
        orders[-1] = OrderIntent(last.symbol, "buy", last.quantity - lot, last.price)
        if orders[-1].quantity <= 0:
            orders.pop()
    return orders, skipped


def _buy_cost(orders: Sequence[OrderIntent], schedule: CommissionSchedule) -> int:
    total = 0
    for o in orders:
        if o.side == "buy":
            notional = notional_yen(o.price, o.quantity)
            total += notional + schedule.commission(notional)
    return total
