"""Leak-free daily features and forward-return targets from J-Quants daily quotes.

How leak-freedom is built in, not hoped for:

* Per-stock features come from grouped kernels (:mod:`kernels.rolling`) over rows
  sorted by (code, date); every window looks back only within its own stock, so the
  value at date t is a function of that stock's rows dated <= t.
* Market, sector and cross-sectional features are computed per date from per-stock
  features *at that date* (and rolled over past dates only).
* Targets are the only forward-looking columns; no feature reads them.

Bad input follows the rules in :data:`BAD_INPUT_RULES` (also in docs/features.md):
each one either raises :class:`~inference.data.schema.DataSchemaError` naming the
field and rule, or repairs/drops rows with a :class:`DataQualityWarning` saying how many.
Prices are the split-adjusted ``Adjustment*`` columns, so a split day is not a return.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import polars as pl

from inference.data.schema import DataSchemaError
from kernels.rolling import (
    ewm_mean,
    grouped_percentile_rank,
    grouped_zscore,
    lag,
    rolling_max,
    rolling_mean,
    rolling_mean_std,
    rolling_min,
    rolling_moments,
    rolling_regression,
    safe_divide,
    store_feature,
)

HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
TARGET_COLUMNS: list[str] = [f"target_{h}d" for h in HORIZONS]
#: Sector33 value for a code that listed info does not know.
UNKNOWN_SECTOR = "unknown"


class DataQualityWarning(UserWarning):
    """Input rows were dropped or repaired by a documented bad-input rule."""


@dataclass(frozen=True)
class Feature:
    """One catalog entry: what it measures, from which family, and its warm-up.

    ``warmup`` counts the stock's own prior trading rows needed: the feature is null on
    the stock's first ``warmup`` rows (market-level features count market dates).
    """

    name: str
    group: str
    warmup: int
    description: str


BAD_INPUT_RULES: tuple[tuple[str, str], ...] = (
    (
        "missing column",
        "A required column (Date, Code, AdjustmentOpen/High/Low/Close, "
        "AdjustmentVolume) is absent: DataSchemaError naming it.",
    ),
    ("empty input", "No quote rows (e.g. an empty date range): DataSchemaError."),
    ("duplicate rows", "Two rows with the same (Code, Date): DataSchemaError naming one."),
    (
        "missing / bad close",
        "AdjustmentClose null, NaN, infinite or <= 0 (a halted or "
        "untraded day): the row is dropped with a DataQualityWarning; the stock's next "
        "return spans from its last valid close.",
    ),
    (
        "missing / bad open, high, low",
        "Null, NaN or <= 0: replaced by AdjustmentClose; "
        "High/Low widened to contain Open and Close (DataQualityWarning with the count).",
    ),
    (
        "missing / negative volume",
        "AdjustmentVolume null, NaN or < 0: set to 0 "
        "(DataQualityWarning). Zero volume is valid input; volume features use log1p and "
        "ratios guard their denominators, so it never produces NaN.",
    ),
    (
        "turnover",
        "TurnoverValue when present and >= 0, otherwise Close x Volume (raw), "
        "otherwise AdjustmentClose x AdjustmentVolume. The shared dataset has none.",
    ),
    (
        "missing days",
        "No filling: windows count the stock's own trading rows, so a "
        "return can span a gap; `gap_days` says how many market dates were skipped.",
    ),
    (
        "split days",
        "Returns and indicators use the split-adjusted Adjustment* columns, so "
        "a split (AdjustmentFactor != 1) is not a return.",
    ),
    (
        "code absent from listed_info",
        "Kept, with sector33 = 'unknown' and a "
        "DataQualityWarning naming the codes; its sector-relative features are null and the "
        "graph gives it no sector edges.",
    ),
    (
        "flat windows",
        "A ratio whose denominator is zero takes its neutral value "
        "(Bollinger/stochastic position 0 / 0.5, RSI 0.5, z-score 0, skewness/kurtosis/"
        "price-volume correlation 0, rank 0.5 for a lone stock); any remaining NaN or "
        "infinity is converted to null before output.",
    ),
)

_F: list[Feature] = []


def _feat(name: str, group: str, warmup: int, description: str) -> str:
    _F.append(Feature(name, group, warmup, description))
    return name


_RET_WINDOWS = (1, 2, 3, 5, 10, 20, 60, 120)
_VOL_WINDOWS = (5, 10, 20, 60, 120)
_SMA_WINDOWS = (5, 10, 20, 60, 120)
_EMA_WINDOWS = (5, 10, 20, 60)
_RANGE_WINDOWS = (20, 60, 120)

# --- catalog (order here is FEATURE_COLUMNS' order) ------------------------------------
for _n in _RET_WINDOWS:
    _feat(
        f"ret_{_n}d", "returns", _n, f"Simple return over {_n} trading rows: c_t / c_(t-{_n}) - 1."
    )
_feat("log_ret_1d", "returns", 1, "Log return: ln(c_t / c_(t-1)).")
_feat("mom_120_20", "returns", 120, "Momentum skipping the last month: c_(t-20) / c_(t-120) - 1.")
_feat("ret_overnight", "returns", 1, "Overnight return: o_t / c_(t-1) - 1.")
_feat("ret_intraday", "returns", 0, "Open-to-close return: c_t / o_t - 1.")
_feat("range_hl", "returns", 0, "Day range relative to close: (h - l) / c.")
_feat(
    "close_location", "returns", 0, "Close within the day's range: (c - l) / (h - l); 0.5 if h = l."
)
_feat("gap_days", "returns", 1, "Market trading dates skipped since this stock's previous row.")
for _n in _VOL_WINDOWS:
    _feat(f"vol_{_n}d", "volatility", _n, f"Std of daily log returns over {_n} rows (daily units).")
_feat("vol_ratio_5_20", "volatility", 20, "vol_5d / vol_20d: short-term volatility regime.")
_feat("vol_ratio_20_60", "volatility", 60, "vol_20d / vol_60d.")
_feat("vol_parkinson_20", "volatility", 19, "Parkinson range volatility over 20 rows.")
_feat("vol_gk_20", "volatility", 19, "Garman-Klass OHLC volatility over 20 rows.")
_feat(
    "vol_down_20",
    "volatility",
    20,
    "Downside semi-deviation: sqrt(mean(min(r, 0)^2)) over 20 rows.",
)
_feat("vol_up_20", "volatility", 20, "Upside semi-deviation: sqrt(mean(max(r, 0)^2)) over 20 rows.")
_feat("skew_20", "volatility", 20, "Skewness of daily log returns over 20 rows.")
_feat("skew_60", "volatility", 60, "Skewness of daily log returns over 60 rows.")
_feat("kurt_60", "volatility", 60, "Excess kurtosis of daily log returns over 60 rows.")
_feat("ret_max_20", "volatility", 20, "Largest daily return in the last 20 rows.")
_feat("ret_min_20", "volatility", 20, "Smallest daily return in the last 20 rows.")
_feat("up_ratio_20", "volatility", 20, "Share of up days in the last 20 rows.")
for _n in _SMA_WINDOWS:
    _feat(
        f"sma_gap_{_n}", "trend", _n - 1, f"Close over its {_n}-row simple moving average, minus 1."
    )
for _n in _EMA_WINDOWS:
    _feat(
        f"ema_gap_{_n}",
        "trend",
        _n - 1,
        f"Close over its span-{_n} exponential moving average, minus 1.",
    )
_feat("sma_cross_5_20", "trend", 19, "SMA(5) / SMA(20) - 1.")
_feat("sma_cross_20_60", "trend", 59, "SMA(20) / SMA(60) - 1.")
_feat("sma_cross_60_120", "trend", 119, "SMA(60) / SMA(120) - 1.")
_feat("sma_slope_20_5", "trend", 24, "Five-row change of SMA(20): SMA20_t / SMA20_(t-5) - 1.")
_feat("macd", "trend", 25, "MACD (EMA12 - EMA26) divided by close.")
_feat("macd_signal", "trend", 33, "Span-9 EMA of macd.")
_feat("macd_hist", "trend", 33, "macd - macd_signal.")
_feat("bb_pos_20", "trend", 19, "Bollinger position: (c - SMA20) / (2 std20); 0 on a flat window.")
_feat("bb_width_20", "trend", 19, "Bollinger band width: 4 std20 / SMA20.")
for _n in _RANGE_WINDOWS:
    _feat(f"dist_high_{_n}", "trend", _n - 1, f"Close over the {_n}-row high, minus 1 (<= 0).")
for _n in _RANGE_WINDOWS:
    _feat(f"dist_low_{_n}", "trend", _n - 1, f"Close over the {_n}-row low, minus 1 (>= 0).")
_feat("stoch_k_14", "trend", 13, "Stochastic %K: (c - low14) / (high14 - low14); 0.5 if flat.")
_feat("stoch_d_14", "trend", 15, "Stochastic %D: 3-row mean of stoch_k_14.")
_feat("cci_20", "trend", 19, "Commodity channel index on typical price, std-scaled, / 100.")
for _n in (6, 14, 28):
    _feat(
        f"rsi_{_n}",
        "oscillators",
        _n,
        f"Wilder RSI({_n}) as a fraction in [0, 1]; 0.5 if no moves.",
    )
_feat("atr_14", "oscillators", 14, "Wilder average true range (14) / close.")
_feat("atr_20", "oscillators", 20, "Wilder average true range (20) / close.")
_feat("plus_di_14", "oscillators", 14, "Wilder +DI(14) as a fraction.")
_feat("minus_di_14", "oscillators", 14, "Wilder -DI(14) as a fraction.")
_feat("adx_14", "oscillators", 28, "Wilder ADX(14) as a fraction: trend strength.")
_feat("log_volume", "volume", 0, "ln(1 + split-adjusted volume).")
for _n in (5, 20, 60):
    _feat(f"volume_gap_{_n}", "volume", _n - 1, f"log_volume minus its {_n}-row mean.")
_feat("volume_z_20", "volume", 19, "z-score of log_volume over 20 rows; 0 on a flat window.")
_feat("volume_trend_5_20", "volume", 19, "Mean log_volume over 5 rows minus over 20 rows.")
_feat("volume_vol_20", "volume", 20, "Std of daily changes in log_volume over 20 rows.")
_feat("log_turnover", "volume", 0, "ln(1 + turnover in yen) (see the turnover rule).")
_feat("turnover_mean_20", "volume", 19, "Mean log_turnover over 20 rows: liquidity level.")
_feat("turnover_gap_20", "volume", 19, "log_turnover minus turnover_mean_20.")
_feat(
    "amihud_20", "volume", 20, "ln(1 + 1e9 mean(|r| / (turnover + 1))) over 20 rows: illiquidity."
)
_feat("zero_volume_ratio_20", "volume", 19, "Share of zero-volume rows in the last 20.")
_feat("pv_corr_20", "volume", 20, "Correlation of daily return and log-volume change over 20 rows.")
_feat("up_volume_ratio_20", "volume", 20, "Volume on up days / all volume, 20 rows; 0.5 if none.")
_feat(
    "mkt_ret_1d", "market", 1, "Universe index: equal-weighted mean ret_1d of all stocks that date."
)
_feat("mkt_ret_5d", "market", 5, "Universe index return over the last 5 market dates.")
_feat("mkt_ret_20d", "market", 20, "Universe index return over the last 20 market dates.")
_feat("mkt_ret_60d", "market", 60, "Universe index return over the last 60 market dates.")
_feat("mkt_vol_20", "market", 20, "Std of the universe index's daily return, 20 market dates.")
_feat("mkt_vol_60", "market", 60, "Std of the universe index's daily return, 60 market dates.")
_feat("mkt_trend_20", "market", 20, "Universe index level over its 20-date mean, minus 1.")
_feat("mkt_breadth", "market", 1, "Share of stocks with ret_1d > 0 that date.")
_feat("mkt_dispersion", "market", 1, "Cross-sectional std of ret_1d that date.")
_feat("beta_60", "market", 60, "OLS beta of ret_1d on mkt_ret_1d over 60 rows.")
_feat("beta_120", "market", 120, "OLS beta of ret_1d on mkt_ret_1d over 120 rows.")
_feat("corr_mkt_60", "market", 60, "Correlation of ret_1d with mkt_ret_1d over 60 rows.")
_feat("idio_vol_60", "market", 60, "Residual std of the 60-row market regression.")
for _n in (1, 5, 20, 60):
    _feat(
        f"excess_ret_{_n}d",
        "market",
        _n,
        f"ret_{_n}d minus the universe index return over the same rows.",
    )
for _n in (1, 5, 20):
    _feat(f"sec_ret_{_n}d", "sector", _n, f"Mean ret_{_n}d of the stock's Sector33 that date.")
for _n in (1, 5, 20, 60):
    _feat(f"rel_sec_ret_{_n}d", "sector", _n, f"ret_{_n}d minus its Sector33 mean that date.")
_feat("rel_sec_vol_20", "sector", 20, "vol_20d minus its Sector33 mean that date.")
_feat("rel_sec_volume_gap_20", "sector", 19, "volume_gap_20 minus its Sector33 mean that date.")
_feat("rel_sec_rsi_14", "sector", 14, "rsi_14 minus its Sector33 mean that date.")
_feat("sec_breadth", "sector", 1, "Share of the stock's Sector33 up that date.")
_feat("sec_size", "sector", 0, "ln(1 + number of the Sector33's stocks with a row that date).")
_CS_BASE = (
    "ret_1d", "ret_5d", "ret_20d", "ret_60d", "ret_120d", "vol_20d", "volume_gap_20",
    "rsi_14", "sma_gap_20", "log_turnover", "beta_60", "amihud_20",
)  # fmt: skip
_WARMUP = {f.name: f.warmup for f in _F}
for _b in _CS_BASE:
    _feat(
        f"rank_{_b}",
        "cross_section",
        _WARMUP[_b],
        f"Percentile rank of {_b} among stocks that date, in [0, 1].",
    )
for _b in _CS_BASE:
    _feat(
        f"z_{_b}",
        "cross_section",
        _WARMUP[_b],
        f"z-score of {_b} among stocks that date; 0 if no dispersion.",
    )

CATALOG: tuple[Feature, ...] = tuple(_F)
FEATURE_COLUMNS: list[str] = [f.name for f in CATALOG]


# --- input cleaning --------------------------------------------------------------------
_REQUIRED = (
    "Date",
    "Code",
    "AdjustmentOpen",
    "AdjustmentHigh",
    "AdjustmentLow",
    "AdjustmentClose",
    "AdjustmentVolume",
)


def _warn(message: str) -> None:
    warnings.warn(message, DataQualityWarning, stacklevel=3)


def _bad_price(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | ~c.is_finite() | (c <= 0)


def _clean_quotes(quotes: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Select the adjusted OHLCV, apply the bad-input rules, sort by (code, date)."""
    lf = quotes.lazy()
    names = lf.collect_schema().names()
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise DataSchemaError(f"quotes: required column(s) {missing} missing")
    turnover_parts: list[pl.Expr] = []
    if "TurnoverValue" in names:
        turnover_parts.append(pl.col("TurnoverValue").cast(pl.Float64))
    if "Close" in names and "Volume" in names:
        turnover_parts.append(pl.col("Close").cast(pl.Float64) * pl.col("Volume").cast(pl.Float64))
    turnover_parts.append(pl.col("AdjustmentClose") * pl.col("AdjustmentVolume"))
    ok = [pl.when(t.is_finite() & (t >= 0)).then(t) for t in turnover_parts]
    date = pl.col("Date")
    schema = lf.collect_schema()
    if schema["Date"] != pl.Date:
        date = (
            date.cast(pl.Utf8).str.to_date(strict=False)
            if schema["Date"] == pl.Utf8
            else (date.cast(pl.Date))
        )
    df = (
        lf.select(
            date.alias("date"),
            pl.col("Code").cast(pl.Utf8).alias("code"),
            *[
                pl.col(f"Adjustment{n}").cast(pl.Float64).alias(n.lower())
                for n in ("Open", "High", "Low", "Close", "Volume")
            ],
            pl.coalesce(ok).alias("turnover"),
        )
        .sort("code", "date")
        .collect()
    )
    if df.height == 0:
        raise DataSchemaError("quotes: no rows (empty input or empty date range)")
    if df["date"].null_count() or df["code"].null_count():
        raise DataSchemaError("quotes: fields 'Date' and 'Code' must not be null")
    same = (df["code"] == df["code"].shift(1)) & (df["date"] == df["date"].shift(1))
    if same.any():
        row = df.filter(same).row(0, named=True)
        raise DataSchemaError(
            f"quotes: (Code, Date) must be unique; Code={row['code']} Date={row['date']} repeats"
        )
    bad_close = df.select(_bad_price("close")).to_series()
    if bad_close.any():
        first = df.filter(bad_close).row(0, named=True)
        _warn(
            f"quotes: dropped {int(bad_close.sum())} rows whose AdjustmentClose is missing, NaN "
            f"or <= 0 (e.g. Code={first['code']} Date={first['date']})"
        )
        df = df.filter(~bad_close)
        if df.height == 0:
            raise DataSchemaError("quotes: no row has a valid AdjustmentClose")
    repaired = df.select(
        pl.any_horizontal(_bad_price("open"), _bad_price("high"), _bad_price("low")).sum()
    ).item()
    inverted = df.select(
        ((pl.col("high") < pl.max_horizontal("open", "close", "low"))
         | (pl.col("low") > pl.min_horizontal("open", "close", "high"))).sum()
    ).item()  # fmt: skip
    if repaired or inverted:
        _warn(
            f"quotes: repaired {repaired} rows with missing/non-positive AdjustmentOpen/High/Low "
            f"(set to AdjustmentClose) and {inverted} rows whose High/Low did not contain "
            "Open/Close (widened)"
        )
        c = pl.col("close")
        df = df.with_columns(
            *[
                pl.when(_bad_price(n)).then(c).otherwise(pl.col(n)).alias(n)
                for n in ("open", "high", "low")
            ]
        ).with_columns(
            pl.max_horizontal("open", "high", "low", "close").alias("high"),
            pl.min_horizontal("open", "high", "low", "close").alias("low"),
        )
    v = pl.col("volume")
    bad_volume = df.select((v.is_null() | ~v.is_finite() | (v < 0)).sum()).item()
    if bad_volume:
        _warn(f"quotes: set AdjustmentVolume to 0 on {bad_volume} rows where it was missing or < 0")
        df = df.with_columns(
            pl.when(v.is_finite() & (v >= 0)).then(v).otherwise(0.0).alias("volume")
        )
    return df.with_columns(pl.col("turnover").fill_null(0.0))


def _sectors(codes: pl.Series, listed: pl.DataFrame) -> pl.Series:
    """Sector33 code per row; codes unknown to listed info get UNKNOWN_SECTOR (and a warning)."""
    if "Code" not in listed.columns or "Sector33Code" not in listed.columns:
        raise DataSchemaError("listed: columns 'Code' and 'Sector33Code' are required")
    table = listed.select(
        pl.col("Code").cast(pl.Utf8), pl.col("Sector33Code").cast(pl.Utf8)
    ).unique(subset="Code", keep="last")
    frame = pl.DataFrame({"Code": codes}).join(table, on="Code", how="left", maintain_order="left")
    sector = frame["Sector33Code"]
    if sector.null_count():
        unknown = frame.filter(pl.col("Sector33Code").is_null())["Code"].unique().sort().to_list()
        _warn(
            f"listed: {len(unknown)} code(s) absent from listed_info get sector33="
            f"'{UNKNOWN_SECTOR}' and null sector features: {unknown[:10]}"
        )
    return sector.fill_null(UNKNOWN_SECTOR).alias("sector33")


# --- per-stock features ------------------------------------------------------------------
def _safe_div(num: np.ndarray, den: np.ndarray, neutral: float) -> np.ndarray:
    """num / den, with ``neutral`` where the denominator is zero (a flat window)."""
    return safe_divide(
        np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64), neutral
    )


class _Builder:
    """Feature columns as float32 arrays; threads fill disjoint row ranges of each.

    Every write masks the stock's warm-up rows (``idx < warmup``) and any NaN or
    infinity, so the catalog's warm-up column is enforced in one place.
    """

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.columns: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def column(self, name: str) -> np.ndarray:
        with self._lock:
            if name not in self.columns:
                self.columns[name] = np.empty(self.n_rows, dtype=np.float32)
            return self.columns[name]

    def writer(self, offset: int, idx: np.ndarray) -> Callable[[str, np.ndarray], None]:
        """A ``put(name, values)`` for rows ``offset .. offset + len(idx)``."""

        def put(name: str, values: np.ndarray) -> None:
            target = self.column(name)[offset : offset + idx.shape[0]]
            store_feature(target, np.asarray(values, dtype=np.float64), idx, _WARMUP_ALL[name])

        return put


def _per_stock(
    arrays: dict[str, np.ndarray], starts: np.ndarray, put: Callable[[str, np.ndarray], None]
) -> None:
    """Every feature that reads one stock's own history (plus the market series).

    ``arrays`` are row ranges holding whole stocks, ``starts`` their group offsets: any
    split of the stocks gives the same values, which is what lets threads share the work.
    """
    o, h, lo, c = arrays["open"], arrays["high"], arrays["low"], arrays["close"]
    v, tv = arrays["volume"], arrays["turnover"]
    m_row, level_row = arrays["mkt_ret_1d"], arrays["mkt_level"]

    def mean(x: np.ndarray, w: int) -> np.ndarray:
        return rolling_mean(x, starts, w)

    c_prev = lag(c, starts, 1)
    r1 = c / c_prev - 1.0
    lr = np.log(c / c_prev)
    for n in _RET_WINDOWS:
        put(f"ret_{n}d", r1 if n == 1 else c / lag(c, starts, n) - 1.0)
    put("log_ret_1d", lr)
    c20 = lag(c, starts, 20)
    put("mom_120_20", c20 / lag(c, starts, 120) - 1.0)
    put("ret_overnight", o / c_prev - 1.0)
    put("ret_intraday", c / o - 1.0)
    put("range_hl", (h - lo) / c)
    put("close_location", _safe_div(c - lo, h - lo, 0.5))

    vols: dict[int, np.ndarray] = {}
    for n in _VOL_WINDOWS:
        vols[n] = rolling_mean_std(lr, starts, n)[1]
        put(f"vol_{n}d", vols[n])
    put("vol_ratio_5_20", _safe_div(vols[5], vols[20], 1.0))
    put("vol_ratio_20_60", _safe_div(vols[20], vols[60], 1.0))
    hl = np.log(h / lo)
    put("vol_parkinson_20", np.sqrt(mean(hl * hl, 20) / (4.0 * np.log(2.0))))
    co = np.log(c / o)
    gk = mean(0.5 * hl * hl - (2.0 * np.log(2.0) - 1.0) * co * co, 20)
    put("vol_gk_20", np.sqrt(np.maximum(gk, 0.0)))
    put("vol_down_20", np.sqrt(mean(np.minimum(lr, 0.0) ** 2, 20)))
    put("vol_up_20", np.sqrt(mean(np.maximum(lr, 0.0) ** 2, 20)))
    skew20, _ = rolling_moments(lr, starts, 20)
    skew60, kurt60 = rolling_moments(lr, starts, 60)
    put("skew_20", np.where(np.isnan(skew20) & np.isfinite(vols[20]), 0.0, skew20))
    put("skew_60", np.where(np.isnan(skew60) & np.isfinite(vols[60]), 0.0, skew60))
    put("kurt_60", np.where(np.isnan(kurt60) & np.isfinite(vols[60]), 0.0, kurt60))
    put("ret_max_20", rolling_max(r1, starts, 20))
    put("ret_min_20", rolling_min(r1, starts, 20))
    up = np.where(np.isnan(r1), np.nan, (r1 > 0).astype(np.float64))
    put("up_ratio_20", mean(up, 20))

    smas: dict[int, np.ndarray] = {}
    std20 = np.empty(0)
    for n in _SMA_WINDOWS:
        if n == 20:
            smas[n], std20 = rolling_mean_std(c, starts, n)
        else:
            smas[n] = rolling_mean(c, starts, n)
        put(f"sma_gap_{n}", c / smas[n] - 1.0)
    for n in _EMA_WINDOWS:
        put(f"ema_gap_{n}", c / ewm_mean(c, starts, 2.0 / (n + 1)) - 1.0)
    put("sma_cross_5_20", smas[5] / smas[20] - 1.0)
    put("sma_cross_20_60", smas[20] / smas[60] - 1.0)
    put("sma_cross_60_120", smas[60] / smas[120] - 1.0)
    put("sma_slope_20_5", smas[20] / lag(smas[20], starts, 5) - 1.0)
    macd = (ewm_mean(c, starts, 2.0 / 13) - ewm_mean(c, starts, 2.0 / 27)) / c
    signal = ewm_mean(macd, starts, 2.0 / 10)
    put("macd", macd)
    put("macd_signal", signal)
    put("macd_hist", macd - signal)
    put("bb_pos_20", _safe_div(c - smas[20], 2.0 * std20, 0.0))
    put("bb_width_20", 4.0 * std20 / smas[20])
    for n in _RANGE_WINDOWS:
        put(f"dist_high_{n}", c / rolling_max(h, starts, n) - 1.0)
    for n in _RANGE_WINDOWS:
        put(f"dist_low_{n}", c / rolling_min(lo, starts, n) - 1.0)
    hh14 = rolling_max(h, starts, 14)
    ll14 = rolling_min(lo, starts, 14)
    k14 = _safe_div(c - ll14, hh14 - ll14, 0.5)
    put("stoch_k_14", k14)
    put("stoch_d_14", mean(k14, 3))
    tp = (h + lo + c) / 3.0
    tp_mean, tp_std = rolling_mean_std(tp, starts, 20)
    put("cci_20", _safe_div(tp - tp_mean, 0.015 * tp_std, 0.0) / 100.0)

    dc = c - c_prev
    gain = np.where(np.isnan(dc), np.nan, np.maximum(dc, 0.0))
    loss = np.where(np.isnan(dc), np.nan, np.maximum(-dc, 0.0))
    for n in (6, 14, 28):
        g = ewm_mean(gain, starts, 1.0 / n)
        ls = ewm_mean(loss, starts, 1.0 / n)
        rsi = _safe_div(g, g + ls, 0.5)
        put(f"rsi_{n}", rsi)
    tr = np.fmax(h - lo, np.fmax(np.abs(h - c_prev), np.abs(lo - c_prev)))
    atr14 = ewm_mean(tr, starts, 1.0 / 14)
    put("atr_14", atr14 / c)
    put("atr_20", ewm_mean(tr, starts, 1.0 / 20) / c)
    up_move = h - lag(h, starts, 1)
    down_move = lag(lo, starts, 1) - lo
    plus_dm = np.where(
        np.isnan(up_move), np.nan, np.where((up_move > down_move) & (up_move > 0), up_move, 0.0)
    )
    minus_dm = np.where(
        np.isnan(down_move),
        np.nan,
        np.where((down_move > up_move) & (down_move > 0), down_move, 0.0),
    )
    plus_di = _safe_div(ewm_mean(plus_dm, starts, 1.0 / 14), atr14, 0.0)
    minus_di = _safe_div(ewm_mean(minus_dm, starts, 1.0 / 14), atr14, 0.0)
    dx = _safe_div(np.abs(plus_di - minus_di), plus_di + minus_di, 0.0)
    put("plus_di_14", plus_di)
    put("minus_di_14", minus_di)
    put("adx_14", ewm_mean(np.where(lag(c, starts, 14) > 0, dx, np.nan), starts, 1.0 / 14))

    lv = np.log1p(v)
    put("log_volume", lv)
    lv_mean5 = rolling_mean(lv, starts, 5)
    lv_mean20, lv_std20 = rolling_mean_std(lv, starts, 20)
    put("volume_gap_5", lv - lv_mean5)
    put("volume_gap_20", lv - lv_mean20)
    put("volume_gap_60", lv - rolling_mean(lv, starts, 60))
    put("volume_z_20", _safe_div(lv - lv_mean20, lv_std20, 0.0))
    put("volume_trend_5_20", lv_mean5 - lv_mean20)
    dlv = lv - lag(lv, starts, 1)
    put("volume_vol_20", rolling_mean_std(dlv, starts, 20)[1])
    lt = np.log1p(tv)
    lt_mean = mean(lt, 20)
    put("log_turnover", lt)
    put("turnover_mean_20", lt_mean)
    put("turnover_gap_20", lt - lt_mean)
    put("amihud_20", np.log1p(1e9 * mean(np.abs(r1) / (tv + 1.0), 20)))
    put("zero_volume_ratio_20", mean((v == 0).astype(np.float64), 20))
    # A flat window (no price or no volume change) has no correlation: neutral 0.
    pv_corr = rolling_regression(r1, dlv, starts, 20)[1]
    window_ok = np.isfinite(rolling_mean(r1 + dlv, starts, 20))
    put("pv_corr_20", np.where(window_ok & np.isnan(pv_corr), 0.0, pv_corr))
    put(
        "up_volume_ratio_20",
        _safe_div(mean(v * up, 20), mean(np.where(np.isnan(up), np.nan, v), 20), 0.5),
    )

    for n in (60, 120):
        beta, corr, resid = rolling_regression(r1, m_row, starts, n)
        put(f"beta_{n}", beta)
        if n == 60:
            put("corr_mkt_60", corr)
            put("idio_vol_60", resid)
    for n in (1, 5, 20, 60):
        stock_ret = r1 if n == 1 else c / lag(c, starts, n) - 1.0
        put(f"excess_ret_{n}d", stock_ret - (level_row / lag(level_row, starts, n) - 1.0))
    didx = arrays["date_index"]
    put("gap_days", didx - lag(didx, starts, 1) - 1.0)


_WARMUP_ALL: dict[str, int] = {f.name: f.warmup for f in CATALOG}


def _group_mean(
    keys: np.ndarray, values: np.ndarray, size: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per integer key (NaN values and masked rows excluded), and counts."""
    ok = np.isfinite(values) if mask is None else np.isfinite(values) & mask
    count = np.bincount(keys[ok], minlength=size).astype(np.float64)
    total = np.bincount(keys[ok], weights=values[ok], minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / count, count


def _split_groups(starts: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Row ranges of about equal size that never cut a stock in two."""
    n_rows = int(starts[-1])
    cuts = {0, n_rows}
    for k in range(1, parts):
        cuts.add(int(starts[np.searchsorted(starts, n_rows * k // parts)]))
    edges = sorted(cuts)
    return list(pairwise(edges))


def build_features(
    quotes: pl.DataFrame | pl.LazyFrame, listed: pl.DataFrame, *, threads: int | None = None
) -> pl.DataFrame:
    """Features (at date t, from rows dated <= t) and forward-return targets per (date, code).

    Returns ``date``, ``code``, ``sector33``, :data:`FEATURE_COLUMNS` and
    :data:`TARGET_COLUMNS` (Float32, null during warm-up or where a rule in
    :data:`BAD_INPUT_RULES` says so; never NaN or inf), sorted by (date, code).
    ``threads`` splits the work by stock (default: the CPUs this process may use);
    the result does not depend on it.
    """
    workers = max(1, threads if threads is not None else len(os.sched_getaffinity(0)))
    df = _clean_quotes(quotes)
    codes = df["code"]
    n_rows = df.height
    change = np.flatnonzero(codes.ne(codes.shift(1)).fill_null(True).to_numpy())
    starts = np.append(change, n_rows).astype(np.int64)
    idx = np.arange(n_rows, dtype=np.int64) - np.repeat(change, np.diff(starts))
    day = df["date"].cast(pl.Int32).to_numpy()
    unique_days, didx = np.unique(day, return_inverse=True)
    didx = didx.astype(np.int64)
    n_dates = unique_days.shape[0]
    arrays = {name: df[name].to_numpy() for name in ("open", "high", "low", "close")}
    arrays["volume"] = df["volume"].to_numpy()
    arrays["turnover"] = df["turnover"].to_numpy()
    c = arrays["close"]
    r1 = c / lag(c, starts, 1) - 1.0

    # Market: an equal-weighted universe index from the stocks trading each date.
    mkt_r1, n_up = _group_mean(didx, r1, n_dates)
    breadth, _ = _group_mean(didx, (r1 > 0).astype(np.float64), n_dates, np.isfinite(r1))
    sq, _ = _group_mean(didx, r1 * r1, n_dates)
    with np.errstate(invalid="ignore", divide="ignore"):
        dispersion = np.sqrt(np.maximum(sq - mkt_r1 * mkt_r1, 0.0) * n_up / (n_up - 1.0))
    one = np.array([0, n_dates], dtype=np.int64)
    level = np.cumprod(1.0 + np.nan_to_num(mkt_r1, nan=0.0))
    arrays["mkt_ret_1d"] = mkt_r1[didx]
    arrays["mkt_level"] = level[didx]
    arrays["date_index"] = didx.astype(np.float64)

    out = _Builder(n_rows)
    ranges = _split_groups(starts, workers)

    def per_stock(lo: int, hi: int) -> None:
        part = {name: values[lo:hi] for name, values in arrays.items()}
        part_starts = starts[(starts >= lo) & (starts <= hi)] - lo
        _per_stock(part, part_starts, out.writer(lo, idx[lo:hi]))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(per_stock, lo, hi) for lo, hi in ranges]:
            future.result()
    del arrays["mkt_ret_1d"], arrays["mkt_level"], arrays["date_index"]

    def put_market(name: str, per_date: np.ndarray) -> None:
        values = per_date[didx].astype(np.float32)
        values[~np.isfinite(values) | (didx < _WARMUP_ALL[name])] = np.nan
        out.columns[name] = values

    put_market("mkt_ret_1d", mkt_r1)
    for n in (5, 20, 60):
        put_market(f"mkt_ret_{n}d", level / lag(level, one, n) - 1.0)
    put_market("mkt_vol_20", rolling_mean_std(mkt_r1, one, 20)[1])
    put_market("mkt_vol_60", rolling_mean_std(mkt_r1, one, 60)[1])
    put_market("mkt_trend_20", level / rolling_mean(level, one, 20) - 1.0)
    put_market("mkt_breadth", breadth)
    put_market("mkt_dispersion", dispersion)

    # Sector33: per (date, sector) means over stocks with a known sector.
    put = out.writer(0, idx)
    sector = _sectors(codes, listed)
    sector_names, sid = np.unique(sector.to_numpy().astype(str), return_inverse=True)
    n_sec = sector_names.shape[0]
    known = sector_names[sid] != UNKNOWN_SECTOR
    key = didx * n_sec + sid
    size = n_dates * n_sec

    def sector_mean(values: np.ndarray) -> np.ndarray:
        means, _ = _group_mean(key, values, size, known)
        return np.where(known, means[key], np.nan)

    for n in (1, 5, 20, 60):
        ret_n = out.columns[f"ret_{n}d"].astype(np.float64)
        sec = sector_mean(ret_n)
        if n != 60:
            put(f"sec_ret_{n}d", sec)
        put(f"rel_sec_ret_{n}d", ret_n - sec)
    for name, src in (
        ("rel_sec_vol_20", "vol_20d"),
        ("rel_sec_volume_gap_20", "volume_gap_20"),
        ("rel_sec_rsi_14", "rsi_14"),
    ):
        x = out.columns[src].astype(np.float64)
        put(name, x - sector_mean(x))
    up = np.where(np.isfinite(r1), (r1 > 0).astype(np.float64), np.nan)
    put("sec_breadth", sector_mean(up))
    counts = np.bincount(key, minlength=size).astype(np.float64)
    put("sec_size", np.where(known, np.log1p(counts[key]), np.nan))

    for h in HORIZONS:
        target = (lag(c, starts, -h) / c - 1.0).astype(np.float32)
        target[~np.isfinite(target)] = np.nan
        out.columns[f"target_{h}d"] = target
    arrays = {}
    del df

    # Reorder to (date, code): rows are (code, date)-sorted, so a stable sort on the
    # date index keeps codes ascending within each date. Polars gathers in parallel.
    order = np.argsort(didx, kind="stable")
    frame = pl.DataFrame({"date": pl.Series(unique_days[didx], dtype=pl.Int32).cast(pl.Date)})
    names = [n for n in (*FEATURE_COLUMNS, *TARGET_COLUMNS) if n in out.columns]
    frame = frame.hstack(
        [codes, sector, *(pl.Series(n, out.columns.pop(n), nan_to_null=True) for n in names)]
    )[order]
    # Cross-sectional ranks and z-scores, per date, from that date's values only.
    date_starts = np.append(np.flatnonzero(np.diff(didx[order], prepend=-1)), n_rows)

    def cross_section(name: str) -> list[pl.Series]:
        x = frame[name].to_numpy()
        rank = grouped_percentile_rank(x, date_starts).astype(np.float32)
        z = grouped_zscore(x, date_starts).astype(np.float32)
        return [
            pl.Series(f"rank_{name}", rank, nan_to_null=True),
            pl.Series(f"z_{name}", z, nan_to_null=True),
        ]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        cross = [s for part in pool.map(cross_section, _CS_BASE) for s in part]
    frame = frame.hstack(cross)
    return frame.select("date", "code", "sector33", *FEATURE_COLUMNS, *TARGET_COLUMNS)


_GROUP_TITLES = {
    "returns": "Returns and bar shape",
    "volatility": "Volatility and return distribution",
    "trend": "Trend: moving averages, MACD, Bollinger, ranges",
    "oscillators": "Oscillators: RSI, ATR, ADX",
    "volume": "Volume, turnover and liquidity",
    "market": "Market factor (universe index) and betas",
    "sector": "Sector33-relative",
    "cross_section": "Cross-sectional ranks and z-scores (per date)",
}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (``|`` would end the cell)."""
    return text.replace("|", "\\|")


def feature_catalog_markdown() -> str:
    """The feature catalog (docs/features.md), generated from :data:`CATALOG`."""
    lines = [
        "# Feature catalog",
        "",
        "<!-- Generated by `python -m inference.features > docs/features.md`; do not edit. -->",
        "",
        f"`inference.features.build_features(quotes, listed)` returns {len(FEATURE_COLUMNS)} "
        "features and "
        f"{len(TARGET_COLUMNS)} targets per (date, code), Float32, sorted by (date, code), "
        "with `date`, `code` and `sector33` first.",
        "",
        "Conventions:",
        "",
        "- Prices are the split-adjusted `Adjustment*` columns (c = close, o = open, "
        "h = high, l = low, v = volume); a split day is not a return.",
        "- Windows count the stock's own trading rows (a missing day is not filled).",
        "- A feature at date t reads only rows dated <= t: per-stock windows look back "
        "within the stock; market, sector and cross-sectional features are computed per "
        "date from that date's per-stock values. A Hypothesis property test changes rows "
        "after t and checks every feature at t is bitwise unchanged.",
        "- *Warm-up* is how many earlier rows of the stock a feature needs; the feature is "
        "null on the stock's first *warm-up* rows (for `mkt_*` features: the first market "
        "dates). Outside warm-up a feature is null only where a bad-input rule says so "
        "(unknown sector). No NaN or infinity is ever returned.",
        "",
        "## Targets",
        "",
        "| column | definition |",
        "|---|---|",
    ]
    for h in HORIZONS:
        lines.append(
            f"| `target_{h}d` | c_(t+{h}) / c_t - 1 over the stock's next {h} trading rows; "
            "null at the end of its history |"
        )
    for group, title in _GROUP_TITLES.items():
        members = [f for f in CATALOG if f.group == group]
        lines += ["", f"## {title} ({len(members)})", "", "| feature | warm-up | definition |"]
        lines.append("|---|---:|---|")
        lines += [f"| `{f.name}` | {f.warmup} | {_cell(f.description)} |" for f in members]
    lines += ["", "## Bad input", "", "| case | rule |", "|---|---|"]
    lines += [f"| {case} | {_cell(rule)} |" for case, rule in BAD_INPUT_RULES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(feature_catalog_markdown(), end="")
