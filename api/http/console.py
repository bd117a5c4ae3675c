"""The desk console: a static page at ``/`` that talks to the API like any client.

The files ship inside the package (``api/http/console/``: ``index.html``, ``app.js``,
``app.css`` and the vendored ``lightweight-charts`` build), so ``tradecore serve`` needs
nothing at run time from anywhere else: no CDN, no build step. The page signs in through
``POST /v1/session`` (or takes a pasted token), then uses the public routes and
``/v1/stream`` with that token; it holds no privilege of its own, so the API's checks are
the console's checks.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

FILES = Path(__file__).with_name("console")

# The page's own files only: scripts and styles from this origin, the API and its
# WebSocket on this origin; charts draw on canvases (style attributes set from script).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """Static files with the console's security headers on every answer."""

    def file_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """``GET /`` answers the page; ``/console/...`` its scripts, styles and charts."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(FILES / "index.html", media_type="text/html",
                            headers=SECURITY_HEADERS)

    app.mount("/console", ConsoleFiles(directory=FILES), name="console")
