"""Evaluation metrics on hand-computed examples."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest

from inference.evaluation import (
    classic_signals,
    decile_weights,
    evaluate_signals,
    long_short,
    summarize,
)


def test_decile_weights_long_top_short_bottom_equal_weight() -> None:
    signal = np.array([[5.0, 1.0, 3.0, np.nan, 4.0, 2.0, 0.0, 6.0, 7.0, 8.0, 9.0]])
    w = decile_weights(signal, 0.2)  # 10 finite values -> 2 per leg
    assert w[0, 10] == w[0, 9] == 0.5
    assert w[0, 6] == w[0, 1] == -0.5
    assert w[0, 3] == 0.0 and w.sum() == 0.0


def test_long_short_returns_costs_and_turnover_by_hand() -> None:
    # 4 stocks, decile 0.25 -> one long (highest signal), one short (lowest)
    signal = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    next_day = np.array([[0.01, 0.0, 0.0, 0.03], [-0.02, 0.0, 0.0, 0.01], [0.0, 0.0, 0.0, 0.0]])
    net, turnover = long_short(signal, next_day, horizon=1, decile=0.25, cost_bp=10.0)
    # day 0: +0.03 - 0.01 = 0.02 gross; bought 1 and sold 1 -> traded 2 -> 20 bp
    # day 1: 0.01 + 0.02 = 0.03; nothing traded
    # day 2: book flips: |+1 - -1| + |-1 - +1| = 4 traded -> 40 bp
    np.testing.assert_allclose(net, [0.02 - 0.002, 0.03, -0.004])
    np.testing.assert_allclose(turnover, [1.0, 0.0, 2.0])


def test_overlapping_cohorts_trade_a_horizon_signal_gradually() -> None:
    signal = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 1.0]])
    next_day = np.zeros((3, 2))
    _, turnover = long_short(signal, next_day, horizon=2, decile=0.5, cost_bp=0.0)
    # positions: day0 (-0.5, +0.5) (one cohort of two); day1 cohorts cancel -> (0, 0);
    # day2 both live cohorts agree -> (+1, -1)
    np.testing.assert_allclose(turnover, [0.5, 0.5, 1.0])


def test_summary_statistics_by_hand() -> None:
    net = np.array([0.1, -0.5, 0.2])
    rank_ic = np.array([0.1, 0.3, np.nan])
    m = summarize(np.array([0.2, 0.4, np.nan]), rank_ic, net, np.array([1.0, 0.0, 2.0]), 0.6)
    assert m["ic"] == pytest.approx(0.3)
    assert m["rank_ic"] == pytest.approx(0.2)
    assert m["icir"] == pytest.approx(0.2 / np.std([0.1, 0.3], ddof=1))
    assert m["annual_return"] == pytest.approx(net.mean() * 252)
    assert m["sharpe"] == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(0.5)  # 1.1 -> 0.55
    assert m["turnover"] == pytest.approx(1.0)
    assert m["hit_rate"] == 0.6


def frame_for(signal: list[list[float]], realised: list[list[float]]) -> pl.DataFrame:
    rows = []
    for d, (s_row, r_row) in enumerate(zip(signal, realised, strict=True)):
        for k, (s, r) in enumerate(zip(s_row, r_row, strict=True)):
            rows.append(
                {"date": date(2015, 1, 5 + d), "code": f"{1000 + k}0", "sig_1d": s, "target_1d": r}
            )
    return pl.DataFrame(rows)


def test_ic_rank_ic_and_hit_rate_from_a_frame() -> None:
    signal = [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]
    realised = [[0.01, 0.02, 0.03, 0.50], [0.01, 0.02, 0.03, 0.04]]
    metrics, series = evaluate_signals(
        frame_for(signal, realised), {"sig": {1: "sig_1d"}}, (1,), decile=0.25
    )
    m = metrics["sig"]["1d"]
    ic_day0 = np.corrcoef([1, 2, 3, 4], [0.01, 0.02, 0.03, 0.50])[0, 1]
    np.testing.assert_allclose(series["sig"][1].rank_ic, [1.0, -1.0])
    np.testing.assert_allclose(series["sig"][1].ic, [ic_day0, -1.0])
    assert m["rank_ic"] == pytest.approx(0.0)
    # day 0: signs vs the cross-sectional mean agree for stocks 1,2 (below) and 4 (above),
    # stock 3 (signal above its mean, return below) disagrees; day 1 all four disagree
    assert m["hit_rate"] == pytest.approx(3 / 8)


def test_ties_share_their_average_rank() -> None:
    signal = [[1.0, 1.0, 2.0, 3.0]]
    realised = [[0.0, 0.0, 1.0, 2.0]]
    _, series = evaluate_signals(frame_for(signal, realised), {"sig": {1: "sig_1d"}}, (1,))
    assert series["sig"][1].rank_ic[0] == pytest.approx(1.0)


def test_evaluate_refuses_an_empty_frame() -> None:
    empty = pl.DataFrame(schema={"date": pl.Date, "code": pl.Utf8, "target_1d": pl.Float64})
    with pytest.raises(ValueError, match="empty date range"):
        evaluate_signals(empty, {"s": {1: "s_1d"}}, (1,))


def test_classic_signals_use_each_stocks_own_history() -> None:
    closes = [100.0 + i for i in range(25)]
    quotes = pl.DataFrame(
        {
            "Date": [date(2015, 1, 1 + i) for i in range(25)],
            "Code": ["13010"] * 25,
            "AdjustmentClose": closes,
        }
    )
    out = classic_signals(quotes)
    assert out["momentum_20d"][19] is None
    assert out["momentum_20d"][20] == pytest.approx(120.0 / 100.0 - 1)
    assert out["reversal_5d"][5] == pytest.approx(1 - 105.0 / 100.0)
