"""Stock graph: undirected, sector and correlation edges as documented, no look-ahead."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from inference.features import UNKNOWN_SECTOR, build_features
from inference.graph import (
    EDGE_DIM,
    EDGE_FEATURES,
    StockGraph,
    build_stock_graph,
    build_stock_graphs,
)

AS_OF = date(2013, 6, 28)


@pytest.fixture(scope="module")
def features(quotes_slice: pl.DataFrame, listed_info: pl.DataFrame) -> pl.DataFrame:
    return build_features(quotes_slice, listed_info)


def _edges(graph: StockGraph) -> dict[tuple[str, str], np.ndarray]:
    """Edges keyed by (source code, target code)."""
    codes = graph.codes
    return {(codes[s], codes[d]): graph.edge_attr[k] for k, (s, d) in enumerate(graph.edge_index.T)}


def test_shape_direction_and_sector_edges(features: pl.DataFrame) -> None:
    graph = build_stock_graph(features, AS_OF)
    day = features.filter(pl.col("date") == AS_OF)
    assert graph.codes == day["code"].to_list()
    assert graph.edge_index.dtype == np.int64 and graph.edge_index.shape[0] == 2
    assert graph.edge_attr.dtype == np.float32
    assert graph.edge_attr.shape == (graph.num_edges, EDGE_DIM) == (graph.num_edges, 3)
    assert EDGE_FEATURES == ("correlation", "same_sector", "correlation_peer")
    edges = _edges(graph)
    assert all(a != b for a, b in edges)  # no self loops
    for (a, b), attr in edges.items():  # undirected: the reverse edge, same attributes
        np.testing.assert_array_equal(edges[(b, a)], attr)
    sector = dict(zip(day["code"], day["sector33"], strict=True))
    for a in graph.codes:
        for b in graph.codes:
            if a != b and sector[a] == sector[b]:
                assert edges[(a, b)][1] == 1.0
    for (a, b), attr in edges.items():
        if sector[a] != sector[b]:
            assert attr[1] == 0.0 and attr[2] == 1.0 and attr[0] >= 0.3


def test_correlation_attribute_uses_the_trailing_window(features: pl.DataFrame) -> None:
    graph = build_stock_graph(features, AS_OF, window=60)
    dates = features.filter(pl.col("date") <= AS_OF)["date"].unique().sort().tail(60)
    wide = (
        features.filter(pl.col("date").is_in(dates.implode()))
        .pivot(on="code", index="date", values="ret_1d")
        .sort("date")
    )
    want = np.corrcoef(wide["72030"].to_numpy(), wide["72670"].to_numpy())[0, 1]
    assert _edges(graph)[("72030", "72670")][0] == pytest.approx(want, abs=1e-5)


def test_top_k_and_threshold(features: pl.DataFrame) -> None:
    none = build_stock_graph(features, AS_OF, threshold=1.01, sector_edges=False)
    assert none.num_edges == 0
    one = build_stock_graph(features, AS_OF, top_k=1, threshold=-1.0, sector_edges=False)
    n = len(one.codes)
    assert n <= one.num_edges <= 2 * n
    sources = set(one.edge_index[0].tolist())
    assert sources == set(range(n))  # everyone has its best peer
    assert (one.edge_attr[:, 1] == 0).sum() + (one.edge_attr[:, 1] == 1).sum() == one.num_edges
    assert (one.edge_attr[:, 2] == 1.0).all()


def test_no_look_ahead(features: pl.DataFrame) -> None:
    """Rows after as_of, however changed or removed, do not change the graph."""
    rng = np.random.default_rng(3)
    after = pl.col("date") > AS_OF
    noise = pl.Series(rng.normal(0, 0.05, features.height).astype(np.float32))
    changed = features.with_columns(
        pl.when(after).then(pl.col("ret_1d") + noise).otherwise(pl.col("ret_1d")).alias("ret_1d")
    ).filter(~(after & (pl.col("code") == "83060")))
    want = build_stock_graph(features, AS_OF)
    got = build_stock_graph(changed, AS_OF)
    assert got.codes == want.codes
    np.testing.assert_array_equal(got.edge_index, want.edge_index)
    np.testing.assert_array_equal(got.edge_attr, want.edge_attr)
    batch = build_stock_graphs(changed, [AS_OF, date(2013, 12, 30)])[AS_OF]
    np.testing.assert_array_equal(batch.edge_index, want.edge_index)
    np.testing.assert_array_equal(batch.edge_attr, want.edge_attr)


def test_node_order_unknown_codes_and_sectors(features: pl.DataFrame) -> None:
    codes = ["83060", "99999", "72030", "83160"]
    graph = build_stock_graph(features, AS_OF, codes, sector_edges=True, threshold=2.0)
    assert graph.codes == codes
    pairs = {(graph.codes[s], graph.codes[d]) for s, d in graph.edge_index.T}
    assert pairs == {("83060", "83160"), ("83160", "83060")}  # banks share Sector33 7050
    unknown = features.with_columns(
        pl.when(pl.col("code") == "83160").then(pl.lit(UNKNOWN_SECTOR)).otherwise("sector33")
        .alias("sector33")
    )  # fmt: skip
    graph = build_stock_graph(unknown, AS_OF, codes, threshold=2.0)
    assert graph.num_edges == 0


def test_bad_requests_are_clear(features: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="no feature rows on or before"):
        build_stock_graph(features, date(2000, 1, 1))
    with pytest.raises(ValueError, match="not a trading date"):
        build_stock_graph(features, date(2013, 6, 29))  # a Saturday
    with pytest.raises(ValueError, match="duplicates"):
        build_stock_graph(features, AS_OF, ["72030", "72030"])
    with pytest.raises(ValueError, match="ret_1d"):
        build_stock_graph(features.drop("ret_1d"), AS_OF)
