"""WebSocket ``/v1/stream``: the caller's order updates and fills as they are projected.

Authenticate with ``Authorization: Bearer <token>`` or ``?token=<token>`` (browsers
cannot set headers on a WebSocket). Each message is JSON ``{"kind": "order"|"fill",
"data": {...}}`` for accounts the token may see.

Close codes (``docs/api.md``):

* ``4401`` and the reason: the token is missing or refused when the socket opens, or
  stops holding while it is open (``token expired``, ``signing key retired``, ...). The
  token is checked before every message and at least every ``TOKEN_CHECK_S`` seconds,
  so a socket never outlives its token or its key;
* ``4429``: the client's address failed authentication too often
  (``TRADECORE_AUTH_FAILURE_LIMIT``); the reason says when to retry;
* ``1013``: the client fell too far behind; it reconnects and catches up through the
  query routes, rather than growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from uuid import UUID

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from fastapi.encoders import jsonable_encoder

from api.http.deps import Context
from api.security import AuthError, HeldToken

TOKEN_CHECK_S = 1.0
"""Longest a quiet socket goes without its token being checked again."""

CLOSE_UNAUTHORIZED = 4401
"""Close code for a token refused at the start or later (4000 + the HTTP status)."""

CLOSE_TOO_MANY = 4429
"""Close code for an address refused for failing authentication too often."""


def router(context: Context) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["stream"])

    @api.websocket("/stream")
    async def stream(socket: WebSocket) -> None:
        header = socket.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = token or socket.query_params.get("token")
        settings = context.settings
        refused_s = context.refused_for(socket)
        if refused_s is not None:  # this address keeps failing: not even verified
            await socket.accept()
            await socket.close(code=CLOSE_TOO_MANY, reason=_too_many(refused_s))
            return
        try:
            held = HeldToken(context.keyring, token, settings.jwt_issuer,
                             settings.jwt_audience)
        except AuthError as err:
            refused_s = context.refused(socket)
            # Accept first: a close before the handshake completes becomes a bare HTTP 403
            # that drops the code and the reason (and browsers see only 1006).
            await socket.accept()
            if refused_s is None:
                await socket.close(code=CLOSE_UNAUTHORIZED, reason=err.reason)
            else:
                await socket.close(code=CLOSE_TOO_MANY, reason=_too_many(refused_s))
            return
        await socket.accept()
        principal = held.principal

        def may_see(account_id: str) -> bool:
            return principal.can_see(UUID(account_id))

        subscription = context.rt.broadcaster.subscribe(may_see)
        receiver = asyncio.create_task(_drain(socket))
        getter: asyncio.Task[object] | None = None
        try:
            while not receiver.done():
                if getter is None:
                    getter = asyncio.create_task(subscription.inbox.get())
                wait = min(TOKEN_CHECK_S, max(held.expires_at - time.time(), 0.0))
                done, _ = await asyncio.wait({getter, receiver}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    break
                refusal = held.refusal()
                if refusal is not None:
                    await socket.close(code=CLOSE_UNAUTHORIZED, reason=refusal)
                    break
                if getter not in done:
                    continue  # a quiet second: the token was checked, keep waiting
                if subscription.overflowed:
                    await socket.close(code=status.WS_1013_TRY_AGAIN_LATER,
                                       reason="client too slow; reconnect and catch up")
                    break
                update = getter.result()
                getter = None
                await socket.send_json({"kind": update.kind,  # type: ignore[attr-defined]
                                        "data": jsonable_encoder(update.data)})  # type: ignore[attr-defined]
        except WebSocketDisconnect:
            pass
        finally:
            context.rt.broadcaster.unsubscribe(subscription)
            for task in (getter, receiver):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver

    return api


def _too_many(retry_s: int) -> str:
    return f"too many failed authentications from this address; retry in {retry_s} s"


async def _drain(socket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_text()
