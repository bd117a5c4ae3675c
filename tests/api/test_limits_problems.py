"""Problem+json, auth failures, rate and size limits, through a real uvicorn server.

A tiny FastAPI app is wired exactly as the production app wires these pieces
(authenticator -> rate_limited dependency, BodySizeLimit middleware, problem handlers)
and served by uvicorn on a free port, so headers, chunked bodies and status codes are
what a real client sees.
"""

# Annotations are evaluated eagerly (no ``from __future__ import annotations``) so the
# route signatures can name the dependencies built inside ``build_app``.

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, WebSocket
from pydantic import BaseModel
from starlette.types import Message
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from aggregates.errors import Conflict, IllegalTransition, NotFound, RiskRejection, RuleViolation
from aggregates.ids import account_id
from api.limits import BodySizeLimit, RateLimiter, rate_limited
from api.problems import (
    MEDIA_TYPE,
    PROBLEM_RESPONSES,
    install_problem_handlers,
    json_safe,
    problem_response,
)
from api.security import (
    KeyRing,
    Principal,
    Role,
    authenticator,
    issue_token,
    require_role,
    require_trade,
)

ISS = "tradecore-test"
AUD = "tradecore-api-test"
MAX_BYTES = 1024
BURST = 3
OWN = account_id("alice")
OTHER = account_id("bob")


class OrderIn(BaseModel):
    account_id: UUID
    symbol: str
    quantity: int


def build_app(keyring: KeyRing) -> FastAPI:
    authenticate = authenticator(keyring, ISS, AUD)
    caller = rate_limited(authenticate, RateLimiter("10000/minute"))
    scarce = rate_limited(authenticate, RateLimiter(f"{BURST}/minute"))
    Caller = Annotated[Principal, Depends(caller)]

    app = FastAPI(title="problems-test")
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BYTES)

    @app.post("/orders", responses=PROBLEM_RESPONSES)
    async def place(order: OrderIn, principal: Caller) -> dict[str, Any]:
        require_trade(principal, order.account_id)
        match order.symbol:
            case "GONE":
                raise NotFound("symbol", "a listed symbol", order.symbol)
            case "DUP":
                raise Conflict("client_order_id", "unique per account", "c-1")
            case "FILLED":
                raise IllegalTransition("order", "filled", "cancel")
            case "RICH":
                raise RiskRejection("notional", "at most the free cash", order.quantity * 2500)
            case "NAN":
                raise RuleViolation("price", "a finite number", float("nan"))
        if order.quantity % 100:
            raise RuleViolation("quantity", "multiple of the lot size 100", order.quantity)
        return {"accepted": True, "by": principal.subject}

    @app.post("/halts/{symbol}", responses=PROBLEM_RESPONSES)
    async def halt(symbol: str, principal: Caller) -> dict[str, str]:
        require_role(principal, Role.risk, Role.admin)
        return {"halted": symbol}

    @app.get("/scarce", responses=PROBLEM_RESPONSES)
    async def scarce_route(principal: Annotated[Principal, Depends(scarce)]) -> dict[str, str]:
        return {"hello": principal.subject}

    @app.websocket("/stream")
    async def stream(websocket: WebSocket, principal: Caller) -> None:
        await websocket.accept()
        await websocket.send_json({"hello": principal.subject})
        account = UUID(await websocket.receive_text())
        require_trade(principal, account)  # refused -> closed with 4403
        await websocket.send_json({"ok": str(account)})

    @app.get("/boom")
    async def boom(principal: Caller) -> None:
        raise RuntimeError("secret-internal-detail in the database layer")

    return app


@dataclass
class Server:
    url: str
    keyring: KeyRing

    def token(self, role: Role = Role.trader, subject: str = "alice", **kw: Any) -> str:
        accounts = None if role in (Role.risk, Role.admin) else [OWN]
        args: dict[str, Any] = {"accounts": accounts, "ttl_s": 600, "issuer": ISS, "audience": AUD}
        args.update(kw)
        return issue_token(self.keyring, subject=subject, role=role, **args)

    def auth(self, role: Role = Role.trader, subject: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, subject)}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keyring = KeyRing.load_or_create(Path(tmp_path_factory.mktemp("keys")) / "jwt-keys.json")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(keyring), log_level="critical", lifespan="off", access_log=False
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if uv.started:
            break
        threading.Event().wait(0.01)
    assert uv.started, "uvicorn did not start"
    try:
        yield Server(f"http://127.0.0.1:{port}", keyring)
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://tradecore.dev/problems/")
    assert body["title"] and body["detail"]
    return body


def order(account: UUID = OWN, symbol: str = "7203", quantity: Any = 100) -> dict[str, Any]:
    return {"account_id": str(account), "symbol": symbol, "quantity": quantity}


# ----------------------------------------------------------------------------- 2xx


def test_accepted_request_carries_rate_limit_headers(server: Server, client: httpx.Client) -> None:
    response = client.post("/orders", json=order(), headers=server.auth())
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": True, "by": "alice"}
    assert response.headers["RateLimit-Limit"] == "10000"
    assert 0 <= int(response.headers["RateLimit-Remaining"]) < 10000
    assert 0 < int(response.headers["RateLimit-Reset"]) <= 60


# ----------------------------------------------------------------------------- 401 / 403


def test_missing_token_is_401_with_a_bearer_challenge(client: httpx.Client) -> None:
    body = problem(client.post("/orders", json=order()), 401)
    assert body["detail"] == "missing bearer token"
    assert body["field"] == "authorization"
    response = client.post("/orders", json=order())
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tradecore"'


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer not-a-token", "malformed token"),
        ("Basic YWxpY2U6c2VjcmV0", "authorization scheme must be Bearer with a token"),
    ],
)
def test_bad_credentials_are_401_invalid_token(
    client: httpx.Client, authorization: str, reason: str
) -> None:
    response = client.post("/orders", json=order(), headers={"Authorization": authorization})
    body = problem(response, 401)
    assert body["detail"] == reason
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{reason}"' in challenge


def test_expired_and_foreign_tokens_are_401(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    expired = server.token(ttl_s=60, now=datetime.now(UTC) - timedelta(hours=1))
    response = client.post("/orders", json=order(), headers={"Authorization": f"Bearer {expired}"})
    assert problem(response, 401)["detail"] == "token expired"
    assert 'error_description="token expired"' in response.headers["WWW-Authenticate"]

    stranger = KeyRing.load_or_create(tmp_path / "other.json")
    foreign = issue_token(
        stranger, subject="eve", role=Role.admin, accounts=None, ttl_s=60, issuer=ISS, audience=AUD
    )
    response = client.post("/orders", json=order(), headers={"Authorization": f"Bearer {foreign}"})
    assert problem(response, 401)["detail"] == "unknown key id"


def test_trading_another_account_is_403_naming_field_and_rule(
    server: Server, client: httpx.Client
) -> None:
    body = problem(client.post("/orders", json=order(OTHER), headers=server.auth()), 403)
    assert body["field"] == "account_id"
    assert body["rule"] == "caller may trade this account"
    assert body["value"] == str(OTHER)


def test_viewer_cannot_trade_and_trader_cannot_halt(server: Server, client: httpx.Client) -> None:
    body = problem(client.post("/orders", json=order(), headers=server.auth(Role.viewer)), 403)
    assert body["rule"] == "caller may trade this account"
    assert "viewer" in body["detail"]
    body = problem(client.post("/halts/7203", headers=server.auth(Role.trader)), 403)
    assert (body["field"], body["rule"], body["value"]) == ("role", "one of risk, admin", "trader")
    ok = client.post("/halts/7203", headers=server.auth(Role.risk))
    assert ok.status_code == 200 and ok.json() == {"halted": "7203"}


# ----------------------------------------------------------------------------- 422


def test_wrong_type_field_is_422_naming_the_field(server: Server, client: httpx.Client) -> None:
    response = client.post("/orders", json=order(quantity="lots"), headers=server.auth())
    body = problem(response, 422)
    assert body["field"] == "quantity"
    assert "integer" in body["rule"]
    assert body["value"] == "lots"
    assert [e["field"] for e in body["errors"]] == ["quantity"]


def test_every_invalid_field_is_listed(server: Server, client: httpx.Client) -> None:
    payload = {"account_id": "nope", "quantity": 1.5}
    body = problem(client.post("/orders", json=payload, headers=server.auth()), 422)
    assert {e["field"] for e in body["errors"]} == {"account_id", "symbol", "quantity"}
    assert body["field"] == body["errors"][0]["field"]
    assert "and 2 more" in body["detail"]


def test_malformed_json_is_422_on_the_body(server: Server, client: httpx.Client) -> None:
    headers = {**server.auth(), "Content-Type": "application/json"}
    body = problem(client.post("/orders", content=b'{"quantity": 1', headers=headers), 422)
    assert body["field"] == "body"
    assert body["rule"] == "valid JSON"


# ----------------------------------------------------------------------------- domain errors


@pytest.mark.parametrize(
    ("payload", "status", "title", "field", "rule"),
    [
        (order(symbol="GONE"), 404, "Not found", "symbol", "a listed symbol"),
        (order(symbol="DUP"), 409, "Conflict", "client_order_id", "unique per account"),
        (order(symbol="FILLED"), 409, "Illegal transition", "status", "legal transition"),
        (order(symbol="RICH"), 422, "Risk rejection", "notional", "at most the free cash"),
        (order(quantity=150), 422, "Rule violation", "quantity", "multiple of the lot size 100"),
    ],
)
def test_domain_errors_map_to_status_with_field_and_rule(
    server: Server,
    client: httpx.Client,
    payload: dict[str, Any],
    status: int,
    title: str,
    field: str,
    rule: str,
) -> None:
    body = problem(client.post("/orders", json=payload, headers=server.auth()), status)
    assert (body["title"], body["field"], body["rule"]) == (title, field, rule)
    assert body["type"] == "https://tradecore.dev/problems/" + title.lower().replace(" ", "-")


def test_unrepresentable_value_is_echoed_as_text(server: Server, client: httpx.Client) -> None:
    body = problem(client.post("/orders", json=order(symbol="NAN"), headers=server.auth()), 422)
    assert (body["field"], body["value"]) == ("price", "nan")


# ----------------------------------------------------------------------------- 404 / 405 / 500


def test_unknown_route_and_wrong_method_are_problems(client: httpx.Client) -> None:
    body = problem(client.get("/no/such/thing"), 404)
    assert (body["title"], body["field"]) == ("Not found", "path")
    response = client.get("/orders")
    body = problem(response, 405)
    assert body["title"] == "Method not allowed"
    assert body["field"] == "method" and body["value"] == "GET"
    assert response.headers["Allow"] == "POST"


def test_unexpected_exception_is_500_without_internals(
    server: Server, client: httpx.Client
) -> None:
    response = client.get("/boom", headers=server.auth())
    body = problem(response, 500)
    assert body["title"] == "Internal error"
    assert body["instance"].startswith("urn:uuid:")
    assert body["instance"] in body["detail"]
    assert "secret-internal-detail" not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text


# ----------------------------------------------------------------------------- 413


def test_declared_oversized_body_is_413(server: Server, client: httpx.Client) -> None:
    headers = {**server.auth(), "Content-Type": "application/json"}
    body = problem(client.post("/orders", content=b" " * (MAX_BYTES + 1), headers=headers), 413)
    assert body["field"] == "body"
    assert body["rule"] == f"at most {MAX_BYTES} bytes"
    assert body["value"] == MAX_BYTES + 1


def test_body_at_the_limit_is_read(server: Server, client: httpx.Client) -> None:
    payload = json.dumps(order(quantity=150)).encode()
    padded = payload + b" " * (MAX_BYTES - len(payload))
    headers = {**server.auth(), "Content-Type": "application/json"}
    body = problem(client.post("/orders", content=padded, headers=headers), 422)
    assert body["field"] == "quantity"  # reached the route: the size was fine


def test_chunked_body_growing_past_the_limit_is_413(server: Server, client: httpx.Client) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            sent.append(256)
            yield b" " * 256

    headers = {**server.auth(), "Content-Type": "application/json"}
    response = client.post("/orders", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    body = problem(response, 413)
    assert body["rule"] == f"at most {MAX_BYTES} bytes"
    assert MAX_BYTES < body["value"] <= sum(sent)


def test_small_chunked_body_passes(server: Server, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"account_id": "' + str(OWN).encode() + b'",'
        yield b' "symbol": "7203", "quantity": 200}'

    headers = {**server.auth(), "Content-Type": "application/json"}
    response = client.post("/orders", content=chunks(), headers=headers)
    assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- 429


def test_rate_limit_per_subject_then_429(server: Server, client: httpx.Client) -> None:
    headers = server.auth(subject="hasty")
    remaining = []
    for _ in range(BURST):
        response = client.get("/scarce", headers=headers)
        assert response.status_code == 200
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == [BURST - 1, BURST - 2, 0]

    response = client.get("/scarce", headers=headers)
    body = problem(response, 429)
    assert body["field"] == "sub" and body["value"] == "hasty"
    assert body["rule"] == f"at most {BURST}/minute"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["RateLimit-Limit"] == str(BURST)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert response.headers["RateLimit-Reset"] == response.headers["Retry-After"]

    # Another principal has its own budget.
    other = client.get("/scarce", headers=server.auth(subject="patient"))
    assert other.status_code == 200
    assert other.headers["RateLimit-Remaining"] == str(BURST - 1)


def test_unauthenticated_requests_do_not_spend_a_budget(client: httpx.Client) -> None:
    for _ in range(BURST + 2):
        problem(client.get("/scarce"), 401)


# ----------------------------------------------------------------------------- WebSocket


def test_websocket_without_token_is_denied_with_a_401_problem(server: Server) -> None:
    ws_url = server.url.replace("http://", "ws://") + "/stream"
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url, open_timeout=5)
    assert caught.value.response.status_code == 401
    body = json.loads(caught.value.response.body or b"{}")
    assert body["detail"] == "missing bearer token"


def test_websocket_refusal_after_accept_closes_with_4403(server: Server) -> None:
    ws_url = server.url.replace("http://", "ws://") + "/stream"
    with connect(ws_url, additional_headers=server.auth(), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"hello": "alice"}
        ws.send(str(OTHER))
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=5)
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 4403
    assert "does not cover account" in caught.value.rcvd.reason


# ----------------------------------------------------------------------------- OpenAPI


def test_openapi_documents_problem_bodies_and_bearer_scheme(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    problem_schema = spec["components"]["schemas"]["Problem"]
    assert set(problem_schema["required"]) == {"type", "title", "status", "detail"}
    post = spec["paths"]["/orders"]["post"]
    assert post["security"] == [{"bearer": []}]
    for status in ("400", "401", "403", "404", "409", "413", "422", "429"):
        content = post["responses"][status]["content"]
        assert list(content) == [MEDIA_TYPE]
        assert content[MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "Retry-After" in post["responses"]["429"]["headers"]


# ----------------------------------------------------------------------------- rotation


def test_running_server_accepts_a_key_rotated_by_another_process(
    server: Server, client: httpx.Client
) -> None:
    before = server.token()
    operator = KeyRing.load_or_create(server.keyring.path)  # as `tradecore auth rotate` does
    new_kid = operator.rotate()
    after = issue_token(
        operator,
        subject="alice",
        role=Role.trader,
        accounts=[OWN],
        ttl_s=60,
        issuer=ISS,
        audience=AUD,
    )
    for raw in (before, after):
        response = client.post("/orders", json=order(), headers={"Authorization": f"Bearer {raw}"})
        assert response.status_code == 200, response.text
    assert server.keyring.active_kid == new_kid


# ----------------------------------------------------------------------------- unit level


def test_body_size_limit_stops_reading_without_a_problem_handler() -> None:
    """Bare ASGI: the middleware answers itself and stops pulling chunks past the cap."""
    pulled: list[int] = []

    async def receive() -> Message:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 300, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the app should never see the whole body")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodySizeLimit(reader, max_bytes=1000)(scope, receive, send))
    assert len(pulled) == 4  # 1200 bytes > 1000: stopped at the first chunk over
    assert sent[0]["status"] == 413
    assert (b"content-type", MEDIA_TYPE.encode()) in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert (body["field"], body["rule"], body["value"]) == ("body", "at most 1000 bytes", 1200)


def test_problem_response_never_fails_on_odd_values() -> None:
    class Opaque:
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    odd = {
        "nan": float("nan"),
        "inf": float("-inf"),
        "bytes": b"\xff\xfeok",
        "nested": [{1: {2, 3}}, (Opaque(),)],
        "long": "x" * 5000,
    }
    response = problem_response(422, "Rule violation", "odd", field="f", rule="r", value=odd)
    body = json.loads(bytes(response.body))
    assert body["value"]["nan"] == "nan" and body["value"]["inf"] == "-inf"
    assert body["value"]["bytes"].endswith("ok")
    assert body["value"]["nested"][0] == {"1": [2, 3]}
    assert body["value"]["nested"][1][0].startswith("<")
    assert len(body["value"]["long"]) < 1100
    assert json_safe(UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
