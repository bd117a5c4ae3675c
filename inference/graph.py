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


def trailing_correlation(returns: np.ndarray, min_periods: int) -> np.ndarray:
    """Pairwise Pearson correlation of columns over the rows where both are present.

    ``returns`` is [T, N] with NaN for missing days. Returns the [N, N] correlation,
    NaN where fewer than ``min_periods`` common days or zero variance. Columns with no
    gap share one matrix product; each gappy column is correlated pairwise with all.
    """
    n_days, n_cols = returns.shape
    present = ~np.isnan(returns)
    complete = present.all(axis=0)
    corr = np.full((n_cols, n_cols), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        full = np.flatnonzero(complete)
        if full.size and n_days >= min_periods:
            centred = returns[:, full] - returns[:, full].mean(axis=0)
            cov = centred.T @ centred
            sd = np.sqrt(np.diag(cov))
            corr[np.ix_(full, full)] = cov / np.outer(sd, sd)
        x_all = np.where(present, returns, 0.0)
        for i in np.flatnonzero(~complete):
            rows = present[:, i]
            xi = returns[rows, i][:, None]
            xj = x_all[rows]
            mj = present[rows].astype(np.float64)
            n = mj.sum(axis=0)
            sxi = (xi * mj).sum(axis=0)
            sxj = xj.sum(axis=0)
            cov = (xi * xj).sum(axis=0) - sxi * sxj / n
            var_i = (xi * xi * mj).sum(axis=0) - sxi * sxi / n
            var_j = (xj * xj).sum(axis=0) - sxj * sxj / n
            r = np.where(n >= min_periods, cov / np.sqrt(var_i * var_j), np.nan)
            corr[i, :] = r
            corr[:, i] = r
    corr[~np.isfinite(corr)] = np.nan
    return np.clip(corr, -1.0, 1.0)


@dataclass(frozen=True)
class ReturnPanel:
    """Daily returns and sectors as dense [date x code] arrays, built once per frame.

    Building a graph reads rows ``<= as_of`` of this panel only, so one panel over the
    whole history serves every date without leaking (see :func:`build_stock_graphs`).
    """

    dates: np.ndarray  # datetime64[D], ascending
    codes: list[str]
    returns: np.ndarray  # float64 [T, N], NaN where the stock has no return that date
    present: np.ndarray  # bool [T, N], the stock has a row that date
    sector: np.ndarray  # int32 [T, N], index into sector_names as of that date; -1 unknown
    sector_names: list[str]

    @classmethod
    def from_features(cls, features: pl.DataFrame) -> ReturnPanel:
        for name in ("date", "code", "sector33", "ret_1d"):
            if name not in features.columns:
                raise ValueError(f"features: column '{name}' is required to build the stock graph")
        rows = features.select("date", "code", "sector33", pl.col("ret_1d").cast(pl.Float64))
        dates = rows["date"].unique().sort()
        codes = rows["code"].unique().sort()
        t = dates.search_sorted(rows["date"]).to_numpy()
        n = codes.search_sorted(rows["code"]).to_numpy()
        returns = np.full((dates.len(), codes.len()), np.nan)
        returns[t, n] = rows["ret_1d"].fill_null(np.nan).to_numpy()
        present = np.zeros(returns.shape, dtype=bool)
        present[t, n] = True
        labels = rows["sector33"].fill_null(UNKNOWN_SECTOR)
        names = labels.unique().sort()
        ids = names.search_sorted(labels).to_numpy().astype(np.int32)
        unknown = names.to_list().index(UNKNOWN_SECTOR) if UNKNOWN_SECTOR in names else -2
        sector = np.full(returns.shape, -1, dtype=np.int32)
        sector[t, n] = np.where(ids == unknown, -1, ids)
        for k in range(1, sector.shape[0]):  # carry each code's last known sector forward
            missing = ~present[k]
            sector[k, missing] = sector[k - 1, missing]
        return cls(dates.to_numpy(), codes.to_list(), returns, present, sector, names.to_list())

    def graph(
        self,
        as_of: date,
        codes: list[str] | None = None,
        *,
        window: int = 60,
        top_k: int = 10,
        threshold: float = 0.3,
        sector_edges: bool = True,
    ) -> StockGraph:
        """The graph at ``as_of`` from the last ``window`` panel dates on or before it."""
        if window < 2:
            raise ValueError(f"window: must be at least 2 trading days, got {window}")
        if top_k < 0:
            raise ValueError(f"top_k: must be >= 0, got {top_k}")
        end = int(np.searchsorted(self.dates, np.datetime64(as_of, "D"), side="right"))
        if end == 0:
            raise ValueError(f"as_of: no feature rows on or before {as_of}")
        on_date = self.dates[end - 1] == np.datetime64(as_of, "D")
        column = {c: k for k, c in enumerate(self.codes)}
        if codes is None:
            if not on_date:
                raise ValueError(f"as_of: no stock has a row on {as_of} (not a trading date?)")
            codes = [c for c, k in column.items() if self.present[end - 1, k]]
        if len(set(codes)) != len(codes):
            raise ValueError("codes: must not contain duplicates")
        n_nodes = len(codes)
        known_col = np.array([column.get(c, -1) for c in codes], dtype=np.int64)
        matrix = np.full((min(window, end), n_nodes), np.nan)
        has = known_col >= 0
        matrix[:, has] = self.returns[end - matrix.shape[0] : end, known_col[has]]
        corr = trailing_correlation(matrix, min_periods=max(2, window // 2))
        np.fill_diagonal(corr, np.nan)

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

        sectors = np.full(n_nodes, -1, dtype=np.int32)
        sectors[has] = self.sector[end - 1, known_col[has]]
        known = sectors >= 0
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
    ``features`` needs ``date``, ``code``, ``sector33`` and ``ret_1d``; rows after
    ``as_of`` are dropped before anything else is read. Codes without data in the
    window are isolated nodes (plus sector edges if their sector is known).
    """
    past = features.filter(pl.col("date") <= as_of)
    if past.is_empty():
        raise ValueError(f"as_of: no feature rows on or before {as_of}")
    return ReturnPanel.from_features(past).graph(
        as_of, codes, window=window, top_k=top_k, threshold=threshold, sector_edges=sector_edges
    )


def build_stock_graphs(
    features: pl.DataFrame,
    dates: list[date],
    *,
    window: int = 60,
    top_k: int = 10,
    threshold: float = 0.3,
    sector_edges: bool = True,
) -> dict[date, StockGraph]:
    """One graph per date (default node set each), sharing one :class:`ReturnPanel`.

    Same result as calling :func:`build_stock_graph` per date (tests hold them
    together), without re-pivoting the features for every date of a training run.
    """
    panel = ReturnPanel.from_features(features)
    return {
        d: panel.graph(
            d, window=window, top_k=top_k, threshold=threshold, sector_edges=sector_edges
        )
        for d in dates
    }
