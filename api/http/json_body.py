"""How request bodies are read as JSON.

FastAPI reads a body with ``json.loads``; an integer of more than 4300 digits then fails
inside Python's int conversion and the request was answered "400, JSON text in UTF-8",
which names neither the field nor the rule. :class:`JSONRoute` reads bodies with every
integer longer than ``HUGE_DIGITS`` digits turned into a :class:`HugeInteger` (no
conversion, no quadratic cost), so the model's range check refuses it naming the field
and its bounds: ``quantity: Input should be less than or equal to 1000000000``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.problem_details import HUGE_DIGITS, HugeInteger


def parse_int(text: str) -> int:
    if len(text) - text.startswith("-") > HUGE_DIGITS:
        return HugeInteger(text)
    return int(text)


def loads(body: bytes | str) -> Any:
    return json.loads(body, parse_int=parse_int)


class BoundedJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """``APIRouter(route_class=JSONRoute)``: the route's body is read by :func:`loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(BoundedJSONRequest(request.scope, request.receive))

        return route
