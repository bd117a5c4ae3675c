"""`tradecore serve`: the HTTP API with the stages of the order flow, in one process or
several (``--workers N``: N HTTP processes over one store; the stages are fenced, so
each runs in exactly one of them and another takes over if that one dies).

`tradecore worker <stage>`: one stage alone in the foreground (saga, matching or
projections), for deployments that run the stages as their own processes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING

import typer

from infra.settings import get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from infra.settings import Settings


def app_factory() -> FastAPI:
    """The app built from the environment (each uvicorn worker process calls this)."""
    from api.http import create_app

    return create_app(get_settings())


def serve(
    host: str = typer.Option(None, help="Listen address (default TRADECORE_API_HOST)."),
    port: int = typer.Option(None, help="Port (default TRADECORE_API_PORT)."),
    workers: int = typer.Option(1, min=1, max=64, help="HTTP worker processes over one store."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the command and query API with the saga, matching and projection stages."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.http import create_app
    from api.serving import server_config

    settings = get_settings()
    host, port = host or settings.api_host, port or settings.api_port
    if workers == 1:
        config = server_config(settings, create_app(settings), host=host, port=port,
                               log_level=log_level, access_log=False)
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
            server.run()
        if not server.started:
            raise typer.Exit(3)
    else:  # what uvicorn.run does for workers, with our connection limits on the config
        config = server_config(settings, "api.cli.serve:app_factory", host=host, port=port,
                               factory=True, workers=workers, log_level=log_level,
                               access_log=False)
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()


STAGES = ("saga", "matching", "projections", "relay")


def worker(stage: str = typer.Argument(..., help=f"One of: {', '.join(STAGES)}."),
           projection: list[str] = typer.Option(
               None, "--projection", help="projections only: run only this projection "
               "(repeat; default all). One worker per projection scales them out.")) -> None:
    """Run one stage of the order flow in this process until SIGTERM/SIGINT (it waits for
    its fence while another process runs the same stage)."""
    from api.runtime import tune_gc
    from api.wiring import trading_stages

    if stage not in STAGES:
        typer.echo(f"refused: stage={stage!r} breaks rule 'one of {', '.join(STAGES)}'",
                   err=True)
        raise typer.Exit(2)
    if stage == "projections":
        _projection_worker(projection or [])
        return
    if projection:
        typer.echo(f"refused: projection={projection[0]!r} breaks rule 'only for the "
                   "projections stage'", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    if stage == "relay":
        _relay(settings)
        return
    stages, store = trading_stages(settings, projector=stage == "projections")
    processor = {"saga": stages.saga, "matching": stages.matching,
                 "projections": stages.projections}[stage]
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


def _relay(settings: Settings) -> None:
    """`tradecore worker relay`: the event store's log to Kafka (streams.relay)."""
    import logging

    from streams.relay import relay_worker
    from streams.worker import Unreachable, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        relay = relay_worker(settings)
    except Unreachable as err:
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"worker {relay.name}: waiting for its fence, then publishing the log")
    try:
        code = run_worker(relay, settings)
    finally:
        relay.close()
    raise typer.Exit(code)


def _projection_worker(names: list[str]) -> None:
    """`tradecore worker projections [--projection NAME]...`: the named projections
    (all when none), fenced per projection, with /readyz and /metrics."""
    from api.runtime import tune_gc
    from streams.projection_worker import projection_worker
    from streams.worker import Unreachable, check_reachable, run_worker

    settings = get_settings()
    try:
        runnable = projection_worker(settings, names)
        if settings.persistence == "postgres":
            check_reachable(settings, ("postgres",))
    except ValueError as err:  # an unknown projection, named with the known ones
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(2) from None
    except Unreachable as err:
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(2) from None
    tune_gc()
    typer.echo(f"worker {runnable.name}: waiting for its fences, then following the log")
    raise typer.Exit(run_worker(runnable, settings))
