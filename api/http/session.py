"""``POST /v1/session``: a person's name and password in, a bearer token out.

The token is the one ``tradecore auth token`` issues (same keys, issuer, audience,
lifetime ``TRADECORE_TOKEN_TTL_S``), for the user's role and accounts, so nothing behind
the sign-in changes. The route is the one ``/v1/`` path the gate lets through without a
token; it counts its own failures against the caller's address (the failed-auth limit,
429), and a wrong name, wrong password or disabled user all get the same 401, so the
answer never says which part was wrong. A locked name gets 423 with ``Retry-After``.
"""

# No `from __future__ import annotations`: FastAPI must see the route-local aliases.
import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from api.http.deps import Context
from api.http.json_body import JSONRoute
from api.http.models import Strict
from api.problems import problem_response, problem_responses
from api.security import issue_token
from api.users import MAX_PASSWORD, SignInRefused, Users, UserStore

PATH = "/v1/session"
"""Public: the gate (``api.gate``) lets this path through without a token."""

_REFUSED = "name or password not accepted"
SIGN_INS_AT_ONCE = 2
"""Password checks running at once per process (each uses 4 lanes and 64 MiB)."""


class SignIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    # No length rule here: a validation error echoes the value, and this one is a secret.
    password: StrictStr


class SessionToken(BaseModel):
    """An OAuth2-style token response (RFC 6749 §5.1) with what the token grants."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the token is valid for.")
    expires_at: datetime
    subject: str
    role: str
    accounts: list[str] | Literal["*"] = Field(
        description="Accounts the token covers; `*` for risk and admin (every account).")


def router(context: Context) -> APIRouter:
    api = APIRouter(tags=["session"], route_class=JSONRoute)
    settings = context.settings
    users = Users(UserStore(lambda: context.rt.reads.get()),
                  lockout_failures=settings.user_lockout_failures,
                  lockout_s=settings.user_lockout_s)
    # An argon2id check takes 64 MiB and all its lanes for tens of milliseconds: a burst
    # of sign-ins (from many addresses) waits here rather than taking every worker
    # thread and a gigabyte of memory at once.
    hashing = asyncio.Semaphore(SIGN_INS_AT_ONCE)

    async def too_many(request: Request, retry_s: int) -> JSONResponse:
        """A 429 waits ``refusal_delay_s`` first, as the gate's do (``api.gate``)."""
        if settings.refusal_delay_s:
            await asyncio.sleep(settings.refusal_delay_s)
        return _too_many(request, retry_s)

    @api.post(PATH, response_model=SessionToken,
              responses=problem_responses(400, 401, 413, 422, 423, 429, 500))
    async def sign_in(body: SignIn, request: Request) -> SessionToken | JSONResponse:
        """Sign a console user in: name and password for a short-lived bearer token."""
        refused_s = context.refused_for(request)
        if refused_s is not None:
            return await too_many(request, refused_s)
        if len(body.password) > MAX_PASSWORD:  # argon2 would hash it all: refuse unread
            return problem_response(
                422, "Invalid request", f"password: at most {MAX_PASSWORD} characters",
                field="password", rule=f"at most {MAX_PASSWORD} characters")
        try:
            async with hashing:
                user = await asyncio.to_thread(users.sign_in, body.name, body.password)
        except SignInRefused as refusal:
            refused_s = context.refused(request)
            if refused_s is not None:
                return await too_many(request, refused_s)
            if refusal.locked_for is not None:
                return problem_response(
                    423, "Locked",
                    f"too many failed sign-ins for this name; try again in "
                    f"{refusal.locked_for} s",
                    field="name", rule=f"at most {settings.user_lockout_failures} failed "
                    f"sign-ins in a row", headers={"Retry-After": str(refusal.locked_for)})
            return problem_response(
                401, "Unauthorized", _REFUSED, field="credentials",
                rule="the name and password of an enabled user",
                headers={"WWW-Authenticate": 'Bearer realm="tradecore"'})
        now = datetime.now(UTC)
        ttl_s = settings.token_ttl_s
        token = issue_token(context.keyring, subject=user.name, role=user.role,
                            accounts=user.accounts, ttl_s=ttl_s, issuer=settings.jwt_issuer,
                            audience=settings.jwt_audience, now=now)
        return SessionToken(
            access_token=token, expires_in=ttl_s,
            expires_at=datetime.fromtimestamp(int(now.timestamp()) + ttl_s, UTC),
            subject=user.name, role=user.role.value,
            accounts="*" if user.accounts is None else sorted(map(str, user.accounts)))

    return api


def _too_many(request: Request, retry_s: int) -> JSONResponse:
    address = request.client.host if request.client else "unknown"
    return problem_response(
        429, "Too many requests",
        f"too many failed authentications from {address}; retry in {retry_s} s",
        field="client", rule="at most the failed-authentication limit per address",
        value=address, headers={"Retry-After": str(retry_s)})
