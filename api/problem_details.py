"""The RFC 9457 problem document: one builder every API module shares.

``api.problems`` (exception handlers, OpenAPI) and ``api.limits`` (the 413 body a
middleware sends before the app runs) both build problem documents; the builder lives
here, below both, so neither imports the other to get it.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://tradecore.dev/problems/"
_MAX_TEXT = 1000  # longest string echoed back in ``value``
_MAX_DEPTH = 6
_MAX_ITEMS = 50


class HugeInteger(int):
    """Stands in for a JSON integer too long to be any field's value.

    Python refuses to convert integers of more than 4300 digits (and converting long
    ones is quadratic), so such a body used to fail as "not JSON text in UTF-8". The
    request parser (``api.http.json_body``) reads any integer longer than
    :data:`HUGE_DIGITS` digits as one of these: an ``int`` beyond every bound the API
    states, so validation names the field and its real rule (its integer range), while
    the problem echoes ``"<5000-digit integer>"`` rather than a made-up value.
    """

    digits: int

    def __new__(cls, text: str) -> HugeInteger:
        negative = text.startswith("-")
        value = super().__new__(cls, -(10**HUGE_DIGITS) if negative else 10**HUGE_DIGITS)
        value.digits = len(text) - negative
        return value

    def describe(self) -> str:
        sign = "negative " if self < 0 else ""
        return f"<{sign}{self.digits}-digit integer>"


HUGE_DIGITS = 20
"""More digits than any integer the API accepts (the largest bound is below 2**63)."""


def problem_type(title: str) -> str:
    """A stable ``type`` URI from the title: ``Risk rejection`` -> ``.../risk-rejection``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "problem"
    return TYPE_BASE + slug


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` as something ``json.dumps(allow_nan=False)`` accepts, whatever it was.

    Problem bodies echo the offending input back, and the offending input is by nature
    odd (NaN prices, bytes, huge strings, objects); answering must never fail on it.
    """
    if isinstance(value, HugeInteger):
        return value.describe()
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if isinstance(value, bytes | bytearray | memoryview):
        return json_safe(bytes(value).decode("utf-8", errors="replace"), _depth)
    if isinstance(value, Enum):
        return json_safe(value.value, _depth)
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if _depth >= _MAX_DEPTH:
        return _text(value)
    if isinstance(value, BaseModel):
        try:
            return json_safe(value.model_dump(mode="python"), _depth + 1)
        except Exception:
            return _text(value)
    if isinstance(value, Mapping):
        items = list(value.items())[:_MAX_ITEMS]
        return {str(json_safe(k, _MAX_DEPTH)): json_safe(v, _depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, _depth + 1) for v in list(value)[:_MAX_ITEMS]]
    return _text(value)


def _text(value: Any) -> str:
    try:
        text = str(value)
    except Exception:
        text = object.__repr__(value)
    return json_safe(text)  # type: ignore[no-any-return]


def problem_document(
    status: int,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    rule: str | None = None,
    value: Any = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": problem_type(title),
        "title": title,
        "status": status,
        "detail": json_safe(str(detail)),
        "field": field,
        "rule": rule,
    }
    if value is not None:
        document["value"] = json_safe(value)
    if errors is not None:
        document["errors"] = json_safe(errors)
    if instance is not None:
        document["instance"] = instance
    return document
