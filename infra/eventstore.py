"""Event store configuration: turns :class:`Settings` into the eventsourcing library's env."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from infra.codec import MAPPER_TOPIC
from infra.settings import Settings


def postgres_url(settings: Settings) -> str:
    """A libpq URL for the configured PostgreSQL, every part percent-encoded."""
    user, password, db = (quote(part, safe="") for part in (
        settings.postgres_user, settings.postgres_password, settings.postgres_db))
    return (f"postgresql://{user}:{password}@{settings.postgres_host}:"
            f"{settings.postgres_port}/{db}")


def eventsourcing_env(settings: Settings, *, schema: str | None = None) -> dict[str, str]:
    """The ``env`` for an eventsourcing application under these settings.

    SQLite (embedded): one file at ``sqlite_path`` (``:memory:`` allowed for tests).
    PostgreSQL: the eventsourcing psycopg recorder, tables created on first use.
    Either way events are stored in the versioned JSON form of :mod:`infra.codec`
    (``MAPPER_TOPIC``); events stored in the library's default form still load.
    """
    if settings.persistence == "sqlite":
        path = str(settings.sqlite_path)
        if path != ":memory:":
            settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return {
            "MAPPER_TOPIC": MAPPER_TOPIC,
            "PERSISTENCE_MODULE": "infra.sqlite_store:SQLiteFactory",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "30",
            "SQLITE_SYNCHRONOUS": settings.sqlite_synchronous,
        }
    return {
        "MAPPER_TOPIC": MAPPER_TOPIC,
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": settings.postgres_host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": settings.postgres_password,
        "POSTGRES_DBNAME": settings.postgres_db,
        "POSTGRES_SCHEMA": schema or settings.postgres_schema,
        "POSTGRES_POOL_SIZE": "4",
        "CREATE_TABLE": "y",
    }


def open_event_store(settings: Settings, name: str) -> Any:
    """Application ``name``'s stored events, opened to read its log (no aggregates).

    Opening creates the tables when they are missing. That runs behind the deployment's
    ``schema`` fence, as the command side's opening does (``api.wiring.trading_app``):
    the library's table creation (a ``CREATE OR REPLACE FUNCTION`` among others) is not
    safe to run concurrently. A projections worker that opened its store unfenced beside
    a starting saga made the saga fail with "tuple concurrently updated".
    """
    from eventsourcing.application import Application

    from infra.locks import stage_fence

    store = type("EventStore", (Application,), {"name": name})
    fence = stage_fence(settings, "schema")
    fence.acquire(blocking=True, timeout=120)
    try:
        return store(eventsourcing_env(settings))
    finally:
        fence.release()
