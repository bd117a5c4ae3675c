"""The FastAPI side of :mod:`api.security`: the bearer scheme and the caller dependency.

Kept apart so that the command line (keys, tokens) never imports FastAPI; ``api.security``
re-exports ``bearer`` and ``authenticator`` lazily.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.security import (
    PRINCIPAL_SCOPE_KEY,
    AuthError,
    KeyRing,
    Principal,
    TokenVerifier,
    Unauthorized,
    bearer_token,
)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description=(
        "A JWT issued by `tradecore auth token`: `Authorization: Bearer <token>`. "
        "Its role (trader, viewer, risk, admin) and accounts decide what the call may do."
    ),
)


def authenticator(
    keyring: KeyRing, issuer: str, audience: str, verifier: TokenVerifier | None = None
) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency giving the caller's :class:`Principal` or raising Unauthorized.

    Behind :class:`api.gate.Gate` (``tradecore serve``) the gate has already
    authenticated the request and this returns what it found; an app without the gate
    (tests, embedding) verifies here, with the same verifier and the same answers.
    """
    tokens = verifier or TokenVerifier(keyring, issuer, audience)

    async def current_principal(
        connection: HTTPConnection,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        found = connection.scope.get(PRINCIPAL_SCOPE_KEY)
        if isinstance(found, Principal):
            return found
        if credentials is None:
            bearer_token(connection.headers.get("authorization"))  # raises the reason
            raise Unauthorized("authorization scheme must be Bearer with a token")
        try:
            return tokens.verify(credentials.credentials)
        except AuthError as err:
            raise Unauthorized(err.reason) from None

    return current_principal
