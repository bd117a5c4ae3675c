"""``tradecore audit show|trail|verify`` and ``tradecore events export|import``.

Every command here only reads the event store (``events import`` writes into an empty
one), through :mod:`api.audit`; none starts the stages or opens the market.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from eventsourcing.application import Application
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from aggregates.errors import DomainError, RuleViolation
from aggregates.ids import account_ref
from api.cli.refusal import refused, refusing
from infra.settings import get_settings

console = Console()
audit_app = typer.Typer(no_args_is_help=True, help=(
    "What was true then, who did it and why: state as of a time or version, an order's "
    "trail across aggregates, and the event log's hash-chain check."))

AsJson = Annotated[bool, typer.Option("--json", help="JSON for machines instead of a table.")]


def _store() -> AbstractContextManager[Application[UUID]]:
    from api.audit import open_store

    return refusing(lambda: open_store(get_settings()))


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _aggregate_id(value: str, argument: str = "AGGREGATE_ID") -> UUID:
    from api.audit import parse_id

    try:
        return parse_id(value, argument)
    except DomainError as err:
        refused(err)


@audit_app.command("show")
def show(
    aggregate: Annotated[str, typer.Argument(
        metavar="AGGREGATE_ID", show_default=False,
        help="Id of an order, account, position (or the market, a venue), or an "
             "account's name.")],
    as_of: Annotated[str | None, typer.Option(
        "--as-of", show_default=False,
        help="A moment with its offset, e.g. 2026-11-20T09:00:00+09:00 or ...Z: the "
             "state after the last event recorded at or before it.")] = None,
    version: Annotated[int | None, typer.Option(
        "--version", show_default=False,
        help="The state after this version (1 = the creating event).")] = None,
    as_json: AsJson = False,
) -> None:
    """The aggregate's state as of a time or version, rebuilt by replay (from the newest
    snapshot before that point), and its full history: each event's type, version,
    principal, command id, correlation and causation ids, UTC timestamp to the
    microsecond, and fields (prices in tenths of a yen, cash in yen)."""
    from api import audit

    aggregate_id = _aggregate_id(aggregate) if _is_uuid(aggregate) else account_ref(aggregate)
    with _store() as app:
        moment = audit.parse_time(as_of, "--as-of") if as_of is not None else None
        if moment is not None and version is not None:
            raise RuleViolation("--as-of", "either --as-of or --version, not both",
                                f"--as-of {as_of} --version {version}")
        view = audit.show(app, aggregate_id, as_of=moment, version=version)
    if as_json:
        typer.echo(json.dumps(view))
        return
    point = (f"as of {view['as_of']}" if view["as_of"] else "") + \
        f" version {view['version']} of {view['last_version']}"
    console.print(f"{view['kind']} {view['aggregate_id']}:{point}"
                  + (f" (rebuilt from the snapshot at v{view['rebuilt_from_snapshot']})"
                     if view["rebuilt_from_snapshot"] else ""), style="bold", highlight=False)
    state = Table(show_header=False)
    state.add_column("field", style="bold")
    state.add_column("value", overflow="fold")
    for key, value in view["state"].items():
        state.add_row(key, _text(value))
    console.print(state)
    console.print(_history(view["history"], f"history of {view['aggregate_id']}"))


@audit_app.command("trail")
def trail(
    order: Annotated[str, typer.Argument(metavar="ORDER_ID", show_default=False,
                                         help="The order's id.")],
    as_json: AsJson = False,
) -> None:
    """Everything one order set off, as one timeline in log order: the order, both
    accounts and both positions (by correlation id), and the venue reports that name it
    (as taker or maker)."""
    from api import audit

    order_id = _aggregate_id(order, "ORDER_ID")
    with _store() as app:
        timeline = audit.trail(app, order_id)
    if as_json:
        for item in timeline:
            typer.echo(json.dumps(item))
        return
    console.print(_history(timeline, f"trail of order {order_id}", positions=True))


@audit_app.command("verify")
def verify(
    aggregate: Annotated[str | None, typer.Option(
        "--aggregate", metavar="ID", show_default=False,
        help="Check this aggregate only (default: the whole store).")] = None,
    as_json: AsJson = False,
) -> None:
    """Check the hash chain of every aggregate in the store: reports each tampered
    (digest does not match its bytes), missing (version gap) or reordered event with its
    aggregate id, version and log position; exits 1 when anything is wrong. Events
    stored before the chain existed are counted as an unchained prefix. A chain without
    an external anchor cannot see its last events cut off, nor a full rewrite (see
    docs/audit.md)."""
    from api import audit

    aggregate_id = _aggregate_id(aggregate) if aggregate is not None else None
    with _store() as app:
        report = audit.verify(app, aggregate_id)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        console.print(f"{report.events} events of {report.aggregates} aggregates: "
                      f"{report.chained} chained, {report.unchained_prefix} in unchained "
                      f"prefixes", highlight=False)
        for p in report.problems:
            where = f"position {p.position}" if p.position is not None else "not stored"
            console.print(Text.assemble((p.kind, "red"), f": {p.aggregate_id} v{p.version} "
                                                         f"({where}): {p.detail}"),
                          highlight=False)
        if report.ok:
            console.print(Text("ok: every chain holds", style="green"))
    if not report.ok:
        raise typer.Exit(1)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


WIDE = 140
"""Columns from which the history prints as a table; narrower, one block per event (a
table of eight columns in 80 squeezed the ids and fields to nothing)."""


def _history(entries: list[dict[str, Any]], title: str, *, positions: bool = False
             ) -> Table | Group:
    if console.width < WIDE:
        return _blocks(entries, title, positions=positions)
    table = Table(title=title)
    if positions:
        table.add_column("pos", justify="right")
        table.add_column("aggregate", no_wrap=True)
    table.add_column("v", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("principal")
    table.add_column("command, correlation, causation ids", overflow="fold", min_width=12)
    table.add_column("fields", overflow="fold", ratio=1)
    for e in entries:
        cells = [str(e["version"]), e["timestamp"], e["event"], e["principal"] or "",
                 f"{e['command_id']}\n{e['correlation_id']}\n{e['causation_id']}",
                 ", ".join(f"{k}={_text(v)}" for k, v in e["fields"].items())]
        if positions:
            cells = [str(e["position"]), f"{e['kind']} {e['aggregate_id'][:8]}", *cells]
        table.add_row(*cells)
    return table


def _blocks(entries: list[dict[str, Any]], title: str, *, positions: bool) -> Group:
    """One event per block: its place, time and type, then who and why, then its fields."""
    lines: list[Text] = [Text(title, style="bold")]
    for e in entries:
        where = (f"#{e['position']} {e['kind']} {e['aggregate_id'][:8]} " if positions
                 else "")
        lines.append(Text.assemble(
            "\n", (f"{where}v{e['version']}", "bold"), f"  {e['timestamp']}  ",
            (e["event"], "cyan"), f"  by {e['principal'] or '-'}"))
        lines.append(Text(f"  command {e['command_id']}", style="dim"))
        lines.append(Text(f"  correlation {e['correlation_id']}  causation "
                          f"{e['causation_id']}", style="dim"))
        for k, v in e["fields"].items():
            lines.append(Text(f"  {k} = {_text(v)}"))
    return Group(*lines)


# -- events: the per-aggregate listing (default), export and import -----------------------


class EventsGroup(TyperGroup):
    """``tradecore events ID`` lists an aggregate's events as before; ``export`` and
    ``import`` are subcommands: anything else first is the listing's argument."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


events_app = typer.Typer(cls=EventsGroup, no_args_is_help=False, help=(
    "An aggregate's events (tradecore events ID), or the whole log exported or imported."))


@events_app.command("export")
def export(
    out: Annotated[Path, typer.Argument(metavar="OUT", show_default=False,
                                        help="File to write (replaced whole).")],
    fmt: Annotated[str, typer.Option(
        "--format", metavar="jsonl|parquet",
        help="jsonl: one JSON object per event, the stored JSON as a string; parquet: a "
             "table with the stored bytes in a binary column.")] = "jsonl",
) -> None:
    """Every stored event in log order, byte for byte (stored state, topic, aggregate id,
    version, log position), for `tradecore events import` into another store."""
    from api import audit

    if fmt not in ("jsonl", "parquet"):
        refused(RuleViolation("--format", "jsonl or parquet", fmt))
    with _store() as app:
        count = audit.export_events(app, out, fmt)  # type: ignore[arg-type]
    console.print(f"exported {count} events to {out} ({fmt})", highlight=False)


@events_app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(metavar="IN", show_default=False,
                                           help="A file `tradecore events export` wrote.")],
) -> None:
    """Store an export's events into the configured store, which must be empty, in one
    transaction (all or nothing); then check its hash chains."""
    from api import audit

    with _store() as app:
        count = audit.import_events(app, source)
        report = audit.verify(app)
    console.print(f"imported {count} events from {source}; verify: "
                  f"{'ok' if report.ok else f'{len(report.problems)} problems'}",
                  highlight=False)
    if not report.ok:
        raise typer.Exit(1)
