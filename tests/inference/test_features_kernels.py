"""Grouped Numba kernels equal their readable references (and Polars) on random input."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernels.rolling import (
    ewm_mean,
    ewm_mean_reference,
    grouped_percentile_rank,
    grouped_percentile_rank_reference,
    grouped_zscore,
    grouped_zscore_reference,
    lag,
    lag_reference,
    rolling_extreme_reference,
    rolling_max,
    rolling_mean,
    rolling_mean_std,
    rolling_mean_std_reference,
    rolling_min,
    rolling_moments,
    rolling_moments_reference,
    rolling_regression,
    rolling_regression_reference,
    safe_divide,
    store_feature,
)


@st.composite
def grouped_series(draw: st.DrawFn, kind: str = "returns") -> tuple[np.ndarray, np.ndarray]:
    """Values with occasional NaN, split into 1..5 groups of random lengths.

    ``returns``: daily-return-like values with 4 decimals; ``prices``: 50..5000 yen
    in 0.1 steps; ``ties``: a handful of repeated levels.
    """
    n = draw(st.integers(min_value=1, max_value=80))
    elements = {
        "returns": st.integers(-3000, 3000).map(lambda i: i / 10_000),
        "prices": st.integers(500, 50_000).map(lambda i: i / 10),
        "ties": st.sampled_from([0.0, 1.0, 2.0, 3.0]),
    }[kind]
    values = draw(hnp.arrays(np.float64, n, elements=elements))
    nan_at = draw(st.lists(st.integers(0, n - 1), max_size=3))
    values[nan_at] = np.nan
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=4))) - {n})
    starts = np.array([0, *cuts, n], dtype=np.int64)
    return values, starts


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-7, atol: float = 1e-8) -> None:
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


windows = st.integers(min_value=1, max_value=12)


@settings(max_examples=40, deadline=None)
@given(data=st.sampled_from(["returns", "prices"]).flatmap(grouped_series), window=windows)
def test_rolling_mean_std(data: tuple[np.ndarray, np.ndarray], window: int) -> None:
    values, starts = data
    want_mean, want_std = rolling_mean_std_reference(values, starts, window)
    got_mean, got_std = rolling_mean_std(values, starts, window)
    _close(got_mean, want_mean, rtol=1e-7, atol=1e-7)
    _close(got_std, want_std, rtol=1e-7, atol=1e-7)
    _close(rolling_mean(values, starts, window), want_mean, rtol=1e-7, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(data=grouped_series("ties"), window=windows)
def test_rolling_min_max(data: tuple[np.ndarray, np.ndarray], window: int) -> None:
    values, starts = data
    _close(
        rolling_max(values, starts, window), rolling_extreme_reference(values, starts, window, True)
    )
    _close(
        rolling_min(values, starts, window),
        rolling_extreme_reference(values, starts, window, False),
    )


@settings(max_examples=30, deadline=None)
@given(data=grouped_series(), window=st.integers(min_value=3, max_value=12))
def test_rolling_moments(data: tuple[np.ndarray, np.ndarray], window: int) -> None:
    values, starts = data
    got = rolling_moments(values, starts, window)
    want = rolling_moments_reference(values, starts, window)
    for g, w in zip(got, want, strict=True):
        _close(g, w, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    data=grouped_series(), window=st.integers(min_value=3, max_value=12), seed=st.integers(0, 99)
)
def test_rolling_regression(data: tuple[np.ndarray, np.ndarray], window: int, seed: int) -> None:
    y, starts = data
    x = np.asarray(np.random.default_rng(seed).normal(size=(y.shape[0],)), dtype=np.float64)
    for got, want in zip(
        rolling_regression(y, x, starts, window),
        rolling_regression_reference(y, x, starts, window),
        strict=True,
    ):
        _close(got, want, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    data=grouped_series(),
    alpha=st.floats(min_value=0.01, max_value=1.0),
    periods=st.integers(-5, 5),
)
def test_ewm_and_lag(data: tuple[np.ndarray, np.ndarray], alpha: float, periods: int) -> None:
    values, starts = data
    _close(ewm_mean(values, starts, alpha), ewm_mean_reference(values, starts, alpha))
    _close(lag(values, starts, periods), lag_reference(values, starts, periods))


@settings(max_examples=40, deadline=None)
@given(data=grouped_series("ties"))
def test_cross_section_rank_and_zscore(data: tuple[np.ndarray, np.ndarray]) -> None:
    values, starts = data
    _close(
        grouped_percentile_rank(values, starts), grouped_percentile_rank_reference(values, starts)
    )
    _close(grouped_zscore(values, starts), grouped_zscore_reference(values, starts))


def test_kernels_agree_with_polars_over_groups() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(size=3000)
    starts = np.array([0, 700, 1500, 1501, 3000], dtype=np.int64)
    group = np.repeat(np.arange(4), np.diff(starts))
    frame = pl.DataFrame({"g": group, "x": values})
    want = frame.select(
        pl.col("x").rolling_mean(20).over("g").alias("mean"),
        pl.col("x").rolling_std(20).over("g").alias("std"),
        pl.col("x").rolling_max(20).over("g").alias("max"),
        pl.col("x").shift(3).over("g").alias("lag"),
        pl.col("x").ewm_mean(alpha=0.1, adjust=False).over("g").alias("ewm"),
        ((pl.col("x").rank() - 1) / (pl.len() - 1)).over("g").alias("rank"),
    ).fill_null(np.nan)
    mean, std = rolling_mean_std(values, starts, 20)
    _close(mean, want["mean"].to_numpy())
    _close(std, want["std"].to_numpy())
    _close(rolling_max(values, starts, 20), want["max"].to_numpy())
    _close(lag(values, starts, 3), want["lag"].to_numpy())
    _close(ewm_mean(values, starts, 0.1), want["ewm"].to_numpy())
    rank = grouped_percentile_rank(values, starts)
    _close(
        np.where(group == 2, np.nan, rank), np.where(group == 2, np.nan, want["rank"].to_numpy())
    )
    assert rank[1500] == 0.5  # a lone value sits in the middle


def test_store_feature_masks_warmup_and_non_finite_values() -> None:
    values = np.array([1.0, 2.0, np.inf, 4.0, np.nan, 6.0])
    idx = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)  # two stocks of three rows
    target = np.zeros(6, dtype=np.float32)
    store_feature(target, values, idx, 1)
    np.testing.assert_array_equal(target, [np.nan, 2.0, np.nan, np.nan, np.nan, 6.0])


def test_safe_divide_is_neutral_on_flat_windows() -> None:
    got = safe_divide(np.array([1.0, 0.0, np.nan, 3.0]), np.array([2.0, 0.0, 0.0, 0.0]), 0.5)
    np.testing.assert_array_equal(got, [0.5, 0.5, np.nan, 0.5])
