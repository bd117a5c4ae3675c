"""A `tradecore worker` process as an operator meets it: its health port and SIGTERM."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.processes import TRADECORE, env_for


def test_a_worker_whose_health_port_is_taken_says_which_setting_and_exits_2(
        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*TRADECORE, "worker", "projections"], capture_output=True,
                              text=True, timeout=120, check=False,
                              env=env_for(tmp_path, TRADECORE_WORKER_PORT=str(port)))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"refused: TRADECORE_WORKER_PORT='{port}'" in done.stderr
    assert "Traceback" not in done.stderr
