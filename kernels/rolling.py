"""Grouped rolling-window kernels for the feature pipeline (numpy + numba only).

Rows are sorted by (stock, date) and ``starts`` holds each stock's first row plus a
final ``len(values)``. Every window looks back only within its own stock, so a value
at row ``i`` depends only on that stock's rows ``<= i``: leak-free by construction and
bitwise independent of other stocks (a whole-column rolling sum masked afterwards
would carry other stocks' rounding across the boundary).

Missing values are NaN. A window containing a NaN yields NaN (Polars'
``min_samples=window``), and rows before a stock's ``window``-th row yield NaN.

Each kernel has a readable ``*_reference`` beside it; property tests hold the two
together.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def _group_shift(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per-group reference level: the group's first finite value (keeps sums well scaled)."""
    shift = np.zeros(values.shape[0])
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        ref = 0.0
        for i in range(lo, hi):
            if np.isfinite(values[i]):
                ref = values[i]
                break
        for i in range(lo, hi):
            shift[i] = ref
    return shift


@nb.njit(cache=True, nogil=True)
def _first_finite(values: np.ndarray, lo: int, hi: int) -> float:
    """The group's reference level: its first finite value (keeps sliding sums small)."""
    for i in range(lo, hi):
        if np.isfinite(values[i]):
            return float(values[i])
    return 0.0


@nb.njit(cache=True, nogil=True)
def rolling_mean(values: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Rolling mean over ``window`` rows per group (a sliding sum, O(n))."""
    n = values.shape[0]
    mean = np.empty(n)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        ref = _first_finite(values, lo, hi)
        s = 0.0
        nans = 0
        for i in range(lo, hi):
            x = values[i]
            if np.isfinite(x):
                s += x - ref
            else:
                nans += 1
            j = i - window
            if j >= lo:
                y = values[j]
                if np.isfinite(y):
                    s -= y - ref
                else:
                    nans -= 1
            if i - lo + 1 >= window and nans == 0:
                mean[i] = s / window + ref
            else:
                mean[i] = np.nan
    return mean


@nb.njit(cache=True, nogil=True)
def rolling_mean_std(
    values: np.ndarray, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling mean and sample standard deviation (ddof=1) over ``window`` rows per group.

    Sliding sums of values minus the group's first finite value, O(n).
    """
    n = values.shape[0]
    mean = np.empty(n)
    std = np.empty(n)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        ref = _first_finite(values, lo, hi)
        s = 0.0
        ss = 0.0
        nans = 0
        for i in range(lo, hi):
            x = values[i]
            if np.isfinite(x):
                d = x - ref
                s += d
                ss += d * d
            else:
                nans += 1
            j = i - window
            if j >= lo:
                y = values[j]
                if np.isfinite(y):
                    d = y - ref
                    s -= d
                    ss -= d * d
                else:
                    nans -= 1
            mean[i] = np.nan
            std[i] = np.nan
            if i - lo + 1 >= window and nans == 0:
                m = s / window
                mean[i] = m + ref
                if window > 1:
                    var = (ss - s * m) / (window - 1)
                    std[i] = np.sqrt(var) if var > 0.0 else 0.0
    return mean, std


def rolling_mean_std_reference(
    values: np.ndarray, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Readable twin of :func:`rolling_mean_std`: recompute every window."""
    n = values.shape[0]
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    for g in range(len(starts) - 1):
        for i in range(starts[g] + window - 1, starts[g + 1]):
            w = values[i - window + 1 : i + 1]
            if np.all(np.isfinite(w)):
                mean[i] = w.mean()
                std[i] = w.std(ddof=1) if window > 1 else np.nan
    return mean, std


@nb.njit(cache=True, nogil=True)
def rolling_moments(
    values: np.ndarray, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling skewness and excess kurtosis (population moments, as Polars' defaults).

    Sliding power sums about a reference level, O(n). Sums about a level far from the
    window (a window of near-equal values after a jump) cancel catastrophically; when the
    raw second moment exceeds the central one by ``_RECENTRE`` the window is re-summed
    about its own mean (O(window), rare), so results match the two-pass reference.
    Both are NaN when every value in the window is the same.
    """
    n = values.shape[0]
    skew = np.full(n, np.nan)
    kurt = np.full(n, np.nan)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        level = _first_finite(values, lo, hi)
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        nans = 0
        for i in range(lo, hi):
            x = values[i]
            if np.isfinite(x):
                d = x - level
                d2 = d * d
                s1 += d
                s2 += d2
                s3 += d2 * d
                s4 += d2 * d2
            else:
                nans += 1
            j = i - window
            if j >= lo:
                y = values[j]
                if np.isfinite(y):
                    d = y - level
                    d2 = d * d
                    s1 -= d
                    s2 -= d2
                    s3 -= d2 * d
                    s4 -= d2 * d2
                else:
                    nans -= 1
            if i - lo + 1 < window or nans != 0:
                continue
            mu = s1 / window
            e2 = s2 / window
            m2 = e2 - mu * mu
            if m2 * _RECENTRE < e2:  # ill-conditioned: re-sum this window about its mean
                level += mu
                s1 = s2 = s3 = s4 = 0.0
                low = high = values[i]
                for k in range(i - window + 1, i + 1):
                    low = min(low, values[k])
                    high = max(high, values[k])
                    d = values[k] - level
                    d2 = d * d
                    s1 += d
                    s2 += d2
                    s3 += d2 * d
                    s4 += d2 * d2
                mu = s1 / window
                e2 = s2 / window
                m2 = e2 - mu * mu if high > low else 0.0  # equal values: no spread at all
            if m2 > 0.0:
                e3 = s3 / window
                e4 = s4 / window
                m3 = e3 - 3.0 * mu * e2 + 2.0 * mu**3
                m4 = e4 - 4.0 * mu * e3 + 6.0 * mu * mu * e2 - 3.0 * mu**4
                skew[i] = m3 / m2**1.5
                kurt[i] = m4 / (m2 * m2) - 3.0
    return skew, kurt


_RECENTRE = 16.0
"""Re-sum a window when its raw second moment is this many times its central one."""


def rolling_moments_reference(
    values: np.ndarray, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Readable twin of :func:`rolling_moments`."""
    n = values.shape[0]
    skew = np.full(n, np.nan)
    kurt = np.full(n, np.nan)
    for g in range(len(starts) - 1):
        for i in range(starts[g] + window - 1, starts[g + 1]):
            w = values[i - window + 1 : i + 1]
            if not np.all(np.isfinite(w)):
                continue
            if np.ptp(w) == 0.0:  # every value the same: no moments
                continue
            d = w - w.mean()
            m2 = np.mean(d**2)
            if m2 > 0.0:
                skew[i] = np.mean(d**3) / m2**1.5
                kurt[i] = np.mean(d**4) / m2**2 - 3.0
    return skew, kurt


@nb.njit(cache=True, nogil=True)
def _rolling_extreme(
    values: np.ndarray, starts: np.ndarray, window: int, sign: float
) -> np.ndarray:
    """Rolling max of ``sign * values`` (times ``sign``) with a monotonic deque: O(n).

    The deque is a slice ``dq[head:tail]`` of row indices whose signed values decrease;
    the front is the window's extreme.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    dq = np.empty(n, dtype=np.int64)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        head = lo
        tail = lo
        last_nan = lo - 1 - window
        for i in range(lo, hi):
            x = values[i]
            if not np.isfinite(x):
                last_nan = i
            else:
                sx = sign * x
                while tail > head and sign * values[dq[tail - 1]] <= sx:
                    tail -= 1
                dq[tail] = i
                tail += 1
            while tail > head and dq[head] <= i - window:
                head += 1
            if i - lo + 1 >= window and last_nan <= i - window and tail > head:
                out[i] = values[dq[head]]
    return out


@nb.njit(cache=True, nogil=True)
def rolling_max(values: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Rolling maximum over ``window`` rows per group."""
    return _rolling_extreme(values, starts, window, 1.0)


@nb.njit(cache=True, nogil=True)
def rolling_min(values: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Rolling minimum over ``window`` rows per group."""
    return _rolling_extreme(values, starts, window, -1.0)


def rolling_extreme_reference(
    values: np.ndarray, starts: np.ndarray, window: int, largest: bool
) -> np.ndarray:
    """Readable twin of :func:`rolling_max` / :func:`rolling_min`."""
    out = np.full(values.shape[0], np.nan)
    for g in range(len(starts) - 1):
        for i in range(starts[g] + window - 1, starts[g + 1]):
            w = values[i - window + 1 : i + 1]
            if np.all(np.isfinite(w)):
                out[i] = w.max() if largest else w.min()
    return out


@nb.njit(cache=True, nogil=True)
def rolling_regression(
    y: np.ndarray, x: np.ndarray, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling OLS of ``y`` on ``x`` per group: slope (beta), correlation, residual std.

    Sliding sums of group-shifted values, O(n). Beta and residual std are NaN when
    ``x`` is constant in the window; correlation is NaN when either series is.
    """
    n = y.shape[0]
    beta = np.full(n, np.nan)
    corr = np.full(n, np.nan)
    resid = np.full(n, np.nan)
    kx = _group_shift(x, starts)
    ky = _group_shift(y, starts)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
        nans = 0
        for i in range(lo, hi):
            if np.isfinite(x[i]) and np.isfinite(y[i]):
                dx = x[i] - kx[i]
                dy = y[i] - ky[i]
                sx += dx
                sy += dy
                sxx += dx * dx
                syy += dy * dy
                sxy += dx * dy
            else:
                nans += 1
            j = i - window
            if j >= lo:
                if np.isfinite(x[j]) and np.isfinite(y[j]):
                    dx = x[j] - kx[j]
                    dy = y[j] - ky[j]
                    sx -= dx
                    sy -= dy
                    sxx -= dx * dx
                    syy -= dy * dy
                    sxy -= dx * dy
                else:
                    nans -= 1
            if i - lo + 1 >= window and nans == 0:
                cxx = sxx - sx * sx / window
                cyy = syy - sy * sy / window
                cxy = sxy - sx * sy / window
                if cxx > 1e-12 * max(sxx, 1e-300):
                    b = cxy / cxx
                    beta[i] = b
                    r = cyy - b * cxy
                    resid[i] = np.sqrt(r / (window - 2)) if r > 0.0 and window > 2 else 0.0
                    if cyy > 1e-12 * max(syy, 1e-300):
                        corr[i] = min(1.0, max(-1.0, cxy / np.sqrt(cxx * cyy)))
    return beta, corr, resid


def rolling_regression_reference(
    y: np.ndarray, x: np.ndarray, starts: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readable twin of :func:`rolling_regression` using ``np.polyfit``/``np.corrcoef``."""
    n = y.shape[0]
    beta = np.full(n, np.nan)
    corr = np.full(n, np.nan)
    resid = np.full(n, np.nan)
    for g in range(len(starts) - 1):
        for i in range(starts[g] + window - 1, starts[g + 1]):
            wy = y[i - window + 1 : i + 1]
            wx = x[i - window + 1 : i + 1]
            if not (np.all(np.isfinite(wy)) and np.all(np.isfinite(wx))) or np.var(wx) <= 0:
                continue
            b, a = np.polyfit(wx, wy, 1)
            beta[i] = b
            r = wy - (a + b * wx)
            resid[i] = np.sqrt(np.sum(r**2) / (window - 2)) if window > 2 else 0.0
            if np.var(wy) > 0:
                corr[i] = np.corrcoef(wx, wy)[0, 1]
    return beta, corr, resid


@nb.njit(cache=True, nogil=True)
def ewm_mean(values: np.ndarray, starts: np.ndarray, alpha: float) -> np.ndarray:
    """Recursive exponential mean ``m = alpha * x + (1 - alpha) * m`` per group.

    Starts at the group's first finite value; a NaN input leaves the state unchanged
    (the row gets the carried mean), so one missing bar does not erase an indicator.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        m = np.nan
        for i in range(lo, hi):
            x = values[i]
            if np.isfinite(x):
                m = x if np.isnan(m) else alpha * x + (1.0 - alpha) * m
            out[i] = m
    return out


def ewm_mean_reference(values: np.ndarray, starts: np.ndarray, alpha: float) -> np.ndarray:
    """Readable twin of :func:`ewm_mean`."""
    out = np.full(values.shape[0], np.nan)
    for g in range(len(starts) - 1):
        m = float("nan")
        for i in range(starts[g], starts[g + 1]):
            if np.isfinite(values[i]):
                m = values[i] if np.isnan(m) else alpha * values[i] + (1 - alpha) * m
            out[i] = m
    return out


@nb.njit(cache=True, nogil=True)
def lag(values: np.ndarray, starts: np.ndarray, periods: int) -> np.ndarray:
    """``values`` shifted by ``periods`` rows within each group (NaN where none exists).

    A negative ``periods`` looks forward: used only for targets, never for features.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        for i in range(lo, hi):
            j = i - periods
            if lo <= j < hi:
                out[i] = values[j]
    return out


def lag_reference(values: np.ndarray, starts: np.ndarray, periods: int) -> np.ndarray:
    """Readable twin of :func:`lag`."""
    out = np.full(values.shape[0], np.nan)
    for g in range(len(starts) - 1):
        block = values[starts[g] : starts[g + 1]]
        for k in range(len(block)):
            if 0 <= k - periods < len(block):
                out[starts[g] + k] = block[k - periods]
    return out


@nb.njit(cache=True, nogil=True)
def grouped_percentile_rank(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Average-tie rank within each group scaled to [0, 1]: (rank - 1) / (count - 1).

    Used per date (rows grouped by date), so a stock's rank at t depends only on the
    values at t. NaN stays NaN and is not counted; a lone value gets 0.5.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        block = values[lo:hi]
        order = np.argsort(block)  # NaN sorts last
        count = 0
        for k in range(hi - lo):
            if np.isfinite(block[order[k]]):
                count += 1
        if count == 1:
            out[lo + order[0]] = 0.5
            continue
        k = 0
        while k < count:
            m = k
            while m + 1 < count and block[order[m + 1]] == block[order[k]]:
                m += 1
            rank = 0.5 * (k + m) / (count - 1)  # mean of 0-based ranks k..m, scaled
            for p in range(k, m + 1):
                out[lo + order[p]] = rank
            k = m + 1
    return out


def grouped_percentile_rank_reference(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Readable twin of :func:`grouped_percentile_rank`: count smaller and equal values."""
    out = np.full(values.shape[0], np.nan)
    for g in range(len(starts) - 1):
        block = values[starts[g] : starts[g + 1]]
        finite = block[np.isfinite(block)]
        for k, x in enumerate(block):
            if not np.isfinite(x):
                continue
            if finite.size == 1:
                out[starts[g] + k] = 0.5
                continue
            below = np.sum(finite < x)
            ties = np.sum(finite == x)
            out[starts[g] + k] = (below + (ties - 1) / 2) / (finite.size - 1)
    return out


@nb.njit(cache=True, nogil=True)
def grouped_zscore(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(x - group mean) / group sample std over finite values; 0 when the std is 0.

    NaN stays NaN. A group with one finite value has no dispersion: its z-score is 0.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        s = 0.0
        count = 0
        for i in range(lo, hi):
            if np.isfinite(values[i]):
                s += values[i]
                count += 1
        if count == 0:
            continue
        mu = s / count
        ss = 0.0
        for i in range(lo, hi):
            if np.isfinite(values[i]):
                d = values[i] - mu
                ss += d * d
        sd = np.sqrt(ss / (count - 1)) if count > 1 else 0.0
        for i in range(lo, hi):
            if np.isfinite(values[i]):
                out[i] = (values[i] - mu) / sd if sd > 0.0 else 0.0
    return out


def grouped_zscore_reference(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Readable twin of :func:`grouped_zscore`."""
    out = np.full(values.shape[0], np.nan)
    for g in range(len(starts) - 1):
        block = values[starts[g] : starts[g + 1]]
        ok = np.isfinite(block)
        if not ok.any():
            continue
        sd = block[ok].std(ddof=1) if ok.sum() > 1 else 0.0
        z = (block - block[ok].mean()) / sd if sd > 0 else np.zeros_like(block)
        out[starts[g] : starts[g + 1]] = np.where(ok, z, np.nan)
    return out


@nb.njit(cache=True, nogil=True)
def store_feature(target: np.ndarray, values: np.ndarray, idx: np.ndarray, warmup: int) -> None:
    """Write ``values`` into the float32 ``target`` with NaN where the row is in its
    stock's warm-up (``idx < warmup``) or the value is not finite, in one pass."""
    for i in range(values.shape[0]):
        x = values[i]
        target[i] = x if (idx[i] >= warmup and np.isfinite(x)) else np.nan


@nb.njit(cache=True, nogil=True)
def safe_divide(num: np.ndarray, den: np.ndarray, neutral: float) -> np.ndarray:
    """``num / den`` with ``neutral`` where ``den == 0`` (a flat window), NaN stays NaN."""
    out = np.empty(num.shape[0])
    for i in range(num.shape[0]):
        a = num[i]
        b = den[i]
        if np.isnan(a) or np.isnan(b):
            out[i] = np.nan
        elif b == 0.0:
            out[i] = neutral
        else:
            out[i] = a / b
    return out
