"""``build_features``: cleaning, per-stock features in threads, market, sector, cross-section."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import polars as pl

from inference.features.catalog import (
    CROSS_SECTION_BASE,
    FEATURE_COLUMNS,
    HORIZONS,
    TARGET_COLUMNS,
    UNKNOWN_SECTOR,
    WARMUP,
)
from inference.features.cleaning import clean_quotes, sector_codes
from inference.features.stock import FeatureColumns, per_stock_features
from kernels.rolling import (
    grouped_percentile_rank,
    grouped_zscore,
    lag,
    rolling_mean,
    rolling_mean_std,
)


def _group_mean(
    keys: np.ndarray, values: np.ndarray, size: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per integer key (NaN values and masked rows excluded), and counts."""
    ok = np.isfinite(values) if mask is None else np.isfinite(values) & mask
    count = np.bincount(keys[ok], minlength=size).astype(np.float64)
    total = np.bincount(keys[ok], weights=values[ok], minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / count, count


def _usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
    workers = max(1, threads if threads is not None else _usable_cpus())
    df = clean_quotes(quotes)
    codes = df["code"]
    n_rows = df.height
    change = np.flatnonzero(codes.ne(codes.shift(1)).fill_null(True).to_numpy())
    starts = np.append(change, n_rows).astype(np.int64)
    idx = np.arange(n_rows, dtype=np.int64) - np.repeat(change, np.diff(starts))
    day = df["date"].cast(pl.Int32).to_numpy()
    # Dense date index (O(n) through a calendar-day table): it counts the distinct dates
    # up to each date, so it depends only on dates <= t.
    seen = np.zeros(int(day.max()) - int(day.min()) + 1, dtype=np.int64)
    seen[day - day.min()] = 1
    unique_days = np.flatnonzero(seen).astype(np.int32) + day.min()
    didx = (np.cumsum(seen) - 1)[day - day.min()]
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

    out = FeatureColumns(n_rows)
    # More chunks than threads: each thread's temporaries scale with its chunk, not the data.
    ranges = _split_groups(starts, 8 * workers)

    def per_stock(lo: int, hi: int) -> None:
        part = {name: values[lo:hi] for name, values in arrays.items()}
        part_starts = starts[(starts >= lo) & (starts <= hi)] - lo
        per_stock_features(part, part_starts, out.writer(lo, idx[lo:hi]))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(per_stock, lo, hi) for lo, hi in ranges]:
            future.result()
    del arrays["mkt_ret_1d"], arrays["mkt_level"], arrays["date_index"]

    def put_market(name: str, per_date: np.ndarray) -> None:
        values = per_date[didx].astype(np.float32)
        values[~np.isfinite(values) | (didx < WARMUP[name])] = np.nan
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
    sector = sector_codes(codes, listed)
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
    # date index keeps codes ascending within each date. Plain float columns (NaN for
    # missing) are gathered, which is much cheaper than gathering validity bitmaps, and
    # NaN becomes null batch by batch so only one batch is ever held twice.
    order = np.argsort(didx.astype(np.int16 if n_dates < 2**15 else np.int64), kind="stable")
    take = pl.Series(order.astype(np.uint32 if n_rows < 2**32 else np.uint64))
    dates = pl.Series("date", unique_days[didx], dtype=pl.Int32).cast(pl.Date)
    parts = [pl.DataFrame([dates, codes, sector])[take]]
    names = [n for n in (*FEATURE_COLUMNS, *TARGET_COLUMNS) if n in out.columns]
    for k in range(0, len(names), 16):
        batch = pl.DataFrame([pl.Series(n, out.columns.pop(n)) for n in names[k : k + 16]])
        parts.append(batch[take].with_columns(pl.all().fill_nan(None)))
        del batch
    frame = pl.concat(parts, how="horizontal")
    del parts
    # Cross-sectional ranks and z-scores, per date, from that date's values only.
    date_starts = np.append(np.flatnonzero(np.diff(didx[order], prepend=-1)), n_rows)

    def cross_section(name: str) -> list[pl.Series]:
        x = frame[name].to_numpy()  # nulls read back as NaN
        rank = grouped_percentile_rank(x, date_starts).astype(np.float32)
        z = grouped_zscore(x, date_starts).astype(np.float32)
        return [
            pl.Series(f"rank_{name}", rank, nan_to_null=True),
            pl.Series(f"z_{name}", z, nan_to_null=True),
        ]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        cross = [s for part in pool.map(cross_section, CROSS_SECTION_BASE) for s in part]
    frame = frame.hstack(cross)
    return frame.select("date", "code", "sector33", *FEATURE_COLUMNS, *TARGET_COLUMNS)
