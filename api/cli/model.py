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
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

if TYPE_CHECKING:
    import polars as pl

    from inference.config import ExperimentConfig
    from inference.model.checkpoint import Checkpoint
    from inference.report import DataCoverage

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


CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint file `tradecore model train --out PATH` wrote (required).",
        show_default=False,
    ),
]


def _refused(option: str, rule: str, message: str) -> NoReturn:
    """Bad input: one line naming the option and the rule, exit 2, no traceback."""
    err.print(
        Text.assemble(("refused", "red"), f": {message} (field={option}, rule={rule})"),
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(2)


def _checkpoint(path: Path | None) -> Checkpoint:
    """The checkpoint at ``path``, read before the data (feature building takes ~13 s)."""
    from inference.model.checkpoint import load_checkpoint

    rule = "a .safetensors file `tradecore model train --out PATH` wrote"
    if path is None:
        _refused("--checkpoint", rule, "--checkpoint PATH is required")
    try:
        return load_checkpoint(path)
    except FileNotFoundError:
        _refused("--checkpoint", rule, f"--checkpoint {path}: no such file")
    except ValueError as error:  # not safetensors, or another format: the message says
        _refused("--checkpoint", rule, f"--checkpoint {str(error).removeprefix('checkpoint: ')}")
    except KeyError as error:
        _refused("--checkpoint", rule, f"--checkpoint {path}: not a checkpoint (no {error})")


def _codes(raw: str) -> list[str]:
    """``--codes`` as 5-digit J-Quants codes (``7203`` and ``72030`` name the same stock)."""
    from inference.data.schema import CODE_RULE, normal_code

    codes: list[str] = []
    for item in (c.strip() for c in raw.split(",")):
        if not item:
            continue
        code = normal_code(item)
        if code is None:
            _refused("--codes", CODE_RULE, f"--codes: {item!r} is not a stock code")
        codes.append(code)
    return list(dict.fromkeys(codes))


@contextmanager
def _stage(label: str) -> Iterator[None]:
    """A spinner naming an unbounded step (features, graphs, forecasts) while it runs,
    then one line with its time: a long command never sits silent."""
    started = time.perf_counter()
    with err.status(f"{label}..."):
        yield
    err.print(f"{label}: {time.perf_counter() - started:.1f}s", style="dim", highlight=False)


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        _refused(option, "a date, YYYY-MM-DD", f"{option} {value!r} is not a date")


def _data_dir(data: Path | None) -> Path:
    if data is not None:
        return data
    from infra.settings import get_settings

    return get_settings().data_dir / "jquants"


def _read(data: Path, until: date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Daily quotes dated on or before ``until``, and listed info, from ``data``.

    A file that is missing or breaks the J-Quants schema (a ``Code`` that is not a TSE code,
    a bad date, duplicates) refuses the command with the file, the field and the rule.
    """
    import polars as pl

    from inference.data import load_daily_quotes, load_listed_info
    from inference.data.schema import DataSchemaError

    rule = "a folder of J-Quants daily_quotes and listed_info files"
    with _stage("reading quotes"):
        try:
            quotes = load_daily_quotes(data)
            listed = load_listed_info(data)
        except (DataSchemaError, FileNotFoundError) as error:
            _refused("--data", rule, str(error))
    if until is not None:
        quotes = quotes.filter(pl.col("Date") <= until)
    if quotes.is_empty():
        _refused("--data", rule, f"no daily quotes on or before {until} in {data}")
    return quotes, listed


def _features(
    data: Path, until: date | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Features, raw quotes and listed info from ``data``, only rows dated up to ``until``."""
    from inference.features import build_features

    quotes, listed = _read(data, until)
    with _stage("building features"):
        return build_features(quotes, listed), quotes, listed


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


def _config(name: str, max_steps: int | None, time_budget: float | None) -> ExperimentConfig:
    """``--config`` loaded (a bundled name or a file; refused in one line if it is missing
    or invalid), with the command line's training budget where one was given."""
    from inference.config import load_config

    try:
        cfg = load_config(name)
    except (FileNotFoundError, ValueError) as error:  # pydantic's and TOML's errors included
        _refused("--config", "a bundled config (cpu, default) or a valid TOML/JSON file",
                 " ".join(str(error).split()))
    update: dict[str, Any] = {}
    if max_steps is not None:
        update["max_steps"] = max_steps
    if time_budget is not None:
        update["time_budget_s"] = time_budget
    if not update:
        return cfg
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=update)})


def _stock_names(listed: pl.DataFrame) -> dict[str, str]:
    """J-Quants code -> English company name, from listed info (empty if it has none)."""
    if "CompanyNameEnglish" not in listed.columns:
        return {}
    names = zip(listed["Code"].to_list(), listed["CompanyNameEnglish"].to_list(), strict=True)
    return {code: name for code, name in names if name}


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
    from inference.model.checkpoint import save_checkpoint
    from inference.model.panel import FeaturePanel
    from inference.splits import training_split
    from inference.training import bundle_to_checkpoint, select_device, train_fold

    cfg = _config(config, max_steps, time_budget)
    cfg = cfg.model_copy(
        update={"training": cfg.training.model_copy(update={"train_baselines": baselines})}
    )
    end = _day(until, "--until")
    features, _, _ = _features(_data_dir(data), end)
    panel = FeaturePanel.from_frame(
        features, _feature_columns(), [f"target_{h}d" for h in cfg.model.horizons]
    )
    try:
        fold = training_split(
            len(panel.dates), cfg.training.validation_days, cfg.training.embargo_days
        )
    except ValueError as error:
        _refused("--until", "enough trading days before it for training and validation", str(error))
    started = time.perf_counter()
    with _progress() as progress:
        bundle = train_fold(
            features, panel, fold, cfg, device=select_device(device), progress=progress
        )
    path = save_checkpoint(bundle_to_checkpoint(bundle), out)
    _training_summary(
        path=path,
        config=f"{cfg.name} ({cfg.description})" if cfg.description else cfg.name,
        parameters=sum(p.numel() for p in bundle.model.parameters()),
        spans=fold.describe(panel.dates),
        stocks=len(panel.codes),
        histories=bundle.histories,
        seconds=time.perf_counter() - started,
    )


def _training_summary(
    *,
    path: Path,
    config: str,
    parameters: int,
    spans: dict[str, str],
    stocks: int,
    histories: dict[str, list[dict[str, float]]],
    seconds: float,
) -> None:
    """What `train` fitted, on which days, how well it validated and where it went.

    Per network: epochs run, the best epoch and its validation RankIC (the mean over the
    validation dates of the rank correlation of the median forecast with the realised
    return; the weights kept are that epoch's).
    """
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("checkpoint", str(path))
    facts.add_row("config", config)
    facts.add_row("parameters", f"{parameters:,}")
    facts.add_row("stocks", f"{stocks:,}")
    facts.add_row("training", spans.get("train", "?"))
    facts.add_row("validation", spans.get("validation", "?"))
    facts.add_row("training time", f"{seconds:.0f} s")
    fits = Table(title="validation (early stopping on RankIC)", title_justify="left")
    for column in ("network", "epochs", "best epoch", "validation RankIC"):
        fits.add_column(column, justify="left" if column == "network" else "right")
    runs = [
        (f"{name} member {int(m)}" if m else name, [h for h in history if h.get("member") == m])
        for name, history in histories.items()
        for m in sorted({h.get("member") for h in history}, key=lambda v: v or 0)
    ]  # an ensemble's members (``member`` 1, 2, ...) each early-stop on their own
    for name, history in runs:
        scored = [h for h in history if math.isfinite(h.get("val_rank_ic", math.nan))]
        best = max(scored, key=lambda h: h["val_rank_ic"]) if scored else None
        fits.add_row(
            name,
            str(len(history)),
            str(int(best["epoch"])) if best else "-",
            f"{best['val_rank_ic']:.4f}" if best else "n/a",
        )
    err.print(facts)
    err.print(fits)


def _feature_columns() -> list[str]:
    from inference.features import FEATURE_COLUMNS

    return list(FEATURE_COLUMNS)


@app.command()
def evaluate(
    start: Annotated[str, typer.Option("--from", help="First evaluation date.")],
    end: Annotated[str, typer.Option("--to", help="Last evaluation date (and of data used).")],
    checkpoint: CheckpointOption = None,
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

    from inference.evaluation import evaluate_signals
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
        _refused("--from", "not after --to", f"--from {first} is after --to {last}")
    ckpt = _checkpoint(checkpoint)
    if first <= ckpt.train_until:
        err.print(
            f"warning: --from {first} is not after the checkpoint's last training date "
            f"{ckpt.train_until}: the evaluation is (partly) in-sample",
            style="yellow",
            highlight=False,
            soft_wrap=True,
        )
    cfg = ckpt.config
    horizons = cfg.model.horizons
    features, quotes, listed = _features(_data_dir(data), last)
    with _stage("preparing the panel"):
        panel = FeaturePanel.from_frame(
            features, _feature_columns(), [f"target_{h}d" for h in horizons]
        )
        try:
            prep = prepare_for_checkpoint(panel, ckpt)
        except ValueError as error:
            _refused("--checkpoint", "trained on the features this version builds", str(error))
    in_range = [i for i, d in enumerate(panel.dates) if first <= d <= last]
    dates = usable_dates(prep, in_range, cfg.model.lookback)
    if not dates:
        _refused(
            "--from",
            "a period with trading dates the data has enough history before",
            f"no trading date in {first}..{last} with enough history to score",
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
    with _stage(f"graphs and forecasts for {len(dates)} days"):
        forecasts = forecast_all(
            model, ablation, ridge, prep, graphs, dates, dev, lightgbm=ckpt.lightgbm
        )
    with _stage("scoring signals"):
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
    period = f"{panel.dates[dates[0]]}..{panel.dates[dates[-1]]}"
    if report is not None:
        from inference.interpret import interpret
        from inference.report import write_report

        with _stage("reading what the network looks at"):
            view = interpret(model, prep, graphs, dates, dev)
        recorded = ckpt.spans or {"train": f"..{ckpt.train_until}", "validation": "not recorded"}
        with _stage("writing the report"):
            write_report(
                report,
                metrics=metrics,
                fold_metrics={},
                series=series,
                folds=[{"fold": "checkpoint", **recorded, "test": period}],
                horizons=horizons,
                info={
                    "command": shlex.join(["tradecore", *sys.argv[1:]]),
                    "checkpoint": f"{checkpoint} (config {cfg.name})",
                    "evaluated": f"{period} ({len(dates)} trading days)",
                    "costs": f"{costs} bp per side; decile {cfg.evaluation.decile}",
                },
                rolling_window=cfg.evaluation.rolling_window,
                coverage=_coverage(quotes),
                title=f"Evaluation {period}: ATFT-GAT-FAN on Japanese equities",
                interpretation=view,
                lightgbm_importance=ckpt.lightgbm.feature_importance(ckpt.feature_columns)
                if ckpt.lightgbm is not None
                else None,
                stock_names=_stock_names(listed),
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


def _coverage(quotes: pl.DataFrame) -> DataCoverage:
    """The stocks and days of the quotes a report's numbers come from (its caveat says so)."""
    import polars as pl

    from inference.report import DataCoverage

    first, last = quotes.select(
        pl.col("Date").min().alias("first"), pl.col("Date").max().alias("last")
    ).row(0)
    return DataCoverage(quotes.get_column("Code").n_unique(), first, last)


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

    from inference.evaluation import evaluate_signals
    from inference.interpret import Interpretation
    from inference.model.panel import FeaturePanel
    from inference.splits import walk_forward_folds
    from inference.training import run_walk_forward, select_device, signal_columns

    started = time.perf_counter()
    cfg = _config(config, max_steps, time_budget)
    horizons = cfg.model.horizons
    features, quotes, listed = _features(_data_dir(data))
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
        _refused("--config", "test years the data's dates can hold", str(error))
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
            stock_names=_stock_names(listed),
            coverage=_coverage(quotes),
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
    checkpoint: CheckpointOption = None,
    data: DataOption = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Date to score (default: latest in data).")
    ] = None,
    codes: Annotated[
        str | None,
        typer.Option(
            "--codes",
            help="Comma-separated stock codes, 4-character TSE codes (7203, 130A) or J-Quants "
            "codes (72030); default: every stock in the data. Output shows the J-Quants code.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print JSON: {"date", "rows", "not_scored"}; a row per code and horizon, '
            "not_scored maps each reason to its codes.",
        ),
    ] = False,
    device: DeviceOption = None,
) -> None:
    """Per-stock, per-horizon return quantiles for one cross-section.

    Stocks of the data (daily quotes or listed info) or of --codes that get no forecast
    are listed on stderr (and under "not_scored" in --json) with the reason: not in the
    checkpoint's training data, no quote on the date, or too little history.
    """
    import warnings

    import polars as pl

    from inference.features import build_features
    from inference.serving import PredictionWarning, Predictor

    ckpt = _checkpoint(checkpoint)
    day = _day(as_of, "--as-of") if as_of else None
    wanted = _codes(codes) if codes else None
    quotes, listed = _read(_data_dir(data), day)
    in_data = set(listed.get_column("Code")) | set(quotes.get_column("Code"))
    if wanted is not None and (
        unknown := [c for c in wanted if c not in in_data and c not in ckpt.universe]
    ):
        _refused(
            "--codes",
            "a stock of the data's daily_quotes or listed_info",
            f"--codes: {', '.join(unknown[:20])} not in the data or the checkpoint",
        )
    with _stage("building features"):
        features = build_features(quotes, listed)
    predictor = Predictor(ckpt, device=device)
    unscored: dict[str, str] = {}
    asked = wanted
    if wanted is not None:
        asked = [c for c in wanted if c in predictor.universe]
        unscored.update(dict.fromkeys(sorted(set(wanted) - set(asked)), predictor.outside_reason()))
    frame = predictor.empty()
    with _stage("graphs and forecasts"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PredictionWarning)
        try:
            if asked != []:
                frame = predictor.predict(features, day, asked, unscored=unscored)
        except ValueError as error:
            message = str(error)
            option = {"codes": "--codes", "as_of": "--as-of"}.get(message.split(":")[0], "--data")
            _refused(option, "a date and stocks the data can score", message)
    for warning in caught:  # the codes' warnings are in the not-scored report below
        if not str(warning.message).startswith("codes:"):
            err.print(f"note: {warning.message}", highlight=False, soft_wrap=True)
    scored_on = frame.get_column("date").max() if frame.height else day
    population = wanted if wanted is not None else sorted(in_data)
    scored = set(frame.get_column("code"))
    for code in population:
        if code not in scored and code not in unscored:
            unscored[code] = (
                predictor.outside_reason()
                if code not in predictor.universe
                else "no quotes in the look-back window"
            )
    not_scored: dict[str, list[str]] = {}
    for code, why in sorted(unscored.items()):
        not_scored.setdefault(why, []).append(code)
    _report_unscored(not_scored, len(population), scored_on)
    if as_json:
        rows = frame.with_columns(pl.col("date").cast(pl.Utf8)).to_dicts()
        payload = {
            "date": str(scored_on) if scored_on else None,
            "rows": rows,
            "not_scored": not_scored,
        }
        typer.echo(json.dumps(_clean(payload)))
    else:
        with pl.Config(tbl_rows=40):
            typer.echo(str(frame))


def _report_unscored(not_scored: dict[str, list[str]], considered: int, day: Any) -> None:
    """One line per reason: how many stocks and which (the first ten) got no forecast."""
    total = sum(len(codes) for codes in not_scored.values())
    if not total:
        return
    on = f" on {day}" if day else ""
    err.print(f"not scored{on}: {total} of {considered} stocks", highlight=False)
    for why, codes in not_scored.items():
        shown = ", ".join(codes[:10]) + (f", ... (+{len(codes) - 10})" if len(codes) > 10 else "")
        err.print(f"  {why}: {len(codes)} ({shown})", highlight=False, soft_wrap=True)
