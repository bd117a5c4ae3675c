"""The relay reads the eventsourcing recorder's events table with its own query
(``infra.relay_store``): this pins that it returns exactly the recorder's notifications,
in the recorder's order, so a library upgrade that changes the table fails here."""

from __future__ import annotations

import pytest

from infra.eventstore import postgres_url
from infra.relay_store import RelayPositions
from infra.settings import Settings
from tests.conftest import postgres_env
from tests.projections.test_bulk_rebuild import flow

pytestmark = pytest.mark.postgres


def test_the_relay_reads_the_recorders_own_notifications_in_order() -> None:
    env = postgres_env()
    app = flow(env)
    settings = Settings(persistence="postgres", postgres_schema=env["POSTGRES_SCHEMA"])
    log = RelayPositions(postgres_url(settings), settings.postgres_schema,
                         app.recorder.events_table_name)
    try:
        expected = [(n.id, str(n.originator_id), n.originator_version, n.topic,
                     bytes(n.state))
                    for n in app.recorder.select_notifications(start=1, limit=100_000)]
        assert len(expected) > 100
        got, after = [], 0
        while page := log.read(after, 37):  # pages that end mid-way through the log
            got += [(int(i), o, int(v), t, bytes(s)) for i, o, v, t, s in page]
            after = int(page[-1][0])
        assert got == expected
        assert log.head() == expected[-1][0]
        assert log.get("prefix") == 0
        log.put("prefix", 42)
        assert log.get("prefix") == 42
    finally:
        log.close()
        app.close()
