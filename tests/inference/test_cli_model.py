"""``tradecore model train|evaluate|predict`` on a small folder in the J-Quants schemas."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from api.cli import app

CONFIG = """
name = "tiny-cli"
[model]
lookback = 10
hidden = 16
variable_hidden = 4
per_variable_grn = false
attention_heads = 2
gat_heads = 2
gat_layers = 1
fan_top_k = 2
fan_hidden = 8
sector_embedding = 4
[training]
epochs = 1
steps_per_epoch = 3
validation_days = 30
validation_stride = 10
embargo_days = 20
min_history = 30
threads = 1
"""
METRIC_KEYS = {"rank_ic", "ic", "icir", "sharpe", "annual_return", "max_drawdown", "turnover"}


@pytest.fixture(scope="module")
def data_dir(
    all_quotes: pl.DataFrame, jquants_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """30 stocks over 2012-2013 as a J-Quants folder (Parquet quotes + listed info)."""
    folder = tmp_path_factory.mktemp("jquants")
    codes = sorted(all_quotes.get_column("Code").unique().to_list())[::16][:30]
    all_quotes.filter(
        pl.col("Code").is_in(codes), pl.col("Date").is_between(date(2012, 1, 1), date(2013, 12, 31))
    ).write_parquet(folder / "daily_quotes.parquet")
    shutil.copy(jquants_dir / "listed_info.json", folder / "listed_info.json")
    (folder / "tiny.toml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def checkpoint(data_dir: Path) -> Path:
    out = data_dir / "model.safetensors"
    result = CliRunner().invoke(
        app,
        ["model", "train", "--data", str(data_dir), "--until", "2013-06-28",
         "--config", str(data_dir / "tiny.toml"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_checkpoint_with_baselines(checkpoint: Path) -> None:
    from inference.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    assert loaded.train_until <= date(2013, 6, 28)
    assert loaded.ablation_state is not None and loaded.ridge_coef is not None


def test_evaluate_json_reports_every_metric_for_model_and_baselines(
    data_dir: Path, checkpoint: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["model", "evaluate", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--from", "2013-08-01", "--to", "2013-12-30", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["from"] >= "2013-08-01" and report["to"] <= "2013-12-30"
    assert set(report["metrics"]) == {"model", "no_graph", "ridge", "momentum_20d", "reversal_5d"}
    for per_horizon in report["metrics"].values():
        assert set(per_horizon) == {"1d", "5d", "10d", "20d"}
        for metrics in per_horizon.values():
            assert set(metrics) >= METRIC_KEYS


def test_predict_json_gives_quantiles_for_requested_codes(data_dir: Path, checkpoint: Path) -> None:
    code = pl.read_parquet(data_dir / "daily_quotes.parquet").get_column("Code").min()
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--as-of", "2013-12-30", "--codes", str(code), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["horizon"] for r in rows] == [1, 5, 10, 20]
    assert all(r["code"] == code and r["q10"] < r["q50"] < r["q90"] for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2013-12-30", "--to", "2013-08-01"], "is after --to"),
        (["--from", "2013/08/01", "--to", "2013-12-30"], "is not a date"),
        (["--from", "2020-01-01", "--to", "2020-02-01"], "no trading date"),
    ],
)
def test_evaluate_bad_dates_are_clear_errors(
    data_dir: Path, checkpoint: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["model", "evaluate", "--data", str(data_dir), "--checkpoint", str(checkpoint), *args],
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_predict_unknown_code_is_a_clear_error(data_dir: Path, checkpoint: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--codes", "99990"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "99990" in result.output
