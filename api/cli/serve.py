"""`tradecore serve`: the whole embedded deployment in one process behind uvicorn."""

from __future__ import annotations

import typer
import uvicorn

from api.http import create_app
from infra.settings import get_settings


def serve(
    host: str = typer.Option(None, help="Listen address (default TRADECORE_API_HOST)."),
    port: int = typer.Option(None, help="Port (default TRADECORE_API_PORT)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the command and query API with the engine, saga and projectors in one process."""
    settings = get_settings()
    app = create_app(settings)
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port,
                log_level=log_level, access_log=False)
