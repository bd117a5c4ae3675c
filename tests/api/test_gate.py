"""Floods of bad tokens are refused cheaply and per address (issue 10, item 3).

100 connections sending no token or forged ones got 2,700 x 401 a second with no 429,
and each refusal cost a body read, JSON parsing and FastAPI's whole dependency and
exception machinery. Now an address that keeps failing is refused outright, a bad token
is refused before its body is read, and one principal cannot occupy every worker.
(``benchmarks/auth_flood.py`` measures what this does to a legitimate client's reads.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.gate import Gate
from api.limits import FailedAuthLimit, RateLimiter
from api.security import PRINCIPAL_SCOPE_KEY, KeyRing, Role, TokenVerifier, issue_token
from tests.api.server import LiveServer, live_server

FAILURES = 5
DELAY_S = 0.3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("gate"),
        auth_failure_limit=f"{FAILURES}/minute",
        refusal_delay_s=DELAY_S,
    ) as server:
        yield server


def _client(server: LiveServer, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 is local)."""
    return httpx.Client(
        base_url=server.base_url, timeout=10, transport=httpx.HTTPTransport(local_address=address)
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_address_that_keeps_failing_is_refused_then_only_known_tokens_pass(
    server: LiveServer,
) -> None:
    known = server.token(Role.admin, subject="known-before")
    with _client(server, "127.0.0.3") as flood, _client(server, "127.0.0.4") as bystander:
        assert flood.get("/v1/orders", headers=_bearer(known)).status_code == 200
        for n in range(FAILURES):
            refused = flood.get("/v1/orders", headers=_bearer(f"forged-{n}"))
            assert refused.status_code == 401, refused.text
        started = time.monotonic()
        blocked = flood.get("/v1/orders", headers=_bearer("forged-again"))
        assert blocked.status_code == 429, blocked.text
        # sent only after the delay: a flood on keep-alive connections is slowed to it
        assert time.monotonic() - started >= DELAY_S
        problem = blocked.json()
        assert (problem["field"], problem["rule"]) == (
            "client",
            f"at most {FAILURES}/minute failed authentications per address",
        )
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        # no token at all is no better
        assert flood.get("/v1/orders").status_code == 429
        # a token that verified before still passes; a new one is not even checked
        assert flood.get("/v1/orders", headers=_bearer(known)).status_code == 200
        fresh = server.token(Role.admin, subject="fresh")
        assert flood.get("/v1/orders", headers=_bearer(fresh)).status_code == 429
        # other addresses are not affected
        assert bystander.get("/v1/orders", headers=_bearer("forged")).status_code == 401
        assert bystander.get("/v1/orders", headers=_bearer(fresh)).status_code == 200


def test_a_bad_token_is_refused_before_the_body_is_read(server: LiveServer) -> None:
    """The request declares a 60 kB body and sends none: the refusal must not wait."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.5", 0))  # an address of its own: no failures counted yet
        sock.settimeout(3)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer forged\r\n"
            b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        )
        started = time.monotonic()
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert time.monotonic() - started < 2


# ------------------------------------------------------------------ one principal's share


def _scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "path": "/v1/orders",
        "method": "GET",
        "client": ("10.0.0.1", 1),
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }


def test_one_principal_cannot_take_every_worker(tmp_path: Any) -> None:
    """With ``inflight=2``, a principal's third request waits for one of its first two,
    while another principal's request runs at once."""
    ring = KeyRing.load_or_create(tmp_path / "keys.json")

    def token(subject: str) -> str:
        return issue_token(
            ring,
            subject=subject,
            role=Role.admin,
            accounts=None,
            ttl_s=60,
            issuer="i",
            audience="a",
        )

    running: dict[str, int] = {}
    most: dict[str, int] = {}
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        who = scope[PRINCIPAL_SCOPE_KEY].subject
        running[who] = running.get(who, 0) + 1
        most[who] = max(most.get(who, 0), running[who])
        if who == "busy":
            await release.wait()
        running[who] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gate = Gate(
        app,
        verifier=TokenVerifier(ring, "i", "a"),
        limiter=RateLimiter("1000/second"),
        failures=FailedAuthLimit("5/minute"),
        inflight=2,
    )

    async def call(subject: str, raw: str) -> int:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        await gate(_scope(raw), receive, send)
        return int(sent[0]["status"])

    async def scenario() -> None:
        busy, calm = token("busy"), token("calm")
        flood = [asyncio.create_task(call("busy", busy)) for _ in range(6)]
        await asyncio.sleep(0.05)
        assert running["busy"] == 2  # the other four wait without running
        assert await asyncio.wait_for(call("calm", calm), 1) == 200  # not behind them
        release.set()
        assert await asyncio.gather(*flood) == [200] * 6

    asyncio.run(scenario())
    assert most == {"busy": 2, "calm": 1}


def test_a_principal_over_its_rate_gets_429_from_the_gate(tmp_path: Any) -> None:
    """The gate answers a principal's 429 itself (no route, no body read), with the same
    headers and problem the route would give, after the refusal delay."""
    ring = KeyRing.load_or_create(tmp_path / "keys.json")
    raw = issue_token(
        ring, subject="eager", role=Role.admin, accounts=None, ttl_s=60, issuer="i", audience="a"
    )
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope[PRINCIPAL_SCOPE_KEY].subject)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gate = Gate(
        app,
        verifier=TokenVerifier(ring, "i", "a"),
        limiter=RateLimiter("2/minute"),
        failures=FailedAuthLimit("5/minute"),
        inflight=4,
        refusal_delay_s=0.2,
    )

    async def call() -> tuple[dict[str, Any], float]:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            raise AssertionError("a refused request's body must not be read")

        started = time.monotonic()
        await gate(_scope(raw), receive, send)
        return {
            "status": sent[0]["status"],
            "headers": dict(sent[0]["headers"]),
            "body": sent[1]["body"],
        }, time.monotonic() - started

    async def scenario() -> list[tuple[dict[str, Any], float]]:
        return [await call() for _ in range(3)]

    (first, _), (second, _), (third, waited) = asyncio.run(scenario())
    assert (first["status"], second["status"], third["status"]) == (200, 200, 429)
    assert reached == ["eager", "eager"]
    headers = third["headers"]
    assert headers[b"ratelimit-limit"] == b"2" and headers[b"ratelimit-remaining"] == b"0"
    assert int(headers[b"retry-after"]) >= 1
    problem = json.loads(third["body"])
    assert (problem["field"], problem["rule"]) == ("sub", "at most 2/minute")
    assert waited >= 0.2
