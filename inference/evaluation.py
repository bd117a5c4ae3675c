"""Signal evaluation: information coefficients and a costed long-short decile book.

All metrics are computed from a long frame of (date, code, realised forward returns,
signals).  Definitions (also in docs/model.md):

* ``ic`` / ``rank_ic``: per date, Pearson / Spearman correlation across stocks between a
  signal and the realised ``h``-day forward return; reported as the mean over dates.
* ``icir``: mean RankIC divided by its standard deviation over dates (not annualised).
* ``hit_rate``: share of (date, stock) pairs where the signal and the realised return lie
  on the same side of their cross-sectional means.
* Long-short book for horizon ``h``: each date, equal weight long the top ``decile`` of
  stocks by signal (+1 in total) and short the bottom decile (-1 in total); the book
  holds ``h`` overlapping cohorts (each formed on one of the last ``h`` dates, weight
  ``1/h``), so a 20-day signal is traded as a 20-day signal.  The daily return is the
  position times the next day's return (``target_1d``; a stock without a next-day price,
  e.g. halted, contributes 0).  Costs: ``cost_bp_per_side`` times the traded notional
  ``sum |w_t - w_{t-1}|``.  ``turnover`` is the mean of ``sum |w_t - w_{t-1}| / 2``
  (one-way, as a share of the book's gross exposure of 2).
* ``annual_return`` = 252 x mean daily net return; ``sharpe`` = sqrt(252) x mean/std of
  daily net returns; ``max_drawdown`` is the largest peak-to-trough fall of the
  compounded net equity curve (a positive fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import rankdata

TRADING_DAYS = 252


@dataclass(frozen=True)
class DailySeries:
    """Per-date series behind the summary metrics (used for the report's plots)."""

    dates: list
    ic: np.ndarray
    rank_ic: np.ndarray
    net_return: np.ndarray
    turnover: np.ndarray


def _pivot(frame: pl.DataFrame, column: str, dates: list, codes: list) -> np.ndarray:
    d_index = {d: i for i, d in enumerate(dates)}
    s_index = {c: i for i, c in enumerate(codes)}
    out = np.full((len(dates), len(codes)), np.nan)
    sub = frame.select("date", "code", column).drop_nulls()
    if sub.height:
        di = np.fromiter((d_index[d] for d in sub["date"]), dtype=np.int64, count=sub.height)
        si = np.fromiter((s_index[c] for c in sub["code"]), dtype=np.int64, count=sub.height)
        out[di, si] = sub[column].to_numpy().astype(float)
    out[~np.isfinite(out)] = np.nan
    return out


def _correlations(signal: np.ndarray, realised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ic = np.full(signal.shape[0], np.nan)
    rank_ic = np.full(signal.shape[0], np.nan)
    for i in range(signal.shape[0]):
        ok = np.isfinite(signal[i]) & np.isfinite(realised[i])
        if ok.sum() < 3:
            continue
        a, b = signal[i, ok], realised[i, ok]
        if a.std() > 0 and b.std() > 0:
            ic[i] = np.corrcoef(a, b)[0, 1]
        ra, rb = _ranks(a), _ranks(b)
        if ra.std() > 0 and rb.std() > 0:
            rank_ic[i] = np.corrcoef(ra, rb)[0, 1]
    return ic, rank_ic


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks from 0 (ties share their mean rank), as Spearman's definition needs."""
    return rankdata(values) - 1.0


def decile_weights(signal: np.ndarray, decile: float) -> np.ndarray:
    """``[D, S]`` weights: +1/n on the top ``decile``, -1/n on the bottom, per date."""
    weights = np.zeros_like(signal)
    for i in range(signal.shape[0]):
        ok = np.flatnonzero(np.isfinite(signal[i]))
        n = math.floor(len(ok) * decile)
        if n < 1 or len(ok) < 2 * n:
            continue
        order = ok[np.argsort(signal[i, ok], kind="mergesort")]
        weights[i, order[-n:]] = 1.0 / n
        weights[i, order[:n]] = -1.0 / n
    return weights


def long_short(
    signal: np.ndarray, next_day: np.ndarray, horizon: int, decile: float, cost_bp: float
) -> tuple[np.ndarray, np.ndarray]:
    """Daily net returns and one-way turnover of the overlapping-cohort decile book."""
    cohorts = decile_weights(signal, decile)
    position = np.zeros_like(cohorts)
    for i in range(cohorts.shape[0]):
        position[i] = cohorts[max(0, i - horizon + 1) : i + 1].sum(axis=0) / horizon
    previous = np.vstack([np.zeros((1, position.shape[1])), position[:-1]])
    traded = np.abs(position - previous).sum(axis=1)
    gross = (position * np.nan_to_num(next_day, nan=0.0)).sum(axis=1)
    net = gross - traded * cost_bp / 1e4
    return net, traded / 2.0


def summarize(
    ic: np.ndarray,
    rank_ic: np.ndarray,
    net: np.ndarray,
    turnover: np.ndarray,
    hit_rate: float,
) -> dict[str, float]:
    def mean(a: np.ndarray) -> float:
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else float("nan")

    ric = rank_ic[np.isfinite(rank_ic)]
    icir = (
        float(ric.mean() / ric.std(ddof=1))
        if ric.size > 1 and ric.std(ddof=1) > 0
        else float("nan")
    )
    std = float(net.std(ddof=1)) if net.size > 1 else float("nan")
    sharpe = float(net.mean() / std * math.sqrt(TRADING_DAYS)) if std and std > 0 else float("nan")
    equity = np.cumprod(1.0 + net) if net.size else np.ones(1)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))
    drawdown = 1.0 - np.concatenate([[1.0], equity]) / peak
    return {
        "ic": mean(ic),
        "rank_ic": mean(rank_ic),
        "icir": icir,
        "hit_rate": hit_rate,
        "annual_return": float(net.mean() * TRADING_DAYS) if net.size else float("nan"),
        "sharpe": sharpe,
        "max_drawdown": float(drawdown.max()),
        "turnover": mean(turnover),
        "days": int(np.isfinite(rank_ic).sum()),
    }


def _hit_rate(signal: np.ndarray, realised: np.ndarray) -> float:
    ok = np.isfinite(signal) & np.isfinite(realised)
    s = np.where(ok, signal, np.nan)
    r = np.where(ok, realised, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            s = s - np.nanmean(s, axis=1, keepdims=True)
            r = r - np.nanmean(r, axis=1, keepdims=True)
    both = ok & (s != 0) & (r != 0)
    if not both.any():
        return float("nan")
    return float((np.sign(s[both]) == np.sign(r[both])).mean())


def evaluate_signals(
    frame: pl.DataFrame,
    signals: dict[str, dict[int, str]],
    horizons: tuple[int, ...],
    *,
    decile: float = 0.1,
    cost_bp_per_side: float = 10.0,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[int, DailySeries]]]:
    """Metrics per signal and horizon, and the daily series behind them.

    ``frame`` holds ``date``, ``code``, ``target_{h}d`` for every horizon (realised
    forward returns; ``target_1d`` is also the daily portfolio return) and the signal
    columns named by ``signals[name][h]``.
    """
    if frame.is_empty():
        raise ValueError("evaluation: no prediction rows (empty date range?)")
    if "target_1d" not in frame.columns:
        raise ValueError("evaluation: column 'target_1d' is required for portfolio returns")
    dates = frame.get_column("date").unique().sort().to_list()
    codes = frame.get_column("code").unique().sort().to_list()
    next_day = _pivot(frame, "target_1d", dates, codes)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    series: dict[str, dict[int, DailySeries]] = {}
    for name, columns in signals.items():
        metrics[name], series[name] = {}, {}
        for h in horizons:
            signal = _pivot(frame, columns[h], dates, codes)
            realised = _pivot(frame, f"target_{h}d", dates, codes)
            ic, rank_ic = _correlations(signal, realised)
            net, turnover = long_short(signal, next_day, h, decile, cost_bp_per_side)
            metrics[name][f"{h}d"] = summarize(
                ic, rank_ic, net, turnover, _hit_rate(signal, realised)
            )
            series[name][h] = DailySeries(dates, ic, rank_ic, net, turnover)
    return metrics, series


def classic_signals(quotes: pl.DataFrame) -> pl.DataFrame:
    """20-day momentum and 5-day reversal from split-adjusted closes, per stock's own rows.

    Returns ``date``, ``code``, ``momentum_20d`` (close_t / close_{t-20} - 1) and
    ``reversal_5d`` (minus the 5-day return).  Non-positive or missing closes give null.
    """
    close = pl.when(pl.col("AdjustmentClose") > 0).then(pl.col("AdjustmentClose"))
    return (
        quotes.lazy()
        .select(pl.col("Date").alias("date"), pl.col("Code").alias("code"), close.alias("c"))
        .sort("code", "date")
        .with_columns(
            (pl.col("c") / pl.col("c").shift(20) - 1).over("code").alias("momentum_20d"),
            (1 - pl.col("c") / pl.col("c").shift(5)).over("code").alias("reversal_5d"),
        )
        .select(
            "date",
            "code",
            pl.col("momentum_20d").fill_nan(None),
            pl.col("reversal_5d").fill_nan(None),
        )
        .collect()
    )
