"""`tradecore worker relay|matching|saga|projections`: one stage of the order flow as its
own process, configured by settings only.

- ``TRADECORE_BUS=log`` (the default): the saga or matching stage follows the event
  store's log, fenced, as in ``tradecore serve`` (several processes over one PostgreSQL
  or SQLite store). Whatever the bus, the relay (:class:`streams.relay.Relay`) feeds
  Kafka and the projections follow the event store's log (exactly-once already).
- ``TRADECORE_BUS=kafka`` (the distributed deployment): the relay feeds Kafka from the
  log; matching and saga are consumer-group members (:mod:`streams.kafka_workers`);
  projections run :func:`streams.projection_worker.projection_worker` (by projection,
  or by share of one). Each is a
  :class:`streams.worker.Runnable` run by :func:`streams.worker.run_worker` (SIGTERM
  drains and exits 0; /healthz /readyz /metrics), after
  :func:`streams.worker.check_reachable` (exit 2 naming the setting).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from infra.settings import Settings, get_settings

STAGES = ("relay", "matching", "saga", "projections")


def _refuse(message: str) -> typer.Exit:
    typer.echo(f"refused: {message}", err=True)
    return typer.Exit(2)


def worker(
    stage: str = typer.Argument(..., help=f"One of: {', '.join(STAGES)}."),
    projection: list[str] = typer.Option(
        [], "--projection", help="projections: only this projection (repeat; default all)."),
) -> None:
    """Run one stage of the order flow in this process until SIGTERM/SIGINT (it waits for
    its fence or its partitions while another process runs the same stage)."""
    if stage not in STAGES:
        raise _refuse(f"stage={stage!r} breaks rule 'one of {', '.join(STAGES)}'")
    settings = get_settings()
    if projection and stage != "projections":
        raise _refuse(f"projection={projection[0]!r} breaks rule 'only for the projections "
                      "stage'")
    if settings.bus == "log" and stage not in ("relay", "projections"):
        _log_worker(settings, stage)
        return
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from streams.worker import Unreachable, check_reachable

    if stage == "projections":  # from the PostgreSQL (or SQLite) log, whatever the bus
        from api.runtime import tune_gc

        runnable, close = _projections(settings, projection)
        tune_gc()
        _run(runnable, close, settings)

    try:
        check_reachable(settings, ("postgres", "kafka"))
    except Unreachable as err:
        raise _refuse(str(err)) from None
    runnable, close = _kafka_worker(settings, stage)
    _run(runnable, close, settings)


def _run(runnable: Any, close: Callable[[], None], settings: Settings) -> NoReturn:
    """Run a worker until SIGTERM (``streams.worker.run_worker``), then close it."""
    from streams.worker import Unreachable, run_worker

    try:
        code = run_worker(runnable, settings)
    except Unreachable as err:  # its health port taken
        raise _refuse(str(err)) from None
    finally:
        close()
    raise typer.Exit(code)


# -- bus=kafka ---------------------------------------------------------------------------
def _kafka_worker(settings: Settings, stage: str) -> tuple[Any, Callable[[], None]]:
    """The stage's Runnable and what to close after it."""
    from api.runtime import tune_gc
    from api.wiring import matching_stage, trading_app

    if stage == "relay":  # reachable: checked by the caller
        from streams.relay import Relay

        relay = Relay(settings)
        return relay, relay.close
    app = trading_app(settings)
    if stage == "matching":
        from streams.kafka_workers import matching_consumer

        runnable = matching_consumer(settings, app, lambda: matching_stage(settings, app))
    else:
        from streams.kafka_workers import saga_consumer

        runnable = saga_consumer(settings, app, batch_size=settings.saga_batch_size)
    tune_gc()
    return runnable, app.close


def _projections(settings: Settings, names: list[str]) -> tuple[Any, Callable[[], None]]:
    """The named projections (all when none), fenced per projection, following the
    PostgreSQL (or SQLite) log, which is exactly-once already (``streams.projection_worker``)."""
    from streams.projection_worker import projection_worker
    from streams.worker import Unreachable, check_reachable

    try:
        if settings.persistence == "postgres":
            check_reachable(settings, ("postgres",))
        return projection_worker(settings, names), lambda: None
    except Unreachable as err:
        raise _refuse(str(err)) from None
    except ValueError as err:  # an unknown projection, named with the known ones
        raise _refuse(str(err)) from None


# -- bus=log: today's behaviour -------------------------------------------------------------
def _log_worker(settings: Settings, stage: str) -> None:
    from api.runtime import tune_gc
    from api.wiring import trading_stages

    stages, store = trading_stages(settings)
    processor = {"saga": stages.saga, "matching": stages.matching}[stage]
    assert processor is not None
    stop = threading.Event()

    def stopping(*_: object) -> None:
        stop.set()
        stages.signal.raise_()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    tune_gc()
    typer.echo(f"worker {processor.key}: waiting for its fence, then following the log")
    try:
        processor.run(stop)  # drains the batch in hand, then returns
    finally:
        stages.app.close()
        if store is not None:
            store.close()
    typer.echo(f"worker {processor.key}: stopped at {processor.step.position(processor.key)}")
