"""The gate every ``/v1/`` HTTP request passes first: who calls, and may it call now.

A pure ASGI middleware in front of FastAPI. FastAPI reads and parses a request's body
*before* it resolves the dependency that checks the token, and answers a refusal through
its exception handlers; under a flood of bad tokens that work was the server's whole
load (2,700 refusals a second took a legitimate client's p95 read from 5.5 ms to
190 ms). Here a request is refused before anything else runs:

1. a token that verified before (:class:`api.security.TokenVerifier` remembers them) is
   one dictionary look-up; anything else from an address refused for failing too often
   (:class:`api.limits.FailedAuthLimit`) is answered 429 at once, unread and unverified;
2. otherwise the token is verified here; a failure is counted against the client
   address and answered 401 (the same problem document and ``WWW-Authenticate``
   challenge the route would give);
3. the principal's rate limit is counted here (429 with ``Retry-After``);

   every 429 (address or principal) is sent after ``refusal_delay_s``: a flood on
   keep-alive connections then gets about one request per connection per delay
   through, instead of as many as the server can refuse;
4. a principal has at most ``inflight`` requests running at once; more wait their turn
   (queued without using the server), so one busy principal cannot take every worker
   thread and database connection from the others.

The principal and its rate state go into the scope, where the route's dependencies
(``api.security.authenticator``, ``api.limits.rate_limited``) pick them up. Other
paths (probes, metrics, OpenAPI) and WebSockets pass through; the stream route
authenticates itself and reports its failures to the same per-address count.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import RATE_SCOPE_KEY, FailedAuthLimit, RateLimited, RateLimiter
from api.problem_details import MEDIA_TYPE, problem_document
from api.problems import challenge
from api.security import (
    PRINCIPAL_SCOPE_KEY,
    AuthError,
    Principal,
    TokenVerifier,
    Unauthorized,
    bearer_token,
)

PROTECTED_PREFIX = "/v1/"
PUBLIC_PATHS = frozenset({"/v1/session"})
"""Where a caller gets a token (``api.http.session``): it has none yet. The route counts
its own failures against the address, as the gate does for tokens."""


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


@dataclass
class _Slots:
    """A principal's running requests: at most ``limit``; the rest wait in order."""

    limit: int
    running: int = 0
    waiting: list[asyncio.Future[None]] = field(default_factory=list)


class Gate:
    """``app.add_middleware(Gate, verifier=..., limiter=..., failures=..., inflight=16)``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        failures: FailedAuthLimit,
        inflight: int,
        refusal_delay_s: float = 1.0,
    ) -> None:
        if inflight < 1:
            raise ValueError(f"max_inflight_per_principal={inflight} breaks rule 'at least 1'")
        if refusal_delay_s < 0:
            raise ValueError(f"refusal_delay_s={refusal_delay_s} breaks rule 'zero or more'")
        self.app = app
        self.refusal_delay_s = refusal_delay_s
        self.verifier = verifier
        self.limiter = limiter
        self.failures = failures
        self.inflight = inflight
        self._slots: dict[str, _Slots] = {}
        self._unauthorized: dict[tuple[str, bool], tuple[bytes, list[tuple[bytes, bytes]]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX)
                or scope["path"] in PUBLIC_PATHS):
            await self.app(scope, receive, send)
            return
        principal = self._remembered(scope)
        if principal is None:
            address = client_address(scope)
            refused_s = self.failures.refused_for(address)
            if refused_s is not None:
                await self._address_refused(send, address, refused_s)
                return
            try:
                token = bearer_token(_header(scope, b"authorization"))
                principal = self.verifier.verify(token)
            except (Unauthorized, AuthError) as err:
                refused_s = self.failures.failed(address)
                if refused_s is not None:  # this failure was one too many
                    await self._address_refused(send, address, refused_s)
                else:
                    present = not isinstance(err, Unauthorized) or err.token_present
                    await self._refuse_401(send, err.reason, present)
                return
        try:
            scope[RATE_SCOPE_KEY] = self.limiter.check(principal.subject)
        except RateLimited as exc:
            await self._rate_limited(send, exc)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self._run(principal.subject, scope, receive, send)

    def _remembered(self, scope: Scope) -> Principal | None:
        header = _header(scope, b"authorization")
        if header is None or header[:7].lower() != "bearer ":
            return None
        return self.verifier.remembered(header[7:].strip())

    # -- per-principal fairness ----------------------------------------------------------
    async def _run(self, subject: str, scope: Scope, receive: Receive, send: Send) -> None:
        slots = self._slots.get(subject)
        if slots is None:
            slots = self._slots[subject] = _Slots(self.inflight)
        if slots.running >= slots.limit:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            slots.waiting.append(turn)
            try:
                await turn  # the slot is handed over by the request that finishes
            except BaseException:
                if turn in slots.waiting:
                    slots.waiting.remove(turn)
                elif turn.done() and not turn.cancelled():
                    self._release(subject, slots)  # handed a slot it will not use
                raise
        else:
            slots.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._release(subject, slots)

    def _release(self, subject: str, slots: _Slots) -> None:
        while slots.waiting:
            turn = slots.waiting.pop(0)
            if not turn.done():
                turn.set_result(None)  # the slot passes on; running stays the same
                return
        slots.running -= 1
        if slots.running == 0:
            self._slots.pop(subject, None)

    # -- answers -------------------------------------------------------------------------
    async def _refuse_401(self, send: Send, reason: str, token_present: bool) -> None:
        cached = self._unauthorized.get((reason, token_present))
        if cached is None:
            body = json.dumps(
                problem_document(
                    401, "Unauthorized", reason, field="authorization", rule="a valid bearer token"
                )
            ).encode()
            headers = [
                (b"www-authenticate", challenge(reason, token_present).encode("latin-1", "replace"))
            ]
            cached = (body, headers)
            if len(self._unauthorized) < 256:
                self._unauthorized[(reason, token_present)] = cached
        await _answer(send, 401, *cached)

    async def _slowly(self) -> None:
        """A 429 is sent only after ``refusal_delay_s``: a client flooding on keep-alive
        connections waits for each answer, so it gets about one request per connection
        per delay through, and what it costs the server drops with it. The waiting costs
        a sleeping task, no worker and no CPU."""
        if self.refusal_delay_s:
            await asyncio.sleep(self.refusal_delay_s)

    async def _address_refused(self, send: Send, address: str, retry_s: int) -> None:
        await self._slowly()
        rate = self.failures.rate
        body = json.dumps(
            problem_document(
                429,
                "Too many requests",
                f"too many failed authentications from {address}; retry in {retry_s} s",
                field="client",
                rule=f"at most {rate} failed authentications per address",
                value=address,
            )
        ).encode()
        await _answer(send, 429, body, [(b"retry-after", str(retry_s).encode())])

    async def _rate_limited(self, send: Send, exc: RateLimited) -> None:
        await self._slowly()
        state = exc.state
        body = json.dumps(exc.document()).encode()
        headers = [(b"retry-after", str(state.reset_s).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in RateLimiter.headers(state).items()]
        await _answer(send, 429, body, headers)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
