"""The leak-free property: changing any row after date t never changes a feature at t.

Hypothesis picks the cut date t and what happens after it, on a real slice of
quotes: prices rescaled (as a crash or a rally would), volumes changed, closes
knocked out (halts), rows deleted, listed stocks' sectors left alone. Every feature
on every date <= t must be bitwise identical; targets are the only columns allowed to
change, since they are forward returns by definition.
"""

from __future__ import annotations

import warnings
from datetime import date

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features

CODES = ("72030", "72670", "83060", "83160", "45020", "16050")


@pytest.fixture(scope="module")
def base(quotes_slice: pl.DataFrame) -> pl.DataFrame:
    # 2013 only: 6 stocks x ~245 days, with INPEX's split day inside.
    return quotes_slice.filter(pl.col("Code").is_in(CODES), pl.col("Date").dt.year() == 2013)


@pytest.fixture(scope="module")
def base_features(base: pl.DataFrame, listed_info: pl.DataFrame) -> pl.DataFrame:
    return build_features(base, listed_info)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut_at=st.integers(min_value=0, max_value=240),
    price_factor=st.floats(min_value=0.2, max_value=5.0),
    volume_factor=st.floats(min_value=0.0, max_value=10.0),
    halt_every=st.integers(min_value=2, max_value=9),
    delete_every=st.integers(min_value=2, max_value=9),
    changed_codes=st.sets(st.sampled_from(CODES), min_size=1),
)
def test_rows_after_t_never_change_features_at_t(
    cut_at: int,
    price_factor: float,
    volume_factor: float,
    halt_every: int,
    delete_every: int,
    changed_codes: set[str],
    base: pl.DataFrame,
    base_features: pl.DataFrame,
    listed_info: pl.DataFrame,
) -> None:
    dates = base["Date"].unique().sort()
    cut = dates[min(cut_at, dates.len() - 1)]
    after = (pl.col("Date") > cut) & pl.col("Code").is_in(sorted(changed_codes))
    n = pl.int_range(pl.len()).over("Code")
    prices = [
        "Open", "High", "Low", "Close", "AdjustmentOpen", "AdjustmentHigh",
        "AdjustmentLow", "AdjustmentClose",
    ]  # fmt: skip
    changed = (
        base.with_columns(
            *[pl.when(after).then(pl.col(c) * price_factor).otherwise(pl.col(c)) for c in prices],
            *[
                pl.when(after).then(pl.col(c) * volume_factor).otherwise(pl.col(c))
                for c in ("Volume", "AdjustmentVolume")
            ],
        )
        .with_columns(
            pl.when(after & (n % halt_every == 0))
            .then(None)
            .otherwise(pl.col("AdjustmentClose"))
            .alias("AdjustmentClose")
        )
        .filter(~(after & (n % delete_every == 1)))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the knocked-out closes warn, as documented
        got = build_features(changed, listed_info)
    before = pl.col("date") <= cut
    want = base_features.filter(before).select("date", "code", "sector33", *FEATURE_COLUMNS)
    have = got.filter(before).select("date", "code", "sector33", *FEATURE_COLUMNS)
    assert have.equals(want)  # bitwise, nulls equal to nulls


def test_targets_do_see_the_future(
    base: pl.DataFrame, base_features: pl.DataFrame, listed_info: pl.DataFrame
) -> None:
    """Control for the property above: the same change after t does move targets at t."""
    cut = base["Date"].unique().sort()[100]
    changed = base.with_columns(
        pl.when(pl.col("Date") > cut).then(pl.col(c) * 1.5).otherwise(pl.col(c))
        for c in ("AdjustmentOpen", "AdjustmentHigh", "AdjustmentLow", "AdjustmentClose")
    )
    got = build_features(changed, listed_info).filter(pl.col("date") == cut)
    want = base_features.filter(pl.col("date") == cut)
    assert got.select(FEATURE_COLUMNS).equals(want.select(FEATURE_COLUMNS))
    for name in TARGET_COLUMNS:
        assert not got[name].equals(want[name])


def synthetic_quotes(seed: int, n_stocks: int = 5, n_days: int = 160) -> pl.DataFrame:
    """Random-walk OHLCV in the J-Quants schema with missing days and zero-volume days."""
    rng = np.random.default_rng(seed)
    days = pl.date_range(date(2020, 1, 1), date(2021, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5).head(n_days)
    frames = []
    for s in range(n_stocks):
        close = 1000 * np.exp(np.cumsum(rng.normal(0, 0.02, n_days)))
        open_ = close * np.exp(rng.normal(0, 0.005, n_days))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n_days))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n_days))
        volume = rng.integers(0, 5, n_days) * rng.integers(1_000, 100_000, n_days)
        frames.append(
            pl.DataFrame(
                {
                    "Date": days,
                    "Code": f"{1000 + s}0",
                    "Open": open_,
                    "High": high,
                    "Low": low,
                    "Close": close,
                    "Volume": volume.astype(float),
                    "TurnoverValue": close * volume,
                    "AdjustmentFactor": 1.0,
                    "AdjustmentOpen": open_,
                    "AdjustmentHigh": high,
                    "AdjustmentLow": low,
                    "AdjustmentClose": close,
                    "AdjustmentVolume": volume.astype(float),
                }
            ).filter(pl.Series(rng.uniform(size=n_days) > 0.05))  # ~5% missing days
        )
    return pl.concat(frames)


SYNTHETIC_LISTED = pl.DataFrame(
    {"Code": [f"{1000 + s}0" for s in range(5)], "Sector33Code": ["1", "1", "2", "2", "3"]}
)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cut_at=st.integers(min_value=0, max_value=150),
    factor=st.floats(min_value=0.1, max_value=10.0),
)
def test_leak_free_on_synthetic_ohlcv(seed: int, cut_at: int, factor: float) -> None:
    """The same property on generated data, so it holds without the shared files too."""
    quotes = synthetic_quotes(seed)
    cut = quotes["Date"].unique().sort()[min(cut_at, quotes["Date"].n_unique() - 1)]
    after = pl.col("Date") > cut
    prices = ["AdjustmentOpen", "AdjustmentHigh", "AdjustmentLow", "AdjustmentClose"]
    changed = quotes.with_columns(
        *[pl.when(after).then(pl.col(c) * factor).otherwise(pl.col(c)) for c in prices],
        pl.when(after).then(0.0).otherwise(pl.col("AdjustmentVolume")).alias("AdjustmentVolume"),
    ).filter(~(after & (pl.col("Code") == "10010")))
    want = build_features(quotes, SYNTHETIC_LISTED).filter(pl.col("date") <= cut)
    got = build_features(changed, SYNTHETIC_LISTED).filter(pl.col("date") <= cut)
    assert got.select(FEATURE_COLUMNS).equals(want.select(FEATURE_COLUMNS))
    assert got.select(pl.any_horizontal(pl.col(FEATURE_COLUMNS).is_nan()).any()).item() is False
