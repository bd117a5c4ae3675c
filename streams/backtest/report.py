"""The backtest's report: ``report.md``, PNG charts, ``daily.csv`` and ``summary.json``.

Figures are computed from the daily records the driver took at each session's close
(equity at the closes, the account's fees and traded notional); returns are daily
simple returns of equity, annualised with 245 sessions a year (the TSE's usual count).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streams.backtest.driver import BacktestResult, DayRecord

SESSIONS_PER_YEAR = 245


def _stats(equity: np.ndarray, start: float, traded: float, fees: float) -> dict[str, Any]:
    """Return, volatility, Sharpe (no risk-free rate), max drawdown, turnover, fees."""
    series = np.concatenate([[start], equity])
    returns = np.diff(series) / series[:-1]
    vol = float(returns.std(ddof=1) * math.sqrt(SESSIONS_PER_YEAR)) if len(returns) > 1 else 0.0
    mean = float(returns.mean()) * SESSIONS_PER_YEAR if len(returns) else 0.0
    peak = np.maximum.accumulate(series)
    drawdown = float(((series - peak) / peak).min())
    average = float(series.mean())
    return {
        "return": float(series[-1] / series[0] - 1.0),
        "volatility": vol,
        "sharpe": mean / vol if vol > 0 else 0.0,
        "max_drawdown": drawdown,
        "turnover": traded / average if average else 0.0,
        "fees": int(fees),
    }


def yearly(days: Sequence[DayRecord], cash: int) -> list[dict[str, Any]]:
    """One row per calendar year (and ``all``): the figures of :func:`_stats`."""
    rows: list[dict[str, Any]] = []
    start = float(cash)
    years = sorted({d.day.year for d in days})
    for year in years:
        part = [d for d in days if d.day.year == year]
        equity = np.array([d.equity for d in part], dtype=float)
        traded = float(sum(d.bought + d.sold for d in part))
        rows.append({"year": str(year), **_stats(equity, start, traded,
                                                 sum(d.fees for d in part))})
        start = float(equity[-1])
    if days:
        equity = np.array([d.equity for d in days], dtype=float)
        rows.append({"year": "all", **_stats(equity, float(cash), float(
            sum(d.bought + d.sold for d in days)), sum(d.fees for d in days))})
    return rows


def _charts(days: Sequence[DayRecord], cash: int, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([d.day for d in days], dtype="datetime64[D]")
    equity = np.array([d.equity for d in days], dtype=float)
    peak = np.maximum.accumulate(np.concatenate([[cash], equity]))[1:]
    drawdown = (equity - peak) / peak
    turnover = np.array([d.bought + d.sold for d in days], dtype=float) / equity
    fees = np.cumsum([d.fees for d in days])
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    yen = FuncFormatter(lambda v, _: f"{v:,.0f}")  # whole yen with separators, no 1e8
    charts = [
        ("equity.png", "Equity (yen)", equity, "line", yen),
        ("drawdown.png", "Drawdown", drawdown, "fill", PercentFormatter(1.0)),
        ("turnover.png", "Daily turnover (traded notional / equity)", turnover, "bar",
         PercentFormatter(1.0)),
        ("fees.png", "Cumulative fees (yen)", fees, "line", yen),
    ]
    names = []
    for name, title, values, kind, axis in charts:
        fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
        if kind == "fill":
            ax.fill_between(x, values, 0, color="tab:red", alpha=0.5, linewidth=0)
        elif kind == "bar":
            ax.bar(x, values, width=1.0, color="tab:blue")
        else:
            ax.plot(x, values, color="tab:blue", linewidth=1)
        ax.set_title(title)
        ax.yaxis.set_major_formatter(axis)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        # no timestamp in the PNG: the same run writes the same bytes
        fig.savefig(folder / name, metadata={"Software": None})
        plt.close(fig)
        names.append(name)
    return names


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def write_report(result: BacktestResult, folder: Path) -> None:
    """Write the report files of ``result`` into ``folder``."""
    from streams.backtest.driver import EVENTS_FILE, READMODELS_FILE, summary_json

    cash = int(result.spec["cash"])
    days = result.days
    with (folder / "daily.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["date", "equity", "cash", "fees", "bought", "sold", "placed",
                         "filled", "rejected"])
        for d in days:
            writer.writerow([d.day.isoformat(), d.equity, d.cash, d.fees, d.bought, d.sold,
                             d.placed, d.filled, d.rejected])
    (folder / "summary.json").write_text(summary_json(result) + "\n", encoding="utf-8")
    charts = _charts(days, cash, folder) if days else []
    spec = result.spec
    fill = spec["fill"]
    lines = [
        f"# Backtest: {result.strategy}, {spec['start']} to {spec['end']}",
        "",
        f"- data: `{spec['data']}` (split-adjusted daily bars; the universe is as of 2017, "
        "so results carry survivorship bias)",
        f"- starting cash: {cash:,} yen; final equity: "
        f"{(days[-1].equity if days else cash):,} yen over {len(days)} sessions",
        f"- fill model: next open, outside liquidity at open +/- {fill['slippage_ticks']} "
        f"tick(s), at most {fill['participation_bp'] / 100:g}% of the bar's volume a side; "
        f"commissions: `{spec['schedule']}`",
        f"- events stored: {result.events:,} in `{EVENTS_FILE}`"
        + (f", read models in `{READMODELS_FILE}`" if spec.get("readmodels") else ""),
        "",
        "## Per year",
        "",
        "| year | return | volatility | Sharpe | max drawdown | turnover | fees (yen) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in yearly(days, cash):
        lines.append(f"| {row['year']} | {_pct(row['return'])} | {_pct(row['volatility'])} | "
                     f"{row['sharpe']:.2f} | {_pct(row['max_drawdown'])} | "
                     f"{row['turnover']:.2f}x | {row['fees']:,} |")
    lines += ["", "## Orders", "", "| outcome | orders |", "|---|---:|"]
    for outcome, count in sorted(result.orders.items()):
        lines.append(f"| {outcome} | {count:,} |")
    if result.reasons:
        lines += ["", "### Rejected or skipped, by reason", "", "| reason | orders |",
                  "|---|---:|"]
        for reason, count in sorted(result.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {reason.replace('|', '/')} | {count:,} |")
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c[:-4]}]({c})" for c in charts]
    lines += ["", "## Audit and replay", "",
              "The run's events are an ordinary tradecore event store:", "",
              "```",
              f"TRADECORE_SQLITE_PATH={EVENTS_FILE} tradecore events backtest-{result.strategy}",
              "```", ""]
    (folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
