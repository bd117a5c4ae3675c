"""Real processes for tests: `tradecore serve`, workers and CLI calls on one store.

Each test gets a folder with its own SQLite event store, read models and signing keys;
every process started here reads them from the environment, as an operator's would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.api.server import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRADECORE = [sys.executable, "-m", "api.cli"]
"""The `tradecore` command of *this* checkout (the installed script imports whichever
checkout the virtual environment was installed from)."""


def env_for(folder: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TRADECORE_PERSISTENCE": "sqlite",
            "TRADECORE_SQLITE_PATH": str(folder / "events.sqlite"),
            "TRADECORE_READMODEL_SQLITE_PATH": str(folder / "readmodels.sqlite"),
            "TRADECORE_JWT_KEYS_PATH": str(folder / "keys.json"), **extra}


def tc(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One CLI call, as an operator types it."""
    return subprocess.run([*TRADECORE, *args], capture_output=True, text=True,
                          env=env_for(folder), timeout=timeout, check=False)


def spawn(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*TRADECORE, *args], env=env_for(folder), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Served:
    """A `tradecore serve` process and an admin's HTTP client for it."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.args = args
        self.process = spawn(folder, "serve", "--port", str(self.port), "--log-level",
                             "warning", *args)
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_ready()
        token = tc(folder, "auth", "token", "--subject", "ops", "--role", "admin")
        assert token.returncode == 0, token.stderr
        self.http = httpx.Client(base_url=self.url, timeout=30, headers={
            "Authorization": f"Bearer {token.stdout.strip()}"})

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready in {timeout} s")

    def idle(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until no stage has input waiting and the read models hold the log."""
        deadline = time.monotonic() + timeout
        ready: dict[str, Any] = {}
        quiet = 0
        while time.monotonic() < deadline:
            ready = self.http.get("/readyz").json()
            done = (all(s["behind"] == 0 for s in ready["stages"])
                    and all(p["behind"] == 0 for p in ready["projections"])
                    and ready["stages"])
            quiet = quiet + 1 if done else 0
            if quiet >= 3:  # stable: nothing produced anything since
                return ready
            time.sleep(0.1)
        raise AssertionError(f"stages not idle in {timeout} s: {ready}")

    def output(self) -> str:
        if self.process.poll() is None:
            return ""
        return self.process.stdout.read() if self.process.stdout else ""

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.http.close()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                out, _ = self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                out, _ = self.process.communicate()
            self.http.close()
            return out or ""
        return ""


@contextmanager
def served(folder: Path, *args: str) -> Iterator[Served]:
    server = Served(folder, *args)
    try:
        yield server
    finally:
        server.stop()
