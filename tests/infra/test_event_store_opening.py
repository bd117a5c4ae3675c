"""Opening a store's log for reading waits for the deployment's schema fence.

The library's table creation is not safe to run concurrently (PostgreSQL answers
"tuple concurrently updated" to two ``CREATE OR REPLACE FUNCTION``); a projections worker
that opened its store beside a starting saga made the saga exit. Every opening takes
the same fence as the command side's (``api.wiring.trading_app``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from infra.eventstore import open_event_store
from infra.locks import stage_fence
from infra.settings import Settings


@pytest.mark.parametrize(
    "persistence", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_opening_an_event_store_waits_for_the_schema_fence(
    tmp_path: Path, persistence: str
) -> None:
    if persistence == "sqlite":
        settings = Settings(persistence="sqlite", sqlite_path=tmp_path / "events.sqlite")
    else:
        from tests.conftest import postgres_env

        settings = Settings(
            persistence="postgres", postgres_schema=postgres_env()["POSTGRES_SCHEMA"]
        )
    held = stage_fence(settings, "schema")
    assert held.acquire(blocking=True, timeout=10)
    opened: list[object] = []
    opener = threading.Thread(target=lambda: opened.append(open_event_store(settings, "Trading")))
    opener.start()
    opener.join(1.0)
    assert opener.is_alive() and not opened  # waiting behind the holder
    held.release()
    opener.join(30)
    assert len(opened) == 1
    store = opened[0]
    assert store.name == "Trading"  # type: ignore[attr-defined]
    assert list(store.notification_log.select(1, 10)) == []  # type: ignore[attr-defined]
    store.close()  # type: ignore[attr-defined]
