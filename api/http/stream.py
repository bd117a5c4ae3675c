"""WebSocket ``/v1/stream``: the caller's order updates and fills as they are projected.

Authenticate with ``Authorization: Bearer <token>`` or ``?token=<token>`` (browsers
cannot set headers on a WebSocket). Each message is JSON ``{"kind": "order"|"fill",
"data": {...}}`` for accounts the token may see. A client too slow to keep up is closed
(1013) rather than allowed to grow the server's memory; it reconnects and catches up
through the query routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from fastapi.encoders import jsonable_encoder

from api.http.deps import Context
from api.security import AuthError, principal_from_token


def router(context: Context) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["stream"])

    @api.websocket("/stream")
    async def stream(socket: WebSocket) -> None:
        header = socket.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = token or socket.query_params.get("token")
        settings = context.settings
        try:
            if not token:
                raise AuthError("missing bearer token")
            principal = principal_from_token(context.keyring, token, settings.jwt_issuer,
                                             settings.jwt_audience)
        except AuthError as err:
            # Accept first: a close before the handshake completes becomes a bare HTTP 403
            # that drops the code and the reason (and browsers see only 1006).
            await socket.accept()
            await socket.close(code=status.WS_1008_POLICY_VIOLATION, reason=err.reason)
            return
        await socket.accept()

        def may_see(account_id: str) -> bool:
            return principal.can_see(UUID(account_id))

        subscription = context.rt.broadcaster.subscribe(may_see)
        receiver = asyncio.create_task(_drain(socket))
        try:
            while not receiver.done():
                getter = asyncio.create_task(subscription.inbox.get())
                done, _ = await asyncio.wait({getter, receiver},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                if subscription.overflowed:
                    await socket.close(code=status.WS_1013_TRY_AGAIN_LATER,
                                       reason="client too slow; reconnect and catch up")
                    break
                update = getter.result()
                await socket.send_json({"kind": update.kind,
                                        "data": jsonable_encoder(update.data)})
        except WebSocketDisconnect:
            pass
        finally:
            context.rt.broadcaster.unsubscribe(subscription)
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver

    return api


async def _drain(socket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_text()
