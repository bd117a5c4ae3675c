"""``tradecore model train|evaluate|predict|walk-forward`` (issue: ATFT-GAT-FAN).

Every command reads a folder in the J-Quants file schemas (``--data DIR``: daily quotes
and listed info) and builds features with :mod:`inference.features`; nothing here
reads the environment (the default data folder comes from the settings object).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    import polars as pl

    from inference.config import ExperimentConfig

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Folder with J-Quants daily_quotes and listed_info files."),
]
ConfigOption = Annotated[
    str, typer.Option("--config", help="Bundled config name (cpu, default) or a TOML/JSON path.")
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="torch device; default: cuda if present, else cpu.")
]


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option
        ) from None


def _data_dir(data: Path | None) -> Path:
    if data is not None:
        return data
    from infra.settings import get_settings

    return get_settings().data_dir / "jquants"


def _features(data: Path, until: date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Features (and raw quotes) from ``data``, using only rows dated on or before ``until``."""
    import polars as pl

    from inference.data import load_daily_quotes, load_listed_info
    from inference.features import build_features

    quotes = load_daily_quotes(data)
    if until is not None:
        quotes = quotes.filter(pl.col("Date") <= until)
    if quotes.is_empty():
        raise typer.BadParameter(f"no daily quotes on or before {until} in {data}")
    return build_features(quotes, load_listed_info(data)), quotes


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar per label; yields the training progress callback."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled,
    )
    tasks: dict[str, Any] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    with progress:
        yield update


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _with_classic(
    frame: pl.DataFrame, quotes: pl.DataFrame, horizons: tuple[int, ...]
) -> pl.DataFrame:
    import polars as pl

    from inference.evaluation import classic_signals

    classic = classic_signals(quotes)
    frame = frame.join(classic, on=["date", "code"], how="left")
    return frame.with_columns(
        *[pl.col("momentum_20d").alias(f"momentum_20d_{h}d") for h in horizons],
        *[pl.col("reversal_5d").alias(f"reversal_5d_{h}d") for h in horizons],
    )


SIGNALS = ["model", "no_graph", "ridge", "lightgbm", "momentum_20d", "reversal_5d"]

MaxStepsOption = Annotated[
    int | None,
    typer.Option(
        "--max-steps", min=1, help="Cap on optimiser steps per network (overrides the config)."
    ),
]
TimeBudgetOption = Annotated[
    float | None,
    typer.Option(
        "--time-budget",
        min=1.0,
        help="Wall-clock seconds per network fit; the epoch in progress ends early.",
    ),
]


def _budgeted(cfg: ExperimentConfig, max_steps: int | None, time_budget: float | None) -> Any:
    """``cfg`` with the command line's training budget, where one was given."""
    update: dict[str, Any] = {}
    if max_steps is not None:
        update["max_steps"] = max_steps
    if time_budget is not None:
        update["time_budget_s"] = time_budget
    if not update:
        return cfg
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=update)})


def _stock_names(data: Path) -> dict[str, str]:
    """5-digit code -> English company name, from listed_info (empty if it has none)."""
    from inference.data import load_listed_info

    listed = load_listed_info(data)
    if "CompanyNameEnglish" not in listed.columns:
        return {}
    return dict(zip(listed["Code"].to_list(), listed["CompanyNameEnglish"].to_list(), strict=True))


@app.command()
def train(
    until: Annotated[str, typer.Option("--until", help="Last date of data used (YYYY-MM-DD).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file (.safetensors).")] = Path(
        "var/atft_gat_fan.safetensors"
    ),
    data: DataOption = None,
    config: ConfigOption = "cpu",
    device: DeviceOption = None,
    baselines: Annotated[
        bool,
        typer.Option(help="Also fit the no-graph ablation, ridge and LightGBM (for evaluate)."),
    ] = True,
    max_steps: MaxStepsOption = None,
    time_budget: TimeBudgetOption = None,
) -> None:
    """Fit on data up to --until (last validation_days held out for early stopping)."""
    from inference.config import load_config
    from inference.model.checkpoint import save_checkpoint
    from inference.model.panel import FeaturePanel
    from inference.splits import training_split
    from inference.training import bundle_to_checkpoint, select_device, train_fold

    cfg = _budgeted(load_config(config), max_steps, time_budget)
    cfg = cfg.model_copy(
        update={"training": cfg.training.model_copy(update={"train_baselines": baselines})}
    )
    end = _day(until, "--until")
    features, _ = _features(_data_dir(data), end)
    panel = FeaturePanel.from_frame(
        features, _feature_columns(), [f"target_{h}d" for h in cfg.model.horizons]
    )
    try:
        fold = training_split(
            len(panel.dates), cfg.training.validation_days, cfg.training.embargo_days
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--until") from error
    started = time.perf_counter()
    with _progress() as progress:
        bundle = train_fold(
            features, panel, fold, cfg, device=select_device(device), progress=progress
        )
    path = save_checkpoint(bundle_to_checkpoint(bundle), out)
    err.print(
        f"saved {path} ({sum(p.numel() for p in bundle.model.parameters()):,} parameters, "
        f"{time.perf_counter() - started:.0f}s); fold {fold.describe(panel.dates)}"
    )


def _feature_columns() -> list[str]:
    from inference.features import FEATURE_COLUMNS

    return list(FEATURE_COLUMNS)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint from `train`.")],
    start: Annotated[str, typer.Option("--from", help="First evaluation date.")],
    end: Annotated[str, typer.Option("--to", help="Last evaluation date (and of data used).")],
    data: DataOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a Markdown report (+ PNG plots).")
    ] = None,
    cost_bp: Annotated[
        float | None, typer.Option("--cost-bp", help="Cost per side in bp (default: config).")
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Score [--from, --to] with the checkpoint and its baselines; earlier data = look-back."""
    import warnings

    from inference.evaluation import evaluate_signals
    from inference.model.checkpoint import load_checkpoint
    from inference.model.panel import FeaturePanel
    from inference.training import (
        GraphSchedule,
        RidgeModel,
        default_graph_builder,
        forecast_all,
        prediction_frame,
        prepare_for_checkpoint,
        select_device,
        signal_columns,
        usable_dates,
    )

    first, last = _day(start, "--from"), _day(end, "--to")
    if first > last:
        raise typer.BadParameter(f"--from {first} is after --to {last}", param_hint="--from")
    ckpt = load_checkpoint(checkpoint)
    if first <= ckpt.train_until:
        warnings.warn(
            f"--from {first} is not after the checkpoint's last training date "
            f"{ckpt.train_until}: the evaluation is (partly) in-sample",
            stacklevel=1,
        )
    cfg = ckpt.config
    horizons = cfg.model.horizons
    features, quotes = _features(_data_dir(data), last)
    panel = FeaturePanel.from_frame(
        features, _feature_columns(), [f"target_{h}d" for h in horizons]
    )
    prep = prepare_for_checkpoint(panel, ckpt)
    in_range = [i for i, d in enumerate(panel.dates) if first <= d <= last]
    dates = usable_dates(prep, in_range, cfg.model.lookback)
    if not dates:
        raise typer.BadParameter(
            f"no trading date in {first}..{last} with enough history to score", param_hint="--from"
        )
    graphs = None
    if cfg.model.use_graph:
        graphs = GraphSchedule(
            panel,
            prep.eligible,
            cfg.training.graph_refresh_days,
            default_graph_builder(features, cfg.training),
        )
    dev = select_device(device)
    model = ckpt.build_model().to(dev)
    ablation = ckpt.build_model(ablation=True).to(dev) if ckpt.ablation_state else None
    ridge = RidgeModel(ckpt.ridge_coef) if ckpt.ridge_coef is not None else None
    forecasts = forecast_all(
        model, ablation, ridge, prep, graphs, dates, dev, lightgbm=ckpt.lightgbm
    )
    frame = _with_classic(prediction_frame(prep, dates, forecasts, horizons), quotes, horizons)
    names = [n for n in SIGNALS if f"{n}_1d" in frame.columns]
    costs = cfg.evaluation.cost_bp_per_side if cost_bp is None else cost_bp
    metrics, series = evaluate_signals(
        frame,
        signal_columns(horizons, names),
        horizons,
        decile=cfg.evaluation.decile,
        cost_bp_per_side=costs,
    )
    if report is not None:
        from inference.report import write_report

        write_report(
            report,
            metrics=metrics,
            fold_metrics={},
            series=series,
            folds=[],
            horizons=horizons,
            info={"command": shlex.join(["tradecore", *sys.argv[1:]])},
            rolling_window=cfg.evaluation.rolling_window,
        )
    result = {
        "checkpoint": str(checkpoint),
        "from": str(panel.dates[dates[0]]),
        "to": str(panel.dates[dates[-1]]),
        "days": len(dates),
        "cost_bp_per_side": costs,
        "metrics": metrics,
    }
    _emit(result, as_json)


REPORTED_METRICS = ("rank_ic", "ic", "icir", "sharpe", "annual_return", "max_drawdown", "turnover")
"""Per horizon and signal, what `evaluate` shows (the JSON carries every metric)."""


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_clean(result), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{result.get('from')} .. {result.get('to')}")
    for column in ("signal", "horizon", *REPORTED_METRICS):
        table.add_column(column)
    for name, per_h in result["metrics"].items():
        for h, m in per_h.items():
            table.add_row(name, h, *[f"{m[k]:.4f}" for k in REPORTED_METRICS])
    Console().print(table)


@app.command("walk-forward")
def walk_forward(
    data: DataOption = None,
    config: ConfigOption = "cpu",
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a Markdown report (+ PNG plots).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    device: DeviceOption = None,
    max_steps: MaxStepsOption = None,
    time_budget: TimeBudgetOption = None,
) -> None:
    """Train one model per test year (expanding window) and evaluate all of them."""
    import polars as pl
    import torch

    from inference.config import load_config
    from inference.evaluation import evaluate_signals
    from inference.interpret import Interpretation
    from inference.model.panel import FeaturePanel
    from inference.splits import walk_forward_folds
    from inference.training import run_walk_forward, select_device, signal_columns

    started = time.perf_counter()
    cfg = _budgeted(load_config(config), max_steps, time_budget)
    horizons = cfg.model.horizons
    features, quotes = _features(_data_dir(data))
    panel = FeaturePanel.from_frame(
        features, _feature_columns(), [f"target_{h}d" for h in horizons]
    )
    try:
        folds = walk_forward_folds(
            panel.dates,
            cfg.walk_forward.test_years,
            cfg.training.validation_days,
            cfg.training.embargo_days,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--config") from error
    dev = select_device(device)
    with _progress() as progress:
        result = run_walk_forward(features, panel, folds, cfg, device=dev, progress=progress)
    frame = _with_classic(result.predictions, quotes, horizons)
    names = [n for n in SIGNALS if f"{n}_1d" in frame.columns]
    columns = signal_columns(horizons, names)
    options = {"decile": cfg.evaluation.decile, "cost_bp_per_side": cfg.evaluation.cost_bp_per_side}
    metrics, series = evaluate_signals(frame, columns, horizons, **options)
    fold_metrics = {
        f["fold"]: evaluate_signals(
            frame.filter(pl.col("fold") == f["fold"]), columns, horizons, **options
        )[0]
        for f in result.folds
    }
    elapsed = time.perf_counter() - started
    info = {
        "command": shlex.join(["tradecore", *sys.argv[1:]]),
        "config": f"{cfg.name} ({cfg.description})",
        "parameters": f"{result.parameters:,}",
        "device": f"{dev} (torch threads {torch.get_num_threads()})",
        "wall time": f"{elapsed / 60:.1f} min",
        "costs": f"{cfg.evaluation.cost_bp_per_side} bp per side; decile {cfg.evaluation.decile}",
        "finished": datetime.now().isoformat(timespec="seconds"),
    }
    view = Interpretation.average(result.interpretation) if result.interpretation else None
    importance = _mean_importance(result.importance)
    if report is not None:
        from inference.report import write_report

        write_report(
            report,
            metrics=metrics,
            fold_metrics=fold_metrics,
            series=series,
            folds=result.folds,
            horizons=horizons,
            info=info,
            rolling_window=cfg.evaluation.rolling_window,
            interpretation=view,
            lightgbm_importance=importance,
            stock_names=_stock_names(_data_dir(data)),
        )
        (report.parent / report.stem / "metrics.json").write_text(
            json.dumps(
                _clean(
                    {
                        "info": info,
                        "folds": result.folds,
                        "metrics": metrics,
                        "fold_metrics": fold_metrics,
                        "histories": result.histories,
                        "interpretation": view.as_dict() if view is not None else None,
                        "lightgbm_gain": importance,
                    }
                ),
                indent=2,
            )
        )
    _emit(
        {
            "from": result.folds[0]["test"].split("..")[0],
            "to": result.folds[-1]["test"].split("..")[1],
            "metrics": metrics,
        },
        as_json,
    )


def _mean_importance(folds: list[list[dict[str, float]]]) -> list[dict[str, float]] | None:
    """Per horizon, each feature's gain share averaged over the folds."""
    if not folds:
        return None
    return [
        {f: sum(fold[h].get(f, 0.0) for fold in folds) / len(folds) for f in folds[0][h]}
        for h in range(len(folds[0]))
    ]


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint from `train`.")],
    data: DataOption = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Date to score (default: latest in data).")
    ] = None,
    codes: Annotated[
        str | None, typer.Option("--codes", help="Comma-separated 5-digit codes (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
    device: DeviceOption = None,
) -> None:
    """Per-stock, per-horizon return quantiles for one cross-section."""
    import polars as pl

    from inference.serving import Predictor

    day = _day(as_of, "--as-of") if as_of else None
    features, _ = _features(_data_dir(data), day)
    wanted = [c.strip() for c in codes.split(",") if c.strip()] if codes else None
    predictor = Predictor(checkpoint, device=device)
    try:
        frame = predictor.predict(features, day, wanted)
    except ValueError as error:
        raise typer.BadParameter(
            str(error), param_hint="--codes" if "codes" in str(error) else None
        ) from error
    if as_json:
        rows = frame.with_columns(pl.col("date").cast(pl.Utf8)).to_dicts()
        typer.echo(json.dumps(_clean(rows)))
    else:
        with pl.Config(tbl_rows=40):
            typer.echo(str(frame))
