"""Per-principal rate limits and a cap on request body size.

Rate limits
    :class:`RateLimiter` counts requests per token subject with the ``limits`` library's
    *moving window* over in-process memory. Moving rather than fixed window because a
    fixed window lets a client spend its whole budget at the end of one window and again
    at the start of the next (twice the rate for a moment), which is exactly the burst a
    limit on an order-entry API is there to stop; and its reset time is exact (when the
    oldest counted request leaves the window), so ``Retry-After`` is honest. It costs one
    timestamp per counted request per subject (600 floats at ``600/second``), which is
    nothing for a desk's worth of principals. The counts live in one process: with
    several API workers each enforces the limit on its own.

    Wiring, the way the routes use it: wrap the authenticating dependency once::

        authenticate = authenticator(keyring, settings.jwt_issuer, settings.jwt_audience)
        limiter = RateLimiter(settings.rate_limit)
        caller = rate_limited(authenticate, limiter)

        @router.post("/orders", responses=PROBLEM_RESPONSES)
        async def place(..., principal: Principal = Depends(caller)): ...

    ``caller`` authenticates, counts the request, and puts ``RateLimit-Limit``,
    ``RateLimit-Remaining`` and ``RateLimit-Reset`` on the response FastAPI builds from
    the route's return value. (A route that returns its own ``Response`` object must copy
    them itself: ``response.headers.update(limiter.headers(state))``.) Over the limit it
    raises :class:`RateLimited`, which ``api.problems`` answers with 429, ``Retry-After``
    and the same headers.

Body size
    :class:`BodySizeLimit` is a pure ASGI middleware: it answers 413 before the app runs
    when ``Content-Length`` is too big, and counts bytes as the app reads a chunked body,
    stopping the read (413) the moment the total passes the cap. It never buffers.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves a dependency's
# annotations through the module's globals, and ``rate_limited`` annotates its parameter
# with ``Depends(authenticate)``, a closure variable that only eager evaluation sees.

import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Response
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problem_details import problem_document
from api.security import Principal


@dataclass(frozen=True)
class RateState:
    """Where a subject stands after a request: the budget, what is left, when it refills."""

    limit: int
    remaining: int
    reset_s: int
    """Whole seconds (rounded up) until at least one more request is allowed."""


class RateLimited(Exception):
    """HTTP 429; carries the state for ``Retry-After`` and the ``RateLimit-*`` headers."""

    def __init__(self, state: RateState, subject: str = "", rate: str = "") -> None:
        self.rate = rate or f"{state.limit} requests per window"
        super().__init__(f"{subject or 'caller'} exceeded {self.rate}")
        self.state = state
        self.subject = subject

    def document(self) -> dict[str, Any]:
        """The problem+json body of this 429 (the gate and the handlers send the same)."""
        return problem_document(
            429, "Too many requests",
            f"{self.subject or 'caller'} exceeded {self.rate}; retry in {self.state.reset_s} s",
            field="sub", rule=f"at most {self.rate}", value=self.subject)


def parse_rate(setting: str, rate: str, example: str) -> RateLimitItem:
    """A rate setting in the ``limits`` notation; a bad one names the setting and rule."""
    try:
        return parse(rate)
    except ValueError:
        raise ValueError(
            f"{setting}={rate!r} breaks rule 'limits notation, e.g. {example}'") from None


class RateLimiter:
    """Requests per principal over a moving window, e.g. ``RateLimiter("600/second")``."""

    def __init__(self, rate: str) -> None:
        self.item: RateLimitItem = parse_rate("rate_limit", rate, "600/second")
        self.rate = rate
        self._storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(self._storage)

    def check(self, principal_subject: str) -> RateState:
        """Count one request; :class:`RateLimited` when it would exceed the limit."""
        allowed = self._strategy.hit(self.item, principal_subject)
        stats = self._strategy.get_window_stats(self.item, principal_subject)
        state = RateState(
            limit=self.item.amount,
            remaining=max(0, stats.remaining),
            reset_s=max(0, math.ceil(stats.reset_time - time.time())),
        )
        if not allowed:
            # A refused request must come back later: at least one second.
            raise RateLimited(
                RateState(state.limit, 0, max(1, state.reset_s)), principal_subject, self.rate
            )
        return state

    @staticmethod
    def headers(state: RateState) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(state.limit),
            "RateLimit-Remaining": str(state.remaining),
            "RateLimit-Reset": str(state.reset_s),
        }


RATE_SCOPE_KEY = "tradecore.rate"
"""Where :class:`api.gate.Gate` leaves the :class:`RateState` of a request it counted."""


def rate_limited(
    authenticate: Callable[..., Awaitable[Principal]], limiter: RateLimiter
) -> Callable[..., Awaitable[Principal]]:
    """Wrap an authenticating dependency so each call is counted against its subject
    (once: a request the gate already counted carries its state in the scope)."""

    async def limited_principal(
        request: HTTPConnection, response: Response,
        principal: Annotated[Principal, Depends(authenticate)],
    ) -> Principal:
        state = request.scope.get(RATE_SCOPE_KEY)
        if not isinstance(state, RateState):
            state = limiter.check(principal.subject)
        response.headers.update(limiter.headers(state))
        return principal

    return limited_principal


# --------------------------------------------------------------------------- failed auth


class AddressRefused(Exception):
    """HTTP 429 for a client address that failed authentication too often."""

    def __init__(self, address: str, rate: str, retry_s: int) -> None:
        super().__init__(f"{address} failed authentication more than {rate}")
        self.address, self.rate, self.retry_s = address, rate, retry_s


class FailedAuthLimit:
    """Failed authentications per client address, e.g. ``FailedAuthLimit("30/minute")``.

    A bearer token costs nothing to forge and a signature check to refuse, so an address
    that keeps sending bad ones is refused outright (429, ``Retry-After``) once it has
    failed ``rate`` times in the moving window, until the window frees a failure again.
    While refused, only tokens that already verified earlier (remembered by
    :class:`api.security.TokenVerifier`) pass: nothing else from that address is parsed
    or verified. Addresses are the peer's, or the one a trusted proxy forwards
    (``TRADECORE_API_TRUSTED_PROXIES``).
    """

    _MAX_REFUSED = 100_000  # refused addresses remembered at once (memory bound)

    def __init__(self, rate: str) -> None:
        self.item: RateLimitItem = parse_rate("auth_failure_limit", rate, "30/minute")
        self.rate = rate
        self._strategy = MovingWindowRateLimiter(MemoryStorage())
        self._refused: dict[str, float] = {}  # address -> until (epoch seconds)

    def refused_for(self, address: str) -> int | None:
        """Whole seconds (at least 1) the address stays refused, or None."""
        until = self._refused.get(address)
        if until is None:
            return None
        left = until - time.time()
        if left <= 0:
            del self._refused[address]
            return None
        return max(1, math.ceil(left))

    def failed(self, address: str) -> int | None:
        """Count one failed authentication. Over the limit, the address is refused from
        now on: the seconds it stays refused (this failure is answered 429 already)."""
        if self._strategy.hit(self.item, "auth-failed", address):
            return None
        stats = self._strategy.get_window_stats(self.item, "auth-failed", address)
        now = time.time()
        if len(self._refused) >= self._MAX_REFUSED:
            self._refused = {a: u for a, u in self._refused.items() if u > now}
        until = self._refused[address] = max(stats.reset_time, now + 1)
        return max(1, math.ceil(until - now))


# --------------------------------------------------------------------------- body size


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the cap.

    An ``HTTPException`` on purpose: FastAPI re-raises those from its body reader
    (anything else there becomes a bare 400), so the app's problem handler can answer.
    """

    def __init__(self, max_bytes: int, received: int | None) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes
        self.received = received


def body_too_large_body(exc: BodyTooLarge) -> bytes:
    """The problem+json body for a 413 (also used when no handler is installed)."""
    return json.dumps(
        problem_document(
            413,
            "Content too large",
            exc.detail,
            field="body",
            rule=f"at most {exc.max_bytes} bytes",
            value=exc.received,
        )
    ).encode()


class BodySizeLimit:
    """``app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_request_bytes={max_bytes} breaks rule 'zero or more'")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, BodyTooLarge(self.max_bytes, declared))
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes, received)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:
            # Reached only when no exception handler answered it inside the app.
            if response_started:
                raise
            await _send_413(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length itself
    return None


async def _send_413(send: Send, exc: BodyTooLarge) -> None:
    body = body_too_large_body(exc)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
