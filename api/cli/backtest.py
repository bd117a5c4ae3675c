"""``tradecore backtest``: a strategy over historical daily bars, through the live order
flow on a simulated clock (see ``docs/backtests.md``).

The run folder holds the run's own event store, its read models and the report; it
appears only when the run completed. Bad input (dates, data, fill model, a strategy
that raises or asks for nonsense) is one line naming the field and the rule, exit 2.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from api.cli.intraday import intraday_command

if TYPE_CHECKING:
    from streams.strategies.base import Strategy

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STRATEGIES = ("momentum", "model")


def _refused(field: str, rule: str, message: str) -> NoReturn:
    err.print(Text.assemble(("refused", "red"), f": {message} (field={field}, rule={rule})"))
    raise typer.Exit(2)


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        _refused(option.lstrip("-"), "a date, YYYY-MM-DD", f"{option} {value!r} is not a date")


app = typer.Typer(no_args_is_help=False, add_completion=False)
app.command(name="intraday")(intraday_command)


@app.callback(invoke_without_command=True)
def backtest(
    ctx: typer.Context,
    strategy: Annotated[str | None, typer.Option(
        "--strategy", help=f"Strategy: {', '.join(STRATEGIES)} (required).",
        show_default=False)] = None,
    start: Annotated[str | None, typer.Option(
        "--from", help="First session (YYYY-MM-DD, required).", show_default=False)] = None,
    end: Annotated[str | None, typer.Option(
        "--to", help="Last session (YYYY-MM-DD, required).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="J-Quants folder (daily_quotes, listed_info); default: "
                       "TRADECORE_DATA_DIR/jquants.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run folder to create (must not exist); default: "
                      "var/backtests/STRATEGY-FROM-TO.")] = None,
    cash: Annotated[int, typer.Option("--cash", help="Starting cash, yen.")] = 100_000_000,
    participation: Annotated[float, typer.Option(
        "--participation", help="Outside liquidity a side, percent of the bar's volume "
                                "(the volume participation cap).")] = 10.0,
    slippage_ticks: Annotated[int, typer.Option(
        "--slippage-ticks", help="Outside ask/bid this many ticks from the open.")] = 1,
    top: Annotated[int, typer.Option(
        "--top", help="Stocks held (equal weight).")] = 50,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Model checkpoint (strategy model).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="torch device for the model strategy (default: cuda if present, "
                         "else cpu).")] = None,
    no_readmodels: Annotated[bool, typer.Option(
        "--no-readmodels", help="Skip projecting the read models into the run.")] = False,
) -> None:
    """Replay a strategy over daily bars through the live order flow (``backtest
    intraday``: execution agents against a LOBSTER day instead): the command
    handlers, risk, the saga, the matching stage (the bar's volume and open become
    outside liquidity: next open +/- slippage ticks, capped by participation),
    settlement and projections, on a simulated clock. Writes the run's event store, read
    models and report.md with charts."""
    from aggregates.errors import DomainError
    from infra.settings import get_settings
    from streams.backtest import BacktestSpec, FillModel, run_backtest

    if ctx.invoked_subcommand is not None:  # `backtest intraday ...`
        return
    for value, option in ((strategy, "--strategy"), (start, "--from"), (end, "--to")):
        if value is None:
            _refused(option.lstrip("-"), "required for a daily backtest",
                     f"{option} is missing (or run `tradecore backtest intraday`)")
    assert strategy is not None and start is not None and end is not None
    first, last = _day(start, "--from"), _day(end, "--to")
    if strategy not in STRATEGIES:
        _refused("strategy", f"one of {', '.join(STRATEGIES)}",
                 f"--strategy {strategy!r} is not a strategy")
    if top < 1:
        _refused("top", "at least 1", f"--top {top}")
    if not 0 < participation <= 100:
        _refused("participation", "in (0, 100] percent", f"--participation {participation}")
    bp = round(participation * 100)
    if bp < 1:
        _refused("participation", "at least 0.01 percent", f"--participation {participation}")
    settings = get_settings()
    jquants = data if data is not None else settings.data_dir / "jquants"
    target = out or Path("var") / "backtests" / f"{strategy}-{first}-{last}"
    if strategy == "model":
        if checkpoint is None:
            _refused("checkpoint", "required for --strategy model",
                     "--strategy model needs --checkpoint PATH")
        if not checkpoint.is_file():
            _refused("checkpoint", "an existing checkpoint file",
                     f"--checkpoint {checkpoint}: no such file")
    spec = BacktestSpec(jquants, first, last, cash=cash,
                        fill=FillModel(participation_bp=bp, slippage_ticks=slippage_ticks),
                        schedule=settings.commission_schedule, readmodels=not no_readmodels)
    try:
        chosen = _strategy(strategy, top, checkpoint, device, jquants)
        result = run_backtest(chosen, spec, target)
    except DomainError as error:
        _refused(error.field, error.rule, error.message)
    except ValueError as error:  # a strategy's or a checkpoint's own check
        _refused(strategy, "valid strategy settings", str(error))
    final = result.days[-1].equity if result.days else cash
    orders = result.orders
    console.print(
        f"{result.strategy} {first}..{last}: {len(result.days)} sessions, equity "
        f"{cash:,} -> {final:,} yen, orders placed {orders['placed']:,} (filled "
        f"{orders['filled']:,}, partly {orders['partially_filled']:,}), rejected "
        f"{orders['rejected']:,}, skipped {orders['skipped']:,}; {result.events:,} events "
        f"in {result.seconds:.1f} s")
    console.print(f"report: {target / 'report.md'}")


def _strategy(name: str, top: int, checkpoint: Path | None, device: str | None,
              jquants: Path) -> Strategy:
    if name == "momentum":
        from streams.strategies.momentum import Momentum

        return Momentum(top=top)
    from inference.data import load_listed_info
    from inference.serving import Predictor
    from streams.strategies.model import ModelStrategy

    assert checkpoint is not None
    return ModelStrategy(Predictor(checkpoint, device=device), load_listed_info(jquants),
                         top=top)
