"""`tradecore db`, `projections` and `serve` as an operator runs them: real processes."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.api.server import free_port
from tests.processes import TRADECORE, env_for


def tc(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADECORE, *args], capture_output=True, text=True,
                          env=env_for(folder), timeout=300, check=False)


def test_upgrade_rebuild_and_status(tmp_path: Path) -> None:
    first = tc(tmp_path, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert "applied 1: read-model tables" in first.stdout
    again = tc(tmp_path, "db", "upgrade")
    assert "applied" not in again.stdout and "schema at version 4" in again.stdout
    assert tc(tmp_path, "account", "open", "alice", "--owner", "alice").returncode == 0
    assert tc(tmp_path, "account", "deposit", "alice", "1000000").returncode == 0

    behind = tc(tmp_path, "projections", "status")
    assert re.search(r"balances\s*│\s*0\s*│\s*\d+\s*│\s*[1-9]", behind.stdout), behind.stdout
    rebuilt = tc(tmp_path, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    head = int(re.search(r"at position (\d+)", rebuilt.stdout).group(1))  # type: ignore[union-attr]
    status = tc(tmp_path, "projections", "status").stdout
    assert re.search(rf"orders\s*│\s*{head}\s*│\s*{head}\s*│\s*0", status), status

    as_of = tc(tmp_path, "projections", "rebuild", "--until", "2", "--projection", "balances")
    assert "rebuilt balances" in as_of.stdout and "at position 2" in as_of.stdout
    for bad in (["--until", "yesterday"], ["--projection", "nope"]):
        refused = tc(tmp_path, "projections", "rebuild", *bad)
        assert refused.returncode == 2 and "refused" in refused.stdout
    kept = tc(tmp_path, "db", "retention", "--days", "30")
    assert kept.returncode == 0 and "fills: 0 rows dropped" in kept.stdout


def test_serve_answers_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([*TRADECORE, "serve", "--port", str(port)], env=env_for(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, ready
        token = tc(tmp_path, "auth", "token", "--subject", "ops", "--role", "admin")
        assert token.returncode == 0, token.stderr
        opened = httpx.post(f"http://127.0.0.1:{port}/v1/accounts",
                            json={"name": "alice", "owner": "alice"},
                            headers={"Authorization": f"Bearer {token.stdout.strip()}"})
        assert opened.status_code == 201, opened.text
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
