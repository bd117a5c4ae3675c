"""Events stored by commit d07d3ea's code (the library's default JSON form) still load.

``tests/fixtures/legacy_events_d07d3ea.jsonl`` holds the rows that code stored for a
small demo session (every event type it had, and Account and Position snapshots); see
``tests/fixtures/make_legacy_events.py`` for how it was made. Loaded into a fresh store,
every aggregate reads back through the codec exactly as the library's own mapper reads
it, from events alone and from snapshots, and re-encoded in the contract's form it is
still the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from infra.codec import SCHEMA_VERSION, CodecMapper, codec
from tests.infra.test_codec import library_mapper

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_events_d07d3ea.jsonl"


def rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def stored(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(UUID(row["originator_id"]), row["originator_version"], row["topic"],
                       row["state"].encode("utf-8"))


def open_app(env: dict[str, str], *, snapshots: bool, library: bool = False
             ) -> Application[UUID]:
    env = {**env, "IS_SNAPSHOTTING_ENABLED": "y" if snapshots else "n"}
    if library:
        env.pop("MAPPER_TOPIC")  # the library's default mapper and transcoder
    return Application(env=env)


@pytest.fixture
def loaded(store_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A fresh store holding the fixture's rows, events and snapshots."""
    app = open_app(store_env, snapshots=True)
    try:
        table = rows()
        app.recorder.insert_events([stored(r) for r in table if r["table"] == "events"])
        assert app.snapshots is not None
        app.snapshots.recorder.insert_events(
            [stored(r) for r in table if r["table"] == "snapshots"])
    finally:
        app.close()
    yield store_env


def test_the_fixture_is_small_and_in_the_old_form() -> None:
    assert FIXTURE.stat().st_size < 300_000
    table = rows()
    assert {r["table"] for r in table} == {"events", "snapshots"}
    assert not any(r["state"].startswith('{"' + SCHEMA_VERSION) for r in table)
    topics = {r["topic"] for r in table}
    assert len(topics) >= 30  # every event type d07d3ea had, and the snapshot


def test_every_aggregate_loads_as_the_library_loads_it(loaded: dict[str, str]) -> None:
    ids = sorted({UUID(r["originator_id"]) for r in rows() if r["table"] == "events"})
    ours_from_snapshots = open_app(loaded, snapshots=True)
    ours_from_events = open_app(loaded, snapshots=False)
    library = open_app(loaded, snapshots=False, library=True)
    try:
        assert isinstance(ours_from_events.mapper, CodecMapper)
        assert not isinstance(library.mapper, CodecMapper)
        for aggregate_id in ids:
            expected = vars(library.repository.get(aggregate_id))
            assert vars(ours_from_events.repository.get(aggregate_id)) == expected
            assert vars(ours_from_snapshots.repository.get(aggregate_id)) == expected
    finally:
        for app in (ours_from_snapshots, ours_from_events, library):
            app.close()


def test_every_old_event_reencodes_in_the_new_form_and_means_the_same() -> None:
    old = library_mapper()
    ours = CodecMapper(old.transcoder)
    for row in rows():
        expected = old.to_domain_event(stored(row))
        event = ours.to_domain_event(stored(row))
        assert type(event) is type(expected)
        assert vars(event) == vars(expected), row["topic"]
        assert {k: type(v) for k, v in vars(event).items()} == \
            {k: type(v) for k, v in vars(expected).items()}, row["topic"]
        data = codec.encode(event)
        assert data.startswith(b'{"schema_version":')
        assert vars(codec.decode(row["topic"], data)) == vars(expected)


def test_a_store_rewritten_in_the_new_form_loads_the_same(
    loaded: dict[str, str], store_env: dict[str, str]
) -> None:
    """The old rows decoded and stored again through the codec, in a second store."""
    table = rows()
    source = open_app(loaded, snapshots=False)
    ids = sorted({UUID(r["originator_id"]) for r in table if r["table"] == "events"})
    try:
        events = [source.mapper.to_domain_event(stored(r))
                  for r in table if r["table"] == "events"]
        expected = {i: vars(source.repository.get(i)) for i in ids}
    finally:
        source.close()
    # a second schema/file: the same env with another SQLite file or PostgreSQL schema
    env = dict(store_env)
    if "SQLITE_DBNAME" in env:
        env["SQLITE_DBNAME"] = env["SQLITE_DBNAME"] + ".rewritten.sqlite"
    else:
        from tests.conftest import postgres_env

        env = postgres_env()
    target = open_app(env, snapshots=False)
    try:
        target.recorder.insert_events([target.mapper.to_stored_event(e) for e in events])
        for aggregate_id in ids:
            assert target.recorder.select_events(aggregate_id, limit=1)[0].state.startswith(
                b'{"schema_version":')
            rewritten = dict(vars(target.repository.get(aggregate_id)))
            assert len(rewritten.pop("_chain")) == 64  # stored again: now hash-chained
            assert rewritten == expected[aggregate_id]
    finally:
        target.close()


def test_a_store_written_before_the_stages_carries_on_without_redoing_anything(
        store_env: dict[str, str], universe: Any) -> None:
    """d07d3ea's saga (which also drove the venue) kept its position under "trading": the
    stages start from there, the venue rebuilds its books from the routed events already
    done, nothing is done twice, and new orders trade."""
    from eventsourcing.persistence import Tracking

    from aggregates.application import TradingApplication
    from aggregates.invariants import check_invariants
    from streams.embedded import LEGACY_TRACKING, in_process
    from tests.aggregates.helpers import funded, meta

    class Trading(Application[UUID]):  # the old store, under the trading app's name
        name = TradingApplication.name

    old = Trading(env={**store_env, "IS_SNAPSHOTTING_ENABLED": "y"})
    old.recorder.insert_events([stored(r) for r in rows() if r["table"] == "events"])
    assert old.snapshots is not None
    old.snapshots.recorder.insert_events(
        [stored(r) for r in rows() if r["table"] == "snapshots"])
    old.close()
    app = TradingApplication(store_env, universe=universe)
    head = app.head()
    app.recorder.insert_events([], tracking=Tracking(LEGACY_TRACKING, head))
    stages = in_process(app)
    assert stages.settle() == 0 and app.head() == head  # nothing redone
    assert [c.name for c in check_invariants(app) if not c.ok] == []
    venue = stages.matching.step.stage  # type: ignore[attr-defined]
    assert venue.replayed > 0  # its books rebuilt from the routed events already done
    symbol = universe.symbols[0]
    price = universe.get(symbol).base_price
    buyer, seller = (funded(app, name, 10**10, allow_short=True) for name in ("b9", "s9"))
    app.place_order(seller, client_order_id="s1", symbol=symbol, side="sell", quantity=100,
                    price=price, meta=meta())
    placed = app.place_order(buyer, client_order_id="b1", symbol=symbol, side="buy",
                             quantity=100, price=price, meta=meta())
    assert app.get_order(placed.order_id).status.value == "filled"
    assert [c.name for c in check_invariants(app) if not c.ok] == []
    app.close()
