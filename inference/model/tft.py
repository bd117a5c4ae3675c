"""Temporal Fusion Transformer building blocks (Lim et al., 2021), sized for cross-sections.

The encoder turns one stock's window of features into a single vector: variable selection
decides which features matter (and exposes the weights), an LSTM summarises the sequence,
and interpretable multi-head attention lets the last day look back at specific days.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GatedResidualNetwork(nn.Module):
    """GRN: ELU MLP with optional context, a GLU gate and a residual LayerNorm.

    The gate lets the network switch a block off entirely where the data does not need
    it, which matters for noisy daily returns.
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int,
        dropout: float = 0.0,
        d_context: int | None = None,
    ) -> None:
        super().__init__()
        self.skip: nn.Module = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.context = nn.Linear(d_context, d_hidden, bias=False) if d_context else None
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.gate = nn.Linear(d_hidden, 2 * d_out)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, a: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc1(a)
        if self.context is not None and context is not None:
            h = h + self.context(context)
        h = self.dropout(self.fc2(F.elu(h)))
        return self.norm(self.skip(a) + F.glu(self.gate(h), dim=-1))


class GatedAddNorm(nn.Module):
    """GLU-gated skip connection followed by LayerNorm."""

    def __init__(self, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Linear(d, 2 * d)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(skip + F.glu(self.gate(self.dropout(x)), dim=-1))


class VariableSelectionNetwork(nn.Module):
    """TFT variable selection over scalar features with one small GRN per feature.

    Per-feature GRNs are held as stacked weight tensors (``[F, d, d]``) and applied with
    ``einsum`` so that a hundred-odd features cost one batched matmul, not a Python loop.
    """

    def __init__(
        self,
        n_features: int,
        d_var: int,
        d_out: int,
        dropout: float,
        d_context: int | None,
        per_variable_grn: bool = True,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.per_variable_grn = per_variable_grn
        self.embed_weight = nn.Parameter(torch.randn(n_features, d_var) * 0.5)
        self.embed_bias = nn.Parameter(torch.zeros(n_features, d_var))
        scale = 1.0 / math.sqrt(d_var)
        if per_variable_grn:
            self.w1 = nn.Parameter(torch.randn(n_features, d_var, d_var) * scale)
            self.b1 = nn.Parameter(torch.zeros(n_features, d_var))
            self.w2 = nn.Parameter(torch.randn(n_features, d_var, 2 * d_var) * scale)
            self.b2 = nn.Parameter(torch.zeros(n_features, 2 * d_var))
            self.var_norm = nn.LayerNorm(d_var)
        # With linear embeddings only, the flattened embeddings are a linear map of x, so
        # the selection GRN reads x directly: same function class, no [N, L, F, d] tensor.
        selection_in = n_features * d_var if per_variable_grn else n_features
        self.selection = GatedResidualNetwork(selection_in, d_out, n_features, dropout, d_context)
        self.project = nn.Linear(d_var, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[N, L, F]`` -> (``[N, L, d_out]``, selection weights ``[N, L, F]``)."""
        ctx = context.unsqueeze(1).expand(-1, x.shape[1], -1) if context is not None else None
        if not self.per_variable_grn:
            # CPU configuration: sum_f w_f (x_f W_f + b_f) as two [N*L, F] x [F, d] matmuls.
            weights = torch.softmax(self.selection(x, ctx), dim=-1)
            combined = (weights * x) @ self.embed_weight + weights @ self.embed_bias
            return self.project(combined), weights
        e = x.unsqueeze(-1) * self.embed_weight + self.embed_bias  # [N, L, F, d]
        h = F.elu(torch.einsum("nlfd,fde->nlfe", e, self.w1) + self.b1)
        h = torch.einsum("nlfd,fde->nlfe", self.dropout(h), self.w2) + self.b2
        processed = self.var_norm(e + F.glu(h, dim=-1))
        weights = torch.softmax(self.selection(e.flatten(2), ctx), dim=-1)
        combined = (processed * weights.unsqueeze(-1)).sum(dim=2)
        return self.project(combined), weights


class InterpretableMultiHeadAttention(nn.Module):
    """TFT attention: per-head queries/keys, one shared value projection, heads averaged.

    Only the last day queries (the prediction is made at the window's end), so the
    attention is causal by construction and costs ``O(L)`` per stock instead of ``O(L^2)``.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.d_head = d // heads
        self.query = nn.Linear(d, heads * self.d_head)
        self.key = nn.Linear(d, heads * self.d_head)
        self.value = nn.Linear(d, self.d_head)
        self.out = nn.Linear(self.d_head, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, L, d]`` -> (last-day output ``[N, d]``, attention ``[N, heads, L]``)."""
        n, length, _ = sequence.shape
        q = self.query(sequence[:, -1]).view(n, self.heads, self.d_head)
        k = self.key(sequence).view(n, length, self.heads, self.d_head)
        v = self.value(sequence)  # [N, L, d_head]
        scores = torch.einsum("nhd,nlhd->nhl", q, k) / math.sqrt(self.d_head)
        attention = self.dropout(torch.softmax(scores, dim=-1))
        heads_out = torch.einsum("nhl,nld->nhd", attention, v)
        return self.out(heads_out.mean(dim=1)), attention


class TemporalEncoder(nn.Module):
    """Variable selection -> LSTM -> static enrichment -> attention -> position-wise GRN."""

    def __init__(
        self,
        n_features: int,
        hidden: int,
        variable_hidden: int,
        lstm_layers: int,
        heads: int,
        dropout: float,
        static_dim: int,
        per_variable_grn: bool = True,
    ) -> None:
        super().__init__()
        self.lstm_layers = lstm_layers
        ctx = hidden if static_dim else None
        if static_dim:
            self.static_selection = GatedResidualNetwork(static_dim, hidden, hidden, dropout)
            self.static_enrichment = GatedResidualNetwork(static_dim, hidden, hidden, dropout)
            self.static_h = GatedResidualNetwork(static_dim, hidden, hidden, dropout)
            self.static_c = GatedResidualNetwork(static_dim, hidden, hidden, dropout)
        self.static_dim = static_dim
        self.selection = VariableSelectionNetwork(
            n_features, variable_hidden, hidden, dropout, ctx, per_variable_grn
        )
        self.lstm = nn.LSTM(
            hidden,
            hidden,
            num_layers=lstm_layers,
            batch_first=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.lstm_gate = GatedAddNorm(hidden, dropout)
        self.enrichment = GatedResidualNetwork(hidden, hidden, hidden, dropout, ctx)
        self.attention = InterpretableMultiHeadAttention(hidden, heads, dropout)
        self.attention_gate = GatedAddNorm(hidden, dropout)
        self.positionwise = GatedResidualNetwork(hidden, hidden, hidden, dropout)
        self.output_gate = GatedAddNorm(hidden, dropout)

    def forward(
        self, x: torch.Tensor, static: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[N, L, F]`` -> (``[N, hidden]``, selection weights, attention weights)."""
        c_sel = c_enr = state = None
        if self.static_dim and static is not None:
            c_sel = self.static_selection(static)
            c_enr = self.static_enrichment(static)
            h0 = self.static_h(static).unsqueeze(0).repeat(self.lstm_layers, 1, 1)
            c0 = self.static_c(static).unsqueeze(0).repeat(self.lstm_layers, 1, 1)
            state = (h0.contiguous(), c0.contiguous())
        selected, weights = self.selection(x, c_sel)
        encoded, _ = self.lstm(selected, state)
        encoded = self.lstm_gate(encoded, selected)
        ctx = c_enr.unsqueeze(1).expand(-1, x.shape[1], -1) if c_enr is not None else None
        enriched = self.enrichment(encoded, ctx)
        attended, attention = self.attention(enriched)
        last = self.attention_gate(attended, enriched[:, -1])
        return self.output_gate(self.positionwise(last), encoded[:, -1]), weights, attention
