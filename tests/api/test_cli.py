"""The ``tradecore`` command as a user runs it: real processes on a real store."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.processes import TRADECORE, env_for


def tradecore(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**env_for(store.parent), "TRADECORE_SQLITE_PATH": str(store)}
    return subprocess.run([*TRADECORE, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_demo_trades_and_every_invariant_holds(tmp_path: Path) -> None:
    run = tradecore("demo", "--orders", "150", "--symbols", "4", "--store",
                    str(tmp_path / "demo.sqlite"), store=tmp_path / "unused.sqlite")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"invariants: (\d+)/\1 hold", run.stdout)
    assert "Order.Filled" in run.stdout and "FAILED" not in run.stdout


def test_a_desk_session_from_the_command_line(tmp_path: Path) -> None:
    from api.wiring import load_instruments
    from infra.settings import get_settings

    base = load_instruments(get_settings()).get("7203").base_price
    price = str(base // 10)  # yen, on the 1-yen tick for any realistic Toyota price
    store = tmp_path / "desk.sqlite"
    assert tradecore("account", "open", "alice", "--owner", "alice", store=store).returncode == 0
    assert tradecore("account", "deposit", "alice", "1000000", store=store).returncode == 0
    refused = tradecore("order", "place", "alice", "7203", "buy", "150", "--price", price,
                        "--client-order-id", "a1", store=store)
    assert refused.returncode == 2
    assert "field=quantity" in refused.stdout
    placed = tradecore("order", "place", "alice", "7203", "buy", "100", "--price", price,
                       "--client-order-id", "a1", store=store)
    assert placed.returncode == 0, placed.stdout
    order_id = re.search(r"order ([0-9a-f-]{36})", placed.stdout).group(1)  # type: ignore[union-attr]
    assert "working" in placed.stdout
    assert "already placed" in tradecore("order", "place", "alice", "7203", "buy", "100",
                                         "--price", price, "--client-order-id", "a1",
                                         store=store).stdout
    assert tradecore("order", "cancel", order_id, store=store).returncode == 0
    shown = tradecore("account", "show", "alice", store=store).stdout
    assert "1,000,000" in shown  # cash back to all available after the cancel
    trail = tradecore("events", order_id, store=store).stdout
    for event in ("Order.Placed", "Order.Accepted", "Order.Routed", "Order.Cancelled"):
        assert event in trail
