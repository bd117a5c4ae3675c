"""``tradecore backtest intraday``: a TWAP buyer or a passive market maker on a LOBSTER day.

``intraday_command`` is mounted under the ``backtest`` group by :mod:`api.cli.backtest`.
The replay, its Numba kernel and numpy load only when it runs.
The model is in ``docs/backtests.md`` ("Intraday") and :mod:`kernels.intraday`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from streams.replay.intraday import AgentConfig

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_SIDES = {"buy": 1, "sell": -1}


def _refused(message: str) -> NoReturn:
    err.print(f"[red]refused[/]: {message}")
    raise typer.Exit(2)


def intraday_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="A LOBSTER day: its zip, or its *_message_N.csv with the orderbook CSV beside it.",
        ),
    ],
    agent: Annotated[
        str,
        typer.Option(
            "--agent",
            metavar="<twap|maker>",
            show_default=False,
            help="twap: a parent order sliced in time; maker: passive two-sided quotes.",
        ),
    ],
    side: Annotated[
        str, typer.Option(metavar="<buy|sell>", help="TWAP: buy or sell the parent.")
    ] = "buy",
    quantity: Annotated[int, typer.Option(help="TWAP: parent quantity (shares).")] = 20_000,
    interval: Annotated[float, typer.Option(help="TWAP: seconds between children.")] = 300.0,
    limit_ticks: Annotated[
        int, typer.Option(help="TWAP: child limit, ticks through the best opposite price.")
    ] = 5,
    half_spread_ticks: Annotated[
        int, typer.Option(help="Maker: quote at mid -/+ this many ticks (never inside the touch).")
    ] = 1,
    size: Annotated[int, typer.Option(help="Maker: shares per quote.")] = 100,
    inventory_limit: Annotated[
        int, typer.Option(help="Maker: largest long or short position (shares).")
    ] = 1_000,
    requote: Annotated[float, typer.Option(help="Maker: seconds between requotes.")] = 1.0,
    start: Annotated[str, typer.Option(help="Start of the agent's window (HH:MM[:SS]).")] = "09:30",
    end: Annotated[str, typer.Option(help="End of the agent's window (HH:MM[:SS]).")] = "16:00",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Backtest a TWAP buyer or a passive market maker against a LOBSTER day replayed
    through the Numba engine, with queue position tracked: fills, slippage against
    arrival price, time in queue, unfilled remainder, the maker's PnL and inventory."""
    from streams.replay.intraday import (
        IntradayConfigError,
        MakerConfig,
        TwapConfig,
        parse_clock,
        report,
        run,
    )
    from streams.replay.lobster import load

    if agent not in ("twap", "maker"):
        _refused(f"--agent: must be twap or maker, got {agent!r}")
    if side not in _SIDES:
        _refused(f"--side: must be buy or sell, got {side!r}")
    if not data.is_file():
        _refused(f"--data: {data} is not a file")
    try:
        day = load(data)
    except (ValueError, OSError, zipfile.BadZipFile) as error:  # not LOBSTER, unreadable
        _refused(f"--data: {data} is not a readable LOBSTER day ({error})")
    try:
        window = {"start": parse_clock(start, "start"), "end": parse_clock(end, "end")}
        config: AgentConfig
        if agent == "twap":
            config = TwapConfig(quantity=quantity, side=_SIDES[side], interval_s=interval,
                                limit_ticks=limit_ticks, **window)  # fmt: skip
        else:
            config = MakerConfig(half_spread_ticks=half_spread_ticks, size=size,
                                 inventory_limit=inventory_limit, requote_s=requote,
                                 **window)  # fmt: skip
        result = run(day, config)
    except IntradayConfigError as error:
        _refused(f"--{error.field.replace('_', '-')}: {error.rule}")
    figures = report(result)
    if as_json:
        out.print(json.dumps(figures, indent=2), markup=False)
        return
    _print_report(figures)


def _print_report(figures: dict) -> None:  # type: ignore[type-arg]
    fills = figures["fills"]
    queue = figures["time_in_queue_s"]
    slip = figures["slippage_vs_order_arrival"]
    lines = [
        f"{figures['agent']} on {figures['file']}",
        f"replay: {figures['replay']['messages']:,} messages, "
        f"{figures['replay']['unexplained_mismatches']} unexplained mismatches with the file",
        f"fills: {fills['count']:,} ({fills['quantity']:,} shares: {fills['bought']:,} bought, "
        f"{fills['sold']:,} sold), VWAP {fills['vwap']}",
        "slippage vs each order's arrival mid: "
        + (f"{slip['bps']} bps, {slip['ticks']} ticks" if slip else "n/a"),
    ]
    if queue["fills"]:
        lines.append(f"time in queue (passive fills): median {queue['median']} s, "
                     f"p90 {queue['p90']} s")  # fmt: skip
    if "twap" in figures:
        twap, parent = figures["twap"], figures["slippage_vs_parent_arrival"]
        lines.append(
            f"parent {twap['parent']:,}: filled {twap['filled']:,}, "
            f"unfilled {twap['unfilled']:,} after {twap['children']} children"
        )
        if parent:
            lines.append(f"slippage vs parent arrival {parent['arrival']}: {parent['bps']} bps, "
                         f"{parent['ticks']} ticks")  # fmt: skip
    else:
        maker = figures["maker"]
        lines.append(f"PnL {maker['pnl']} (cash {maker['cash']}, inventory "
                     f"{maker['inventory_final']} at mark {maker['mark']}); inventory range "
                     f"{maker['inventory_min']}..{maker['inventory_max']}")  # fmt: skip
        path = ", ".join(f"{t} {q}" for t, q in maker["inventory_path"])
        lines.append(f"inventory path: {path}")
    for line in lines:
        out.print(line, markup=False)
