"""A huge integer is refused naming its field and the real rule (issue 10, item 5).

A 5,000-digit integer used to fail inside Python's int conversion and be answered
"400, JSON text in UTF-8": neither the field nor the rule it broke. Control characters
and far-away session dates are in the contract table (``test_openapi_contract``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.problems import MEDIA_TYPE
from api.security import Role
from tests.api.server import LiveServer, live_server

HUGE = "9" * 5000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with live_server(tmp_path_factory.mktemp("input-rules")) as server, server.client() as http:
        admin = server.auth(Role.admin)
        opened = http.post("/v1/accounts", headers=admin, json={"name": "a", "owner": "a"})
        assert opened.status_code == 201, opened.text
        account = opened.json()["account_id"]
        assert (
            http.post(
                f"/v1/accounts/{account}/deposits", headers=admin, json={"amount": 10**9}
            ).status_code
            == 201
        )
        symbol = server.runtime.app.universe.symbols[0]
        price = server.runtime.app.universe.get(symbol).base_price
        placed = http.post(
            "/v1/orders",
            headers=admin,
            json={
                "account_id": account,
                "client_order_id": "resting",
                "symbol": symbol,
                "side": "buy",
                "quantity": 100,
                "price": price,
                "tif": "gtc",
            },
        )
        assert placed.status_code == 201, placed.text
        yield {
            "server": server,
            "http": http,
            "admin": admin,
            "account": account,
            "order": placed.json()["order_id"],
            "symbol": symbol,
        }


def _send(world: dict[str, Any], method: str, path: str, body: str) -> httpx.Response:
    server: LiveServer = world["server"]
    assert server.runtime.wait_idle(15)
    before = server.stored_events()
    response: httpx.Response = world["http"].request(
        method,
        path,
        content=body.encode(),
        headers={**world["admin"], "Content-Type": "application/json"},
    )
    assert server.stored_events() == before, "a refused command stored events"
    return response


@pytest.mark.parametrize(
    ("case", "field", "rule", "value"),
    [
        (
            "deposit",
            "amount",
            "Input should be less than or equal to 10000000000000",
            "<5000-digit integer>",
        ),
        (
            "order",
            "quantity",
            "Input should be less than or equal to 1000000000",
            "<5000-digit integer>",
        ),
        ("amend", "price", "Input should be greater than 0", "<negative 5000-digit integer>"),
    ],
)
def test_a_5000_digit_integer_breaks_its_fields_range(
    world: dict[str, Any], case: str, field: str, rule: str, value: str
) -> None:
    account, symbol = world["account"], world["symbol"]
    method, path, body = {
        "deposit": ("POST", f"/v1/accounts/{account}/deposits", f'{{"amount": {HUGE}}}'),
        "order": (
            "POST",
            "/v1/orders",
            f'{{"account_id": "{account}", "client_order_id": "huge", "symbol": '
            f'"{symbol}", "side": "buy", "quantity": {HUGE}, "price": 1000}}',
        ),
        "amend": (
            "PATCH",
            f"/v1/orders/{world['order']}",
            f'{{"quantity": 100, "price": -{HUGE}}}',
        ),
    }[case]
    response = _send(world, method, path, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    problem = response.json()
    assert (problem["field"], problem["rule"], problem["value"]) == (field, rule, value)
    assert "UTF-8" not in response.text


def test_long_but_ordinary_integers_are_still_read_exactly(world: dict[str, Any]) -> None:
    """Twenty digits is already beyond every bound; nineteen and fewer are plain ints."""
    response = _send(
        world,
        "POST",
        f"/v1/accounts/{world['account']}/deposits",
        '{"amount": 1000000000000000000}',
    )
    assert response.status_code == 422
    assert response.json()["value"] == 10**18
