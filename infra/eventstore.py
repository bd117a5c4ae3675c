"""Event store configuration: turns :class:`Settings` into the eventsourcing library's env."""

from __future__ import annotations

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
