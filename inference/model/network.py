"""ATFT-GAT-FAN: FAN-normalised TFT encoder per stock, GATv2 across stocks, quantile heads.

One forward pass scores one or more cross-sections at once: every node is a (date, stock)
pair and the graph's edges connect stocks of the same date only, so several dates batch as
a disjoint union of graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATv2Conv

from inference.config import ModelConfig
from inference.model.fan import FrequencyAdaptiveNormalization
from inference.model.tft import TemporalEncoder


@dataclass(frozen=True)
class Forecast:
    """Network output for a batch of stocks."""

    quantiles: torch.Tensor  # [N, horizons, quantiles], standardised target units
    variable_weights: torch.Tensor  # [N, L, F] mean TFT variable-selection weights
    attention: torch.Tensor  # [N, heads, L] last-day attention over the window


class QuantileHead(nn.Module):
    """Non-crossing quantiles: a median plus cumulative softplus steps either side."""

    def __init__(self, d: int, quantiles: tuple[float, ...], horizons: int) -> None:
        super().__init__()
        self.median_index = quantiles.index(0.5)
        self.horizons = horizons
        self.n_quantiles = len(quantiles)
        self.linear = nn.Linear(d, horizons * self.n_quantiles)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raw = self.linear(z).view(-1, self.horizons, self.n_quantiles)
        m = self.median_index
        median = raw[..., m : m + 1]
        upper = median + F.softplus(raw[..., m + 1 :]).cumsum(dim=-1)
        lower = median - F.softplus(raw[..., :m].flip(-1)).cumsum(dim=-1).flip(-1)
        return torch.cat([lower, median, upper], dim=-1)


class GraphBlock(nn.Module):
    """GATv2 with edge attributes, residual connection and LayerNorm."""

    def __init__(self, d: int, heads: int, edge_dim: int, dropout: float, gated: bool) -> None:
        super().__init__()
        # tanh(0) = 0: a gated block starts as the identity (the no-graph network)
        self.gate = nn.Parameter(torch.zeros(())) if gated else None
        self.conv = GATv2Conv(
            d,
            d // heads,
            heads=heads,
            concat=True,
            edge_dim=edge_dim,
            dropout=dropout,
            add_self_loops=True,
            fill_value="mean",
        )
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        attention: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """``attention``, when given, receives (edge_index, [E, heads] weights) of the layer."""
        if attention is None:
            messages = self.conv(h, edge_index, edge_attr)
        else:
            messages, (edges, alpha) = self.conv(
                h, edge_index, edge_attr, return_attention_weights=True
            )
            attention.append((edges, alpha))
        out = self.norm(h + self.dropout(F.elu(messages)))
        if self.gate is None:
            return out
        return h + torch.tanh(self.gate) * (out - h)

    def opening(self) -> float:
        """How far the graph is let in: tanh(gate), 1.0 for an ungated block."""
        return float(torch.tanh(self.gate).item()) if self.gate is not None else 1.0


class ATFTGATFAN(nn.Module):
    """The prediction network; ``config.use_graph=False`` gives the no-graph ablation."""

    def __init__(self, config: ModelConfig, n_features: int, edge_dim: int, n_sectors: int) -> None:
        super().__init__()
        self.config = config
        self.n_features = n_features
        self.edge_dim = edge_dim
        self.n_sectors = n_sectors
        horizons = config.horizons
        self.fan = FrequencyAdaptiveNormalization(
            config.lookback, max(horizons), config.fan_top_k, config.fan_hidden
        )
        static_dim = config.sector_embedding
        self.sector = nn.Embedding(n_sectors + 1, static_dim) if static_dim else None
        self.encoder = TemporalEncoder(
            n_features,
            config.hidden,
            config.variable_hidden,
            config.lstm_layers,
            config.attention_heads,
            config.dropout,
            static_dim,
            config.per_variable_grn,
        )
        self.graph = nn.ModuleList(
            GraphBlock(config.hidden, config.gat_heads, edge_dim, config.dropout, config.graph_gate)
            for _ in range(config.gat_layers if config.use_graph else 0)
        )
        self.head = QuantileHead(config.hidden, config.quantiles, len(horizons))
        self.linear = nn.Linear(n_features, len(horizons)) if config.linear_head else None
        # FAN's de-normalisation in return space: the predicted main component, averaged
        # over each horizon's days, shifts that horizon's quantiles.
        self.main_to_return = nn.Linear(n_features, len(horizons))
        steps = torch.zeros(len(horizons), max(horizons))
        for i, h in enumerate(horizons):
            steps[i, :h] = 1.0 / h
        self.register_buffer("horizon_average", steps, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        sector: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        graph_attention: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        normalized: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Forecast:
        """``x`` ``[N, L, F]`` standardised features, ``sector`` ``[N]`` vocabulary ids.

        ``graph_attention``, when given, collects each GAT layer's attention over
        neighbours (for interpretation; see :mod:`inference.interpret`). ``normalized``:
        FAN's ``(residual, main)`` split of ``x`` when already computed (it has no
        parameters, so an ensemble's members share it).
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            residual, main = normalized if normalized is not None else self.fan.normalize(x)
            main_future = self.fan.predict_main(x, main)  # [N, H_max, F]
            per_horizon = torch.einsum("hs,nsf->nhf", self.horizon_average, main_future)
        static = self.sector(sector) if self.sector is not None else None
        z, weights, attention = self.encoder(residual, static)
        for block in self.graph:
            z = block(z, edge_index, edge_attr, graph_attention)
        shift = torch.einsum("nhf,hf->nh", per_horizon, self.main_to_return.weight)
        shift = shift + self.main_to_return.bias
        if self.linear is not None:
            shift = shift + self.linear(x[:, -1])
        quantiles = self.head(z) + shift.unsqueeze(-1).to(z.dtype)
        return Forecast(quantiles, weights, attention)


class SeedEnsemble(nn.Module):
    """Copies of one architecture trained from different seeds; their forecasts averaged.

    A small network on daily returns lands in a different place for every seed; the
    mean of a few such forecasts keeps what they agree on. Averaging non-crossing
    quantiles keeps them non-crossing. Interpretation views are averaged too; a caller
    collecting ``graph_attention`` gets every member's layers, the last member's last.
    """

    def __init__(self, members: list[ATFTGATFAN]) -> None:
        super().__init__()
        if not members:
            raise ValueError("ensemble: needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = members[0].config
        self.edge_dim = members[0].edge_dim

    @property
    def graph(self) -> nn.ModuleList:
        """Every member's GAT layers (the graph gates read them)."""
        return nn.ModuleList(block for m in self.members for block in m.graph)  # type: ignore[union-attr]

    def forward(
        self,
        x: torch.Tensor,
        sector: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        graph_attention: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> Forecast:
        with torch.autocast(device_type=x.device.type, enabled=False):
            normalized = self.members[0].fan.normalize(x)  # type: ignore[union-attr, operator]
        outs = [
            m(x, sector, edge_index, edge_attr, graph_attention, normalized) for m in self.members
        ]
        return Forecast(
            torch.stack([o.quantiles for o in outs]).mean(dim=0),
            torch.stack([o.variable_weights for o in outs]).mean(dim=0),
            torch.stack([o.attention for o in outs]).mean(dim=0),
        )


Network = ATFTGATFAN | SeedEnsemble


def build_network(config: ModelConfig, n_features: int, edge_dim: int, n_sectors: int) -> Network:
    """The network ``config`` describes: one ATFT-GAT-FAN, or ``ensemble`` of them."""
    if config.ensemble == 1:
        return ATFTGATFAN(config, n_features, edge_dim, n_sectors)
    return SeedEnsemble(
        [ATFTGATFAN(config, n_features, edge_dim, n_sectors) for _ in range(config.ensemble)]
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
