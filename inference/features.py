"""Leak-free daily features and forward-return targets from J-Quants daily quotes.

First cut (interface for the model): a handful of per-stock features; the full set
(~100 features, catalog in docs/features.md) replaces this module's body.
"""

from __future__ import annotations

import polars as pl

HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
TARGET_COLUMNS: list[str] = [f"target_{h}d" for h in HORIZONS]
UNKNOWN_SECTOR = "unknown"

_RET = (1, 5, 10, 20, 60, 120)
FEATURE_COLUMNS: list[str] = [
    *(f"ret_{n}d" for n in _RET),
    "vol_20d",
    "sma_gap_20",
    "log_volume",
    "rank_ret_5d",
]


def build_features(quotes: pl.DataFrame | pl.LazyFrame, listed: pl.DataFrame) -> pl.DataFrame:
    """Features at date t from rows with Date <= t; targets from rows after t."""
    lf = quotes.lazy().select(
        pl.col("Date").alias("date"),
        pl.col("Code").alias("code"),
        pl.col("AdjustmentClose").alias("close"),
        pl.col("AdjustmentVolume").alias("volume"),
    )
    sectors = listed.lazy().select(
        pl.col("Code").alias("code"), pl.col("Sector33Code").alias("sector33")
    )
    lf = lf.sort("code", "date").join(sectors, on="code", how="left")
    c = pl.col("close")
    lf = lf.with_columns(
        *[(c / c.shift(n) - 1).over("code").alias(f"ret_{n}d") for n in _RET],
        (c.log().diff().rolling_std(20)).over("code").alias("vol_20d"),
        (c / c.rolling_mean(20) - 1).over("code").alias("sma_gap_20"),
        pl.col("volume").log1p().alias("log_volume"),
        *[(c.shift(-h) / c - 1).over("code").alias(f"target_{h}d") for h in HORIZONS],
    ).with_columns(
        ((pl.col("ret_5d").rank() - 1) / (pl.col("ret_5d").count() - 1))
        .over("date")
        .alias("rank_ret_5d"),
        pl.col("sector33").fill_null(UNKNOWN_SECTOR),
    )
    cols = [*FEATURE_COLUMNS, *TARGET_COLUMNS]
    lf = lf.select(
        "date",
        "code",
        "sector33",
        *[
            pl.when(pl.col(n).cast(pl.Float32).is_finite()).then(pl.col(n).cast(pl.Float32))
            .alias(n)
            for n in cols
        ],
    )
    return lf.sort("date", "code").collect()
