"""Every error the API returns is an RFC 9457 ``application/problem+json`` document.

One shape for all failures lets a client handle them with one code path, and the
project's rule that bad input names *the field and the rule it broke* holds for
domain errors, validation errors, auth and limits alike::

    {"type": "https://tradecore.dev/problems/rule-violation",
     "title": "Rule violation", "status": 422,
     "detail": "quantity=150 breaks rule 'multiple of the lot size 100'",
     "field": "quantity", "rule": "multiple of the lot size 100", "value": 150}

``install_problem_handlers(app)`` maps the exceptions; ``PROBLEM_RESPONSES`` documents
the bodies in OpenAPI (under ``application/problem+json``) for route decorators.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketState

from aggregates.errors import (
    Conflict,
    DomainError,
    IllegalTransition,
    NotFound,
    RiskRejection,
)
from api.limits import BodyTooLarge, RateLimited, RateLimiter, body_too_large_body

# the document builder lives below api.limits and this module; re-exported for callers
from api.problem_details import MEDIA_TYPE as MEDIA_TYPE
from api.problem_details import TYPE_BASE as TYPE_BASE
from api.problem_details import json_safe as json_safe
from api.problem_details import problem_document as problem_document
from api.problem_details import problem_type as problem_type
from api.security import Forbidden, Unauthorized

log = logging.getLogger(__name__)

_LOCATIONS = ("body", "query", "path", "header", "cookie")


# --------------------------------------------------------------------------- documents


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    rule: str | None = None,
    value: Any = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    document = problem_document(
        status,
        title,
        detail,
        field=field,
        rule=rule,
        value=value,
        errors=errors,
        instance=instance,
    )
    return JSONResponse(document, status_code=status, headers=headers, media_type=MEDIA_TYPE)


# --------------------------------------------------------------------------- OpenAPI


class ProblemError(BaseModel):
    """One of several input errors (request validation reports them all)."""

    field: str = Field(description="Dotted location of the input, e.g. `legs.0.quantity`.")
    rule: str = Field(description="The rule the input broke.")
    type: str | None = Field(default=None, description="Machine-readable error kind.")
    value: Any = Field(default=None, description="The offending input, when it is safe to echo.")


class Problem(BaseModel):
    """RFC 9457 problem details, with the field and rule that were broken."""

    type: str = Field(description="Stable URI naming the kind of problem.")
    title: str = Field(description="Short, fixed summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    field: str | None = Field(default=None, description="The input that broke a rule.")
    rule: str | None = Field(default=None, description="The rule it broke.")
    value: Any = Field(default=None, description="The offending value, when safe to echo.")
    errors: list[ProblemError] | None = Field(
        default=None, description="All input errors, for request validation."
    )
    instance: str | None = Field(
        default=None, description="Reference of this occurrence (server errors)."
    )


_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request.",
    401: "Missing, expired or invalid bearer token.",
    403: "The token's role or accounts do not allow this.",
    404: "No such resource.",
    409: "Conflicts with the current state (duplicate, illegal transition).",
    413: "Request body larger than the configured limit.",
    422: "Input breaks a rule (validation, domain rule or pre-trade risk).",
    429: "Rate limit exceeded; see Retry-After.",
    500: "Unexpected server error (logged with the reference in `instance`).",
    503: "Not ready to answer yet (e.g. read models behind `min_position`); see Retry-After.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting problem bodies for the given statuses."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status == 503:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        if status == 429:
            entry["headers"] = {
                name: {"description": text, "schema": {"type": "integer"}}
                for name, text in (
                    ("Retry-After", "Seconds to wait before retrying."),
                    ("RateLimit-Limit", "Requests allowed per window."),
                    ("RateLimit-Remaining", "Requests left in the window."),
                    ("RateLimit-Reset", "Seconds until the window frees a request."),
                )
            }
        if status == 401:
            entry["headers"] = {
                "WWW-Authenticate": {
                    "description": "`Bearer` challenge (RFC 6750).",
                    "schema": {"type": "string"},
                }
            }
        responses[status] = entry
    return responses


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = problem_responses(
    400, 401, 403, 404, 409, 413, 422, 429, 500
)
"""All problem statuses; pass ``responses=PROBLEM_RESPONSES`` (or pick with
:func:`problem_responses`). :func:`install_problem_handlers` adds the ``Problem``
schema these refer to into the app's OpenAPI components."""


def problem_schemas() -> dict[str, Any]:
    """``Problem`` and ``ProblemError`` as OpenAPI component schemas."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    definitions["Problem"] = schema
    return definitions


def _install_openapi_schemas(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            summary=app.summary,
            description=app.description,
            terms_of_service=app.terms_of_service,
            contact=app.contact,
            license_info=app.license_info,
            routes=app.routes,
            webhooks=app.webhooks.routes,
            tags=app.openapi_tags,
            servers=app.servers,
            separate_input_output_schemas=app.separate_input_output_schemas,
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in problem_schemas().items():
            schemas.setdefault(name, schema)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


# --------------------------------------------------------------------------- handlers


def _domain_kind(exc: DomainError) -> tuple[int, str]:
    if isinstance(exc, IllegalTransition):
        return 409, "Illegal transition"
    if isinstance(exc, Conflict):
        return 409, "Conflict"
    if isinstance(exc, NotFound):
        return 404, "Not found"
    if isinstance(exc, RiskRejection):
        return 422, "Risk rejection"
    return 422, "Rule violation"


async def _answer(conn: HTTPConnection, response: Response) -> Response | None:
    """HTTP gets the response; a WebSocket gets it as a denial or a close code 4xxx."""
    if not isinstance(conn, WebSocket):
        return response
    denial = "websocket.http.response" in conn.scope.get("extensions", {})
    if denial and conn.application_state == WebSocketState.CONNECTING:
        await conn.send_denial_response(response)
        return None
    status = response.status_code
    code = 4000 + status if status < 500 else 1011
    reason = json.loads(bytes(response.body)).get("detail", "")
    encoded = reason.encode()[:120].decode("utf-8", errors="ignore")
    with contextlib.suppress(RuntimeError):  # already closed
        await conn.close(code=code, reason=encoded)
    return None


async def _domain_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, DomainError)
    status, title = _domain_kind(exc)
    response = problem_response(
        status, title, exc.message, field=exc.field, rule=exc.rule, value=exc.value
    )
    return await _answer(conn, response)


def challenge(reason: str, token_present: bool) -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 6750 §3: no ``error`` without a token)."""
    if not token_present:
        return 'Bearer realm="tradecore"'
    description = re.sub(r'["\\]', "'", reason)
    return f'Bearer realm="tradecore", error="invalid_token", error_description="{description}"'


async def _unauthorized(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, Unauthorized)
    response = problem_response(
        401,
        "Unauthorized",
        exc.reason,
        field="authorization",
        rule="a valid bearer token",
        headers={"WWW-Authenticate": challenge(exc.reason, exc.token_present)},
    )
    return await _answer(conn, response)


async def _forbidden(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, Forbidden)
    response = problem_response(
        403, "Forbidden", exc.message, field=exc.field, rule=exc.rule, value=exc.value
    )
    return await _answer(conn, response)


async def _rate_limited(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, RateLimited)
    state = exc.state
    headers = {"Retry-After": str(state.reset_s), **RateLimiter.headers(state)}
    response = JSONResponse(exc.document(), status_code=429, headers=headers,
                            media_type=MEDIA_TYPE)
    return await _answer(conn, response)


async def _body_too_large(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, BodyTooLarge)
    response = Response(body_too_large_body(exc), status_code=413, media_type=MEDIA_TYPE,
                        headers={"Connection": "close"})
    return await _answer(conn, response)


def _location(loc: tuple[Any, ...] | list[Any], error_type: str) -> str:
    parts = list(loc)
    prefix = ""
    if parts and parts[0] in _LOCATIONS:
        prefix = str(parts.pop(0))
    if error_type == "json_invalid" or not parts:
        return prefix or "body"
    return ".".join(str(p) for p in parts)


async def _validation_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, RequestValidationError | WebSocketRequestValidationError)
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        kind = str(error.get("type", ""))
        entry: dict[str, Any] = {
            "field": _location(error.get("loc", ()), kind),
            "rule": "valid JSON" if kind == "json_invalid" else str(error.get("msg", kind)),
            "type": kind,
        }
        if kind == "json_invalid":
            entry["value"] = error.get("ctx", {}).get("error")
        elif kind != "missing":
            entry["value"] = error.get("input")
        errors.append(entry)
    if not errors:
        errors.append({"field": "body", "rule": "a valid request", "type": "invalid"})
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    response = problem_response(
        422,
        "Invalid request",
        f"{first['field']}: {first['rule']}{more}",
        field=first["field"],
        rule=first["rule"],
        value=first.get("value"),
        errors=errors,
    )
    return await _answer(conn, response)


async def _http_exception(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = str(exc.detail)
    title = phrase.capitalize()  # sentence case, like the domain titles
    field: str | None = None
    rule: str | None = None
    method = conn.scope.get("method", "")
    if status == 404 and detail == phrase:
        field, rule = "path", "an existing resource"
        detail = f"nothing at {method} {conn.url.path}"
    elif status == 400 and detail == "There was an error parsing the body":
        # FastAPI's own answer to a body it cannot decode: say which rule it broke
        field, rule, detail = "body", *_unparsable(exc.__cause__)
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow", "")
        field, rule = "method", f"one of {allowed}" if allowed else "an allowed method"
        detail = f"{method} is not allowed on {conn.url.path}"
    response = problem_response(
        status,
        title,
        detail,
        field=field,
        rule=rule,
        value=method if status == 405 else None,
        headers=dict(exc.headers or {}),
    )
    return await _answer(conn, response)


def _unparsable(cause: BaseException | None) -> tuple[str, str]:
    """(rule, detail) for a body FastAPI could not parse, from the underlying error."""
    if isinstance(cause, UnicodeError):
        return "JSON text in UTF-8", f"the body is not UTF-8 text: {cause}"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        # routes read with api.http.json_body never get here; others might
        return ("integers within the field's range",
                "the body holds an integer with more digits than any field allows")
    return "a JSON body", "the body could not be read as JSON"


async def _internal_error(conn: HTTPConnection, exc: Exception) -> Response:
    reference = f"urn:uuid:{uuid.uuid4()}"
    log.error(
        "unhandled %s on %s %s (%s)",
        type(exc).__name__,
        conn.scope.get("method", "WS"),
        conn.url.path,
        reference,
        exc_info=exc,
    )
    return problem_response(
        500,
        "Internal error",
        f"the server failed on this request; it was logged as {reference}",
        instance=reference,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every failure with problem+json and document the ``Problem`` schema."""
    # The handlers take HTTP requests and WebSockets alike, which Starlette's annotation
    # (one or the other) cannot express; hence ``Any``.
    handlers: dict[type[Exception], Any] = {
        DomainError: _domain_error,
        Unauthorized: _unauthorized,
        Forbidden: _forbidden,
        RateLimited: _rate_limited,
        BodyTooLarge: _body_too_large,
        RequestValidationError: _validation_error,
        WebSocketRequestValidationError: _validation_error,
        HTTPException: _http_exception,
        Exception: _internal_error,  # ServerErrorMiddleware: HTTP only, outermost
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
    _install_openapi_schemas(app)
