"""The HTTP API: FastAPI app with command routes, query routes, a WebSocket stream.

``create_app(settings)`` builds the app around a :class:`api.runtime.Runtime` (write
model, projector, order desk) that starts and stops with the app's lifespan. Routes are
in :mod:`api.http.commands`, :mod:`api.http.queries` and :mod:`api.http.stream`; auth,
rate limits and problem+json come from :mod:`api.security`, :mod:`api.limits` and
:mod:`api.problems`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregates.instruments import Universe
from api.bearer import authenticator
from api.gate import Gate
from api.http import audit, commands, console, queries, session, stream
from api.http.deps import Context
from api.http.models import Health, ProjectionLag, StageLag
from api.limits import BodySizeLimit, FailedAuthLimit, RateLimiter
from api.problems import install_problem_handlers, problem_response
from api.runtime import Runtime
from api.security import KeyRing, TokenVerifier
from infra.settings import Settings

REQUESTS = Counter("tradecore_http_requests_total", "HTTP requests answered",
                   ["method", "route", "status"])
LATENCY = Histogram("tradecore_http_request_seconds", "HTTP request latency",
                    ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
PROJECTION_LAG = Gauge("tradecore_projection_lag_events",
                       "Notifications stored but not yet projected", ["projection"])
STAGE_LAG = Gauge("tradecore_stage_lag_events",
                  "Inputs waiting for a stage of the order flow", ["stage"])


def create_app(settings: Settings, *, universe: Universe | None = None,
               distributed: bool = False) -> FastAPI:
    """``distributed``: no stage runs in this process (``tradecore serve --distributed``;
    the ``tradecore worker`` processes do that work)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, universe=universe, distributed=distributed)
        runtime.start()
        app.state.context.runtime = runtime
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="tradecore",
        version="1",
        summary="Event-sourced trading core for Japanese equities: commands and read models.",
        lifespan=lifespan,
    )
    keyring = KeyRing.load_or_create(settings.jwt_keys_path)
    verifier = TokenVerifier(keyring, settings.jwt_issuer, settings.jwt_audience)
    context = Context(
        settings=settings,
        limiter=RateLimiter(settings.rate_limit),
        authenticate=authenticator(keyring, settings.jwt_issuer, settings.jwt_audience,
                                   verifier),
        keyring=keyring,
        failures=FailedAuthLimit(settings.auth_failure_limit),
    )
    app.state.context = context
    install_problem_handlers(app)
    # outermost last: metrics see everything; the gate refuses before a body is read
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(Gate, verifier=verifier, limiter=context.limiter,
                       failures=context.failures,
                       inflight=settings.max_inflight_per_principal,
                       refusal_delay_s=settings.refusal_delay_s)
    app.add_middleware(RequestMetrics)
    app.include_router(commands.router(context))
    app.include_router(queries.router(context))
    app.include_router(audit.router(context))
    app.include_router(stream.router(context))
    app.include_router(session.router(context))
    console.install(app)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process is up (liveness)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["operations"],
             responses={503: {"description": "Not ready", "model": Health}})
    def readyz(response: Response) -> Health:
        """Ready when the write model is open and no stage of this process is starting
        or failing (a stage another process runs is fine); lists every stage's and
        projection's real lag."""
        runtime = context.runtime
        if runtime is None:
            response.status_code = 503
            return Health(status="starting")
        stages = [StageLag(name=lag.name, position=lag.position, behind=lag.behind,
                           running=lag.running, state=lag.state, error=lag.error)
                  for lag in runtime.lags()]
        lags = [ProjectionLag(name=lag.name, position=lag.position, head=lag.head,
                              behind=lag.behind) for lag in runtime.projection_lags()]
        failing = [stage for stage in stages if stage.error]
        if failing:
            response.status_code = 503
            return Health(status=f"stage {failing[0].name} failing: {failing[0].error}",
                          projections=lags, stages=stages)
        starting = [stage.name for stage in stages if stage.state == "starting"]
        if starting:  # restoring its books or reading its position: not serving yet
            response.status_code = 503
            return Health(status=f"starting: {', '.join(starting)}", projections=lags,
                          stages=stages)
        return Health(status="ready", projections=lags, stages=stages)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        """Prometheus metrics (requests, latency, stage and projection lag)."""
        if context.runtime is not None:
            for lag in context.runtime.projection_lags():
                PROJECTION_LAG.labels(lag.name).set(lag.behind)
            for stage in context.runtime.lags():
                STAGE_LAG.labels(stage.name).set(stage.behind)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class RequestMetrics:
    """Counts and times every HTTP request by route template (pure ASGI: no extra task
    or body buffering per request, unlike ``@app.middleware``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
            REQUESTS.labels(method, route, str(status)).inc()


__all__ = ["create_app", "problem_response"]
