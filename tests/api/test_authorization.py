"""Who may call what: every route against every kind of caller, through a real server.

The matrix is built from a table with one entry per route, and the table is checked
against the routes the app actually serves, so a route added without an entry here
fails :func:`test_every_route_has_an_authorisation_case`. Each route is called with:

* no token, an expired token, a forged token (claims edited to ``admin`` after
  signing), a token with a damaged signature, a token signed by a key the server never
  issued and an ``alg: none`` token: 401 problem+json with a ``Bearer`` challenge;
* each role that lacks the right: 403 problem+json naming the field and the rule;
* a trader and a viewer whose tokens cover a *different* account (account-scoped
  routes): 403 naming ``account_id`` where the account is a filter or the body's, and
  404 where the route takes the order or account id in its path, with exactly the body
  an unknown id gets (ids derive from names: anything else is an existence oracle);
* the roles that have the right: 2xx.

A refused call must change nothing: the event store's last notification id, the read
models and the live books are compared before and after each refusal.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from aggregates.base import Meta
from api.problems import MEDIA_TYPE
from api.security import KeyRing, Role, issue_token
from tests.api.server import LiveServer, live_server

PUBLIC = {
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/metrics"): "Prometheus scrape",
    ("GET", "/openapi.json"): "the contract itself",
    ("GET", "/docs"): "Swagger UI",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI's OAuth2 redirect page",
    ("GET", "/redoc"): "ReDoc",
    ("GET", "/"): "the desk console's page (it signs in through the API)",
    ("POST", "/v1/session"): "where a person gets a token (tests/api/test_users.py)",
}
"""Routes that answer anyone, on purpose (probes, metrics, documentation, sign-in)."""

STREAM = "/v1/stream"
SEE = (403, "account_id", "caller may see this account")
TRADE = (403, "account_id", "caller may trade this account")
NO_ORDER = (404, "order_id", "exists")
NO_ACCOUNT = (404, "account_id", "exists")
ADMIN_ONLY = ("role", "one of admin")
RISK_OR_ADMIN = ("role", "one of risk, admin")
EVERYONE = (Role.trader, Role.viewer, Role.risk, Role.admin)
WAIT_S = 15.0


# ------------------------------------------------------------------------------ world


@dataclass
class World:
    """What the module seeds once: two accounts with a fill each and a resting order each."""

    server: LiveServer
    http: httpx.Client
    own: UUID  # the account the trader/viewer tokens in the matrix cover
    other: UUID  # someone else's
    own_order: UUID  # resting GTC buy on ``own``
    other_order: UUID  # resting GTC buy on ``other``
    traded: str  # symbol where own bought from other
    resting: str  # symbol of own's resting order
    spare: str  # symbol only the halt/resume cells touch
    price: dict[str, int]  # a valid limit price per symbol
    names: Iterator[int] = field(default_factory=itertools.count)

    def token(self, role: Role, account: UUID | None = None) -> str:
        desk_wide = role in (Role.risk, Role.admin)
        accounts = None if desk_wide else [account or self.own]
        return self.server.token(role, accounts, subject=f"{role}-{account or 'desk'}")

    def headers(self, role: Role, account: UUID | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, account)}"}

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self.names)}"

    def open_account(self) -> UUID:
        """A fresh account straight through the write model (set-up, not under test)."""
        app = self.server.runtime.app
        name = self.unique("fresh")
        account = app.open_account(name, owner=name, meta=Meta.command("test-setup"))
        app.deposit(account, 10**8, Meta.command("test-setup"))
        return account  # type: ignore[no-any-return]

    def place(self, account: UUID, symbol: str) -> UUID:
        placement = self.server.runtime.app.place_order(
            account, meta=Meta.command("test-setup"), client_order_id=self.unique("setup"),
            symbol=symbol, side="buy", quantity=100, price=self.price[symbol], tif="gtc")
        return placement.order_id  # type: ignore[no-any-return]

    def settle(self) -> None:
        """Wait until the read models hold everything stored so far."""
        runtime = self.server.runtime
        assert runtime.wait_idle(WAIT_S), "stages or projector stalled"

    def state(self) -> dict[str, Any]:
        """Everything a refused call must leave alone."""
        runtime = self.server.runtime
        rm = runtime.read_models()
        accounts = [self.own, self.other]
        return {
            "events": self.server.stored_events(),
            "orders": rm.orders(accounts=None, limit=1000).items,
            "fills": rm.fills(accounts=None, limit=1000).items,
            "balances": [rm.balance(str(a)) for a in accounts],
            "positions": [rm.positions(str(a)) for a in accounts],
            "ledgers": [rm.ledger(str(a), limit=1000).items for a in accounts],
            "books": [runtime.app.book(s, 50) for s in (self.traded, self.resting)],
            "halted": sorted(runtime.app.get_account(a).halted for a in accounts),
        }


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201, 202), response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("authorization")
    with (live_server(folder, rate_limit="100000/second", auth_failure_limit="100000/minute")
          as server, server.client() as http):
        universe = server.runtime.app.universe
        symbols = universe.symbols
        traded, resting, other_resting, spare = symbols[0], symbols[1], symbols[2], symbols[-1]
        price = {s: universe.get(s).base_price for s in (traded, resting, other_resting)}
        admin = server.auth(Role.admin)
        accounts = []
        for name in ("alice", "bob"):
            opened = _created(http.post("/v1/accounts", headers=admin, json={
                "name": name, "owner": name, "allow_short": True}))
            account = UUID(opened["account_id"])
            _created(http.post(f"/v1/accounts/{account}/deposits", headers=admin,
                               json={"amount": 10**9}))
            accounts.append(account)
        own, other = accounts

        def order(account: UUID, symbol: str, side: str, tif: str) -> UUID:
            return UUID(_created(http.post("/v1/orders", headers=admin, json={
                "account_id": str(account), "client_order_id": f"seed-{uuid4().hex[:8]}",
                "symbol": symbol, "side": side, "quantity": 100, "price": price[symbol],
                "tif": tif}))["order_id"])

        order(own, traded, "buy", "day")
        order(other, traded, "sell", "day")  # crosses: a fill on each account
        world = World(server, http, own, other, order(own, resting, "buy", "gtc"),
                      order(other, other_resting, "buy", "gtc"), traded, resting, spare, price)
        world.settle()
        assert len(world.state()["fills"]) == 2, "seed trade did not fill"
        yield world


# ------------------------------------------------------------------------------ table


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class RouteCase:
    """How to call one route, who may, and what a refusal names."""

    call: Callable[[World], Call]
    """A valid request aimed at the ``own`` account's things (refusals use it)."""
    allowed: tuple[Role, ...]
    """Roles (with a token covering ``own``) that get 2xx."""
    refusal: tuple[str, str] | None = None
    """(field, rule) of the 403 for every other role; None when every role may."""
    foreign: tuple[int, str, str] | None = None
    """(status, field, rule) of the refusal for trader/viewer tokens covering another
    account only; None for routes that are not about one account."""
    fresh: Callable[[World], Call] | None = None
    """For the 2xx cells: a request on a fresh target (when the call consumes it)."""


def _open_call(w: World) -> Call:
    name = w.unique("acct")
    return Call("POST", "/v1/accounts", {"name": name, "owner": name})


def _order_body(w: World, account: UUID) -> dict[str, Any]:
    return {"account_id": str(account), "client_order_id": w.unique("cli"),
            "symbol": w.resting, "side": "buy", "quantity": 100, "price": w.price[w.resting]}


def _halted_account(w: World) -> UUID:
    account = w.open_account()
    w.server.runtime.app.halt_account(account, "set-up", Meta.command("test-setup"))
    return account


def _halted_symbol(w: World) -> str:
    w.server.runtime.app.halt_symbol(w.spare, "set-up", Meta.command("test-setup"))
    return w.spare


ROUTES: dict[tuple[str, str], RouteCase] = {
    ("POST", "/v1/accounts"): RouteCase(
        _open_call, (Role.admin,), ADMIN_ONLY),
    ("POST", "/v1/accounts/{account_id}/deposits"): RouteCase(
        lambda w: Call("POST", f"/v1/accounts/{w.own}/deposits", {"amount": 1000}),
        (Role.admin,), ADMIN_ONLY, (403, *ADMIN_ONLY)),
    ("POST", "/v1/accounts/{account_id}/withdrawals"): RouteCase(
        lambda w: Call("POST", f"/v1/accounts/{w.own}/withdrawals", {"amount": 1000}),
        (Role.admin,), ADMIN_ONLY, (403, *ADMIN_ONLY)),
    ("POST", "/v1/accounts/{account_id}/halt"): RouteCase(
        lambda w: Call("POST", f"/v1/accounts/{w.own}/halt", {"reason": "risk check"}),
        (Role.risk, Role.admin), RISK_OR_ADMIN, (403, *RISK_OR_ADMIN),
        fresh=lambda w: Call("POST", f"/v1/accounts/{w.open_account()}/halt",
                             {"reason": "risk check"})),
    ("POST", "/v1/accounts/{account_id}/resume"): RouteCase(
        lambda w: Call("POST", f"/v1/accounts/{w.own}/resume"),
        (Role.risk, Role.admin), RISK_OR_ADMIN, (403, *RISK_OR_ADMIN),
        fresh=lambda w: Call("POST", f"/v1/accounts/{_halted_account(w)}/resume")),
    ("POST", "/v1/symbols/{symbol}/halt"): RouteCase(
        lambda w: Call("POST", f"/v1/symbols/{w.resting}/halt", {"reason": "news pending"}),
        (Role.risk, Role.admin), RISK_OR_ADMIN,
        fresh=lambda w: Call("POST", f"/v1/symbols/{w.spare}/halt", {"reason": "news"})),
    ("POST", "/v1/symbols/{symbol}/resume"): RouteCase(
        lambda w: Call("POST", f"/v1/symbols/{w.resting}/resume"),
        (Role.risk, Role.admin), RISK_OR_ADMIN,
        fresh=lambda w: Call("POST", f"/v1/symbols/{_halted_symbol(w)}/resume")),
    ("POST", "/v1/session/close"): RouteCase(
        lambda w: Call("POST", "/v1/session/close",
                       {"session_date": date.today().isoformat()}),
        (Role.risk, Role.admin), RISK_OR_ADMIN),
    ("POST", "/v1/orders"): RouteCase(
        lambda w: Call("POST", "/v1/orders", _order_body(w, w.own)),
        (Role.trader, Role.admin), TRADE[1:], TRADE),
    ("PATCH", "/v1/orders/{order_id}"): RouteCase(
        lambda w: Call("PATCH", f"/v1/orders/{w.own_order}",
                       {"quantity": 200, "price": w.price[w.resting]}),
        (Role.trader, Role.admin), TRADE[1:], NO_ORDER,
        fresh=lambda w: Call("PATCH", f"/v1/orders/{w.place(w.own, w.resting)}",
                             {"quantity": 200, "price": w.price[w.resting]})),
    ("DELETE", "/v1/orders/{order_id}"): RouteCase(
        lambda w: Call("DELETE", f"/v1/orders/{w.own_order}"),
        (Role.trader, Role.admin), TRADE[1:], NO_ORDER,
        fresh=lambda w: Call("DELETE", f"/v1/orders/{w.place(w.own, w.resting)}")),
    ("GET", "/v1/orders"): RouteCase(
        lambda w: Call("GET", "/v1/orders", params={"account_id": str(w.own)}),
        EVERYONE, foreign=SEE),
    ("GET", "/v1/orders/{order_id}"): RouteCase(
        lambda w: Call("GET", f"/v1/orders/{w.own_order}"), EVERYONE, foreign=NO_ORDER),
    ("GET", "/v1/fills"): RouteCase(
        lambda w: Call("GET", "/v1/fills", params={"account_id": str(w.own)}),
        EVERYONE, foreign=SEE),
    ("GET", "/v1/accounts/{account_id}/positions"): RouteCase(
        lambda w: Call("GET", f"/v1/accounts/{w.own}/positions"), EVERYONE,
        foreign=NO_ACCOUNT),
    ("GET", "/v1/accounts/{account_id}/balance"): RouteCase(
        lambda w: Call("GET", f"/v1/accounts/{w.own}/balance"), EVERYONE,
        foreign=NO_ACCOUNT),
    ("GET", "/v1/accounts/{account_id}/ledger"): RouteCase(
        lambda w: Call("GET", f"/v1/accounts/{w.own}/ledger"), EVERYONE,
        foreign=NO_ACCOUNT),
    ("GET", "/v1/accounts/{account_id}/pnl"): RouteCase(
        lambda w: Call("GET", f"/v1/accounts/{w.own}/pnl", params={"bucket": "1d"}),
        EVERYONE, foreign=NO_ACCOUNT),
    ("GET", "/v1/accounts"): RouteCase(lambda w: Call("GET", "/v1/accounts"), EVERYONE),
    ("GET", "/v1/instruments"): RouteCase(lambda w: Call("GET", "/v1/instruments"), EVERYONE),
    ("GET", "/v1/halts"): RouteCase(lambda w: Call("GET", "/v1/halts"), EVERYONE),
    ("GET", "/v1/instruments/{symbol}"): RouteCase(
        lambda w: Call("GET", f"/v1/instruments/{w.traded}"), EVERYONE),
    ("GET", "/v1/market/{symbol}/bars"): RouteCase(
        lambda w: Call("GET", f"/v1/market/{w.traded}/bars"), EVERYONE),
    ("GET", "/v1/market/{symbol}/book"): RouteCase(
        lambda w: Call("GET", f"/v1/market/{w.resting}/book"), EVERYONE),
    ("GET", "/v1/audit/{aggregate_id}"): RouteCase(
        lambda w: Call("GET", f"/v1/audit/{w.own_order}"), (Role.trader, Role.risk, Role.admin),
        ("role", "one of trader, risk, admin"), (404, "aggregate_id", "exists")),
}


def _route_id(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}"


# ------------------------------------------------------------------------------ tokens


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(text: str, at: int) -> str:
    swapped = "A" if text[at] != "A" else "B"
    return text[:at] + swapped + text[at + 1:]


def _expired(w: World) -> str:
    s = w.server.settings
    return issue_token(w.server.keyring, subject="late", role=Role.admin, accounts=None,
                       ttl_s=60, issuer=s.jwt_issuer, audience=s.jwt_audience,
                       now=datetime.now(UTC) - timedelta(hours=1))


def _forged(w: World) -> str:
    """A viewer's token with its claims edited to admin-of-everything, signature kept."""
    header, payload, signature = w.token(Role.viewer).split(".")
    claims = json.loads(_unb64(payload))
    claims.update(role="admin", accounts="*")
    return ".".join((header, _b64(json.dumps(claims).encode()), signature))


def _bad_signature(w: World) -> str:
    header, payload, signature = w.token(Role.admin).split(".")
    # The middle of the signature: the last character may only carry padding bits.
    return ".".join((header, payload, _flip(signature, len(signature) // 2)))


def _foreign_key(w: World) -> str:
    s = w.server.settings
    ring = KeyRing.load_or_create(Path(w.server.settings.jwt_keys_path).with_name("rogue.json"))
    return issue_token(ring, subject="rogue", role=Role.admin, accounts=None, ttl_s=600,
                       issuer=s.jwt_issuer, audience=s.jwt_audience)


def _alg_none(w: World) -> str:
    good = jwt.decode(w.token(Role.admin), options={"verify_signature": False})
    kid = w.server.keyring.active_kid
    return jwt.encode(good, None, algorithm="none", headers={"kid": kid})


BAD_TOKENS: dict[str, tuple[Callable[[World], str | None], str]] = {
    "no-token": (lambda w: None, "missing bearer token"),
    "expired": (_expired, "token expired"),
    "forged-claims": (_forged, "invalid signature"),
    "damaged-signature": (_bad_signature, "invalid signature"),
    "unknown-key": (_foreign_key, "unknown key id"),
    "alg-none": (_alg_none, "algorithm not allowed"),
}
"""Each bad token and the reason the server must give for refusing it."""


# ------------------------------------------------------------------------------ helpers


def _send(w: World, call: Call, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return w.http.request(call.method, call.path, json=call.json, params=call.params,
                          headers=headers)


def _assert_problem(response: httpx.Response, status: int, field: str, rule: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(MEDIA_TYPE)
    body = response.json()
    assert body["status"] == status
    assert (body["field"], body["rule"]) == (field, rule), body


def _refused_without_effect(w: World, call: Call, token: str | None, status: int,
                            field: str, rule: str) -> httpx.Response:
    w.settle()
    before = w.state()
    response = _send(w, call, token)
    _assert_problem(response, status, field, rule)
    assert w.server.stored_events() == before["events"], "a refused call stored events"
    assert w.state() == before, "a refused call changed the read models or a book"
    return response


# ------------------------------------------------------------------------------ tests


def test_every_route_has_an_authorisation_case(world: World) -> None:
    served: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for context in iter_route_contexts(world.server.app.routes):
        assert context.path is not None
        if isinstance(context.original_route, APIWebSocketRoute):
            sockets.add(context.path)
            continue
        for method in context.methods or ():
            if method != "HEAD":
                served.add((method, context.path))
    assert served - set(PUBLIC) == set(ROUTES), "routes and the authorisation table differ"
    assert set(PUBLIC) <= served, "a route listed as public is no longer served"
    assert sockets == {STREAM}


@pytest.mark.parametrize("route", list(ROUTES), ids=_route_id)
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_call_without_a_valid_token_is_401_and_stores_nothing(
        world: World, route: tuple[str, str], kind: str) -> None:
    make, reason = BAD_TOKENS[kind]
    token = make(world)
    response = _refused_without_effect(world, ROUTES[route].call(world), token, 401,
                                       "authorization", "a valid bearer token")
    assert response.json()["detail"] == reason
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) == (token is not None)


def _role_cells() -> list[Any]:
    return [pytest.param(route, role, id=f"{_route_id(route)}-{role}")
            for route, case in ROUTES.items() for role in EVERYONE
            if role not in case.allowed]


@pytest.mark.parametrize(("route", "role"), _role_cells())
def test_a_role_without_the_right_gets_403_and_stores_nothing(
        world: World, route: tuple[str, str], role: Role) -> None:
    case = ROUTES[route]
    assert case.refusal is not None
    _refused_without_effect(world, case.call(world), world.token(role), 403, *case.refusal)


def _foreign_cells() -> list[Any]:
    return [pytest.param(route, role, id=f"{_route_id(route)}-{role}")
            for route, case in ROUTES.items() if case.foreign is not None
            for role in (Role.trader, Role.viewer)]


@pytest.mark.parametrize(("route", "role"), _foreign_cells())
def test_a_token_for_another_account_is_refused_and_stores_nothing(
        world: World, route: tuple[str, str], role: Role) -> None:
    case = ROUTES[route]
    assert case.foreign is not None
    _refused_without_effect(world, case.call(world), world.token(role, world.other),
                            *case.foreign)


def _id_cells() -> list[Any]:
    return [pytest.param(route, role, id=f"{_route_id(route)}-{role}")
            for route, case in ROUTES.items()
            if case.foreign is not None and case.foreign[0] == 404
            for role in (Role.trader, Role.viewer)]


@pytest.mark.parametrize(("route", "role"), _id_cells())
def test_another_accounts_id_and_an_unknown_id_get_the_same_answer(
        world: World, route: tuple[str, str], role: Role) -> None:
    """No existence oracle: the caller cannot tell someone else's order or account from
    one that does not exist (same status, same body but for the id it asked about)."""
    case = ROUTES[route]
    call = case.call(world)
    known = str(world.own_order if "{order_id}" in route[1] else world.own)
    unknown = str(uuid4())
    guess = Call(call.method, call.path.replace(known, unknown), call.json, call.params)
    token = world.token(role, world.other)
    theirs, nobodys = _send(world, call, token), _send(world, guess, token)
    assert theirs.status_code == nobodys.status_code == 404, (theirs.text, nobodys.text)
    assert theirs.headers["content-type"] == nobodys.headers["content-type"]
    assert theirs.json() == json.loads(nobodys.text.replace(unknown, known))


def _allowed_cells() -> list[Any]:
    return [pytest.param(route, role, id=f"{_route_id(route)}-{role}")
            for route, case in ROUTES.items() for role in case.allowed]


@pytest.mark.parametrize(("route", "role"), _allowed_cells())
def test_a_role_with_the_right_gets_2xx(world: World, route: tuple[str, str],
                                        role: Role) -> None:
    case = ROUTES[route]
    call = (case.fresh or case.call)(world)
    response = _send(world, call, world.token(role))
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["content-type"] == "application/json"


def test_lists_without_an_account_filter_show_only_the_callers_accounts(world: World) -> None:
    for role in (Role.trader, Role.viewer):
        for path in ("/v1/orders", "/v1/fills"):
            response = _send(world, Call("GET", path, params={"limit": "1000"}),
                             world.token(role, world.other))
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            assert items, f"{path} hid the caller's own rows"
            assert {item["account_id"] for item in items} == {str(world.other)}


def test_an_order_of_another_account_is_not_disclosed_by_its_id(world: World) -> None:
    """A refused look-up must not leak the order's terms in the problem body."""
    response = _send(world, Call("GET", f"/v1/orders/{world.own_order}"),
                     world.token(Role.trader, world.other))
    assert response.status_code == 404
    assert world.resting not in response.text
    assert "client_order_id" not in response.text


# ------------------------------------------------------------------------------ stream


def _ws_url(w: World, query: str = "") -> str:
    return w.server.base_url.replace("http://", "ws://") + STREAM + query


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_stream_without_a_valid_token_is_closed_with_4401(world: World, kind: str) -> None:
    """4401 (4000 + the HTTP status), as docs/security.md and docs/api.md say."""
    make, reason = BAD_TOKENS[kind]
    token = make(world)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with (connect(_ws_url(world), additional_headers=headers, open_timeout=WAIT_S) as ws,
          pytest.raises(ConnectionClosed) as closed):
        ws.recv(timeout=WAIT_S)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason == reason


def _updates_until(ws: Any, order_id: UUID) -> list[dict[str, Any]]:
    """Messages received up to and including the first one about ``order_id``."""
    seen: list[dict[str, Any]] = []
    while True:
        message = json.loads(ws.recv(timeout=WAIT_S))
        seen.append(message)
        if message["data"].get("order_id") == str(order_id):
            return seen


@pytest.mark.parametrize("via", ["header", "query"])
def test_stream_sends_a_trader_only_its_own_accounts_updates(world: World, via: str) -> None:
    token = world.token(Role.trader, world.own)
    headers = {"Authorization": f"Bearer {token}"} if via == "header" else {}
    query = f"?token={token}" if via == "query" else ""
    admin = world.headers(Role.admin)
    with connect(_ws_url(world, query), additional_headers=headers,
                 open_timeout=WAIT_S) as ws:
        theirs = world.http.post("/v1/orders", headers=admin,
                                 json=_order_body(world, world.other))
        mine = world.http.post("/v1/orders", headers=admin, json=_order_body(world, world.own))
        assert theirs.status_code == mine.status_code == 201
        # The other account's order was stored (and projected) first, so had it leaked
        # it would have arrived before the trader's own.
        seen = _updates_until(ws, UUID(mine.json()["order_id"]))
    assert {m["data"]["account_id"] for m in seen} == {str(world.own)}
    assert str(theirs.json()["order_id"]) not in json.dumps(seen)
