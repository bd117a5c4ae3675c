"""Several processes on one store, as a desk runs them: `tradecore serve`, CLI calls,
command writers hammering the same accounts, and stages killed with kill -9.

Each test failed before the order flow became stages (issue 9's findings 1-3): a CLI
write while serving drove cash negative and lost a trade, a killed server's saga
waited for the next command, and refused orders were answered 201.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from aggregates.account import Account
from aggregates.invariants import check_invariants
from aggregates.order import Order
from api.wiring import trading_app
from infra.settings import Settings
from tests.processes import env_for, served, spawn, tc

pytestmark = pytest.mark.slow


def settings_for(folder: Path) -> Settings:
    return Settings(persistence="sqlite", sqlite_path=folder / "events.sqlite",
                    readmodel_sqlite_path=folder / "readmodels.sqlite")


def priced(app: Any, symbol: str) -> int:
    """A price on the symbol's tick grid at its base price."""
    inst = app.universe.get(symbol)
    return int(inst.base_price - inst.base_price % inst.tick_size(inst.base_price))


def store_state(folder: Path) -> dict[str, Any]:
    """What the event store says, read by a fresh process: invariants and accounts."""
    app = trading_app(settings_for(folder))
    try:
        checks = check_invariants(app)
        accounts = {app.get_account(a).name: app.get_account(a) for a in app.ids_of(Account)}
        orders = [app.get_order(o) for o in app.ids_of(Order)]
        return {"failed": [c for c in checks if not c.ok], "accounts": accounts,
                "orders": orders}
    finally:
        app.close()


def test_a_cli_withdrawal_while_serving_never_drives_cash_negative(tmp_path: Path) -> None:
    """Finding 1, as a user met it: HTTP orders, a CLI withdrawal in between, more orders
    that no longer have the cash; every refusal is a 422, nothing is lost."""
    app = trading_app(settings_for(tmp_path))
    symbols = [s for s in ("7203", "8306") if s in app.universe] or app.universe.symbols[:2]
    first, second = symbols[0], symbols[1]
    p1, p2 = priced(app, first), priced(app, second)
    app.close()
    notional = p1 * 100 // 10
    deposit = notional * 15 // 7
    statuses: list[int] = []
    with served(tmp_path) as server:
        http = server.http

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = http.post(path, json=body)
            statuses.append(r.status_code)
            return {**r.json(), "code": r.status_code}

        alice = post("/v1/accounts", {"name": "alice", "owner": "alice"})["account_id"]
        bob = post("/v1/accounts", {"name": "bob", "owner": "bob", "allow_short": True}
                   )["account_id"]
        post(f"/v1/accounts/{alice}/deposits", {"amount": deposit})
        post(f"/v1/accounts/{bob}/deposits", {"amount": 10 * deposit})

        def buy(cid: str, symbol: str, price: int) -> dict[str, Any]:
            return post("/v1/orders", {"account_id": alice, "client_order_id": cid,
                                       "symbol": symbol, "side": "buy", "quantity": 100,
                                       "price": price})

        assert buy("a-1", first, p1)["code"] == 201
        server.idle()
        shown = http.get(f"/v1/accounts/{alice}/balance",
                         params={"min_position": 0}).json()
        withdraw = shown["available"] - 1_000  # leave 1,000 yen free
        cli = tc(tmp_path, "account", "withdraw", "alice", str(withdraw))
        assert cli.returncode == 0, cli.stdout + cli.stderr
        refused = buy("a-2", first, p1)
        assert refused["code"] == 422 and refused["field"] == "quantity", refused
        assert "buying power" in refused["rule"]
        refused = buy("a-3", second, p2)
        assert refused["code"] == 422, refused
        # the CLI places an order too while the server runs: the server's stages take it
        cli = tc(tmp_path, "order", "place", "bob", first, "sell", "100", "--price",
                 str(p1 / 10), "--client-order-id", "b-cli")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        post("/v1/orders", {"account_id": bob, "client_order_id": "b-2", "symbol": second,
                            "side": "sell", "quantity": 100, "price": p2})
        server.idle()
        balance = http.get(f"/v1/accounts/{alice}/balance").json()
        fills = http.get("/v1/fills", params={"account_id": alice}).json()["items"]
    assert all(code < 500 for code in statuses), statuses
    state = store_state(tmp_path)
    assert state["failed"] == [], state["failed"]
    alice_acc = state["accounts"]["alice"]
    assert alice_acc.cash >= 0 and alice_acc.reserved == 0
    assert alice_acc.cash == deposit - withdraw - notional - alice_acc.fees
    assert balance["cash"] == alice_acc.cash  # the read model agrees to the yen
    assert [(f["symbol"], f["quantity"]) for f in fills] == [(first, 100)]
    # no order is stranded before the venue: everything placed was routed and settled
    assert {o.status.value for o in state["orders"]} <= {"filled", "working", "rejected"}
    assert not [o for o in state["orders"] if o.status.value in ("placed", "accepted")]
    shown_cli = tc(tmp_path, "account", "show", "alice")
    assert f"{alice_acc.cash:,}" in shown_cli.stdout


HAMMER = r"""
import json, random, sys
from pathlib import Path
from aggregates.base import Meta
from aggregates.errors import DomainError
from aggregates import ids
from api.wiring import stepped_app
from infra.settings import Settings

folder, seed, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
settings = Settings(persistence="sqlite", sqlite_path=folder / "events.sqlite",
                    readmodel_sqlite_path=folder / "readmodels.sqlite")
app = stepped_app(settings)
rng = random.Random(seed)
names = sys.argv[4].split(",")
symbol = sys.argv[5]
inst = app.universe.get(symbol)
tick = inst.tick_size(inst.base_price)
base = inst.base_price - inst.base_price % tick
done = {"placed": [], "deposited": 0, "withdrawn": 0, "refused": 0}
for n in range(count):
    who = ids.account_id(rng.choice(names))
    meta = Meta.command(f"hammer-{seed}")
    roll = rng.random()
    try:
        if roll < 0.15:
            amount = rng.randint(1, 50) * 10_000
            app.deposit(who, amount, meta)
            done["deposited"] += amount
        elif roll < 0.25:
            amount = rng.randint(1, 50) * 10_000
            app.withdraw(who, amount, meta)
            done["withdrawn"] += amount
        else:
            side = rng.choice(["buy", "sell"])
            price = base + rng.randint(-2, 2) * tick
            placed = app.place_order(who, client_order_id=f"h{seed}-{n}", symbol=symbol,
                                     side=side, quantity=100 * rng.randint(1, 3),
                                     price=price, meta=meta)
            done["placed"].append(str(placed.order_id))
    except DomainError:
        done["refused"] += 1
app.close()
print(json.dumps(done))
"""


def test_many_processes_on_the_same_accounts_keep_every_invariant(tmp_path: Path) -> None:
    """Three command writers (each also running the stages when it can take their
    fences) and a server, all on the same three accounts at once."""
    names = ["p1", "p2", "p3"]
    app = trading_app(settings_for(tmp_path))
    symbol = "7203" if "7203" in app.universe else app.universe.symbols[0]
    from aggregates.base import Meta

    for name in names:
        account = app.open_account(name, owner=name, meta=Meta.command("ops"),
                                   allow_short=name == "p3")
        app.deposit(account, 100_000_000, Meta.command("ops"))
    app.close()
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER)
    with served(tmp_path) as server:
        writers = [subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(seed), "60", ",".join(names),
             symbol], env=env_for(tmp_path, PYTHONPATH=str(Path.cwd())),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in (1, 2, 3)]
        results = []
        for writer in writers:
            out, err = writer.communicate(timeout=300)
            assert writer.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        server.idle()
    state = store_state(tmp_path)
    assert state["failed"] == [], state["failed"]
    stored = {str(o.id) for o in state["orders"]}
    accepted = [oid for r in results for oid in r["placed"]]
    assert len(accepted) == len(set(accepted)) and set(accepted) <= stored  # none lost
    assert sum(len(r["placed"]) for r in results) > 20  # the writers really raced
    accounts = state["accounts"]
    assert sum(a.deposited for a in accounts.values()) == (
        3 * 100_000_000 + sum(r["deposited"] for r in results))
    assert sum(a.withdrawn for a in accounts.values()) == sum(r["withdrawn"] for r in results)
    assert not [o for o in state["orders"] if o.status.value in ("placed", "accepted")]


def test_a_killed_server_catches_up_by_itself(tmp_path: Path) -> None:
    """Finding 2: kill -9 the server with orders still in flight, restart it, send
    nothing: every stage catches up on its own and every invariant holds."""
    app = trading_app(settings_for(tmp_path))
    symbol = "7203" if "7203" in app.universe else app.universe.symbols[0]
    price = priced(app, symbol)
    app.close()
    with served(tmp_path) as server:
        http = server.http
        accounts = []
        for name, short in (("buyer", False), ("seller", True)):
            account = http.post("/v1/accounts", json={"name": name, "owner": name,
                                                      "allow_short": short}).json()
            http.post(f"/v1/accounts/{account['account_id']}/deposits",
                      json={"amount": 10**10})
            accounts.append(account["account_id"])

        def order(n: int) -> int:
            return http.post("/v1/orders", json={
                "account_id": accounts[n % 2], "client_order_id": f"o-{n}", "symbol": symbol,
                "side": "buy" if n % 2 == 0 else "sell", "quantity": 100,
                "price": price}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(order, range(400)))
        assert codes.count(201) == 400, codes
        lagging = http.get("/readyz").json()["stages"]
        server.kill()
    # nothing but a restart: no command, no request
    with served(tmp_path) as again:
        ready = again.idle(120)
    state = store_state(tmp_path)
    assert state["failed"] == [], state["failed"]
    assert len(state["orders"]) == 400
    assert {o.status.value for o in state["orders"]} == {"filled"}, lagging
    assert all(s["running"] for s in ready["stages"])


def test_a_killed_stage_worker_is_taken_over(tmp_path: Path) -> None:
    """kill -9 of one stage (the matching worker) mid-run: the server's own matching
    thread, which was waiting on the fence, takes over where it stopped."""
    matching = spawn(tmp_path, "worker", "matching")
    time.sleep(3)  # let the worker take the fence first
    assert matching.poll() is None
    with served(tmp_path) as server:
        http = server.http
        ready = http.get("/readyz").json()
        assert not [s for s in ready["stages"] if s["name"].startswith("matching")
                    and s["running"]], ready  # the worker holds it; the server waits
        ids_ = []
        for name, short in (("b", False), ("s", True)):
            account = http.post("/v1/accounts", json={"name": name, "owner": name,
                                                      "allow_short": short}).json()
            http.post(f"/v1/accounts/{account['account_id']}/deposits",
                      json={"amount": 10**10})
            ids_.append(UUID(account["account_id"]))
        app = trading_app(settings_for(tmp_path))
        symbol = app.universe.symbols[0]
        price = priced(app, symbol)
        app.close()
        for n in range(100):
            r = http.post("/v1/orders", json={
                "account_id": str(ids_[n % 2]), "client_order_id": f"k-{n}", "symbol": symbol,
                "side": "buy" if n % 2 == 0 else "sell", "quantity": 100, "price": price})
            assert r.status_code == 201, r.text
            if n == 50:
                matching.kill()  # SIGKILL, mid-run
                matching.wait(10)
        ready = server.idle(120)
        assert [s for s in ready["stages"] if s["name"].startswith("matching")
                and s["running"]], ready
    state = store_state(tmp_path)
    assert state["failed"] == [], state["failed"]
    assert {o.status.value for o in state["orders"]} == {"filled"}


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_sells_of_one_position_one_wins_the_rest_are_422(
        tmp_path: Path, workers: int) -> None:
    """Finding 3: 20 concurrent sells of 100 from a position of 100 (also across two
    HTTP worker processes): one is placed, 19 are refused with 422 naming the field, and
    no refused order is stored."""
    app = trading_app(settings_for(tmp_path))
    symbol = app.universe.symbols[0]
    price = priced(app, symbol)
    above = price + 2 * app.universe.get(symbol).tick_size(price)  # rests: nobody buys there
    app.close()
    with served(tmp_path, "--workers", str(workers)) as server:
        http = server.http
        ids_ = {}
        for name, short in (("holder", False), ("mm", True)):
            account = http.post("/v1/accounts", json={"name": name, "owner": name,
                                                      "allow_short": short}).json()
            http.post(f"/v1/accounts/{account['account_id']}/deposits",
                      json={"amount": 10**9})
            ids_[name] = account["account_id"]
        for who, side in (("mm", "sell"), ("holder", "buy")):  # holder buys 100 shares
            r = http.post("/v1/orders", json={"account_id": ids_[who], "symbol": symbol,
                                              "client_order_id": f"seed-{who}", "side": side,
                                              "quantity": 100, "price": price})
            assert r.status_code == 201, r.text
        server.idle()
        before = http.get("/readyz").json()

        def sell(n: int) -> Any:
            return http.post("/v1/orders", json={
                "account_id": ids_["holder"], "client_order_id": f"sell-{n}",
                "symbol": symbol, "side": "sell", "quantity": 100, "price": above})

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(sell, range(20)))
        server.idle()
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [422] * 19, [a.text for a in answers]
    assert {a.json()["field"] for a in answers if a.status_code == 422} == {"quantity"}
    state = store_state(tmp_path)
    assert state["failed"] == [], state["failed"]
    sells = [o for o in state["orders"] if o.client_order_id.startswith("sell-")]
    assert len(sells) == 1 and sells[0].status.value == "working", (sells, before)


def test_every_http_worker_streams_the_fills(tmp_path: Path) -> None:
    """With `serve --workers 2`, one worker projects; a stream client of either worker
    still sees its order move and its fill (the others follow the read models)."""
    from websockets.sync.client import connect

    app = trading_app(settings_for(tmp_path))
    symbol = app.universe.symbols[0]
    price = priced(app, symbol)
    app.close()
    with served(tmp_path, "--workers", "2") as server:
        http = server.http
        ids_ = {}
        for name, short in (("buyer", False), ("seller", True)):
            account = http.post("/v1/accounts", json={"name": name, "owner": name,
                                                      "allow_short": short}).json()
            http.post(f"/v1/accounts/{account['account_id']}/deposits", json={"amount": 10**9})
            ids_[name] = account["account_id"]
        token = http.headers["Authorization"]
        url = f"ws://127.0.0.1:{server.port}/v1/stream"
        with contextlib.ExitStack() as open_sockets:
            sockets = [open_sockets.enter_context(
                connect(url, additional_headers={"Authorization": token}))
                for _ in range(6)]  # spread over both workers
            time.sleep(0.5)
            for who, side in (("seller", "sell"), ("buyer", "buy")):
                r = http.post("/v1/orders", json={"account_id": ids_[who], "symbol": symbol,
                                                  "client_order_id": f"x-{who}", "side": side,
                                                  "quantity": 100, "price": price})
                assert r.status_code == 201, r.text
            for socket in sockets:
                fills: set[str] = set()
                deadline = time.monotonic() + 15
                while len(fills) < 2 and time.monotonic() < deadline:
                    message = json.loads(socket.recv(timeout=15))
                    if message["kind"] == "fill":
                        fills.add(message["data"]["side"])
                assert fills == {"buy", "sell"}
