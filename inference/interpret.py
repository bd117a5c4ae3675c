"""What the network looks at: variable selection, attention over time, attention over peers.

Three views a researcher asks for before trusting a forecast, all read from the network
itself on the dates it scored (no surrogate model):

* **Variable selection** (TFT): the softmax weights the network gives each feature, per
  stock and day of the window; averaged over stocks, days and dates. They are shared by
  every horizon (one encoder), so per horizon we add a gradient view: the mean
  ``|d forecast_h / d x_f| * |x_f|`` over the window (saliency of the median forecast).
* **Attention over time** (TFT): how much the window's last day attends to each earlier
  day (lag 0 = the forecast date), averaged over heads and stocks.
* **Attention over neighbours** (GATv2): per stock, the share of its last graph layer's
  attention each peer receives (self-loop excluded), averaged over heads and dates; shown
  for the largest stocks by trading value. With the graph gate, the gate's opening
  (``tanh``, 0 = the graph is unused) says how far the graph was let in at all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inference.model import Network
from inference.model.network import GraphBlock
from inference.training import GraphSchedule, PreparedPanel, cross_sections


@dataclass
class Interpretation:
    """Averages over the scored dates; plain lists and dicts so they serialise as JSON."""

    variable_weights: dict[str, float]  # feature -> mean selection weight (sums to 1)
    saliency: dict[str, dict[str, float]]  # "5d" -> feature -> share of |grad * input|
    attention_by_lag: list[float]  # index 0 = forecast date, 1 = the day before, ...
    graph_gates: list[float] = field(default_factory=list)  # tanh(gate) per GAT layer
    peers: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    dates: int = 0

    def top_features(self, k: int = 10) -> list[tuple[str, float]]:
        return sorted(self.variable_weights.items(), key=lambda kv: -kv[1])[:k]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dates": self.dates,
            "variable_weights": self.variable_weights,
            "saliency": self.saliency,
            "attention_by_lag": self.attention_by_lag,
            "graph_gates": self.graph_gates,
            "peers": {code: [list(p) for p in peers] for code, peers in self.peers.items()},
        }

    @classmethod
    def average(cls, parts: list[Interpretation]) -> Interpretation:
        """Date-weighted mean of several folds' views; peers come from the last part."""
        weights = np.array([p.dates for p in parts], dtype=float)
        weights = weights / weights.sum() if weights.sum() else np.full(len(parts), 1 / len(parts))

        def mean_map(maps: list[dict[str, float]]) -> dict[str, float]:
            keys = maps[0].keys()
            return {
                k: float(sum(w * m.get(k, 0.0) for w, m in zip(weights, maps, strict=True)))
                for k in keys
            }

        horizons = parts[0].saliency.keys()
        return cls(
            variable_weights=mean_map([p.variable_weights for p in parts]),
            saliency={h: mean_map([p.saliency[h] for p in parts]) for h in horizons},
            attention_by_lag=list(
                np.average([p.attention_by_lag for p in parts], axis=0, weights=weights)
            ),
            graph_gates=list(np.mean([p.graph_gates for p in parts], axis=0))
            if parts[0].graph_gates
            else [],
            peers=parts[-1].peers,
            dates=int(sum(p.dates for p in parts)),
        )


def largest_stocks(prep: PreparedPanel, dates: list[int], k: int) -> list[int]:
    """Indices of the ``k`` stocks with the highest mean ``log_turnover`` on ``dates``."""
    columns = prep.panel.feature_columns
    if "log_turnover" not in columns:
        return []
    values = prep.panel.features[dates][..., columns.index("log_turnover")]
    values = np.where(prep.eligible[dates], values, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # stocks never scored: all NaN
        mean = np.nanmean(values, axis=0) if len(dates) else np.full(values.shape[1], np.nan)
    ranked = np.argsort(-np.nan_to_num(mean, nan=-np.inf))
    return [int(s) for s in ranked[:k] if np.isfinite(mean[s])]


def interpret(
    model: Network,
    prep: PreparedPanel,
    graphs: GraphSchedule | None,
    dates: list[int],
    device: torch.device,
    *,
    max_dates: int = 12,
    large_stocks: int = 5,
    peers: int = 5,
) -> Interpretation:
    """The three views over up to ``max_dates`` of ``dates`` (evenly spaced)."""
    if not dates:
        raise ValueError("interpret: no dates to read the network on")
    cfg = model.config
    sample = [dates[int(i)] for i in np.linspace(0, len(dates) - 1, min(max_dates, len(dates)))]
    sample = sorted(set(sample))
    features = prep.panel.feature_columns
    median = cfg.quantiles.index(0.5)
    use_graph = graphs if cfg.use_graph else None
    selection = np.zeros(len(features))
    saliency = np.zeros((len(cfg.horizons), len(features)))
    by_lag = np.zeros(cfg.lookback)
    watched = largest_stocks(prep, sample, large_stocks) if use_graph is not None else []
    received: dict[int, dict[int, float]] = {s: {} for s in watched}
    model.eval()
    for t in sample:
        batch = cross_sections(prep, use_graph, [t], cfg.lookback, model.edge_dim, device)
        x = batch.x.clone().requires_grad_(True)
        attention: list[tuple[torch.Tensor, torch.Tensor]] = []
        forecast = model(
            x,
            batch.sector,
            batch.edge_index,
            batch.edge_attr,
            attention if use_graph is not None else None,
        )
        selection += forecast.variable_weights.detach().mean(dim=(0, 1)).cpu().numpy()
        by_lag += forecast.attention.detach().mean(dim=(0, 1)).flip(-1).cpu().numpy()
        for h in range(len(cfg.horizons)):
            (grad,) = torch.autograd.grad(
                forecast.quantiles[:, h, median].sum(), x, retain_graph=True
            )
            contribution = (grad * x).detach().abs().sum(dim=1).mean(dim=0)  # [F]
            saliency[h] += (contribution / contribution.sum().clamp_min(1e-12)).cpu().numpy()
        if attention and watched:
            edges, alpha = attention[-1]
            _collect_peers(batch.stocks[0], edges, alpha, received)
    n = len(sample)
    gates = [block.opening() for block in model.graph if isinstance(block, GraphBlock)]
    codes = prep.panel.codes
    return Interpretation(
        variable_weights={f: float(w / n) for f, w in zip(features, selection, strict=True)},
        saliency={
            f"{h}d": {f: float(v / n) for f, v in zip(features, saliency[k], strict=True)}
            for k, h in enumerate(cfg.horizons)
        },
        attention_by_lag=[float(v / n) for v in by_lag],
        graph_gates=gates if use_graph is not None else [],
        peers={
            codes[s]: [
                (codes[p], w / n)
                for p, w in sorted(received[s].items(), key=lambda kv: -kv[1])[:peers]
            ]
            for s in watched
        },
        dates=n,
    )


def _collect_peers(
    stocks: np.ndarray,
    edges: torch.Tensor,
    alpha: torch.Tensor,
    received: dict[int, dict[int, float]],
) -> None:
    """Add each watched stock's attention over its neighbours (messages flow src -> dst)."""
    src = edges[0].cpu().numpy()
    dst = edges[1].cpu().numpy()
    weight = alpha.detach().float().mean(dim=-1).cpu().numpy()
    local = {int(g): i for i, g in enumerate(stocks)}
    for stock, peers in received.items():
        node = local.get(stock)
        if node is None:
            continue
        into = (dst == node) & (src != node)
        for s, w in zip(src[into], weight[into], strict=True):
            peer = int(stocks[s])
            peers[peer] = peers.get(peer, 0.0) + float(w)
