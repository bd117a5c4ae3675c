"""``GET /v1/audit/{aggregate_id}`` through real HTTP: who may read which aggregate's
history (an aggregate of an account the token does not cover answers as an unknown id),
and bad points in time refused as problem+json naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

from aggregates import ids
from api.problems import MEDIA_TYPE
from api.security import Role
from tests.api.server import live_server
from tests.api.test_http_end_to_end import open_funded, order


def test_audit_over_http_by_role_and_point_in_time(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        universe = server.runtime.app.universe
        symbol = universe.symbols[0]
        price = universe.get(symbol).base_price
        alice = open_funded(server, "alice")
        bob = open_funded(server, "bob", allow_short=True)
        as_alice = server.auth(Role.trader, [alice])
        with server.client() as http:
            sell = order(bob, symbol, "sell", 100, price, client_order_id="b-1")
            r = http.post("/v1/orders", json=sell, headers=server.auth(Role.trader, [bob]))
            assert r.status_code in (200, 201, 202), r.text
            buy = order(alice, symbol, "buy", 100, price, client_order_id="a-1")
            r = http.post("/v1/orders", json=buy, headers=as_alice)
            assert r.status_code in (200, 201, 202), r.text
            alice_order = UUID(r.json()["order_id"])
            assert server.runtime.wait_idle(15)

            def get(aggregate: UUID, headers: dict[str, str], **params: object
                    ) -> tuple[int, dict[str, object], str]:
                resp = http.get(f"/v1/audit/{aggregate}", params=params, headers=headers)
                return resp.status_code, resp.json(), resp.headers["content-type"]

            for role in (Role.admin, Role.risk):
                status, body, _ = get(alice, server.auth(role))
                assert status == 200, body
                assert body["kind"] == "account" and body["version"] == body["last_version"]
            status, body, _ = get(alice, as_alice, version=2)
            assert status == 200 and body["version"] == 2, body
            assert body["state"]["cash"] == 50_000_000  # opened, then the deposit
            history = body["history"]
            assert isinstance(history, list) and history[0]["event"] == "Account.Opened"
            assert history[0]["principal"] and history[0]["timestamp"].endswith("Z")
            first_at = history[0]["timestamp"]
            status, body, _ = get(alice, as_alice, as_of=first_at)
            assert status == 200 and body["version"] == 1, body
            for own in (alice_order, ids.position_id(alice, symbol)):  # its order, position
                status, body, _ = get(own, as_alice)
                assert status == 200 and body["account_id"] == str(alice), body

            refused = [
                # another trader's account, or the desk-wide market: as if unknown
                (bob, as_alice, {}, 404, "aggregate_id"),
                (ids.MARKET_ID, as_alice, {}, 404, "aggregate_id"),
                (alice, server.auth(Role.viewer, [alice]), {}, 403, "role"),
                (ids.account_id("nobody"), server.auth(Role.admin), {}, 404,
                 "aggregate_id"),
                (alice, as_alice, {"as_of": "2026-11-20T09:00:00"}, 422, "as_of"),
                (alice, as_alice, {"as_of": "yesterday"}, 422, "as_of"),
                (alice, as_alice, {"as_of": "2000-01-01T00:00:00Z"}, 422, "as_of"),
                (alice, as_alice, {"as_of": first_at, "version": 1}, 422, "as_of"),
                (alice, as_alice, {"version": 99}, 422, "version"),
                (alice, as_alice, {"version": 0}, 422, "version"),
            ]
            for aggregate, headers, params, expected, field in refused:
                status, body, media = get(aggregate, headers, **params)
                assert status == expected, (aggregate, params, body)
                assert media.startswith(MEDIA_TYPE), media
                named = str(body.get("field") or body)
                assert field in named, (params, body)
            # no existence oracle: bob's id and an unknown one answer alike, but for the id
            nobody = str(ids.account_id("nobody"))
            theirs = http.get(f"/v1/audit/{bob}", headers=as_alice)
            nobodys = http.get(f"/v1/audit/{nobody}", headers=as_alice)
            assert theirs.status_code == nobodys.status_code == 404
            assert theirs.json() == json.loads(nobodys.text.replace(nobody, str(bob)))
            resp = http.get("/v1/audit/not-a-uuid", headers=server.auth(Role.admin))
            assert resp.status_code == 422 and "aggregate_id" in resp.text
