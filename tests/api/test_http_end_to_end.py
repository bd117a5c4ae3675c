"""A desk's day through real HTTP: uvicorn, the write model, projections, the stream.

Admin opens and funds accounts; two traders cross an order; every read model answers
what happened to the yen, read-your-writes included; the WebSocket tells each trader of
their own orders and fills only; a restart on the same files carries on where it was.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from websockets.sync.client import connect

from aggregates.fees import DEFAULT_SCHEDULE, get_schedule
from aggregates.risk import notional_yen
from api.security import Role
from tests.api.server import LiveServer, live_server

DEPOSIT = 50_000_000


def open_funded(server: LiveServer, name: str, *, allow_short: bool = False) -> UUID:
    with server.client() as http:
        admin = server.auth(Role.admin)
        r = http.post("/v1/accounts", json={"name": name, "owner": name,
                                            "allow_short": allow_short}, headers=admin)
        assert r.status_code == 201, r.text
        account_id = UUID(r.json()["account_id"])
        r = http.post(f"/v1/accounts/{account_id}/deposits", json={"amount": DEPOSIT},
                      headers=admin)
        assert r.status_code == 201, r.text
    return account_id


def order(account: UUID, symbol: str, side: str, quantity: int, price: int,
          **more: Any) -> dict[str, Any]:
    return {"account_id": str(account), "symbol": symbol, "side": side,
            "quantity": quantity, "price": price, **more}


def receive(socket: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(socket.recv(timeout=10)) for _ in range(count)]


def receive_until(socket: Any, found: Any, timeout: float) -> list[dict[str, Any]]:
    """Messages up to and including the first that ``found`` accepts."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while not seen or not found(seen[-1]):
        seen.append(json.loads(socket.recv(timeout=max(deadline - time.monotonic(), 0.01))))
    return seen


def drain(socket: Any, quiet_s: float = 0.5) -> list[dict[str, Any]]:
    """Whatever arrives until the stream is quiet for ``quiet_s``."""
    seen: list[dict[str, Any]] = []
    while True:
        try:
            seen.append(json.loads(socket.recv(timeout=quiet_s)))
        except TimeoutError:
            return seen


def test_a_crossed_order_through_http(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        universe = server.runtime.app.universe
        symbol = universe.symbols[0]
        price = universe.get(symbol).base_price
        alice = open_funded(server, "alice")
        bob = open_funded(server, "bob", allow_short=True)
        as_alice = server.auth(Role.trader, [alice])
        as_bob = server.auth(Role.trader, [bob])
        with server.client() as http, connect(
            f"ws://127.0.0.1:{server.port}/v1/stream",
            additional_headers={"Authorization": as_alice["Authorization"]},
        ) as alice_stream:
            # bob rests a short sale of 200; alice lifts 100 of it
            r = http.post("/v1/orders", json=order(bob, symbol, "sell", 200, price,
                                                   client_order_id="b-1", tif="gtc"),
                          headers=as_bob)
            assert r.status_code == 201, r.text
            bob_order = r.json()["order_id"]
            # answered once the order and its reservation are stored, before matching
            assert r.json()["status"] == "placed"
            r = http.post("/v1/orders", json=order(alice, symbol, "buy", 100, price),
                          headers={**as_alice, "Idempotency-Key": "a-1"})
            assert r.status_code == 201, r.text
            placed = r.json()
            assert placed["status"] == "placed" and placed["created"] is True
            assert int(r.headers["RateLimit-Remaining"]) >= 0
            # the fill reaches alice on her stream, without asking
            seen = receive_until(alice_stream, lambda m: m["kind"] == "fill", 10)
            assert seen[-1]["data"]["order_id"] == placed["order_id"]
            assert server.runtime.wait_idle(10)

            # the same key and terms again: the same order, nothing new stored
            before = server.stored_events()
            again = http.post("/v1/orders", json=order(alice, symbol, "buy", 100, price),
                              headers={**as_alice, "Idempotency-Key": "a-1"})
            assert again.status_code == 200
            assert again.json()["order_id"] == placed["order_id"]
            assert server.stored_events() == before
            # the same key with other terms is a conflict naming the field
            clash = http.post("/v1/orders", json=order(alice, symbol, "buy", 200, price),
                              headers={**as_alice, "Idempotency-Key": "a-1"})
            assert clash.status_code == 409
            assert clash.headers["content-type"].startswith("application/problem+json")
            assert clash.json()["field"] == "client_order_id"
            assert server.stored_events() == before

            # read-your-writes: the order's own position; then all that followed it
            got = http.get(f"/v1/orders/{placed['order_id']}",
                           params={"min_position": placed["position"]}, headers=as_alice)
            assert got.status_code == 200 and got.json()["client_order_id"] == "a-1"
            wait = {"min_position": server.stored_events()}
            got = http.get(f"/v1/orders/{placed['order_id']}", params=wait, headers=as_alice)
            assert got.status_code == 200, got.text
            detail = got.json()
            assert detail["status"] == "filled" and detail["filled_quantity"] == 100
            assert [e["event"] for e in detail["history"]][:3] == ["Placed", "Accepted",
                                                                  "Routed"]
            assert detail["history"][-1]["event"] == "Filled"

            notional = notional_yen(price, 100)
            fee = get_schedule(DEFAULT_SCHEDULE).commission(notional)
            balance = http.get(f"/v1/accounts/{alice}/balance", params=wait,
                               headers=as_alice).json()
            assert balance["cash"] == DEPOSIT - notional - fee
            assert balance["available"] == balance["cash"] and balance["fees"] == fee
            positions = http.get(f"/v1/accounts/{alice}/positions", params=wait,
                                 headers=as_alice).json()
            assert [(p["symbol"], p["quantity"], p["cost"]) for p in positions] == [
                (symbol, 100, notional)]
            fills = http.get("/v1/fills", params=wait, headers=as_alice).json()["items"]
            assert [(f["side"], f["quantity"], f["price"], f["liquidity"]) for f in fills] == [
                ("buy", 100, price, "taker")]
            ledger = http.get(f"/v1/accounts/{alice}/ledger", params=wait,
                              headers=as_alice).json()["items"]
            assert [(e["entry"], e["amount"]) for e in ledger] == [
                ("buy", -(notional + fee)), ("deposit", DEPOSIT)]
            pnl = http.get(f"/v1/accounts/{alice}/pnl", params={**wait, "bucket": "1d"},
                           headers=as_alice).json()
            assert pnl[-1]["realised"] == 0 and pnl[-1]["unrealised"] == 0
            assert pnl[-1]["fees"] == fee and pnl[-1]["net"] == -fee
            bars = http.get(f"/v1/market/{symbol}/bars", params={**wait, "bucket": "1m"},
                            headers=as_alice).json()
            assert [(b["open"], b["close"], b["volume"], b["trades"]) for b in bars] == [
                (price, price, 100, 1)]
            book = http.get(f"/v1/market/{symbol}/book", headers=as_alice).json()
            assert book["asks"] == [{"price": price, "quantity": 100, "orders": 1}]
            assert book["last_price"] == price

            # alice's stream: her order's updates and her fill, never bob's
            seen += drain(alice_stream)
            assert all(m["data"]["account_id"] == str(alice) for m in seen)
            assert {m["kind"] for m in seen} == {"order", "fill"}

            # bob cancels what is left; a position past the log's head is refused
            r = http.delete(f"/v1/orders/{bob_order}", headers=as_bob)
            assert r.status_code == 202, r.text
            assert server.runtime.wait_idle(10)
            bob_orders = http.get("/v1/orders", params={"min_position": server.stored_events()},
                                  headers=as_bob).json()["items"]
            assert [(o["status"], o["filled_quantity"]) for o in bob_orders] == [
                ("cancelled", 100)]
            ahead = http.get("/v1/orders", params={"min_position": 10**9}, headers=as_bob)
            assert ahead.status_code == 422 and ahead.json()["field"] == "min_position"
            metrics = http.get("/metrics").text
            assert 'tradecore_http_requests_total{method="POST",route="/v1/orders"' in metrics

    # a restart on the same files: state is where it was, the projector resumes
    with live_server(tmp_path) as again_server, again_server.client() as http:
        as_alice = again_server.auth(Role.trader, [alice])
        positions = http.get(f"/v1/accounts/{alice}/positions", headers=as_alice).json()
        assert [(p["symbol"], p["quantity"]) for p in positions] == [(symbol, 100)]
        ready = http.get("/readyz").json()
        assert ready["status"] == "ready"
        assert {p["behind"] for p in ready["projections"]} == {0}


def test_bad_orders_store_nothing(tmp_path: Path) -> None:
    with live_server(tmp_path) as server, server.client() as http:
        universe = server.runtime.app.universe
        symbol = universe.symbols[0]
        price = universe.get(symbol).base_price
        alice = open_funded(server, "alice")
        as_alice = server.auth(Role.trader, [alice])
        before = server.stored_events()
        cases = [
            ({"quantity": "100"}, "quantity"),
            ({"quantity": 0}, "quantity"),
            ({"quantity": 150}, "quantity"),  # not a lot multiple: a domain rule
            ({"price": -1}, "price"),
            ({"price": price + 1}, "price"),  # off the tick grid
            ({"side": "short"}, "side"),
            ({"tif": "forever"}, "tif"),
            ({"symbol": "ZZZZ"}, "symbol"),
            ({"quantity": 10**12}, "quantity"),
            ({"extra": 1}, "extra"),
            ({"client_order_id": None}, "client_order_id"),
        ]
        for change, field in cases:
            body = order(alice, symbol, "buy", 100, price, client_order_id="x-1") | change
            if body.get("client_order_id") is None:
                body.pop("client_order_id")
            r = http.post("/v1/orders", json=body, headers=as_alice)
            assert 400 <= r.status_code < 500, (change, r.text)
            problem = r.json()
            assert r.headers["content-type"].startswith("application/problem+json")
            assert problem["field"] == field, (change, problem)
            assert problem["rule"]
        raw = http.post("/v1/orders", content=b'{"account_id": NaN', headers={
            **as_alice, "content-type": "application/json"})
        assert raw.status_code == 422 and raw.json()["field"] == "body"
        big = http.post("/v1/orders", content=b"{" + b" " * 70_000 + b"}", headers={
            **as_alice, "content-type": "application/json"})
        assert big.status_code == 413
        unknown = http.post("/v1/orders", json=order(UUID(int=7), symbol, "buy", 100, price,
                                                     client_order_id="x-2"),
                            headers=server.auth(Role.trader, [UUID(int=7)]))
        assert unknown.status_code == 404 and unknown.json()["field"] == "account_id"
        broke = http.post("/v1/orders", json=order(alice, symbol, "buy", 100_000, price,
                                                   client_order_id="x-3"), headers=as_alice)
        assert broke.status_code == 422 and broke.json()["title"] == "Risk rejection"
        assert server.stored_events() == before


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10", 10**14, None])
def test_bad_cash_amounts_are_refused(tmp_path: Path, amount: Any) -> None:
    with live_server(tmp_path) as server, server.client() as http:
        alice = open_funded(server, "alice")
        before = server.stored_events()
        r = http.post(f"/v1/accounts/{alice}/withdrawals", json={"amount": amount},
                      headers=server.auth(Role.admin))
        assert r.status_code == 422 and r.json()["field"] == "amount"
        assert server.stored_events() == before


@pytest.mark.postgres
def test_the_distributed_stores_serve_the_same_flow(tmp_path: Path) -> None:
    """PostgreSQL event store and TimescaleDB read models behind the same routes."""
    import uuid

    import psycopg

    from infra.services import ensure_timescaledb

    url = ensure_timescaledb()
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    with live_server(tmp_path, persistence="postgres", postgres_schema=schema,
                     readmodel_schema=f"{schema}_rm") as server, server.client() as http:
        assert server.runtime.projector.store.timescale
        universe = server.runtime.app.universe
        symbol = universe.symbols[0]
        price = universe.get(symbol).base_price
        alice, bob = open_funded(server, "alice"), open_funded(server, "bob", allow_short=True)
        http.post("/v1/orders", json=order(bob, symbol, "sell", 100, price, client_order_id="s"),
                  headers=server.auth(Role.trader, [bob]))
        placed = http.post("/v1/orders", json=order(alice, symbol, "buy", 100, price,
                                                    client_order_id="b"),
                           headers=server.auth(Role.trader, [alice])).json()
        assert placed["status"] == "placed"
        assert server.runtime.wait_idle(15)
        pnl = http.get(f"/v1/accounts/{alice}/pnl",
                       params={"min_position": server.stored_events(), "bucket": "1m"},
                       headers=server.auth(Role.viewer, [alice])).json()
        assert pnl and pnl[-1]["fees"] > 0
        bars = http.get(f"/v1/market/{symbol}/bars", params={"bucket": "5m"},
                        headers=server.auth(Role.viewer, [alice])).json()
        assert [(b["volume"], b["trades"]) for b in bars] == [(100, 1)]


def test_a_retired_key_stops_a_token_already_used(tmp_path: Path) -> None:
    """Verified tokens are remembered, but never past a change of the key file."""
    from api.security import KeyRing

    with live_server(tmp_path) as server, server.client() as http:
        admin = server.auth(Role.admin)
        assert http.get("/v1/orders", headers=admin).status_code == 200
        assert http.get("/v1/orders", headers=admin).status_code == 200  # from the cache
        operator = KeyRing.load_or_create(server.settings.jwt_keys_path)  # another process
        old = operator.active_kid
        operator.rotate()
        assert http.get("/v1/orders", headers=admin).status_code == 200  # old key still valid
        operator.retire(old)
        refused = http.get("/v1/orders", headers=admin)
        assert refused.status_code == 401
        assert "retired" in refused.json()["detail"]
        assert http.get("/v1/orders", headers=server.auth(Role.admin)).status_code == 200
