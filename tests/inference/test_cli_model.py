"""``tradecore model train|evaluate|predict`` on a small folder in the J-Quants schemas."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result
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
def training_output(data_dir: Path) -> str:
    out = data_dir / "model.safetensors"
    result = CliRunner().invoke(
        app,
        ["model", "train", "--data", str(data_dir), "--until", "2013-06-28",
         "--config", str(data_dir / "tiny.toml"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def checkpoint(data_dir: Path, training_output: str) -> Path:
    return data_dir / "model.safetensors"


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
    assert set(report["metrics"]) == {
        "model",
        "no_graph",
        "ridge",
        "lightgbm",
        "momentum_20d",
        "reversal_5d",
    }
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
    rows = json.loads(result.stdout[result.stdout.index("{") :])["rows"]
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
    assert message in _one_clean_line(result, alone=False)


def test_predict_unknown_code_is_a_clear_error(data_dir: Path, checkpoint: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--codes", "99990"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "99990" in result.output


# ---- usability found by a new user (issue 14, item 5) ---------------------------------------


def _one_clean_line(result: Result, *, alone: bool = True) -> str:
    """The refusal: exit 2, one line, no traceback; ``alone``: and nothing before it (no
    step was started; otherwise the steps' timing lines may precede it)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("refused: "), result.output
    assert len(lines) == 1 or not alone, result.output
    return lines[-1]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("given", ["absent", "missing", "not-a-checkpoint"])
def test_a_bad_checkpoint_is_refused_before_the_data_is_read(
    tmp_path: Path, command: str, given: str
) -> None:
    """The checkpoint is checked first: --data names a folder that does not exist, so a
    refusal naming --checkpoint proves no feature building was started."""
    junk = tmp_path / "notes.safetensors"
    junk.write_text("not a checkpoint")
    flag = {
        "absent": [],
        "missing": ["--checkpoint", str(tmp_path / "nowhere.safetensors")],
        "not-a-checkpoint": ["--checkpoint", str(junk)],
    }[given]
    dates = ["--from", "2013-08-01", "--to", "2013-12-30"] if command == "evaluate" else []
    result = CliRunner().invoke(
        app, ["model", command, "--data", str(tmp_path / "no-data"), *flag, *dates]
    )
    line = _one_clean_line(result)
    assert "--checkpoint" in line and "no-data" not in line
    assert {"absent": "required", "missing": "no such file", "not-a-checkpoint": "not a"}[
        given
    ] in line


def test_predict_takes_4_digit_codes_and_shows_the_5_digit_code(
    data_dir: Path, checkpoint: Path
) -> None:
    code = pl.read_parquet(data_dir / "daily_quotes.parquet").get_column("Code").min()
    assert len(code) == 5 and code.endswith("0")
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--as-of", "2013-12-30", "--codes", f"{code[:4]}, {code}", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("{") :])["rows"]
    assert {r["code"] for r in rows} == {code} and len(rows) == 4


@pytest.mark.parametrize("bad", ["AB12", "TOYOT", "720", "7203O"])
def test_a_code_that_is_not_digits_is_refused_naming_the_flag(
    data_dir: Path, checkpoint: Path, bad: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--codes", f"72030,{bad}"],
    )  # fmt: skip
    line = _one_clean_line(result)
    assert "--codes" in line and repr(bad) in line and "a TSE code" in line


@pytest.mark.parametrize("bad", ["AB12", "TOYOT"])
def test_a_data_file_with_a_letter_code_is_refused_naming_the_file(
    data_dir: Path, checkpoint: Path, tmp_path: Path, bad: str
) -> None:
    quotes = pl.read_parquet(data_dir / "daily_quotes.parquet")
    first = quotes.get_column("Code").min()
    quotes.with_columns(
        pl.when(pl.col("Code") == first).then(pl.lit(bad)).otherwise(pl.col("Code")).alias("Code")
    ).write_parquet(tmp_path / "daily_quotes.parquet")
    shutil.copy(data_dir / "listed_info.json", tmp_path / "listed_info.json")
    for command in (
        ["predict", "--checkpoint", str(checkpoint)],
        ["train", "--until", "2013-06-28", "--out", str(tmp_path / "m.safetensors")],
    ):
        result = CliRunner().invoke(app, ["model", *command, "--data", str(tmp_path)])
        line = _one_clean_line(result, alone=False)
        assert str(tmp_path / "daily_quotes.parquet") in line
        assert "'Code'" in line and "a TSE code" in line and bad in line
    assert not (tmp_path / "m.safetensors").exists()


def test_predict_reports_the_listed_stocks_it_did_not_score_and_why(
    data_dir: Path, checkpoint: Path
) -> None:
    """listed_info holds ~500 stocks, the data and the checkpoint 30: the others are named."""
    from inference.data import load_listed_info
    from inference.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    listed = set(load_listed_info(data_dir).get_column("Code"))
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--as-of", "2013-12-30", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    scored = {r["code"] for r in payload["rows"]}
    not_scored = payload["not_scored"]
    outside = f"no history up to {ckpt.train_until} in the checkpoint"
    assert set(not_scored[outside]) == listed - set(ckpt.universe) and len(listed) > 400
    everything = {c for codes in not_scored.values() for c in codes} | scored
    assert everything == listed | set(ckpt.universe) and not scored & set(not_scored[outside])
    stderr = " ".join(result.stderr.split())
    assert f"not scored on 2013-12-30: {len(everything - scored)} of {len(everything)} stocks" in (
        stderr
    )
    assert f"{outside}: {len(not_scored[outside])}" in stderr


def test_predict_names_each_requested_code_it_did_not_score(
    data_dir: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """--codes: a stock without a quote on the date, one listed only since December (its
    earlier quotes removed), one the checkpoint never saw, one scored: the three are named
    with their reasons, the fourth still gets its forecast."""
    from inference.data import load_listed_info
    from inference.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    quotes = pl.read_parquet(data_dir / "daily_quotes.parquet")
    halted, young, scored = sorted(ckpt.universe)[:3]
    never = sorted(set(load_listed_info(data_dir).get_column("Code")) - set(ckpt.universe))[0]
    quotes.filter(
        ~((pl.col("Code") == halted) & (pl.col("Date") == date(2013, 12, 30))),
        ~((pl.col("Code") == young) & (pl.col("Date") < date(2013, 12, 2))),
    ).write_parquet(tmp_path / "daily_quotes.parquet")
    shutil.copy(data_dir / "listed_info.json", tmp_path / "listed_info.json")
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--data", str(tmp_path), "--checkpoint", str(checkpoint),
         "--as-of", "2013-12-30", "--codes", f"{halted},{young},{never[:4]},{scored}",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert {r["code"] for r in payload["rows"]} == {scored}
    assert payload["not_scored"] == {
        "no quote on 2013-12-30": [halted],
        "too little history (< 30 trading days)": [young],
        f"no history up to {ckpt.train_until} in the checkpoint": [never],
    }
    assert f"no quote on 2013-12-30: 1 ({halted})" in result.stderr


def test_train_ends_with_a_readable_summary(training_output: str, checkpoint: Path) -> None:
    text = " ".join(training_output.split())
    for expected in ("parameters", "training 2012-", "validation 2013-", "validation RankIC"):
        assert expected in text, training_output
    assert "model" in text and "no_graph" in text and checkpoint.name in text
    assert "{'" not in training_output and "fold {" not in training_output


def test_evaluate_report_describes_the_data_and_period_it_was_given(
    data_dir: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from inference.model.checkpoint import load_checkpoint

    spans = load_checkpoint(checkpoint).spans
    report = tmp_path / "evaluation.md"
    result = CliRunner().invoke(
        app,
        ["model", "evaluate", "--data", str(data_dir), "--checkpoint", str(checkpoint),
         "--from", "2013-08-01", "--to", "2013-12-30", "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for step in ("building features", "graphs and forecasts for", "writing the report"):
        assert step in result.stderr  # each long step says what it is doing
    text = report.read_text()
    stocks = pl.read_parquet(data_dir / "daily_quotes.parquet").get_column("Code").n_unique()
    assert f"covers {stocks} stocks observed 2012-2013" in text, text[:700]
    assert "observed 2008-2015" not in text
    period = re.search(r"\| checkpoint \| (\S+) \| (\S+) \| (\S+) \|", text)
    assert period is not None, text
    assert period.group(1) == spans["train"] and period.group(2) == spans["validation"]
    first, last = period.group(3).split("..")
    assert "2013-08-01" <= first < last <= "2013-12-30"
    assert "Per fold" not in text and "all folds" not in text
    assert "| LightGBM (same features) |" in text
    assert "## What the network looks at" in text and "**Most-attended peers**" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "config 'nonsense' not found; bundled:"),
        ('name = "bad"\n[model]\nhidden = -3\n', "hidden"),
        ("name = [unclosed\n", "--config"),
    ],
)
def test_a_config_that_is_missing_or_invalid_is_one_refusal_line(
    data_dir: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    config = "nonsense"
    if content is not None:
        config = str(tmp_path / "bad.toml")
        Path(config).write_text(content)
    for command in (["train", "--until", "2013-06-28"], ["walk-forward"]):
        result = CliRunner().invoke(
            app, ["model", *command, "--data", str(data_dir), "--config", config]
        )
        assert result.exit_code == 2, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("refused: ") and "field=--config" in line and message in line
        assert "Traceback" not in result.output
