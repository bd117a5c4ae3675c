"""`tradecore worker relay|matching|saga|projections|streams`: one stage as its own
process, configured by settings only.

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
- ``streams`` (always on Kafka): the market-data loop as a Faust worker
  (:mod:`streams.faust_app`): bars -> predictions -> the strategy's orders; one active
  behind the ``streams`` fence, a second waits as a hot standby (docs/streams.md).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from infra.settings import Settings, get_settings

log = logging.getLogger("tradecore.worker")
STAGES = ("relay", "matching", "saga", "projections", "streams")


def _refuse(message: str) -> typer.Exit:
    typer.echo(f"refused: {message}", err=True)
    return typer.Exit(2)


def worker(
    stage: str = typer.Argument(..., help=f"One of: {', '.join(STAGES)}."),
    projection: list[str] = typer.Option(
        [], "--projection", help="projections: only this projection (repeat; default all)."),
) -> None:
    """Run one stage in this process until SIGTERM/SIGINT (it waits for its fence or its
    partitions while another process runs the same stage). `streams`: market data ->
    ATFT-GAT-FAN predictions -> strategy orders (needs TRADECORE_MODEL_CHECKPOINT)."""
    if stage not in STAGES:
        raise _refuse(f"stage={stage!r} breaks rule 'one of {', '.join(STAGES)}'")
    settings = get_settings()
    if projection and stage != "projections":
        raise _refuse(f"projection={projection[0]!r} breaks rule 'only for the projections "
                      "stage'")
    if stage == "streams":  # market data -> predictions -> strategy, on Kafka
        _streams_worker(settings)
        return
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


# -- streams ----------------------------------------------------------------------------
def _streams_worker(settings: Settings) -> NoReturn:
    """The Faust worker of :mod:`streams.faust_app`, behind the ``streams`` fence (a second
    one waits as a hot standby), with /healthz /readyz /metrics beside it."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from infra.locks import stage_fence, wait_for
    from streams.worker import Unreachable, check_reachable, health_server

    if settings.model_checkpoint is None:
        raise _refuse("TRADECORE_MODEL_CHECKPOINT: unset; the streams worker predicts with "
                      "a checkpoint (`tradecore model train --out PATH` writes one)")
    if not settings.model_checkpoint.is_file():
        raise _refuse(f"TRADECORE_MODEL_CHECKPOINT={settings.model_checkpoint}: no such file")
    needs = ["kafka"] + (["postgres"] if settings.persistence == "postgres" else [])
    try:
        check_reachable(settings, needs)
    except Unreachable as err:
        raise _refuse(str(err)) from None
    from infra.kafka import ensure_topics

    ensure_topics(settings)
    # /healthz and /readyz from the start: a standby waiting on the fence is alive (not
    # restarted by an orchestrator) and not ready; SIGTERM while it waits exits 0.
    health = _StreamsHealth()
    try:
        server = health_server(health, settings.worker_host, settings.worker_port)
    except Unreachable as err:
        raise _refuse(str(err)) from None
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM,
                                                                    signal.SIGINT)}
    fence = stage_fence(settings, "streams")
    if not fence.acquire(blocking=False):
        log.info("streams: another worker holds the fence; waiting as a hot standby")
        if not wait_for(fence, stop):
            server.shutdown()
            raise typer.Exit(0)
    for signum, handler in previous.items():  # Faust's worker handles them from here
        signal.signal(signum, handler)
    try:
        worker = _build_streams(settings)
    except (LookupError, ValueError, OSError) as err:
        server.shutdown()
        fence.release()
        raise _refuse(str(err)) from None
    health.target = worker
    import faust

    from infra.faust_dev import recover_from_fetched_highwaters

    recover_from_fetched_highwaters(worker.app, settings)
    code = 0
    try:
        faust.Worker(worker.app, loglevel="INFO", quiet=True,
                     redirect_stdouts=False).execute_from_commandline()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        server.shutdown()
        fence.release()
    raise typer.Exit(code)


class _StreamsHealth:
    """/readyz of the streams worker: not ready while it waits on the fence (a standby)
    or builds, then the worker's own."""

    name = "streams"
    target: Any = None

    def health(self) -> dict[str, Any]:
        if self.target is None:
            return {"ready": False, "reason": "standby or starting: waiting for the streams "
                    "fence, the checkpoint and the tables"}
        return dict(self.target.health())


def _build_streams(settings: Settings) -> Any:
    """The worker: its checkpoint, its source (when it ingests), its desk (when it trades)."""
    from streams.faust_app import build_worker
    from streams.loop import load_predictor
    from streams.signals import sessions_for

    predictor = load_predictor(settings)
    app = None
    if settings.strategy_account:
        from api.wiring import trading_app

        app = trading_app(settings)
    source = None
    if settings.streams_ingest:
        from streams.ingest import source_for

        source = source_for(settings, sessions_for(predictor))
    return build_worker(settings, app=app, predictor=predictor, source=source)


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
