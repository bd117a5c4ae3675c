"""Versioned, validated configurations for the ATFT-GAT-FAN model and its training.

Configurations live as TOML files in ``inference/configs/`` so that an experiment is
reproducible from a file name and a checkpoint carries the exact configuration it was
trained with.  Pydantic validates every field on load, so a typo or an out-of-range
value fails loudly with the field's name instead of silently training something else.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """Architecture of the network; everything that changes the parameter tensors."""

    lookback: int = Field(
        default=20, ge=4, le=252, description="Trading days of history per sample."
    )
    hidden: int = Field(default=64, ge=8, le=1024, description="Width of the temporal encoder.")
    variable_hidden: int = Field(
        default=8, ge=2, le=256, description="Width of each per-feature GRN in variable selection."
    )
    per_variable_grn: bool = Field(
        default=True,
        description="TFT's GRN per feature in variable selection (False: linear embeddings).",
    )
    lstm_layers: int = Field(default=1, ge=1, le=4)
    attention_heads: int = Field(default=4, ge=1, le=16)
    gat_layers: int = Field(
        default=2, ge=0, le=6, description="GATv2 layers; 0 disables the graph."
    )
    gat_heads: int = Field(default=4, ge=1, le=16)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    fan_top_k: int = Field(
        default=3, ge=1, description="Dominant frequencies FAN removes per window."
    )
    fan_hidden: int = Field(default=32, ge=4, le=1024)
    sector_embedding: int = Field(
        default=8, ge=0, le=128, description="0 disables the static input."
    )
    use_graph: bool = Field(default=True, description="False gives the no-graph ablation.")
    graph_gate: bool = Field(
        default=False,
        description="Blend each GAT layer in through a learned gate that starts closed, so "
        "the network starts as its no-graph twin and opens the graph only as far as it helps.",
    )
    ensemble: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Networks trained from consecutive seeds whose forecasts are averaged.",
    )
    linear_head: bool = Field(
        default=False,
        description="Add a linear read-out of the last day's features to the forecast "
        "(wide and deep), so the network holds the ridge baseline as a special case.",
    )
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.hidden % self.attention_heads:
            raise ValueError("hidden must be divisible by attention_heads")
        if self.hidden % self.gat_heads:
            raise ValueError("hidden must be divisible by gat_heads")
        if self.fan_top_k > self.lookback // 2 + 1:
            raise ValueError("fan_top_k must not exceed the lookback's rfft bins (lookback//2+1)")
        if list(self.quantiles) != sorted(set(self.quantiles)) or not all(
            0.0 < q < 1.0 for q in self.quantiles
        ):
            raise ValueError("quantiles must be strictly increasing and inside (0, 1)")
        if 0.5 not in self.quantiles:
            raise ValueError("quantiles must include the median 0.5 (the ranking signal)")
        if list(self.horizons) != sorted(set(self.horizons)) or min(self.horizons) < 1:
            raise ValueError("horizons must be strictly increasing positive trading-day counts")
        return self


class TrainingConfig(_Strict):
    """How the network is fitted: optimiser, loss weights, stopping, sampling."""

    seed: int = 7
    epochs: int = Field(default=8, ge=1)
    steps_per_epoch: int | None = Field(
        default=None, ge=1, description="Cap on dates per epoch (None = every training date)."
    )
    dates_per_batch: int = Field(default=2, ge=1, description="Cross-sections per optimiser step.")
    learning_rate: float = Field(default=1e-3, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="cosine: linear warm-up, then cosine decay to 5% over the planned steps.",
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear learning-rate warm-up.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Cap on optimiser steps per network (all epochs)."
    )
    time_budget_s: float | None = Field(
        default=None,
        gt=0.0,
        description="Wall-clock cap per network fit; the epoch in progress ends early.",
    )
    weight_decay: float = Field(default=1e-4, ge=0.0)
    grad_clip: float = Field(default=1.0, gt=0.0)
    rank_loss_weight: float = Field(
        default=0.5, ge=0.0, description="Weight of the (1 - rank correlation) term."
    )
    patience: int = Field(
        default=2, ge=1, description="Epochs without validation gain before stopping."
    )
    validation_days: int = Field(
        default=120, ge=20, description="Trading days held out for stopping."
    )
    validation_stride: int = Field(
        default=1, ge=1, description="Score every Nth validation date (cheaper early stopping)."
    )
    embargo_days: int = Field(
        default=20, ge=0, description="Gap between periods, >= longest horizon."
    )
    min_history: int = Field(
        default=60, ge=1, description="Trading days a stock needs before scoring."
    )
    min_window_coverage: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Share of the lookback a stock must have traded."
    )
    normalisation: Literal["global", "cross_section"] = Field(
        default="global",
        description="Features: global z-scores, or each date's Gaussian ranks "
        "(market-wide features stay global).",
    )
    target_normalisation: Literal["global", "cross_section"] = Field(
        default="global",
        description="Labels: excess returns over the training std, or over each date's "
        "cross-sectional std.",
    )
    feature_clip: float = Field(default=5.0, gt=0.0, description="Clip of standardised features.")
    target_clip: float = Field(default=5.0, gt=0.0, description="Clip of standardised targets.")
    graph_refresh_days: int = Field(
        default=5, ge=1, description="Rebuild the stock graph every N days."
    )
    graph_window: int = Field(default=60, ge=10)
    graph_top_k: int = Field(default=10, ge=1)
    graph_threshold: float = Field(default=0.3, ge=-1.0, le=1.0)
    graph_sector_edges: bool = Field(
        default=True,
        description="Also join every pair of stocks sharing a Sector33 code (else peers only).",
    )
    ridge_alpha: float = Field(default=10.0, gt=0.0)
    lightgbm_rounds: int = Field(
        default=500, ge=1, description="LightGBM baseline: most boosting rounds (early stops)."
    )
    lightgbm_leaves: int = Field(default=31, ge=2)
    lightgbm_learning_rate: float = Field(default=0.05, gt=0.0)
    lightgbm_min_data_in_leaf: int = Field(default=500, ge=1)
    train_baselines: bool = Field(
        default=True, description="Also fit the no-graph ablation, ridge and LightGBM."
    )
    mixed_precision: bool = Field(default=True, description="bf16 autocast when a GPU is used.")
    threads: int = Field(default=2, ge=1, description="torch CPU threads.")


class WalkForwardConfig(_Strict):
    """Yearly test windows with an expanding training window."""

    test_years: tuple[int, ...] = (2011, 2012, 2013, 2014, 2015)


class EvaluationConfig(_Strict):
    cost_bp_per_side: float = Field(default=10.0, ge=0.0)
    decile: float = Field(default=0.1, gt=0.0, le=0.5, description="Share of stocks per leg.")
    rolling_window: int = Field(default=63, ge=5, description="Days of the rolling RankIC plot.")


class ExperimentConfig(_Strict):
    """One file = one experiment: model, training, walk-forward and evaluation settings."""

    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    walk_forward: WalkForwardConfig = Field(default_factory=WalkForwardConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _embargo_covers_horizon(self) -> ExperimentConfig:
        longest = max(self.model.horizons)
        if self.training.embargo_days < longest:
            raise ValueError(
                f"training.embargo_days ({self.training.embargo_days}) must be >= the longest "
                f"horizon ({longest}) or labels leak across the split"
            )
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return cls.model_validate(json.loads(text))


def load_config(name_or_path: str | Path) -> ExperimentConfig:
    """Load a configuration by bundled name (``cpu``, ``default``) or by file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        bundled = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        raise FileNotFoundError(f"config {name_or_path!r} not found; bundled: {bundled}")
    if path.suffix == ".json":
        return ExperimentConfig.model_validate(json.loads(path.read_text()))
    with path.open("rb") as handle:
        return ExperimentConfig.model_validate(tomllib.load(handle))
