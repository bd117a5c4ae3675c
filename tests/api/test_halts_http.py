"""What is halted, through real HTTP (uvicorn, the write model, the projector).

A risk officer halts a symbol and two accounts; every role sees the symbol's halt with
its reason, time and who halted it, a trader sees only the halts of accounts the token
covers, balances say ``halted``, and resuming takes each off the list.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from api.security import Role
from tests.api.server import live_server
from tests.api.test_http_end_to_end import open_funded


def test_halts_are_listed_for_every_role_scoped_to_the_callers_accounts(
        tmp_path: Path) -> None:
    with live_server(tmp_path) as server, server.client() as http:
        symbol = server.runtime.app.universe.symbols[0]
        alice, bob = open_funded(server, "alice"), open_funded(server, "bob")
        carol = open_funded(server, "carol")  # never halted
        risk = server.auth(Role.risk)
        started = datetime.now(UTC) - timedelta(seconds=1)
        for path, reason in ((f"/v1/symbols/{symbol}/halt", "news pending"),
                             (f"/v1/accounts/{alice}/halt", "margin call"),
                             (f"/v1/accounts/{bob}/halt", "limit breach")):
            r = http.post(path, json={"reason": reason}, headers=risk)
            assert r.status_code == 202, r.text
        last = r.json()["position"]

        as_risk = http.get("/v1/halts", params={"min_position": last}, headers=risk)
        assert as_risk.status_code == 200, as_risk.text
        body = as_risk.json()
        assert [(h["symbol"], h["reason"], h["principal"]) for h in body["symbols"]] == [
            (symbol, "news pending", "risk-user")]
        assert datetime.fromisoformat(body["symbols"][0]["halted_at"]) >= started
        assert [(h["name"], h["reason"]) for h in body["accounts"]] == [
            ("bob", "limit breach"), ("alice", "margin call")]  # newest first

        as_alice = http.get("/v1/halts", headers=server.auth(Role.trader, [alice])).json()
        assert [h["symbol"] for h in as_alice["symbols"]] == [symbol]
        assert [h["account_id"] for h in as_alice["accounts"]] == [str(alice)]
        as_viewer = http.get("/v1/halts", headers=server.auth(Role.viewer, [carol])).json()
        assert [h["symbol"] for h in as_viewer["symbols"]] == [symbol]
        assert as_viewer["accounts"] == []
        balance = http.get(f"/v1/accounts/{alice}/balance",
                           headers=server.auth(Role.trader, [alice])).json()
        assert balance["halted"] is True

        # the write side still refuses: carol in the halted symbol, bob (halted) at all
        price = server.runtime.app.universe.get(symbol).base_price
        for who, field in ((carol, "symbol"), (bob, "account_id")):
            refused = http.post("/v1/orders", headers=server.auth(Role.trader, [who]), json={
                "account_id": str(who), "symbol": symbol, "side": "buy", "quantity": 100,
                "price": price, "client_order_id": f"h-{field}"})
            assert refused.status_code == 422 and refused.json()["field"] == field, refused.text

        for path in (f"/v1/symbols/{symbol}/resume", f"/v1/accounts/{alice}/resume"):
            r = http.post(path, headers=risk)
            assert r.status_code == 202, r.text
        after = http.get("/v1/halts", params={"min_position": r.json()["position"]},
                         headers=risk).json()
        assert after["symbols"] == []
        assert [h["name"] for h in after["accounts"]] == ["bob"]
        assert http.get(f"/v1/accounts/{alice}/balance",
                        headers=risk).json()["halted"] is False
        assert http.get("/v1/halts").status_code == 401
