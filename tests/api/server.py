"""A real `tradecore serve` stack in a test: uvicorn on a free port, in a thread.

``LiveServer`` runs :func:`api.http.create_app` exactly as ``tradecore serve`` does
(embedded SQLite event store and read models in a temporary folder) and hands tests
an HTTP client, tokens for any role, and the runtime behind it, so a test can compare
what the API said with what the event store holds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import uvicorn

from api.http import create_app
from api.runtime import Runtime
from api.security import KeyRing, Role, issue_token
from api.serving import server_config
from infra.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, folder: Path, **overrides: Any) -> None:
        self.settings = Settings(**{
            "persistence": "sqlite",
            "sqlite_path": folder / "events.sqlite",
            "readmodel_sqlite_path": folder / "readmodels.sqlite",
            "jwt_keys_path": folder / "jwt-keys.json",
            **overrides,
        })
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.settings)
        self.keyring = KeyRing.load_or_create(self.settings.jwt_keys_path)
        self._server = uvicorn.Server(server_config(
            self.settings, self.app, host="127.0.0.1", port=self.port, log_level="warning",
            ws="websockets-sansio"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def runtime(self) -> Runtime:
        runtime = self.app.state.context.runtime
        assert runtime is not None
        return runtime  # type: ignore[no-any-return]

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def token(self, role: Role | str, accounts: list[UUID] | None = None, *,
              subject: str | None = None, ttl_s: int = 600) -> str:
        return issue_token(self.keyring, subject=subject or f"{role}-user", role=role,
                           accounts=accounts, ttl_s=ttl_s, issuer=self.settings.jwt_issuer,
                           audience=self.settings.jwt_audience)

    def auth(self, role: Role | str, accounts: list[UUID] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, accounts)}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def stored_events(self) -> int:
        return int(self.runtime.app.recorder.max_notification_id() or 0)


@contextmanager
def live_server(folder: Path, **overrides: Any) -> Iterator[LiveServer]:
    server = LiveServer(folder, **overrides)
    server.start()
    try:
        yield server
    finally:
        server.stop()
