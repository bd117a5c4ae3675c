"""Predictor: batched quantiles from a checkpoint, and the bad-input rules."""

from __future__ import annotations

import warnings
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from inference.config import ExperimentConfig
from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features
from inference.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from inference.model.panel import FeaturePanel
from inference.serving import PredictionWarning, Predictor
from inference.splits import training_split
from inference.training import bundle_to_checkpoint, train_fold

TINY = {
    "name": "tiny-serving",
    "model": {
        "lookback": 10, "hidden": 16, "variable_hidden": 4, "attention_heads": 2,
        "gat_heads": 2, "gat_layers": 1, "fan_top_k": 2, "fan_hidden": 8,
        "sector_embedding": 4,
    },
    "training": {
        "epochs": 1, "steps_per_epoch": 3, "validation_days": 30, "validation_stride": 10,
        "embargo_days": 20, "min_history": 30, "threads": 1, "train_baselines": False,
    },
}  # fmt: skip
QUANTILE_COLUMNS = ["q10", "q25", "q50", "q75", "q90"]


def latest_of(frame: pl.DataFrame) -> date:
    value = frame.get_column("date").max()
    assert isinstance(value, date)
    return value


@pytest.fixture(scope="module")
def features(all_quotes: pl.DataFrame, listed_info: pl.DataFrame) -> pl.DataFrame:
    codes = sorted(all_quotes.get_column("Code").unique().to_list())[::20][:25]
    quotes = all_quotes.filter(
        pl.col("Code").is_in(codes), pl.col("Date").is_between(date(2013, 1, 1), date(2014, 3, 31))
    )
    return build_features(quotes, listed_info)


@pytest.fixture(scope="module")
def checkpoint_path(features: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = ExperimentConfig.model_validate(TINY)
    train = features.filter(pl.col("date") <= date(2013, 12, 30))
    panel = FeaturePanel.from_frame(train, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
    fold = training_split(len(panel.dates), 30, 20)
    bundle = train_fold(train, panel, fold, cfg, device=torch.device("cpu"))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(bundle_to_checkpoint(bundle), path)


@pytest.fixture(scope="module")
def predictor(checkpoint_path: Path) -> Predictor:
    return Predictor(checkpoint_path, device="cpu")


def test_latest_cross_section_gets_ordered_finite_quantiles_per_horizon(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    out = predictor.predict(features)
    latest = latest_of(features)
    assert out.columns == ["date", "code", "horizon", *QUANTILE_COLUMNS]
    assert set(out.get_column("date").to_list()) == {latest}
    assert out.group_by("code").len().get_column("len").unique().to_list() == [4]
    assert sorted(out.get_column("horizon").unique().to_list()) == [1, 5, 10, 20]
    values = out.select(QUANTILE_COLUMNS).to_numpy()
    assert np.isfinite(values).all()
    assert (np.diff(values, axis=1) > 0).all()
    assert out.height == 4 * features.filter(pl.col("date") == latest).height


def test_several_dates_batch_and_match_single_date_calls(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    days = features.get_column("date").unique().sort().to_list()[-3:]
    batched = predictor.predict_dates(features, days)
    single = predictor.predict(features, days[0])
    assert batched.get_column("date").unique().sort().to_list() == days
    first = batched.filter(pl.col("date") == days[0])
    np.testing.assert_allclose(
        first.select(QUANTILE_COLUMNS).to_numpy(),
        single.select(QUANTILE_COLUMNS).to_numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_code_outside_the_checkpoint_universe_is_a_clear_error(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    with pytest.raises(ValueError, match=r"codes: \['99990'\] are not in the checkpoint"):
        predictor.predict(features, codes=["99990"])


def test_non_trading_day_uses_the_previous_date_with_a_warning(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    sunday = date(2014, 3, 16)
    with pytest.warns(PredictionWarning, match="not a trading date"):
        out = predictor.predict(features, sunday)
    assert out.get_column("date").unique().to_list() == [date(2014, 3, 14)]
    with pytest.raises(ValueError, match="no trading date on or before"):
        predictor.predict(features, date(2000, 1, 1))


def test_halted_stock_gets_no_rows_and_a_warning_never_a_nan(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    latest = latest_of(features)
    halted = features.get_column("code").unique().sort()[0]
    frame = features.filter(~((pl.col("code") == halted) & (pl.col("date") == latest)))
    with pytest.warns(PredictionWarning, match=halted):
        out = predictor.predict(frame, latest)
    assert halted not in out.get_column("code").to_list()
    assert np.isfinite(out.select(QUANTILE_COLUMNS).to_numpy()).all()


def test_missing_and_nan_inputs_still_give_finite_forecasts(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    latest = latest_of(features)
    window_start = latest - timedelta(days=10)
    damaged = features.with_columns(
        [
            pl.when(pl.col("date") >= window_start).then(None).otherwise(pl.col(c)).alias(c)
            for c in FEATURE_COLUMNS[:40]
        ]
    ).with_columns(
        pl.when(pl.col("date") == latest).then(float("nan")).otherwise(pl.col(c)).alias(c)
        for c in FEATURE_COLUMNS[40:60]
    )
    out = predictor.predict(damaged, latest)
    assert out.height > 0
    assert np.isfinite(out.select(QUANTILE_COLUMNS).to_numpy()).all()


def test_empty_frame_and_wrong_schema_are_refused(
    predictor: Predictor, features: pl.DataFrame
) -> None:
    with pytest.raises(ValueError, match="no rows"):
        predictor.predict(features.head(0))
    with pytest.raises(ValueError, match="missing columns"):
        predictor.predict(features.drop(FEATURE_COLUMNS[3]))


def test_checkpoint_object_can_be_served_directly(checkpoint_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint_path)
    assert isinstance(ckpt, Checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor(ckpt).device.type in {"cpu", "cuda"}
