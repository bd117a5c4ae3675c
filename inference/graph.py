"""Per-date stock graph for the GAT: trailing-return correlation peers plus same-sector edges.

The graph at ``as_of`` is built only from feature rows dated on or before ``as_of``
(``ret_1d`` is itself computed from closes up to its own date), so a model trained on
graph snapshots sees no future co-movement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

#: Edge attributes, in order: trailing correlation of daily returns (0 when unknown),
#: 1.0 when both stocks share a Sector33 code, 1.0 when the edge was chosen as a
#: correlation peer (top-k above threshold, in either direction).
EDGE_FEATURES: tuple[str, ...] = ("correlation", "same_sector", "correlation_peer")
EDGE_DIM: int = len(EDGE_FEATURES)
UNKNOWN_SECTOR = "unknown"


@dataclass(frozen=True)
class StockGraph:
    """Nodes are ``codes`` (in that order); ``edge_index`` holds both directions."""

    as_of: date
    codes: list[str]
    edge_index: np.ndarray  # int64 [2, E]
    edge_attr: np.ndarray  # float32 [E, EDGE_DIM]

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


def trailing_correlation(returns: np.ndarray, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise Pearson correlation of columns over the rows where both are present.

    ``returns`` is [T, N] with NaN for missing days. Returns the [N, N] correlation
    (NaN where fewer than ``min_periods`` common days or zero variance) and the
    common-day counts.
    """
    present = ~np.isnan(returns)
    x = np.where(present, returns, 0.0)
    m = present.astype(np.float64)
    n = m.T @ m  # common days per pair
    sx = x.T @ m  # sum of x_i over days where j is present
    sxx = (x * x).T @ m
    sxy = x.T @ x
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx * sx / n
        var_j = var_i.T
        corr = cov / np.sqrt(var_i * var_j)
    corr[(n < min_periods) | ~np.isfinite(corr)] = np.nan
    return np.clip(corr, -1.0, 1.0), n


def build_stock_graph(
    features: pl.DataFrame,
    as_of: date,
    codes: list[str] | None = None,
    *,
    window: int = 60,
    top_k: int = 10,
    threshold: float = 0.3,
    sector_edges: bool = True,
) -> StockGraph:
    """Graph of ``codes`` at ``as_of`` from the ``window`` trading dates ending at ``as_of``.

    Correlation peers: for each stock, its ``top_k`` most correlated other stocks whose
    correlation is at least ``threshold`` (needs ``window // 2`` common days); the edge
    is kept in both directions. Sector edges: every pair sharing a known Sector33 code.
    ``features`` needs ``date``, ``code``, ``sector33`` and ``ret_1d``.
    """
    for name in ("date", "code", "sector33", "ret_1d"):
        if name not in features.columns:
            raise ValueError(f"features: column '{name}' is required to build the stock graph")
    if window < 2:
        raise ValueError(f"window: must be at least 2 trading days, got {window}")
    if top_k < 0:
        raise ValueError(f"top_k: must be >= 0, got {top_k}")
    past = features.lazy().filter(pl.col("date") <= as_of)
    dates = past.select(pl.col("date").unique().sort().tail(window)).collect().to_series()
    if dates.is_empty():
        raise ValueError(f"as_of: no feature rows on or before {as_of}")
    if codes is None:
        codes = (
            past.filter(pl.col("date") == as_of)
            .select(pl.col("code").unique().sort())
            .collect()
            .to_series()
            .to_list()
        )
        if not codes:
            raise ValueError(f"as_of: no stock has a row on {as_of} (not a trading date?)")
    if len(set(codes)) != len(codes):
        raise ValueError("codes: must not contain duplicates")
    node = pl.DataFrame({"code": codes, "node": np.arange(len(codes), dtype=np.int64)})

    window_rows = (
        past.filter(pl.col("date").is_in(dates.implode()))
        .select("date", "code", pl.col("ret_1d").cast(pl.Float64))
        .collect()
        .join(node, on="code", how="inner")
    )
    date_pos = pl.DataFrame({"date": dates, "t": np.arange(dates.len(), dtype=np.int64)})
    window_rows = window_rows.join(date_pos, on="date", how="inner")
    matrix = np.full((dates.len(), len(codes)), np.nan)
    matrix[window_rows["t"].to_numpy(), window_rows["node"].to_numpy()] = (
        window_rows["ret_1d"].fill_null(np.nan).to_numpy()
    )
    corr, _ = trailing_correlation(matrix, min_periods=max(2, window // 2))
    np.fill_diagonal(corr, np.nan)

    n_nodes = len(codes)
    peer = np.zeros((n_nodes, n_nodes), dtype=bool)
    if top_k > 0 and n_nodes > 1:
        score = np.where(np.isnan(corr), -np.inf, corr)
        k = min(top_k, n_nodes - 1)
        top = np.argpartition(-score, kth=k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(n_nodes), k)
        cols = top.ravel()
        keep = score[rows, cols] >= threshold
        peer[rows[keep], cols[keep]] = True
        peer |= peer.T

    sector_of = (
        past.filter(pl.col("code").is_in(pl.Series(codes).implode()))
        .sort("date")
        .group_by("code")
        .agg(pl.col("sector33").last())
        .collect()
    )
    sectors = node.join(sector_of, on="code", how="left").sort("node")["sector33"].to_numpy()
    known = np.array([s is not None and s != UNKNOWN_SECTOR for s in sectors])
    same = (sectors[:, None] == sectors[None, :]) & known[:, None] & known[None, :]
    np.fill_diagonal(same, False)

    adjacency = peer | same if sector_edges else peer
    src, dst = np.nonzero(adjacency)
    edge_attr = np.stack(
        [
            np.nan_to_num(corr[src, dst], nan=0.0),
            same[src, dst].astype(np.float64),
            peer[src, dst].astype(np.float64),
        ],
        axis=1,
    ).astype(np.float32)
    return StockGraph(
        as_of=as_of,
        codes=list(codes),
        edge_index=np.stack([src, dst]).astype(np.int64),
        edge_attr=edge_attr.reshape(-1, EDGE_DIM),
    )
