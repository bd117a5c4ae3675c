"""Fitting ATFT-GAT-FAN (and its baselines) on walk-forward folds.

One optimiser step sees ``dates_per_batch`` whole cross-sections (every eligible stock of
a date, joined by that date's stock graph), because both the GAT and the rank term are
defined across stocks of the same day.  Everything the fit learns from data (feature
normalisation, target scale, sector vocabulary) is fitted on the fold's training dates
only.  Seeds fix parameter initialisation, date order and dropout, so a CPU run is
repeatable bit for bit.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import polars.selectors as cs
import torch

from inference.baselines import LightGBMModel, RidgeModel, fit_lightgbm, fit_ridge
from inference.config import ExperimentConfig, ModelConfig, TrainingConfig
from inference.model import (
    ATFTGATFAN,
    Network,
    SeedEnsemble,
    quantile_loss,
    rank_correlation_loss,
)
from inference.model.checkpoint import Checkpoint
from inference.model.panel import (
    UNKNOWN_SECTOR,
    FeaturePanel,
    Normaliser,
    cross_sectional_gauss,
    cross_sectional_spread,
    eligibility,
    excess_targets,
)
from inference.splits import Fold, check_fold

if TYPE_CHECKING:
    from inference.interpret import Interpretation

#: ``(label, completed, total)``; the CLI turns these into progress bars.
ProgressCallback = Callable[[str, int, int], None]
GraphBuilder = Callable[[date, list[str]], tuple[list[str], np.ndarray, np.ndarray]]


def select_device(prefer: str | None = None) -> torch.device:
    """The GPU when one is present (or asked for), else the CPU."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True, warn_only=True)


def default_graph_builder(frame: pl.DataFrame, training: TrainingConfig) -> GraphBuilder:
    """Graphs from :mod:`inference.graph`, sharing one return panel over ``frame``.

    ``ReturnPanel.graph(as_of, ...)`` reads only rows dated on or before ``as_of``, so one
    panel over the whole history serves every date without look-ahead.
    """
    from inference.graph import ReturnPanel

    panel = ReturnPanel.from_features(frame)

    def build(as_of: date, codes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        graph = panel.graph(
            as_of,
            codes,
            window=training.graph_window,
            top_k=training.graph_top_k,
            threshold=training.graph_threshold,
            sector_edges=training.graph_sector_edges,
        )
        return graph.codes, graph.edge_index, graph.edge_attr

    return build


def graph_edge_dim() -> int:
    from inference.graph import EDGE_DIM

    return int(EDGE_DIM)


class GraphSchedule:
    """Stock graphs rebuilt every ``refresh`` trading days and cached by date index.

    The graph used on date ``t`` is the one built on the latest refresh date ``r <= t``
    from data up to ``r`` (so never from the future), restricted to the stocks scored on
    ``t``; a stock absent on ``r`` has only its self-loop.
    """

    def __init__(
        self,
        panel: FeaturePanel,
        eligible: np.ndarray,
        refresh: int,
        builder: GraphBuilder,
    ) -> None:
        self.panel = panel
        self.eligible = eligible
        self.refresh = refresh
        self.builder = builder
        self.code_index = {c: i for i, c in enumerate(panel.codes)}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _global(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if r not in self._cache:
            codes = [self.panel.codes[i] for i in np.flatnonzero(self.eligible[r])]
            if not codes:
                empty = np.zeros(0, np.int64)
                self._cache[r] = (empty, empty, np.zeros((0, 0), np.float32))
                return self._cache[r]
            node_codes, edge_index, edge_attr = self.builder(self.panel.dates[r], codes)
            to_global = np.array([self.code_index[c] for c in node_codes], dtype=np.int64)
            self._cache[r] = (
                to_global[edge_index[0]] if edge_index.size else np.zeros(0, np.int64),
                to_global[edge_index[1]] if edge_index.size else np.zeros(0, np.int64),
                np.asarray(edge_attr, dtype=np.float32),
            )
        return self._cache[r]

    def edges(self, t: int, stocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edges among ``stocks`` (global indices) on date ``t``, in local node numbering."""
        r = t - t % self.refresh
        while r > 0 and not self.eligible[r].any():
            r -= 1
        src, dst, attr = self._global(r)
        local = np.full(len(self.panel.codes), -1, dtype=np.int64)
        local[stocks] = np.arange(len(stocks))
        keep = (local[src] >= 0) & (local[dst] >= 0)
        if not keep.any():
            return np.zeros((2, 0), np.int64), np.zeros((0, attr.shape[-1]), np.float32)
        return np.stack([local[src[keep]], local[dst[keep]]]), attr[keep]


@dataclass
class PreparedPanel:
    """A panel with one fold's normalisation applied; what the network reads."""

    panel: FeaturePanel
    normed: np.ndarray  # [D, S, F] standardised features, 0 where missing
    excess: np.ndarray  # [D, S, H] cross-sectionally demeaned forward returns (NaN unknown)
    scaled: np.ndarray  # [D, S, H] excess / target_scale, clipped (training labels)
    eligible: np.ndarray  # [D, S]
    sector_ids: np.ndarray  # [S] int64 (0 = unknown)
    normaliser: Normaliser
    target_scale: np.ndarray  # [H]
    sector_vocab: list[str]


def prepare_panel(
    panel: FeaturePanel,
    train_dates: np.ndarray,
    model: ModelConfig,
    training: TrainingConfig,
    normaliser: Normaliser | None = None,
    target_scale: np.ndarray | None = None,
    sector_vocab: list[str] | None = None,
    transform_from: int = 0,
    ranked: np.ndarray | None = None,
) -> PreparedPanel:
    """Fit (or reuse, when given) normalisation on ``train_dates`` and apply it.

    ``transform_from`` skips standardising dates before that index (left at 0): serving
    only reads the last ``lookback`` days, but needs the longer history for eligibility.
    """
    eligible = eligibility(
        panel.present, model.lookback, training.min_history, training.min_window_coverage
    )
    if normaliser is None:
        normaliser = Normaliser.fit(
            panel,
            train_dates,
            training.feature_clip,
            training.seed,
            cross_section=training.normalisation == "cross_section",
        )
    normed = np.zeros_like(panel.features)
    normed[transform_from:] = normaliser.transform(
        panel.features[transform_from:],
        ranked[transform_from:] if ranked is not None else None,
    )
    excess = excess_targets(panel.targets, eligible)
    per_date = training.target_normalisation == "cross_section"
    spread = cross_sectional_spread(excess) if per_date else None
    if target_scale is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if spread is not None:  # forecasts come back in a typical day's return units
                scale = np.nanmedian(spread[train_dates, 0], axis=0)
            else:
                scale = np.nanstd(excess[train_dates][eligible[train_dates]], axis=0)
        target_scale = np.where(np.isfinite(scale) & (scale > 1e-8), scale, 1.0)
    target_scale = np.asarray(target_scale, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = excess / (spread if spread is not None else target_scale)
    scaled = np.clip(scaled, -training.target_clip, training.target_clip)
    if sector_vocab is None:
        sector_vocab = sorted({s for s in panel.sectors if s != UNKNOWN_SECTOR})
    lookup = {s: i + 1 for i, s in enumerate(sector_vocab)}
    sector_ids = np.array([lookup.get(s, 0) for s in panel.sectors], dtype=np.int64)
    return PreparedPanel(
        panel,
        normed,
        excess,
        scaled.astype(np.float32),
        eligible,
        sector_ids,
        normaliser,
        target_scale,
        list(sector_vocab),
    )


@dataclass
class CrossSections:
    """Several dates' cross-sections as one disjoint-union graph batch."""

    x: torch.Tensor
    sector: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    target: torch.Tensor
    group: torch.Tensor
    dates: list[int]
    stocks: list[np.ndarray]


def cross_sections(
    prep: PreparedPanel,
    graphs: GraphSchedule | None,
    dates: list[int],
    lookback: int,
    edge_dim: int,
    device: torch.device,
) -> CrossSections:
    xs, sectors, targets, groups, edges, attrs, stock_lists = [], [], [], [], [], [], []
    offset = 0
    for g, t in enumerate(dates):
        stocks = np.flatnonzero(prep.eligible[t])
        window = prep.normed[t - lookback + 1 : t + 1][:, stocks]  # [L, n, F]
        xs.append(np.ascontiguousarray(window.transpose(1, 0, 2)))
        sectors.append(prep.sector_ids[stocks])
        targets.append(prep.scaled[t, stocks])
        groups.append(np.full(len(stocks), g, dtype=np.int64))
        if graphs is not None:
            edge_index, edge_attr = graphs.edges(t, stocks)
            edges.append(edge_index + offset)
            attrs.append(edge_attr.reshape(-1, edge_dim))
        stock_lists.append(stocks)
        offset += len(stocks)
    edge_index = np.concatenate(edges, axis=1) if edges else np.zeros((2, 0), np.int64)
    edge_attr = np.concatenate(attrs) if attrs else np.zeros((0, edge_dim), np.float32)
    return CrossSections(
        torch.from_numpy(np.concatenate(xs)).to(device),
        torch.from_numpy(np.concatenate(sectors)).to(device),
        torch.from_numpy(edge_index).to(device),
        torch.from_numpy(edge_attr.reshape(-1, edge_dim)).to(device),
        torch.from_numpy(np.concatenate(targets)).to(device),
        torch.from_numpy(np.concatenate(groups)).to(device),
        list(dates),
        stock_lists,
    )


def usable_dates(
    prep: PreparedPanel, indices: range | list[int] | np.ndarray, lookback: int
) -> list[int]:
    """Dates of ``indices`` with a full lookback and at least 5 stocks to rank."""
    return [int(t) for t in indices if t >= lookback - 1 and prep.eligible[t].sum() >= 5]


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


@torch.inference_mode()
def predict_quantiles(
    model: Network,
    prep: PreparedPanel,
    graphs: GraphSchedule | None,
    dates: list[int],
    device: torch.device,
    batch_dates: int = 4,
    mixed_precision: bool = True,
) -> np.ndarray:
    """``[len(dates), S, H, Q]`` return-unit quantiles; NaN for stocks not scored."""
    model.eval()
    cfg = model.config
    out = np.full(
        (len(dates), len(prep.panel.codes), len(cfg.horizons), len(cfg.quantiles)),
        np.nan,
        dtype=np.float32,
    )
    use_graph = graphs if cfg.use_graph else None
    for start in range(0, len(dates), batch_dates):
        chunk = dates[start : start + batch_dates]
        batch = cross_sections(prep, use_graph, chunk, cfg.lookback, model.edge_dim, device)
        with _autocast(device, mixed_precision):
            q = model(batch.x, batch.sector, batch.edge_index, batch.edge_attr).quantiles
        q = q.float().cpu().numpy() * prep.target_scale[None, :, None]
        offset = 0
        for k, stocks in enumerate(batch.stocks):
            out[start + k, stocks] = q[offset : offset + len(stocks)]
            offset += len(stocks)
    if not np.isfinite(out[~np.isnan(out[..., 0, 0])]).all():
        raise FloatingPointError("model produced non-finite quantiles (diverged weights?)")
    return out


def rank_ic_by_date(signal: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """Spearman correlation per row of ``[D, S]`` arrays (NaN-aware); NaN when < 5 pairs."""
    result = np.full(signal.shape[0], np.nan)
    for i in range(signal.shape[0]):
        ok = np.isfinite(signal[i]) & np.isfinite(realised[i])
        if ok.sum() < 5:
            continue
        a = signal[i, ok].argsort().argsort().astype(float)
        b = realised[i, ok].argsort().argsort().astype(float)
        if a.std() == 0 or b.std() == 0:
            continue
        result[i] = float(np.corrcoef(a, b)[0, 1])
    return result


@dataclass
class FitResult:
    model: Network
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("nan")


def fit_network(
    prep: PreparedPanel,
    graphs: GraphSchedule | None,
    fold: Fold,
    model_cfg: ModelConfig,
    training: TrainingConfig,
    edge_dim: int,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
    label: str = "train",
) -> FitResult:
    """Fit with early stopping on validation mean RankIC (median forecast, all horizons).

    With ``model_cfg.ensemble = n``, ``n`` networks are fitted one after the other from
    seeds ``seed, seed + 1, ...`` (each with the whole step and time budget) and
    averaged; the history lists every member's epochs under its ``member`` number.
    """
    if model_cfg.ensemble > 1:
        single = model_cfg.model_copy(update={"ensemble": 1})
        members: list[ATFTGATFAN] = []
        history: list[dict[str, float]] = []
        for k in range(model_cfg.ensemble):
            part = fit_network(
                prep,
                graphs,
                fold,
                single,
                training.model_copy(update={"seed": training.seed + k}),
                edge_dim,
                device,
                progress,
                label=f"{label} {k + 1}/{model_cfg.ensemble}",
            )
            assert isinstance(part.model, ATFTGATFAN)  # a member is never an ensemble
            members.append(part.model)
            history += [{"member": float(k + 1), **epoch} for epoch in part.history]
        return FitResult(SeedEnsemble(members), history)
    device = device or select_device()
    seed_everything(training.seed)
    torch.set_num_threads(training.threads)
    model = ATFTGATFAN(
        model_cfg, len(prep.panel.feature_columns), edge_dim, len(prep.sector_vocab)
    ).to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
    )
    quantiles = torch.tensor(model_cfg.quantiles, device=device)
    median = model_cfg.quantiles.index(0.5)
    train_dates = usable_dates(prep, fold.train, model_cfg.lookback)
    val_dates = usable_dates(prep, fold.validation, model_cfg.lookback)
    val_dates = val_dates[:: training.validation_stride]
    if not train_dates:
        raise ValueError(f"fold {fold.name}: no training date has enough eligible stocks")
    use_graph = graphs if model_cfg.use_graph else None
    per_step = training.dates_per_batch
    steps = math.ceil(len(train_dates) / per_step)
    if training.steps_per_epoch is not None:
        steps = min(steps, training.steps_per_epoch)
    total = steps * training.epochs
    if training.max_steps is not None:
        total = min(total, training.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate_factor(training, total))
    rng = np.random.default_rng(training.seed)
    result = FitResult(model)
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    done = 0
    deadline = (
        time.monotonic() + training.time_budget_s if training.time_budget_s is not None else None
    )
    for epoch in range(training.epochs):
        model.train()
        order = rng.permutation(len(train_dates))
        losses = []
        for step in range(steps):
            picks = order[step * per_step : (step + 1) * per_step]
            if len(picks) == 0 or done >= total:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            chunk = sorted(train_dates[i] for i in picks)
            batch = cross_sections(prep, use_graph, chunk, model_cfg.lookback, edge_dim, device)
            with _autocast(device, training.mixed_precision):
                forecast = model(batch.x, batch.sector, batch.edge_index, batch.edge_attr)
            q = forecast.quantiles.float()
            loss = quantile_loss(q, batch.target, quantiles)
            if training.rank_loss_weight > 0:
                loss = loss + training.rank_loss_weight * rank_correlation_loss(
                    q[..., median], batch.target, batch.group
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
            optimiser.step()
            scheduler.step()
            done += 1
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(label, done, total)
        if not losses:
            break
        score = validation_score(model, prep, graphs, val_dates, device, training)
        result.history.append(
            {
                "epoch": epoch + 1,
                "steps": done,
                "train_loss": float(np.mean(losses)),
                "val_rank_ic": score,
            }
        )
        if not math.isnan(score) and (math.isnan(result.best_score) or score > result.best_score):
            result.best_score, result.best_epoch = score, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
            stale = 0
        else:
            stale += 1
            if stale >= training.patience:
                break
        if done >= total or (deadline is not None and time.monotonic() >= deadline):
            break
    if progress is not None:
        progress(label, total, total)
    model.load_state_dict(best_state)
    model.eval()
    return result


def learning_rate_factor(training: TrainingConfig, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate after ``step`` optimiser steps."""
    warmup = min(training.warmup_steps, max(total - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if training.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def validation_score(
    model: Network,
    prep: PreparedPanel,
    graphs: GraphSchedule | None,
    dates: list[int],
    device: torch.device,
    training: TrainingConfig,
) -> float:
    """Mean over horizons and dates of the median forecast's RankIC with excess returns."""
    if not dates:
        return float("nan")
    median = model.config.quantiles.index(0.5)
    q = predict_quantiles(
        model, prep, graphs, dates, device, mixed_precision=training.mixed_precision
    )
    scores = [
        np.nanmean(rank_ic_by_date(q[:, :, h, median], prep.excess[dates, :, h]))
        for h in range(q.shape[2])
    ]
    finite = [s for s in scores if np.isfinite(s)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass
class TrainedBundle:
    """Everything a checkpoint holds: the model, its baselines and the fitted data rules."""

    config: ExperimentConfig
    model: Network
    ablation: Network | None
    ridge: RidgeModel | None
    lightgbm: LightGBMModel | None
    prep: PreparedPanel
    fold: Fold
    histories: dict[str, list[dict[str, float]]]
    data_hash: str
    edge_dim: int


def train_fold(
    frame: pl.DataFrame,
    panel: FeaturePanel,
    fold: Fold,
    config: ExperimentConfig,
    *,
    graphs: GraphSchedule | None = None,
    builder: GraphBuilder | None = None,
    edge_dim: int | None = None,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
    ranked: np.ndarray | None = None,
) -> TrainedBundle:
    """Fit the model (and, when configured, the no-graph ablation and ridge) on one fold.

    ``ranked``: the panel's per-date ranks, when already computed (see ``prepare_panel``).
    """
    train_idx = np.array(list(fold.train), dtype=np.int64)
    prep = prepare_panel(panel, train_idx, config.model, config.training, ranked=ranked)
    edge_dim = graph_edge_dim() if edge_dim is None else edge_dim
    if graphs is None and config.model.use_graph:
        graphs = GraphSchedule(
            panel,
            prep.eligible,
            config.training.graph_refresh_days,
            builder or default_graph_builder(frame, config.training),
        )
    elif graphs is not None:
        graphs.eligible = prep.eligible
    histories: dict[str, list[dict[str, float]]] = {}
    main = fit_network(
        prep,
        graphs,
        fold,
        config.model,
        config.training,
        edge_dim,
        device,
        progress,
        label=f"{fold.name} model",
    )
    histories["model"] = main.history
    ablation: Network | None = None
    ridge: RidgeModel | None = None
    lightgbm: LightGBMModel | None = None
    if config.training.train_baselines:
        no_graph = config.model.model_copy(update={"use_graph": False})
        fitted = fit_network(
            prep,
            None,
            fold,
            no_graph,
            config.training,
            edge_dim,
            device,
            progress,
            label=f"{fold.name} no-graph",
        )
        ablation = fitted.model
        histories["no_graph"] = fitted.history
        train_dates = usable_dates(prep, fold.train, config.model.lookback)
        ridge = fit_ridge(prep, train_dates, config.training.ridge_alpha, config.training.seed)
        if progress is not None:
            progress(f"{fold.name} lightgbm", 0, 1)
        lightgbm = fit_lightgbm(
            prep,
            train_dates,
            usable_dates(prep, fold.validation, config.model.lookback),
            config.training,
        )
        if progress is not None:
            progress(f"{fold.name} lightgbm", 1, 1)
    last_train = fold.train.stop - 1 if len(fold.train) else 0
    last_seen = max(last_train, fold.validation.stop - 1 if len(fold.validation) else 0)
    return TrainedBundle(
        config,
        main.model,
        ablation,
        ridge,
        lightgbm,
        prep,
        fold,
        histories,
        panel.content_hash(last_seen),
        edge_dim,
    )


def bundle_to_checkpoint(bundle: TrainedBundle) -> Checkpoint:
    """The checkpoint of a fitted bundle; ``train_until`` is the last date whose data it saw."""
    prep, fold = bundle.prep, bundle.fold
    last = max(
        fold.train.stop - 1 if len(fold.train) else 0,
        fold.validation.stop - 1 if len(fold.validation) else 0,
    )
    seen = np.flatnonzero(prep.eligible[: last + 1].any(axis=0))
    return Checkpoint(
        config=bundle.config,
        feature_columns=list(prep.panel.feature_columns),
        sector_vocab=list(prep.sector_vocab),
        universe=[prep.panel.codes[int(i)] for i in seen],
        edge_dim=bundle.edge_dim,
        normaliser=prep.normaliser,
        target_scale=prep.target_scale,
        model_state=bundle.model.state_dict(),
        ablation_state=bundle.ablation.state_dict() if bundle.ablation is not None else None,
        ridge_coef=bundle.ridge.coef if bundle.ridge is not None else None,
        lightgbm=bundle.lightgbm,
        data_hash=bundle.data_hash,
        train_until=prep.panel.dates[last],
        histories=bundle.histories,
        spans={
            k: v for k, v in fold.describe(prep.panel.dates).items() if k in ("train", "validation")
        },
    )


def prepare_for_checkpoint(
    panel: FeaturePanel, checkpoint: Checkpoint, transform_from: int = 0
) -> PreparedPanel:
    """Apply a checkpoint's stored normalisation to a new panel (never refitted)."""
    if panel.feature_columns != checkpoint.feature_columns:
        missing = sorted(set(checkpoint.feature_columns) - set(panel.feature_columns))
        extra = sorted(set(panel.feature_columns) - set(checkpoint.feature_columns))
        raise ValueError(
            "features: schema differs from the checkpoint's "
            f"(missing {missing[:10]}, unexpected {extra[:10]}, or a different order)"
        )
    return prepare_panel(
        panel,
        np.zeros(0, dtype=np.int64),
        checkpoint.config.model,
        checkpoint.config.training,
        normaliser=checkpoint.normaliser,
        target_scale=checkpoint.target_scale,
        sector_vocab=checkpoint.sector_vocab,
        transform_from=transform_from,
    )


def signal_columns(horizons: tuple[int, ...], names: list[str]) -> dict[str, dict[int, str]]:
    return {name: {h: f"{name}_{h}d" for h in horizons} for name in names}


def prediction_frame(
    prep: PreparedPanel,
    dates: list[int],
    forecasts: dict[str, np.ndarray],
    horizons: tuple[int, ...],
    fold: str = "",
) -> pl.DataFrame:
    """Long frame: ``date, code, fold, target_{h}d, <signal>_{h}d`` for scored stocks.

    ``forecasts[name]`` is ``[len(dates), S, H]`` (NaN where not scored); rows are the
    (date, stock) pairs the first forecast scores.
    """
    panel = prep.panel
    first = next(iter(forecasts.values()))
    di, si = np.nonzero(np.isfinite(first[..., 0]))
    columns: dict[str, object] = {
        "date": [panel.dates[dates[i]] for i in di],
        "code": [panel.codes[s] for s in si],
        "fold": [fold] * len(di),
    }
    realised = panel.targets[np.asarray(dates, dtype=np.int64)]
    for k, h in enumerate(horizons):
        columns[f"target_{h}d"] = realised[di, si, k]
    for name, values in forecasts.items():
        for k, h in enumerate(horizons):
            columns[f"{name}_{h}d"] = values[di, si, k]
    frame = pl.DataFrame(columns)
    return frame.with_columns(cs.float().fill_nan(None))


def forecast_all(
    bundle_model: Network,
    ablation: Network | None,
    ridge: RidgeModel | None,
    prep: PreparedPanel,
    graphs: GraphSchedule | None,
    dates: list[int],
    device: torch.device,
    mixed_precision: bool = True,
    lightgbm: LightGBMModel | None = None,
) -> dict[str, np.ndarray]:
    """Median forecasts ``[n, S, H]`` of the model and of the learned baselines."""
    median = bundle_model.config.quantiles.index(0.5)
    out = {
        "model": predict_quantiles(
            bundle_model, prep, graphs, dates, device, mixed_precision=mixed_precision
        )[..., median]
    }
    if ablation is not None:
        out["no_graph"] = predict_quantiles(
            ablation, prep, None, dates, device, mixed_precision=mixed_precision
        )[..., median]
    if ridge is not None:
        out["ridge"] = ridge.predict(prep, dates)
    if lightgbm is not None:
        out["lightgbm"] = lightgbm.predict(prep, dates, threads=torch.get_num_threads())
    return out


@dataclass
class WalkForwardResult:
    predictions: pl.DataFrame
    folds: list[dict[str, str]]
    histories: dict[str, dict[str, list[dict[str, float]]]]
    parameters: int
    interpretation: list[Interpretation] = field(default_factory=list)  # per fold
    importance: list[list[dict[str, float]]] = field(default_factory=list)  # LightGBM gain


def run_walk_forward(
    frame: pl.DataFrame,
    panel: FeaturePanel,
    folds: list[Fold],
    config: ExperimentConfig,
    *,
    builder: GraphBuilder | None = None,
    edge_dim: int | None = None,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
) -> WalkForwardResult:
    """Train each fold from scratch and forecast its test year with every learned model."""
    from inference.interpret import interpret

    device = device or select_device()
    edge_dim = graph_edge_dim() if edge_dim is None else edge_dim
    graphs: GraphSchedule | None = None
    if config.model.use_graph:
        eligible = eligibility(
            panel.present,
            config.model.lookback,
            config.training.min_history,
            config.training.min_window_coverage,
        )
        graphs = GraphSchedule(
            panel,
            eligible,
            config.training.graph_refresh_days,
            builder or default_graph_builder(frame, config.training),
        )
    ranked = (
        cross_sectional_gauss(panel.features)
        if config.training.normalisation == "cross_section"
        else None
    )
    parts, described, histories = [], [], {}
    views: list[Interpretation] = []
    importance: list[list[dict[str, float]]] = []
    parameters = 0
    for fold in folds:
        check_fold(fold, max(config.model.horizons))
        bundle = train_fold(
            frame,
            panel,
            fold,
            config,
            graphs=graphs,
            builder=builder,
            edge_dim=edge_dim,
            device=device,
            progress=progress,
            ranked=ranked,
        )
        parameters = sum(p.numel() for p in bundle.model.parameters())
        test_dates = usable_dates(bundle.prep, fold.test, config.model.lookback)
        forecasts = forecast_all(
            bundle.model,
            bundle.ablation,
            bundle.ridge,
            bundle.prep,
            graphs,
            test_dates,
            device,
            config.training.mixed_precision,
            bundle.lightgbm,
        )
        parts.append(
            prediction_frame(bundle.prep, test_dates, forecasts, config.model.horizons, fold.name)
        )
        described.append(fold.describe(panel.dates))
        histories[fold.name] = bundle.histories
        views.append(interpret(bundle.model, bundle.prep, graphs, test_dates, device))
        if bundle.lightgbm is not None:
            importance.append(bundle.lightgbm.feature_importance(panel.feature_columns))
    return WalkForwardResult(
        pl.concat(parts, how="diagonal"), described, histories, parameters, views, importance
    )
