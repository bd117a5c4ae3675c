"""`tradecore serve`: the HTTP API with the stages of the order flow, in one process or
several (``--workers N``: N HTTP processes over one store; the stages are fenced, so
each runs in exactly one of them and another takes over if that one dies).

`tradecore serve --distributed`: the HTTP API alone over the PostgreSQL event store and
the TimescaleDB read models; the stages run as `tradecore worker` processes
(:mod:`api.cli.worker`).
"""

from __future__ import annotations

import contextlib
import signal
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


def distributed_app_factory() -> FastAPI:
    """The same with no stage in-process (``serve --distributed --workers N``)."""
    from api.http import create_app

    return create_app(get_settings(), distributed=True)


def serve(
    host: str = typer.Option(None, help="Listen address (default TRADECORE_API_HOST)."),
    port: int = typer.Option(None, help="Port (default TRADECORE_API_PORT)."),
    workers: int = typer.Option(1, min=1, max=64, help="HTTP worker processes over one store."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    distributed: bool = typer.Option(
        False, "--distributed", help="Run no stage in this process: the API over the "
        "PostgreSQL store and read models, the stages as `tradecore worker` processes."),
) -> None:
    """Run the command and query API with the saga, matching and projection stages."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.http import create_app
    from api.serving import server_config

    settings = get_settings()
    distributed = distributed or settings.bus == "kafka"  # the stages are the workers'
    if distributed and settings.persistence != "postgres":
        typer.echo(f"refused: TRADECORE_PERSISTENCE={settings.persistence}: --distributed "
                   "needs 'postgres' (the workers share its event store)", err=True)
        raise typer.Exit(2)
    host, port = host or settings.api_host, port or settings.api_port
    if not distributed and settings.model_checkpoint and settings.streams_ingest:
        _check_loop(settings)
    if workers == 1:
        config = server_config(settings, create_app(settings, distributed=distributed),
                               host=host, port=port,
                               log_level=log_level, access_log=False)
        server = uvicorn.Server(config)
        # uvicorn re-raises the signal it shut down on to the handler it found: SIGTERM
        # (docker stop, Kubernetes) is a clean stop, exit 0, as for the workers
        signal.signal(signal.SIGTERM, lambda *_: None)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
            server.run()
        if not server.started:
            raise typer.Exit(3)
    else:  # what uvicorn.run does for workers, with our connection limits on the config
        factory = "distributed_app_factory" if distributed else "app_factory"
        config = server_config(settings, f"api.cli.serve:{factory}", host=host, port=port,
                               factory=True, workers=workers, log_level=log_level,
                               access_log=False)
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()


def _check_loop(settings: Settings) -> None:
    """Refuse in one line (exit 2) what would stop the in-process market-data loop at
    start-up (a checkpoint that is missing or is not one, an unknown strategy account,
    no market data): the loop is built once here, before uvicorn, whose start-up failure
    would print a traceback instead."""
    from api.wiring import trading_app
    from streams.loop import embedded_loop

    try:
        app = trading_app(settings)
        try:
            embedded_loop(settings, app)
        finally:
            app.close()
    except (LookupError, ValueError, OSError) as err:
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(2) from None
