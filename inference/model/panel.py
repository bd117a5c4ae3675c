"""Dense (date x stock x feature) arrays the network trains and predicts on.

The feature pipeline hands over a long Polars frame; windows of ``L`` days for every stock
of a cross-section are far cheaper to slice from a dense array.  This module also holds
the two rules that decide what the network may see:

* **Normalisation is fitted on training dates only** (:class:`Normaliser`): per-feature
  mean and standard deviation of values winsorised at the training 1st/99th percentiles;
  standardised values are clipped and a missing value becomes 0 (the training mean).
* **Eligibility** (:func:`eligibility`): a stock is scored on date ``t`` only if it has a
  row on ``t`` (it traded), has at least ``min_history`` trading days of history up to
  ``t``, and traded on at least ``min_window_coverage`` of the window's ``L`` days.  Days
  inside the window on which it did not trade are filled with 0 (the mean).  Stocks that
  fail the rule get no prediction (they are masked out, never filled with NaN scores).
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
from scipy.special import ndtri

UNKNOWN_SECTOR = "unknown"


@dataclass
class FeaturePanel:
    """``features`` ``[D, S, F]`` and ``targets`` ``[D, S, H]`` with NaN where absent."""

    dates: list[date]
    codes: list[str]
    sectors: list[str]  # last known Sector33 code per stock
    feature_columns: list[str]
    target_columns: list[str]
    features: np.ndarray
    targets: np.ndarray
    present: np.ndarray  # [D, S] bool: the stock has a row on that date

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        feature_columns: list[str],
        target_columns: list[str],
    ) -> FeaturePanel:
        """Pivot the long feature frame (``date``, ``code``, ``sector33``, ...) to arrays."""
        missing = [c for c in ("date", "code", *feature_columns) if c not in frame.columns]
        if missing:
            raise ValueError(f"features frame: missing columns {missing}")
        if frame.is_empty():
            raise ValueError("features frame: no rows (empty date range?)")
        date_series = frame.get_column("date").unique().sort()
        code_series = frame.get_column("code").unique().sort()
        dates, codes = date_series.to_list(), code_series.to_list()
        d = date_series.search_sorted(frame.get_column("date")).to_numpy()
        s = code_series.search_sorted(frame.get_column("code")).to_numpy()
        features = np.full((len(dates), len(codes), len(feature_columns)), np.nan, np.float32)
        features[d, s] = _as_float32(frame, feature_columns)
        targets = np.full((len(dates), len(codes), len(target_columns)), np.nan, np.float32)
        if all(c in frame.columns for c in target_columns):
            targets[d, s] = _as_float32(frame, target_columns)
        present = np.zeros((len(dates), len(codes)), dtype=bool)
        present[d, s] = True
        sectors = [UNKNOWN_SECTOR] * len(codes)
        if "sector33" in frame.columns:
            # last known sector per stock: later rows overwrite earlier ones
            known = frame.get_column("sector33").is_not_null().to_numpy()
            names = frame.get_column("sector33").to_numpy()
            rows = np.flatnonzero(known)
            latest_first = rows[np.argsort(-d[rows], kind="stable")]
            stocks, first = np.unique(s[latest_first], return_index=True)
            for stock, row in zip(stocks.tolist(), latest_first[first].tolist(), strict=True):
                sectors[stock] = str(names[row])
        return cls(
            dates,
            codes,
            sectors,
            list(feature_columns),
            list(target_columns),
            features,
            targets,
            present,
        )

    def date_index(self, day: date) -> int:
        """Index of the last panel date on or before ``day`` (-1 if none)."""
        return (
            int(
                np.searchsorted(
                    np.array(self.dates, dtype="datetime64[D]"),
                    np.datetime64(day, "D"),
                    side="right",
                )
            )
            - 1
        )

    def content_hash(self, upto: int | None = None) -> str:
        """SHA-256 of the dates, codes, features and targets up to date index ``upto``."""
        end = len(self.dates) if upto is None else upto + 1
        digest = hashlib.sha256()
        digest.update(",".join(str(d) for d in self.dates[:end]).encode())
        digest.update(",".join(self.codes).encode())
        digest.update(",".join(self.feature_columns).encode())
        digest.update(np.ascontiguousarray(self.features[:end]).tobytes())
        digest.update(np.ascontiguousarray(self.targets[:end]).tobytes())
        return digest.hexdigest()


def _as_float32(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    block = frame.select([pl.col(c).cast(pl.Float32) for c in columns]).to_numpy()
    block = np.asarray(block, dtype=np.float32)
    block[~np.isfinite(block)] = np.nan  # NaN/inf from bad prices are treated as missing
    return block


@dataclass(frozen=True)
class Normaliser:
    """Per-feature scaling fitted on training dates only.

    Two rules, chosen per feature by ``per_date``:

    * **global** (``per_date`` False): winsorise at the training 1st/99th percentiles,
      subtract the training mean, divide by the training std, clip at ``clip``;
    * **per date** (``per_date`` True): the feature's Gaussian rank among the stocks of
      the same date (see :func:`cross_sectional_gauss`). A ranking model only ever
      compares stocks of one day, so what matters is where a stock stands that day, not
      the feature's level, which drifts with the market regime (a volatility of 2 % is
      high in 2013 and low in 2008).

    Market-wide features (the same value for every stock of a date, ``mkt_*``) carry no
    cross-sectional rank; :meth:`fit` keeps them global even when asked for per-date
    scaling.
    """

    lower: np.ndarray
    upper: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    clip: float
    per_date: np.ndarray | None = None  # [F] bool; None = every feature global

    @classmethod
    def fit(
        cls,
        panel: FeaturePanel,
        date_indices: np.ndarray,
        clip: float,
        seed: int = 0,
        cross_section: bool = False,
    ) -> Normaliser:
        block = panel.features[date_indices]
        rows = block[panel.present[date_indices]]  # [n, F]
        if rows.shape[0] == 0:
            raise ValueError("normaliser: no training rows to fit on")
        if rows.shape[0] > 200_000:  # percentiles of a 200k-row sample are plenty
            pick = np.random.default_rng(seed).choice(rows.shape[0], 200_000, replace=False)
            rows = rows[np.sort(pick)]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            lower = np.nanpercentile(rows, 1, axis=0)
            upper = np.nanpercentile(rows, 99, axis=0)
            clipped = np.clip(rows, lower, upper)
            mean = np.nanmean(clipped, axis=0)
            std = np.nanstd(clipped, axis=0)
            per_date = None
            if cross_section:
                # a feature varies across stocks when its within-date spread is a visible
                # share of its overall spread; market-wide features have none
                within = np.nanmedian(np.nanstd(block, axis=1), axis=0)
                per_date = np.nan_to_num(within / np.maximum(std, 1e-12)) > 1e-3
        lower, upper, mean = (np.nan_to_num(a, nan=0.0) for a in (lower, upper, mean))
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        as32 = [a.astype(np.float32) for a in (lower, upper, mean, std)]
        return cls(as32[0], as32[1], as32[2], as32[3], float(clip), per_date)

    def transform(self, features: np.ndarray, ranked: np.ndarray | None = None) -> np.ndarray:
        """``[D, S, F]`` -> scaled features; a missing value becomes 0 (the centre).

        ``ranked``, when given, is ``cross_sectional_gauss(features)`` computed already
        (it depends on no fitted value, so a walk-forward ranks the panel once).
        """
        out = np.clip(features, self.lower, self.upper)
        out = (out - self.mean) / self.std
        np.clip(out, -self.clip, self.clip, out=out)
        if self.per_date is not None and self.per_date.any():
            columns = np.flatnonzero(self.per_date)
            out[..., columns] = (
                ranked[..., columns]
                if ranked is not None
                else cross_sectional_gauss(features[..., columns])
            )
        return np.nan_to_num(out, nan=0.0).astype(np.float32, copy=False)


def cross_sectional_gauss(values: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Per date and feature, the standard-normal quantile of each stock's rank.

    ``values`` ``[D, S, F]`` with NaN for missing; ties share their average rank; the
    ``n`` values of a date map to ``ndtri((rank - 0.5) / n)``, so the result lies within
    about +-3 for a 500-stock universe whatever the feature's scale or outliers. NaN
    stays NaN. (Serving ranks a 20-day window on every call, hence the hand-rolled
    ranking: SIMD quicksort along contiguous rows and a table of the quantiles, about
    3x faster than ``scipy.stats.rankdata`` plus ``ndtri``; tests hold them equal.)
    """
    out = np.empty(values.shape, dtype=np.float32)
    stocks = values.shape[1]
    table = _gauss_table(stocks)
    position = np.arange(stocks, dtype=np.int32)
    for start in range(0, values.shape[0], chunk):
        block = values[start : start + chunk]
        finite = np.isfinite(block)
        rows = np.ascontiguousarray(np.where(finite, block, np.inf).transpose(0, 2, 1))
        order = np.argsort(rows, axis=-1)
        ordered = np.take_along_axis(rows, order, axis=-1)
        first = np.ones(ordered.shape, dtype=bool)  # first of its run of equal values
        np.not_equal(ordered[..., 1:], ordered[..., :-1], out=first[..., 1:])
        last = np.ones_like(first)
        last[..., :-1] = first[..., 1:]
        lo = np.maximum.accumulate(np.where(first, position, np.int32(0)), axis=-1)
        hi = np.minimum.accumulate(np.where(last, position, np.int32(stocks))[..., ::-1], axis=-1)[
            ..., ::-1
        ]
        twice_rank = np.empty_like(lo)  # 2 x (average 1-based rank) - 1: an integer
        np.put_along_axis(twice_rank, order, lo + hi + 1, axis=-1)
        count = finite.sum(axis=1)[..., None]  # [c, F, 1]
        gauss = table[count, np.minimum(twice_rank, 2 * stocks - 1)].transpose(0, 2, 1)
        gauss[~finite] = np.nan
        out[start : start + chunk] = gauss
    return out


@functools.lru_cache(maxsize=8)
def _gauss_table(stocks: int) -> np.ndarray:
    """``table[n, 2r - 1] = ndtri((r - 0.5) / n)`` for ranks ``r`` in steps of 1/2."""
    n = np.arange(stocks + 1, dtype=np.float64)[:, None]
    twice = np.arange(2 * stocks, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        table = ndtri(((twice + 1) / 2 - 0.5) / n)
    table[~np.isfinite(table)] = np.nan  # ranks beyond n: never looked up for a finite value
    return table.astype(np.float32)


def eligibility(
    present: np.ndarray, lookback: int, min_history: int, min_coverage: float
) -> np.ndarray:
    """``[D, S]`` mask of stocks that may be scored on each date (see module docstring)."""
    counts = np.cumsum(present, axis=0, dtype=np.int64)
    history_ok = counts >= min_history
    window = counts.copy()
    window[lookback:] -= counts[:-lookback]
    coverage_ok = window >= int(np.ceil(min_coverage * lookback))
    mask = present & history_ok & coverage_ok
    mask[: lookback - 1] = False
    return mask


def excess_targets(targets: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Subtract each date's cross-sectional mean: the network forecasts relative returns."""
    values = np.where(present[..., None], targets, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=1, keepdims=True)
    return (values - mean).astype(np.float32)


def cross_sectional_spread(excess: np.ndarray) -> np.ndarray:
    """``[D, 1, H]`` standard deviation of each date's excess returns (NaN if < 5 stocks)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanstd(excess, axis=1, keepdims=True)
        spread[np.isfinite(excess).sum(axis=1, keepdims=True) < 5] = np.nan
    return spread.astype(np.float32)
