"""The HTTP API keeps the contract its own OpenAPI document states, under generated input.

Schemathesis (``schema.parametrize()``: one test per operation) generates requests from
the app's OpenAPI document and sends them as real HTTP to a live uvicorn server: its
coverage phase walks every operation's boundaries deterministically (each enum value,
missing and extra fields, wrong types, out-of-range numbers, absent auth), then its
fuzzing phase draws valid (positive) and invalid (negative) cases. Every response must
be documented (status, content type, headers, body schema) and never a 5xx, and invalid
input must be refused. On top of Schemathesis' checks:

* a refused call (any 4xx) stores no event, and its problem+json names a field and rule;
* each operation must actually have been called, with the token accepted at least once;
* the document tested is the one the server serves (``/openapi.json``);
* the run is repeated (fuzzing only) with a trader token, whose calls are mostly 403;
* focused tables post known-bad bodies (wrong type, ``NaN``, -1, 10**30, unknown
  enum, unknown ids, unknown field, malformed JSON, over the size cap) to every
  command route and bad query parameters to the read routes: 4xx problem+json naming
  the field, nothing stored.

Schemathesis' lazy ``schemathesis.pytest.from_fixture`` cannot be used: with pytest 9.2
it fails on ``request.node._nodeid``. So the document is built at import from the app
itself (no server needed) and :func:`test_the_served_document_is_the_one_tested` holds
it equal to what the live server serves. Budget: about 40 s for the file on two cores
(examples bounded, derandomised so a red run reproduces).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aggregates.ids import account_id
from api.http import create_app
from api.problems import MEDIA_TYPE
from api.security import KeyRing, Role, issue_token
from api.users import Users, UserStore
from infra.settings import Settings
from tests.api.server import LiveServer, live_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MAX_BYTES = 4096
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
CONTRACT_SETTINGS = settings(max_examples=10, derandomize=True, database=None, deadline=None,
                             suppress_health_check=list(HealthCheck))


KEYS = tempfile.TemporaryDirectory(prefix="tradecore-contract-")
"""Signing keys made at import and shared with the live server: Schemathesis builds its
coverage cases, tokens included, when it collects the tests, before any fixture runs."""
KEY_PATH = Path(KEYS.name) / "jwt-keys.json"
ALICE = account_id("alice")  # ids derive from names: the account the world opens


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without serving."""
    root = Path(KEYS.name)
    app = create_app(Settings(persistence="sqlite", sqlite_path=root / "events.sqlite",
                              readmodel_sqlite_path=root / "readmodels.sqlite",
                              jwt_keys_path=KEY_PATH))
    return app.openapi()  # type: ignore[no-any-return]


def _token(role: Role, accounts: list[UUID] | None) -> str:
    defaults = Settings()
    return issue_token(KeyRing.load_or_create(KEY_PATH), subject=f"contract-{role}",
                       role=role, accounts=accounts, ttl_s=6 * 3600,
                       issuer=defaults.jwt_issuer, audience=defaults.jwt_audience)


DOCUMENT = _document()
TOKENS = {Role.admin: _token(Role.admin, None), Role.trader: _token(Role.trader, [ALICE])}


def _schema(role: Role, config: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(DOCUMENT,
                                            config=schemathesis.Config.from_dict(config))

    @schema.auth()
    class Bearer:
        """Schemathesis sets the token itself, so its negative cases can also leave it out."""

        def get(self, case: Any, context: Any) -> str:
            return TOKENS[role]

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


# A body over the size cap is refused with 413 before it is read: a right answer to
# negative data too (Schemathesis' default list lacks it).
REFUSALS = {"checks": {"negative_data_rejection": {"expected-statuses": [
    400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}}}
ADMIN = _schema(Role.admin, REFUSALS)
TRADER = _schema(Role.trader, {**REFUSALS, "phases": {"coverage": {"enabled": False}}})


# ------------------------------------------------------------------------------ world


@dataclass
class World:
    server: LiveServer
    http: httpx.Client
    account: UUID
    order: UUID
    symbol: str
    price: int
    positive_cases: int = 0

    def headers(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("contract")
    # failed sign-ins (POST /v1/session) count against the address like bad tokens: the
    # generated ones must not get the address refused for the rest of the run
    with live_server(folder, rate_limit="100000/second", max_request_bytes=MAX_BYTES,
                     auth_failure_limit="100000/minute",
                     jwt_keys_path=KEY_PATH) as server, server.client() as http:
        users = Users(UserStore(server.runtime.reads.get), lockout_failures=10**6,
                      lockout_s=1)
        users.add(*CONSOLE_USER, role=Role.trader, accounts=[ALICE])
        admin = {"Authorization": f"Bearer {TOKENS[Role.admin]}"}
        opened = http.post("/v1/accounts", headers=admin,
                           json={"name": "alice", "owner": "alice", "allow_short": True})
        assert opened.status_code == 201, opened.text
        account = UUID(opened.json()["account_id"])
        assert account == ALICE
        assert http.post(f"/v1/accounts/{account}/deposits", headers=admin,
                         json={"amount": 10**10}).status_code == 201
        symbol = server.runtime.app.universe.symbols[0]
        price = server.runtime.app.universe.get(symbol).base_price
        placed = http.post("/v1/orders", headers=admin, json={
            "account_id": str(account), "client_order_id": "resting", "symbol": symbol,
            "side": "buy", "quantity": 100, "price": price, "tif": "gtc"})
        assert placed.status_code == 201, placed.text
        yield World(server, http, account, UUID(placed.json()["order_id"]), symbol, price)


# ------------------------------------------------------------------------------ schemathesis


@pytest.fixture
def calls() -> Iterator[Counter[int]]:
    """Statuses one operation's test got; it must have called the operation for real."""
    statuses: Counter[int] = Counter()
    yield statuses
    assert statuses, "Schemathesis sent no request for this operation"
    assert set(statuses) != {401}, f"the token was never accepted: {dict(statuses)}"


CONSOLE_USER = ("contract-desk", "a long enough password")
"""The console user the world adds: every other valid sign-in uses its credentials."""


def _aim_at_seeded_things(world: World, case: Any) -> None:
    """Every other valid case targets the seeded account/order/symbol (else nearly all 404).

    Only positive cases: swapping one valid id for another keeps them valid, while a
    negative case's broken path parameter must stay broken.
    """
    meta = case.meta
    if meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
        return
    world.positive_cases += 1
    if world.positive_cases % 2:
        return
    if case.path == "/v1/session" and isinstance(case.body, dict):
        case.body = {"name": CONSOLE_USER[0], "password": CONSOLE_USER[1]}
    known = {"account_id": str(world.account), "order_id": str(world.order),
             "symbol": world.symbol}
    for name in case.path_parameters or {}:
        if name in known:
            case.path_parameters[name] = known[name]


def _call_and_check(world: World, case: Any, calls: Counter[int]) -> None:
    _aim_at_seeded_things(world, case)
    # the stages finish what earlier calls set off, so what this call stores is its own
    assert world.server.runtime.wait_idle(15)
    before = world.server.stored_events()
    response = case.call(base_url=world.server.base_url)
    stored = world.server.stored_events() - before
    calls[response.status_code] += 1
    case.validate_response(response, checks=CHECKS)
    if 400 <= response.status_code < 500:
        curl = case.as_curl_command()
        assert stored == 0, f"refused ({response.status_code}) yet stored {stored}: {curl}"
        problem = response.json()
        assert problem.get("field") is not None and problem.get("rule"), (
            f"{response.status_code} problem names no field and rule: {problem}: {curl}")


@ADMIN.parametrize()
@CONTRACT_SETTINGS
def test_contract_as_admin(case: Any, world: World, calls: Counter[int]) -> None:
    _call_and_check(world, case, calls)


@TRADER.parametrize()
@CONTRACT_SETTINGS
def test_contract_as_trader(case: Any, world: World, calls: Counter[int]) -> None:
    _call_and_check(world, case, calls)


def test_the_served_document_is_the_one_tested(world: World) -> None:
    served = world.http.get("/openapi.json").json()
    assert served == DOCUMENT
    declared = [(method, path) for path, item in served["paths"].items()
                for method in item if method in HTTP_METHODS]
    for schema in (ADMIN, TRADER):
        operations = list(schema.get_all_operations())
        # ``parametrize`` makes one test per operation, so this many were tested
        assert len(operations) == len(declared)
        assert all(isinstance(result, schemathesis.core.result.Ok) for result in operations)


# ------------------------------------------------------------------------------ bad bodies


@dataclass(frozen=True)
class Bad:
    """One bad request: a JSON value or raw bytes, and the field the refusal must name."""

    route: str  # "METHOD /template", as the spec names it
    path: Callable[[World], str]
    body: Callable[[World], Any]
    field: str
    status: int = 422
    raw: bool = False  # ``body`` gives the bytes to send as they are
    rule: str | None = None  # the rule the refusal must name, where it matters

    @property
    def method(self) -> str:
        return self.route.split()[0]

    def content(self, world: World) -> bytes | None:
        payload = self.body(world)
        if self.raw or payload is None:
            return payload  # type: ignore[no-any-return]
        return json.dumps(payload).encode()


OPEN = "POST /v1/accounts"
DEPOSIT = "POST /v1/accounts/{account_id}/deposits"
WITHDRAW = "POST /v1/accounts/{account_id}/withdrawals"
HALT = "POST /v1/accounts/{account_id}/halt"
RESUME = "POST /v1/accounts/{account_id}/resume"
SYMBOL_HALT = "POST /v1/symbols/{symbol}/halt"
SYMBOL_RESUME = "POST /v1/symbols/{symbol}/resume"
CLOSE = "POST /v1/session/close"
PLACE = "POST /v1/orders"
AMEND = "PATCH /v1/orders/{order_id}"
CANCEL = "DELETE /v1/orders/{order_id}"
SESSION = "POST /v1/session"


def _at(template: str) -> Callable[[World], str]:
    """The route's path with the seeded account, order and symbol filled in."""
    path = template.split()[1]
    return lambda w: path.format(account_id=w.account, order_id=w.order, symbol=w.symbol)


def _fixed(path: str) -> Callable[[World], str]:
    return lambda w: path


def _nowhere(template: str) -> Callable[[World], str]:
    """The route's path for an account or order that does not exist."""
    path = template.split()[1]
    return lambda w: path.format(account_id=uuid4(), order_id=uuid4(), symbol=w.symbol)


def _value(value: Any) -> Callable[[World], Any]:
    return lambda w: value


def _order(**change: Any) -> Callable[[World], dict[str, Any]]:
    def body(w: World) -> dict[str, Any]:
        terms = {"account_id": str(w.account), "client_order_id": f"bad-{uuid4().hex[:8]}",
                 "symbol": w.symbol, "side": "buy", "quantity": 100, "price": w.price}
        terms.update(change)
        return {k: v for k, v in terms.items() if v is not None}
    return body


def _amend(**change: Any) -> Callable[[World], dict[str, Any]]:
    return lambda w: {"quantity": 100, "price": w.price, **change}


def _bad_cases() -> dict[str, Bad]:
    cases: dict[str, Bad] = {}

    def add(name: str, route: str, body: Callable[[World], Any], field: str, *,
            status: int = 422, path: Callable[[World], str] | None = None,
            raw: bool = False, rule: str | None = None) -> None:
        cases[name] = Bad(route, path or _at(route), body, field, status, raw, rule)

    add("open: name of the wrong type", OPEN, _value({"name": 7, "owner": "x"}), "name")
    add("open: name with a space", OPEN, _value({"name": "a b", "owner": "x"}), "name")
    add("open: allow_short not a bool", OPEN,
        _value({"name": "x", "owner": "x", "allow_short": "yes"}), "allow_short")
    add("open: NaN literal", OPEN,
        _value(b'{"name": "x", "owner": "x", "allow_short": NaN}'), "allow_short", raw=True)
    add("open: missing owner", OPEN, _value({"name": "x"}), "owner")
    add("open: unknown field", OPEN, _value({"name": "x", "owner": "x", "tier": 1}), "tier")

    for route, kind in ((DEPOSIT, "deposit"), (WITHDRAW, "withdrawal")):
        for what, amount in (("a string", "1000"), ("a fraction", 1000.5),
                             ("a float-typed integer", 1000.0), ("-1", -1), ("zero", 0),
                             ("10**30", 10**30), ("a bool", True)):
            add(f"{kind}: amount {what}", route, _value({"amount": amount}), "amount")
        for literal in ("NaN", "Infinity"):
            add(f"{kind}: {literal} literal", route,
                _value(b'{"amount": %s}' % literal.encode()), "amount", raw=True)
        add(f"{kind}: missing amount", route, _value({}), "amount")
        add(f"{kind}: unknown field", route, _value({"amount": 5, "ccy": "USD"}), "ccy")
        add(f"{kind}: unknown account", route, _value({"amount": 5}), "account_id",
            status=404, path=_nowhere(route))
        add(f"{kind}: account id not a UUID", route, _value({"amount": 5}), "account_id",
            path=_fixed(route.split()[1].replace("{account_id}", "alice")))
    add("withdrawal: more than the cash", WITHDRAW, _value({"amount": 10**13}), "amount")

    add("halt: reason of the wrong type", HALT, _value({"reason": 5}), "reason")
    add("halt: empty reason", HALT, _value({"reason": ""}), "reason")
    add("halt: unknown account", HALT, _value({"reason": "x"}), "account_id", status=404,
        path=_nowhere(HALT))
    add("resume: unknown account", RESUME, _value(None), "account_id", status=404,
        path=_nowhere(RESUME))
    add("symbol halt: unknown symbol", SYMBOL_HALT, _value({"reason": "x"}), "symbol",
        status=404, path=_fixed("/v1/symbols/0000/halt"))
    add("symbol halt: lower-case symbol", SYMBOL_HALT, _value({"reason": "x"}), "symbol",
        path=_fixed("/v1/symbols/abc/halt"))
    add("symbol halt: reason too long", SYMBOL_HALT, _value({"reason": "x" * 201}), "reason")
    add("symbol resume: unknown symbol", SYMBOL_RESUME, _value(None), "symbol", status=404,
        path=_fixed("/v1/symbols/0000/resume"))
    add("close: not a calendar date", CLOSE, _value({"session_date": "2024-13-45"}),
        "session_date")
    add("close: date as a number", CLOSE, _value({"session_date": 20240104}), "session_date")
    add("close: NaN literal", CLOSE, _value(b'{"session_date": NaN}'), "session_date",
        raw=True)
    # free text holds no control characters (it was stored, NUL and all)
    for what, text in (("a NUL", "news\x00pending"), ("an escape sequence", "ok\x1b[2K"),
                       ("a line separator", "a\u2028b"), ("a bidi override", "\u202egnp"),
                       ("DEL", "x\x7f")):
        add(f"halt: {what} in the reason", HALT, _value({"reason": text}), "reason",
            rule="no control characters")
        add(f"symbol halt: {what} in the reason", SYMBOL_HALT, _value({"reason": text}),
            "reason", rule="no control characters")
    # a session far from today's would expire every resting DAY order
    session_rule = "today's session in Tokyo or one of the 7 days before it"
    add("close: 9999-12-31", CLOSE, _value({"session_date": "9999-12-31"}), "session_date",
        rule=session_rule)
    add("close: a month ago", CLOSE,
        lambda w: {"session_date": (date.today() - timedelta(days=30)).isoformat()},
        "session_date", rule=session_rule)
    add("close: the day after tomorrow", CLOSE,
        lambda w: {"session_date": (date.today() + timedelta(days=2)).isoformat()},
        "session_date", rule=session_rule)

    for what, change, named in (
            ("quantity a string", {"quantity": "100"}, "quantity"),
            ("quantity -1", {"quantity": -1}, "quantity"),
            ("quantity 10**30", {"quantity": 10**30}, "quantity"),
            ("quantity off the lot", {"quantity": 150}, "quantity"),
            ("price a fraction", {"price": 2500.5}, "price"),
            ("price -1", {"price": -1}, "price"),
            ("price 10**30", {"price": 10**30}, "price"),
            ("unknown side", {"side": "short"}, "side"),
            ("unknown time in force", {"tif": "gtd"}, "tif"),
            ("unknown order type", {"order_type": "stop"}, "order_type"),
            ("account id not a UUID", {"account_id": "alice"}, "account_id"),
            ("unknown field", {"stop_price": 1}, "stop_price"),
            ("missing side", {"side": None}, "side")):
        add(f"order: {what}", PLACE, _order(**change), named)
    add("order: unknown account", PLACE, _order(account_id=str(uuid4())), "account_id",
        status=404)
    add("order: unknown symbol", PLACE, _order(symbol="0000"), "symbol", status=404)
    add("order: NaN price literal", PLACE,
        lambda w: json.dumps(_order(price=0)(w)).replace('"price": 0', '"price": NaN').encode(),
        "price", raw=True)

    add("amend: quantity NaN literal", AMEND,
        lambda w: b'{"quantity": NaN, "price": %d}' % w.price, "quantity", raw=True)
    add("amend: quantity -1", AMEND, _amend(quantity=-1), "quantity")
    add("amend: quantity 10**30", AMEND, _amend(quantity=10**30), "quantity")
    add("amend: price a string", AMEND, lambda w: {"quantity": 100, "price": str(w.price)},
        "price")
    add("amend: price zero", AMEND, _amend(price=0), "price")
    add("amend: unknown field", AMEND, _amend(tif="gtc"), "tif")
    add("amend: unknown order", AMEND, _amend(), "order_id", status=404, path=_nowhere(AMEND))
    add("cancel: unknown order", CANCEL, _value(None), "order_id", status=404,
        path=_nowhere(CANCEL))
    add("cancel: order id not a UUID", CANCEL, _value(None), "order_id",
        path=_fixed("/v1/orders/1"))

    signing_in = {"name": CONSOLE_USER[0], "password": CONSOLE_USER[1]}
    add("session: name of the wrong type", SESSION, _value({**signing_in, "name": 7}), "name")
    add("session: name with a space", SESSION, _value({**signing_in, "name": "a b"}), "name")
    add("session: password not a string", SESSION, _value({**signing_in, "password": 5}),
        "password")
    add("session: password too long", SESSION,
        _value({**signing_in, "password": "x" * 1025}), "password")
    add("session: missing password", SESSION, _value({"name": CONSOLE_USER[0]}), "password")
    add("session: unknown field", SESSION, _value({**signing_in, "otp": "1"}), "otp")
    add("session: wrong password", SESSION,
        _value({**signing_in, "password": "not the password at all"}), "credentials",
        status=401)

    for route in BODY_ROUTES:
        add(f"{route}: malformed JSON", route, _value(b'{"amount": '), "body", raw=True)
        add(f"{route}: a JSON list", route, _value([]), "body")
        add(f"{route}: empty body", route, _value(b""), "body", raw=True)
        add(f"{route}: larger than the cap", route, _value({"reason": "x" * MAX_BYTES}),
            "body", status=413)
        add(f"{route}: not UTF-8", route, _value(b"\x00" * 17), "body", status=400,
            raw=True)
    return cases


BODY_ROUTES = (OPEN, DEPOSIT, WITHDRAW, HALT, SYMBOL_HALT, CLOSE, PLACE, AMEND, SESSION)
"""Every command route that reads a body also gets the malformed-body cases."""
BAD = _bad_cases()
@pytest.mark.parametrize("name", list(BAD))
def test_bad_body_is_refused_naming_the_field(world: World, name: str) -> None:
    bad = BAD[name]
    assert world.server.runtime.wait_idle(15)
    before = world.server.stored_events()
    headers = {**world.headers(Role.admin), "Content-Type": "application/json"}
    response = world.http.request(bad.method, bad.path(world), content=bad.content(world),
                                  headers=headers)
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"].startswith(MEDIA_TYPE)
    problem = response.json()
    assert problem["status"] == bad.status
    assert problem["field"] == bad.field, problem
    assert problem["rule"], problem
    if bad.rule is not None:
        assert problem["rule"] == bad.rule, problem
    assert world.server.stored_events() == before, "a refused command stored events"


def test_bad_body_table_covers_every_command_route(world: World) -> None:
    """A command route added to the API without bad-input cases here fails this."""
    spec = world.http.get("/openapi.json").json()
    operations = {f"{method.upper()} {path}": operation
                  for path, item in spec["paths"].items()
                  for method, operation in item.items() if method in HTTP_METHODS}
    commands = {route for route in operations if not route.startswith("GET ")}
    assert {bad.route for bad in BAD.values()} == commands
    assert set(BODY_ROUTES) == {route for route, operation in operations.items()
                                if "requestBody" in operation}


# ------------------------------------------------------------------------------ bad queries

BAD_QUERIES: dict[str, tuple[str, dict[str, str], str]] = {
    "since as epoch seconds": ("/v1/fills", {"since": "5"}, "since"),
    "since as a bare year": ("/v1/orders", {"since": "2024"}, "since"),
    "until not a date": ("/v1/fills", {"until": "yesterday"}, "until"),
    "until before since": ("/v1/fills", {"since": "2024-01-05", "until": "2024-01-04"},
                           "until"),
    "limit zero": ("/v1/orders", {"limit": "0"}, "limit"),
    "limit 10**30": ("/v1/orders", {"limit": str(10**30)}, "limit"),
    "cursor -1": ("/v1/fills", {"cursor": "-1"}, "cursor"),
    "unknown status": ("/v1/orders", {"status": "open"}, "status"),
    "account id not a UUID": ("/v1/orders", {"account_id": "alice"}, "account_id"),
    "min_position beyond the log": ("/v1/orders", {"min_position": str(2**40)},
                                    "min_position"),
    "min_position NaN": ("/v1/orders", {"min_position": "NaN"}, "min_position"),
    "unknown bucket": ("/v1/market/{symbol}/bars", {"bucket": "2m"}, "bucket"),
    "book depth zero": ("/v1/market/{symbol}/book", {"depth": "0"}, "depth"),
    "pnl since NaN": ("/v1/accounts/{account_id}/pnl", {"since": "NaN"}, "since"),
    "symbol with a NUL": ("/v1/orders", {"symbol": "72\x0003"}, "symbol"),
    "symbol with an escape": ("/v1/fills", {"symbol": "\x1b[2K"}, "symbol"),
}


@pytest.mark.parametrize("name", list(BAD_QUERIES))
def test_bad_query_is_refused_naming_the_field(world: World, name: str) -> None:
    template, params, named = BAD_QUERIES[name]
    path = template.format(account_id=world.account, symbol=world.symbol)
    response = world.http.get(path, params=params, headers=world.headers(Role.admin))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(MEDIA_TYPE)
    problem = response.json()
    assert (problem["status"], problem["field"]) == (422, named), problem
    assert problem["rule"], problem
