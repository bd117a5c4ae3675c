"""The model strategy in a backtest: a tiny ATFT-GAT-FAN checkpoint trained on real
quotes, then traded through the live order flow on the sessions after its training."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import torch

from inference.config import ExperimentConfig
from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features
from inference.model.checkpoint import save_checkpoint
from inference.model.panel import FeaturePanel
from inference.serving import Predictor
from inference.splits import training_split
from inference.training import bundle_to_checkpoint, train_fold
from streams.backtest import BacktestSpec, run_backtest
from streams.strategies.model import ModelStrategy
from tests.inference.test_serving import TINY
from tests.streams.test_backtest import data, shared  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    from inference.data import load_daily_quotes, load_listed_info

    quotes = load_daily_quotes(data).filter(pl.col("Date") <= date(2015, 10, 30))
    features = build_features(quotes, load_listed_info(data))
    cfg = ExperimentConfig.model_validate(TINY)
    panel = FeaturePanel.from_frame(features, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
    fold = training_split(len(panel.dates), 30, 20)
    bundle = train_fold(features, panel, fold, cfg, device=torch.device("cpu"))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(bundle_to_checkpoint(bundle), path)


def test_the_model_strategy_trades_its_forecasts_through_the_live_path(
        data: Path, checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    from inference.data import load_listed_info

    strategy = ModelStrategy(Predictor(checkpoint, device="cpu"), load_listed_info(data),
                             top=3)
    out = tmp_path / "run"
    result = run_backtest(strategy, BacktestSpec(data, date(2015, 11, 2), date(2015, 11, 13)),
                          out)
    assert len(result.days) == 9  # Nov 3 is a holiday
    assert result.orders["placed"] >= 3
    assert result.orders["filled"] + result.orders["partially_filled"] >= 3
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["strategy"] == "model" and summary["final_equity"] != 100_000_000
    # it holds the `top` stocks it ranked, no more (the read models say so)
    with sqlite3.connect(out / "readmodels.sqlite") as conn:
        (held,) = conn.execute("SELECT count(*) FROM positions WHERE quantity > 0").fetchone()
    assert 1 <= held <= 3
