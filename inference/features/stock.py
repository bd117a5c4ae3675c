"""Per-stock features: everything that reads one stock's own history (and the market).

Rows are sorted by (code, date) and processed by grouped kernels that never look
across a stock boundary or forward in time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from inference.features.catalog import (
    EMA_WINDOWS,
    RANGE_WINDOWS,
    RET_WINDOWS,
    SMA_WINDOWS,
    VOL_WINDOWS,
    WARMUP,
)
from kernels.rolling import (
    ewm_mean,
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


def _safe_div(num: np.ndarray, den: np.ndarray, neutral: float) -> np.ndarray:
    """num / den, with ``neutral`` where the denominator is zero (a flat window)."""
    return safe_divide(
        np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64), neutral
    )


class FeatureColumns:
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
            store_feature(target, np.asarray(values, dtype=np.float64), idx, WARMUP[name])

        return put


def per_stock_features(
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
    rets = {n: r1 if n == 1 else c / lag(c, starts, n) - 1.0 for n in RET_WINDOWS}
    for n in RET_WINDOWS:
        put(f"ret_{n}d", rets[n])
    put("log_ret_1d", lr)
    c20 = lag(c, starts, 20)
    put("mom_120_20", c20 / lag(c, starts, 120) - 1.0)
    put("ret_overnight", o / c_prev - 1.0)
    put("ret_intraday", c / o - 1.0)
    put("range_hl", (h - lo) / c)
    put("close_location", _safe_div(c - lo, h - lo, 0.5))

    vols: dict[int, np.ndarray] = {}
    for n in VOL_WINDOWS:
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
    for n in SMA_WINDOWS:
        if n == 20:
            smas[n], std20 = rolling_mean_std(c, starts, n)
        else:
            smas[n] = rolling_mean(c, starts, n)
        put(f"sma_gap_{n}", c / smas[n] - 1.0)
    for n in EMA_WINDOWS:
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
    for n in RANGE_WINDOWS:
        put(f"dist_high_{n}", c / rolling_max(h, starts, n) - 1.0)
    for n in RANGE_WINDOWS:
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
        put(f"excess_ret_{n}d", rets[n] - (level_row / lag(level_row, starts, n) - 1.0))
    didx = arrays["date_index"]
    put("gap_days", didx - lag(didx, starts, 1) - 1.0)
