"""The market-data loop embedded in `tradecore serve`: bars replayed from the files, the
model's predictions at each close, and the strategy's orders through the command path,
visible over HTTP like anyone's; a counterparty trades with them, and the fills,
positions and PnL follow in the read models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from aggregates import ids
from tests.processes import served, tc
from tests.streams.test_backtest import data, shared  # noqa: F401  (fixtures)
from tests.streams.test_backtest_model import checkpoint  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _orders(server: Any, account: str) -> list[dict[str, Any]]:
    page = server.http.get("/v1/orders", params={"account_id": account, "limit": 500})
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


def test_serve_trades_the_models_forecasts_through_the_command_path(
        data: Path, checkpoint: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "TRADECORE_DATA_DIR": str(data.parent), "TRADECORE_STREAMS_DATA": str(data),
        "TRADECORE_MODEL_CHECKPOINT": str(checkpoint), "TRADECORE_STREAMS_INGEST": "true",
        "TRADECORE_STREAMS_FROM": "2015-12-16", "TRADECORE_STREAMS_TO": "2015-12-18",
        "TRADECORE_STRATEGY_ACCOUNT": "quant1", "TRADECORE_STRATEGY_FRACTION": "0.25",
    }.items():
        monkeypatch.setenv(name, value)
    for args in (("account", "open", "quant1"), ("account", "deposit", "quant1", "50000000"),
                 ("account", "open", "street", "--allow-short"),
                 ("account", "deposit", "street", "50000000")):
        done = tc(tmp_path, *args)
        assert done.returncode == 0, done.stderr
    quant1 = str(ids.account_id("quant1"))
    with served(tmp_path) as server:
        deadline = time.monotonic() + 120
        orders: list[dict[str, Any]] = []
        while time.monotonic() < deadline:  # 3 sessions: 3 stocks a day of the 12
            orders = _orders(server, quant1)
            if {o["client_order_id"].split(":")[1] for o in orders} >= {
                    "2015-12-16", "2015-12-17", "2015-12-18"}:
                break
            time.sleep(0.5)
        keys = [o["client_order_id"] for o in orders]
        assert keys and len(keys) == len(set(keys))  # one order per (strategy, date, symbol)
        assert all(k.startswith("top-decile:2015-12-") for k in keys)
        assert all(o["quantity"] % 100 == 0 and o["side"] == "buy" for o in orders
                   if o["client_order_id"].endswith(o["symbol"]))
        # a counterparty sells into the strategy's first buy, as anyone could
        buy = next(o for o in orders if o["side"] == "buy")
        price = f"{buy['price'] / 10:g}"
        sold = tc(tmp_path, "order", "place", "street", buy["symbol"], "sell",
                  str(buy["quantity"]), "--price", price, "--client-order-id", "street-1")
        assert sold.returncode == 0, sold.stdout + sold.stderr
        server.idle()
        filled = server.http.get("/v1/fills", params={"account_id": quant1}).json()["items"]
        same_symbol = {o["order_id"] for o in orders if o["symbol"] == buy["symbol"]}
        assert filled and {f["order_id"] for f in filled} <= same_symbol  # price-time priority
        assert sum(f["quantity"] for f in filled) == buy["quantity"]
        positions = server.http.get(f"/v1/accounts/{quant1}/positions").json()
        assert [(p["symbol"], p["quantity"]) for p in positions] == [
            (buy["symbol"], buy["quantity"])]
        pnl = server.http.get(f"/v1/accounts/{quant1}/pnl").json()
        assert pnl, "the strategy's position has a PnL series like anyone's"


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("TRADECORE_MODEL_CHECKPOINT", "{tmp}/absent.safetensors",
     "refused: TRADECORE_MODEL_CHECKPOINT={tmp}/absent.safetensors: checkpoint: no file at"),
    ("TRADECORE_MODEL_CHECKPOINT", "{tmp}/notes.safetensors",
     "refused: TRADECORE_MODEL_CHECKPOINT={tmp}/notes.safetensors: checkpoint: "),
    ("TRADECORE_STRATEGY_ACCOUNT", "nobody",
     "refused: TRADECORE_STRATEGY_ACCOUNT='nobody': no such account"),
])  # fmt: skip
def test_serve_refuses_a_loop_it_cannot_run_in_one_line(
        data: Path, checkpoint: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, setting: str, value: str, message: str) -> None:
    """What would stop the loop at start-up stops `serve` before it listens: one line
    naming the setting, exit 2, no traceback (as `tradecore worker streams` does)."""
    (tmp_path / "notes.safetensors").write_text("not a checkpoint\n")
    settings = {"TRADECORE_DATA_DIR": str(data.parent), "TRADECORE_STREAMS_DATA": str(data),
                "TRADECORE_MODEL_CHECKPOINT": str(checkpoint),
                "TRADECORE_STREAMS_INGEST": "true", "TRADECORE_STRATEGY_ACCOUNT": "quant1"}
    settings[setting] = value.format(tmp=tmp_path)
    for name, setting_value in settings.items():
        monkeypatch.setenv(name, setting_value)
    assert tc(tmp_path, "account", "open", "quant1").returncode == 0
    done = tc(tmp_path, "serve", "--port", "0")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(message.format(tmp=tmp_path)), done.stderr
    assert "Traceback" not in done.stderr and "startup failed" not in done.stderr
