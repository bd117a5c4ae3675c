"""A WebSocket never outlives its token (issue 10, item 1).

A ``/v1/stream`` opened with a 3-second token kept receiving order and fill messages
after the token expired, and one signed with a key that was then retired kept streaming
12 s later. Now the socket is closed with 4401 and the reason, within about a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.security import KeyRing, Role
from tests.api.server import LiveServer, live_server

WAIT_S = 15.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("stream-tokens")) as server:
        yield server


@pytest.fixture(scope="module")
def account(server: LiveServer) -> UUID:
    with server.client() as http:
        admin = server.auth(Role.admin)
        opened = http.post("/v1/accounts", headers=admin, json={"name": "alice", "owner": "alice"})
        assert opened.status_code == 201, opened.text
        account = UUID(opened.json()["account_id"])
        deposit = http.post(
            f"/v1/accounts/{account}/deposits", headers=admin, json={"amount": 10**9}
        )
        assert deposit.status_code == 201, deposit.text
    return account


def _place(server: LiveServer, account: UUID, client_order_id: str) -> str:
    universe = server.runtime.app.universe
    symbol = universe.symbols[0]
    with server.client() as http:
        placed = http.post(
            "/v1/orders",
            headers=server.auth(Role.admin),
            json={
                "account_id": str(account),
                "client_order_id": client_order_id,
                "symbol": symbol,
                "side": "buy",
                "quantity": 100,
                "tif": "gtc",
                "price": universe.get(symbol).base_price,
            },
        )
    assert placed.status_code == 201, placed.text
    return str(placed.json()["order_id"])


def _stream(server: LiveServer, token: str) -> ClientConnection:
    url = server.base_url.replace("http://", "ws://") + "/v1/stream"
    return connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=WAIT_S
    )


def _until_about(ws: ClientConnection, order_id: str) -> dict[str, Any]:
    """The first message about ``order_id`` (orders of earlier tests may still be
    settling through the stages, and their updates arrive on the same account)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if message["data"].get("order_id") == order_id:
            return message  # type: ignore[no-any-return]


def _messages_until_closed(ws: ClientConnection, timeout: float) -> tuple[list[Any], Any]:
    """Every message until the server closes the socket, and the close frame."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"still open after {timeout} s; received {seen}")
            seen.append(json.loads(ws.recv(timeout=left)))
    return seen, closed.value.rcvd


def test_a_socket_is_closed_when_its_token_expires(server: LiveServer, account: UUID) -> None:
    token = server.token(Role.trader, [account], subject="alice", ttl_s=3)
    expires = time.time() + 3
    with _stream(server, token) as ws:
        live = _place(server, account, "before-expiry")
        assert _until_about(ws, live)  # the socket works while the token does
        time.sleep(max(expires - time.time(), 0) + 0.2)
        late = _place(server, account, "after-expiry")
        seen, frame = _messages_until_closed(ws, 2.5)
    assert frame is not None
    assert (frame.code, frame.reason) == (4401, "token expired")
    assert late not in json.dumps(seen), "an update reached the socket after its token expired"


def test_a_socket_is_closed_when_its_key_is_retired(
    server: LiveServer, account: UUID, tmp_path: Path
) -> None:
    token = server.token(Role.trader, [account], subject="alice", ttl_s=600)
    old_kid = server.keyring.active_kid
    with _stream(server, token) as ws:
        live = _place(server, account, "before-retirement")
        assert _until_about(ws, live)
        operator = KeyRing.load_or_create(server.settings.jwt_keys_path)  # another process
        operator.rotate()
        operator.retire(old_kid)
        retired = time.monotonic()
        late = _place(server, account, "after-retirement")
        seen, frame = _messages_until_closed(ws, 3.0)
    assert time.monotonic() - retired < 3.0
    assert frame is not None
    assert (frame.code, frame.reason) == (4401, "signing key retired")
    assert late not in json.dumps(seen)


def test_a_quiet_socket_is_closed_too(server: LiveServer, account: UUID) -> None:
    """No message has to be sent for the check to happen."""
    token = server.token(Role.trader, [account], subject="alice", ttl_s=2)
    with _stream(server, token) as ws:
        started = time.monotonic()
        _, frame = _messages_until_closed(ws, 4.0)
    assert frame is not None and frame.code == 4401
    assert time.monotonic() - started < 3.5
