"""Daily bars for a backtest: J-Quants files read into aligned arrays, checked first.

Prices are the split-adjusted ones (``AdjustmentOpen``/``Close``/``Volume``): the
write model knows no corporate actions, so a position held over a split would
otherwise lose or gain half its value overnight. They are turned into integer price
units on the instrument's tick grid (nearest tick) only where a bar is published.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from aggregates.errors import RuleViolation
from aggregates.instruments import Universe, nearest_tick, price_limits, round_to_tick


class BacktestDataError(RuleViolation):
    """The data or the date range cannot make a backtest; names the field and rule."""


@dataclass
class DailyBars:
    """Every session in the data up to ``end``: dates x symbols arrays (NaN: no trade)."""

    dates: list[date]
    symbols: list[str]
    codes: list[str]
    open: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    universe: Universe
    quotes: Any  # the raw polars frame (for strategies that build features)
    listed_info: Any

    def index(self, day: date) -> int:
        return self.dates.index(day)

    def on_tick(self, symbol: str, yen: float) -> int:
        """A yen price as price units on the symbol's tick grid (nearest tick)."""
        return nearest_tick(yen, self.universe.get(symbol).tick_table)

    def bar(self, i: int, j: int, base: int) -> dict[str, Any] | None:
        """Session ``i``'s bar for symbol ``j`` with the previous close ``base`` (price
        units), or None when the symbol did not trade that session."""
        o, c, v = self.open[i, j], self.close[i, j], self.volume[i, j]
        if not (np.isfinite(o) and np.isfinite(c) and np.isfinite(v)) or o <= 0 or v <= 0:
            return None
        symbol = self.symbols[j]
        limits = price_limits(base)
        open_ = min(max(self.on_tick(symbol, float(o)), limits.lower), limits.upper)
        open_ = self._clip_on_tick(symbol, open_, limits.lower, limits.upper)
        close = self.on_tick(symbol, float(c))
        return {"symbol": symbol, "open": open_, "high": max(open_, close),
                "low": min(open_, close), "close": close, "volume": int(v), "base": base}

    def _clip_on_tick(self, symbol: str, price: int, lower: int, upper: int) -> int:
        table = self.universe.get(symbol).tick_table
        if price >= upper:
            return round_to_tick(upper, table, "down")
        if price <= lower:
            return round_to_tick(lower, table, "up")
        return price


def load_bars(jquants: Path, start: date, end: date) -> DailyBars:
    """Read and check the data for a backtest from ``start`` to ``end``.

    Refused with the field and the rule: ``--from`` after ``--to``; a range outside the
    data's first and last session or with no session in it; codes quoted that are not
    listed (the universe would not know them). Gaps (a stock missing on some days) are
    allowed: it has no bar then, and orders for it are not placed that day.
    """
    if start > end:
        raise BacktestDataError("from", "on or before --to", start.isoformat(),
                                f"--from {start} is after --to {end}")
    import polars as pl

    from inference.data import load_daily_quotes, load_listed_info
    from inference.data.listings import read_listings

    if not Path(jquants).is_dir():
        raise BacktestDataError("data", "a folder with J-Quants files", str(jquants),
                                f"--data {jquants}: no such folder")
    try:
        quotes = load_daily_quotes(jquants)
        listed = load_listed_info(jquants)
    except (FileNotFoundError, ValueError) as exc:
        raise BacktestDataError("data", "J-Quants daily_quotes and listed_info files",
                                str(jquants), f"--data {jquants}: {exc}") from None
    if quotes.is_empty():
        raise BacktestDataError("data", "at least one daily quote", str(jquants),
                                f"--data {jquants}: no daily quotes")
    first, last = quotes.get_column("Date").min(), quotes.get_column("Date").max()
    assert isinstance(first, date) and isinstance(last, date)
    if start < first or end > last:
        field, value = ("from", start) if start < first else ("to", end)
        raise BacktestDataError(
            field, "within the data", value.isoformat(),
            f"--{field} {value} is outside the data: sessions from {first} to {last}")
    listed_codes = set(listed.get_column("Code").cast(pl.Utf8).to_list())
    unknown = sorted(set(quotes.get_column("Code").unique().to_list()) - listed_codes)
    if unknown:
        raise BacktestDataError(
            "data", "every quoted code is in listed_info", ",".join(unknown[:10]),
            f"--data {jquants}: {len(unknown)} quoted codes are not in listed_info "
            f"(e.g. {', '.join(unknown[:10])})")
    quotes = quotes.filter(pl.col("Date") <= end)
    sessions = quotes.filter(pl.col("Date") >= start).get_column("Date").unique()
    if sessions.is_empty():
        raise BacktestDataError("from", "a range holding at least one session",
                                start.isoformat(), f"no session from {start} to {end}")
    universe = Universe.from_listings(read_listings(jquants, start), source=str(jquants))
    quotes = quotes.filter(pl.col("Code").is_in(
        [universe.get(s).jquants_code for s in universe.symbols]))
    frame = quotes.select("Date", "Code", "AdjustmentOpen", "AdjustmentClose",
                          "AdjustmentVolume").sort("Date", "Code")
    dates: list[date] = frame.get_column("Date").unique().sort().to_list()
    codes: list[str] = sorted(frame.get_column("Code").unique().to_list())
    di = {d: i for i, d in enumerate(dates)}
    ci = {c: j for j, c in enumerate(codes)}
    rows = np.array([di[d] for d in frame.get_column("Date").to_list()], dtype=np.int64)
    cols = np.array([ci[c] for c in frame.get_column("Code").to_list()], dtype=np.int64)
    arrays = []
    for column in ("AdjustmentOpen", "AdjustmentClose", "AdjustmentVolume"):
        grid = np.full((len(dates), len(codes)), np.nan)
        grid[rows, cols] = frame.get_column(column).cast(pl.Float64).fill_null(np.nan).to_numpy()
        arrays.append(grid)
    symbols = [universe.get(c).symbol for c in codes]
    return DailyBars(dates, symbols, codes, arrays[0], arrays[1], arrays[2], universe,
                     quotes, listed)
