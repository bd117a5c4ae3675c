"""Walk-forward splits, train-only normalisation, checkpoints and a tiny real training run."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from inference.config import ExperimentConfig
from inference.features import FEATURE_COLUMNS
from inference.model.checkpoint import load_checkpoint, save_checkpoint
from inference.model.panel import FeaturePanel, Normaliser, eligibility
from inference.splits import Fold, check_fold, training_split, walk_forward_folds
from inference.training import (
    TrainedBundle,
    bundle_to_checkpoint,
    predict_quantiles,
    prepare_for_checkpoint,
    rank_ic_by_date,
    train_fold,
    usable_dates,
)

#: A tiny network; on 60 real stocks over two years one fit takes seconds of CPU.
TINY = {
    "name": "tiny",
    "model": {
        "lookback": 10, "hidden": 16, "variable_hidden": 8, "per_variable_grn": False,
        "attention_heads": 2, "gat_heads": 2, "gat_layers": 1, "fan_top_k": 2,
        "fan_hidden": 8, "sector_embedding": 4, "dropout": 0.0,
    },
    "training": {
        "epochs": 3, "steps_per_epoch": 40, "dates_per_batch": 4, "learning_rate": 0.005,
        "validation_days": 40, "validation_stride": 4, "embargo_days": 20,
        "min_history": 30, "patience": 3, "threads": 1, "graph_refresh_days": 20,
        "train_baselines": False,
    },
}  # fmt: skip


def tiny_config(**training: object) -> ExperimentConfig:
    raw = {**TINY, "training": {**TINY["training"], **training}}  # type: ignore[dict-item]
    return ExperimentConfig.model_validate(raw)


def trading_days(n: int) -> list[date]:
    start = date(2008, 1, 1)
    return [d for d in (start + timedelta(days=i) for i in range(n * 2)) if d.weekday() < 5][:n]


@pytest.mark.parametrize("embargo", [20, 25, 40])
def test_walk_forward_folds_keep_the_embargo_and_never_overlap(embargo: int) -> None:
    days = trading_days(8 * 260)
    years = tuple(sorted({d.year for d in days})[3:])
    folds = walk_forward_folds(days, years, validation_days=60, embargo=embargo)
    assert [f.name for f in folds] == [str(y) for y in years]
    for fold in folds:
        check_fold(fold, embargo)
        assert fold.train.start == 0  # expanding window
        # the longest label of the last training day ends before validation starts
        assert fold.train.stop - 1 + 20 < fold.validation.start
        assert fold.validation.stop - 1 + 20 < fold.test.start
        assert {days[i].year for i in fold.test} == {int(fold.name)}
    for earlier, later in itertools.pairwise(folds):
        assert earlier.test.stop <= later.test.start
        assert later.train.stop > earlier.train.stop


def test_check_fold_and_splits_reject_what_would_leak() -> None:
    with pytest.raises(ValueError, match="embargo"):
        check_fold(Fold("x", range(0, 100), range(110, 150), range(180, 200)), 20)
    with pytest.raises(ValueError, match="too few"):
        training_split(100, validation_days=60, embargo=25)
    with pytest.raises(ValueError, match="2030"):
        walk_forward_folds(trading_days(600), (2030,), 60, 20)


def test_normaliser_uses_training_dates_only(slice_panel: FeaturePanel) -> None:
    early = np.arange(0, 200)
    fitted = Normaliser.fit(slice_panel, early, clip=5.0)
    shifted = FeaturePanel(**{**slice_panel.__dict__, "features": slice_panel.features.copy()})
    shifted.features[300:] += 1000.0  # a later regime must not move the training statistics
    again = Normaliser.fit(shifted, early, clip=5.0)
    np.testing.assert_array_equal(fitted.mean, again.mean)
    np.testing.assert_array_equal(fitted.std, again.std)
    out = fitted.transform(slice_panel.features)
    assert np.isfinite(out).all() and np.abs(out).max() <= 5.0


def test_eligibility_masks_short_histories_and_sparse_windows() -> None:
    present = np.ones((30, 3), dtype=bool)
    present[:, 1] = np.arange(30) >= 20  # listed on day 20
    present[10:18, 2] = False  # halted for 8 days
    mask = eligibility(present, lookback=10, min_history=5, min_coverage=0.8)
    assert not mask[:9].any()  # no full lookback yet
    assert mask[9:, 0].all()
    assert not mask[:27, 1].any() and mask[27, 1]  # 8 of its 10 window days traded
    assert not mask[17, 2] and mask[27, 2]  # 8 of 10 window days missing, then recovered


def held_out_rank_ic(bundle: TrainedBundle, fold: Fold) -> float:
    """Mean over horizons and test days of the median forecast's RankIC (real labels)."""
    prep, lookback = bundle.prep, bundle.config.model.lookback
    dates = usable_dates(prep, fold.test, lookback)
    median = predict_quantiles(bundle.model, prep, None, dates, torch.device("cpu"))[..., 2]
    per_horizon = [
        np.nanmean(rank_ic_by_date(median[:, :, h], prep.excess[dates, :, h]))
        for h in range(median.shape[2])
    ]
    return float(np.mean(per_horizon))


def test_tiny_training_run_beats_a_shuffled_label_control(
    slice_features: pl.DataFrame, slice_panel: FeaturePanel, tmp_path: Path
) -> None:
    n = len(slice_panel.dates)
    fold = Fold("tiny", range(0, n - 200), range(n - 180, n - 120), range(n - 100, n))
    cfg = tiny_config(learning_rate=0.01, epochs=2, steps_per_epoch=40)
    real = train_fold(slice_features, slice_panel, fold, cfg, device=torch.device("cpu"))

    rng = np.random.default_rng(0)
    shuffled_targets = slice_panel.targets.copy()
    for t in range(n):  # permute labels across stocks within each date
        shuffled_targets[t] = shuffled_targets[t, rng.permutation(shuffled_targets.shape[1])]
    shuffled = FeaturePanel(**{**slice_panel.__dict__, "targets": shuffled_targets})
    control = train_fold(slice_features, shuffled, fold, cfg, device=torch.device("cpu"))
    # the control is scored against the real labels too
    control.prep = real.prep
    assert held_out_rank_ic(real, fold) > held_out_rank_ic(control, fold) + 0.02

    path = save_checkpoint(bundle_to_checkpoint(real), tmp_path / "tiny.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.feature_columns == list(FEATURE_COLUMNS)
    assert loaded.data_hash == real.data_hash and len(loaded.data_hash) == 64
    assert loaded.config == cfg
    assert loaded.train_until == slice_panel.dates[fold.validation.stop - 1]
    prep = prepare_for_checkpoint(slice_panel, loaded)
    dates = usable_dates(prep, fold.test, cfg.model.lookback)[:3]
    before = predict_quantiles(real.model, real.prep, None, dates, torch.device("cpu"))
    after = predict_quantiles(loaded.build_model(), prep, None, dates, torch.device("cpu"))
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_training_is_deterministic_for_a_seed(
    slice_features: pl.DataFrame, slice_panel: FeaturePanel
) -> None:
    n = len(slice_panel.dates)
    fold = Fold("tiny", range(0, n - 200), range(n - 180, n - 120), range(n - 100, n))
    cfg = tiny_config(epochs=1, steps_per_epoch=4, train_baselines=True)
    first = train_fold(slice_features, slice_panel, fold, cfg, device=torch.device("cpu"))
    second = train_fold(slice_features, slice_panel, fold, cfg, device=torch.device("cpu"))
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert first.ablation is not None and second.ablation is not None
    assert first.ridge is not None and second.ridge is not None
    np.testing.assert_array_equal(first.ridge.coef, second.ridge.coef)
    assert first.histories == second.histories


def test_checkpoint_refuses_other_files_and_schemas(
    slice_panel: FeaturePanel, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")
