"""Operator commands for the read models: schema upgrades, retention, projections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from api.wiring import event_log, read_store, trading_stages
from infra.settings import Settings, get_settings

# the read-model modules (psycopg, the projectors) are imported by the commands that
# use them: every `tradecore` call imports this module to list its commands

console = Console(width=120)
db_app = typer.Typer(no_args_is_help=True, help="Read-model schema and retention.")
projections_app = typer.Typer(no_args_is_help=True, help="Rebuild and inspect projections.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending read-model migrations (idempotent)."""
    from projections.schema import applied, upgrade
    from projections.store import ReadStore

    settings = get_settings()
    store = ReadStore.from_settings(settings)
    try:
        done = upgrade(store)
        for line in done:
            console.print(f"applied {line}")
        console.print(f"schema at version {max(applied(store))} "
                      f"({'TimescaleDB' if store.timescale else store.dialect})")
    finally:
        store.close()


@db_app.command("status")
def db_status() -> None:
    """Which migrations are applied."""
    from projections.schema import MIGRATIONS, applied
    from projections.store import ReadStore

    store = ReadStore.from_settings(get_settings())
    try:
        done = applied(store)
        for migration in MIGRATIONS:
            mark = done.get(migration.version, "pending")
            console.print(f"{migration.version}: {mark}")
    finally:
        store.close()


@db_app.command("retention")
def db_retention(days: int = typer.Option(..., min=1, help="Keep this many days.")) -> None:
    """Drop time-series rows (fills, history, ledger, PnL, bars) older than DAYS."""
    from projections.retention import drop_older_than

    store = read_store(get_settings())
    try:
        for table, count in drop_older_than(store, timedelta(days=days)).items():
            unit = "chunks" if store.timescale else "rows"
            console.print(f"{table}: {count} {unit} dropped")
    finally:
        store.close()


@projections_app.command("status")
def projections_status(
    worker: list[str] = typer.Option(
        [], "--worker", help="A worker's health address (http://host:port): show its "
        "/readyz too (repeat)."),
) -> None:
    """Each stage's and projection's position in the event log and how far behind it is
    (with TRADECORE_BUS=kafka: each Kafka stage's partitions, their tracked notification
    id and the consumer group's lag against the fetched high watermark)."""
    from projections.projectors import Projector, RecorderLog

    settings = get_settings()
    store = read_store(settings)
    if settings.bus == "kafka":
        from api.wiring import trading_app

        app = trading_app(settings)
        close = app.close
        _kafka_status(settings, app)
        log = RecorderLog(app.recorder, app.mapper)
    else:
        stages, _ = trading_stages(settings)
        close = stages.app.close
        log = RecorderLog(stages.app.recorder, stages.app.mapper)
        table = Table("stage", "position", "waiting inputs")
        for stage in stages.lags():
            table.add_row(stage.name, str(stage.position), str(stage.behind))
        console.print(table)
    try:
        table = Table("projection", "position", "head", "lag")
        for lag in Projector(store, log).status():
            table.add_row(lag.name, str(lag.position), str(lag.head), str(lag.behind))
        console.print(table)
        if worker:
            _workers_status(worker)
    finally:
        close()
        store.close()


def _kafka_status(settings: Settings, app: Any) -> None:
    """Per Kafka stage and partition: the notification id its effects are stored up to,
    the group's committed offset, the high watermark a fetch reports, and the lag."""
    from streams.kafka_bus import group_lags, stage_groups
    from streams.worker import Unreachable, check_reachable

    try:
        check_reachable(settings, ("kafka",))
    except Unreachable as err:
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(2) from None
    table = Table("stage", "partition", "tracked notification", "committed offset",
                  "high watermark", "lag")
    for group, names in stage_groups(settings).items():
        stage = group.rpartition(".")[2]
        for lag in group_lags(settings, group, names):
            tracked = app.recorder.max_tracking_id(f"{stage}@{lag.topic}:{lag.partition}")
            table.add_row(stage, f"{lag.topic}:{lag.partition}", str(tracked or 0),
                          "-" if lag.committed is None else str(lag.committed),
                          "?" if lag.high_watermark is None else str(lag.high_watermark),
                          "?" if lag.lag is None else str(lag.lag))
    console.print(table)


def _workers_status(urls: list[str]) -> None:
    import httpx

    table = Table("worker", "address", "ready", "detail")
    for url in urls:
        try:
            answer = httpx.get(f"{url.rstrip('/')}/readyz", timeout=3)
            body = answer.json()
            table.add_row(str(body.get("worker", "?")), url,
                          "yes" if answer.status_code == 200 else "no",
                          str(body.get("reason") or body.get("state") or ""))
        except (httpx.HTTPError, ValueError) as err:
            table.add_row("?", url, "no", f"unreachable ({err})")
    console.print(table)


@projections_app.command("rebuild")
def projections_rebuild(
    until: str = typer.Option(None, help="Stop at this time (ISO 8601) or event position: "
                                         "the read models as they were then."),
    projection: list[str] = typer.Option(None, help="Only these projections (repeat)."),
    processes: int = typer.Option(2, min=1, max=8, help="PostgreSQL: projections rebuilt "
                                  "by this many processes at once (SQLite: one)."),
    row_by_row: bool = typer.Option(False, "--row-by-row", help="Project batch by batch "
                                    "as a live projector does (the slow reference path)."),
) -> None:
    """Empty the read models and project the event log again from the start.

    In bulk: rows computed in memory and loaded with COPY into tables whose secondary
    indexes are built after the load, each projection in one transaction with its
    tracking row (killed, it leaves the read models as they were). A running `tradecore
    serve` or projection worker waits for it, notices, and carries on from the end of
    the rebuild; with --until it then catches up to the present again, so use --until
    with the server stopped (an audit as of T).
    """
    from projections.projectors import Projector, all_projections, select, whole_families
    from projections.rebuild import rebuild
    from streams.projection_rebuild import rebuild_in_processes

    settings = get_settings()
    try:
        chosen = whole_families(select(all_projections(), projection))
        stop = None if until is None else _until(until)
    except ValueError as err:
        console.print(f"[red]refused[/]: {err}")
        raise typer.Exit(2) from None
    store = read_store(settings)
    try:
        started = datetime.now(UTC)
        if row_by_row or stop is not None:
            log, close = event_log(settings)
            try:
                if row_by_row:
                    done = Projector(store, log, projections=chosen,
                                     batch_size=settings.projection_batch_size).rebuild(stop)
                else:
                    done = rebuild(store, log, chosen, until=stop)
            finally:
                close()
        else:
            done = rebuild_in_processes(settings, store, [p.name for p in chosen],
                                        processes=processes)
        seconds = (datetime.now(UTC) - started).total_seconds()
        tracked = dict(store.fetchall("SELECT name, position FROM projection_tracking"))
        position = min(int(tracked.get(p.name, 0)) for p in chosen)
        console.print(f"rebuilt {', '.join(p.name for p in chosen)}: {done} events in "
                      f"{seconds:.1f} s ({done / max(seconds, 1e-9):,.0f} events/s), "
                      f"at position {position}")
    finally:
        store.close()


def _until(text: str):  # type: ignore[no-untyped-def]
    from projections.projectors import until_position, until_time

    if text.isdigit():
        return until_position(int(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"until: an ISO 8601 time or an event position, got {text!r}") from None
    return until_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
