"""Audit and integrity: the hash chain written with every event, what `audit verify`
finds when the real SQLite file or PostgreSQL table is tampered with, state as of a time
or version, an order's trail, and byte-exact export/import.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from aggregates import ids
from aggregates.application import TradingApplication
from aggregates.audit import state_of
from aggregates.clock import SimulatedClock
from aggregates.errors import Conflict, NotFound, RuleViolation
from aggregates.instruments import Universe
from api import audit
from infra.chain import GENESIS, links
from tests.aggregates.helpers import funded, give_shares, make_app, meta, place
from tests.infra.test_legacy_events import rows, stored

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(START)


def _desk(app: TradingApplication, universe: Universe, clock: SimulatedClock
          ) -> dict[str, Any]:
    """Two accounts cross orders; the clock moves a second per command."""
    symbol = "7203"
    price = universe.get(symbol).base_price
    seller, buyer = funded(app, "seller"), funded(app, "buyer")
    give_shares(app, seller, symbol, 1000, price)
    orders = []
    for _ in range(4):
        clock.advance(1)
        place(app, seller, symbol, "sell", 100, price)
        clock.advance(1)
        orders.append(place(app, buyer, symbol, "buy", 100, price).order_id)
    return {"symbol": symbol, "price": price, "seller": seller, "buyer": buyer,
            "orders": orders}


# -- the chain -------------------------------------------------------------------------------


def test_every_write_path_chains_and_a_restart_carries_the_chain_on(
        store_env: dict[str, str], universe: Universe, clock: SimulatedClock) -> None:
    """Commands, the saga stage, the matching stage's venue reports and snapshots (every
    3 events) all write chained events; reopened (stages restart from their snapshots),
    the next events chain on the last ones instead of starting again."""
    app = make_app(store_env, universe, snapshot_interval=3, clock=clock)
    desk = _desk(app, universe, clock)
    report = audit.verify(app)
    assert report.ok, report.problems
    assert report.events == report.chained == app.head()
    assert report.unchained_prefix == 0
    account = app.get_account(desk["buyer"])
    last = app.recorder.select_events(desk["buyer"], desc=True, limit=1)[0]
    found = links(last.state)
    assert found is not None and account.chain_head == found[1]
    app.close()

    again = make_app(store_env, universe, snapshot_interval=3, clock=clock)
    clock.advance(1)
    place(again, desk["seller"], desk["symbol"], "sell", 100, desk["price"])
    clock.advance(1)
    place(again, desk["buyer"], desk["symbol"], "buy", 100, desk["price"])
    report = audit.verify(again)
    assert report.ok, report.problems
    assert report.events == again.head()
    venue = ids.venue_id(desk["symbol"])
    events = again.recorder.select_events(venue)
    assert len(events) > 8  # the venue stream went on after the restart
    chain = [links(e.state) for e in events]
    assert chain[0] is not None and chain[0][0] == GENESIS
    for before, after in itertools.pairwise(chain):
        assert before is not None and after is not None and after[0] == before[1]
    again.close()


def _tamper_sqlite(path: str, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    with sqlite3.connect(path) as db:
        for sql, args in statements:
            db.execute(sql, args)


def _tamper_postgres(env: dict[str, str], statements: list[tuple[str, tuple[Any, ...]]]
                     ) -> None:
    import psycopg

    from infra.services import ensure_postgres

    with psycopg.connect(ensure_postgres(), autocommit=True) as db:
        db.execute(f'SET search_path TO "{env["POSTGRES_SCHEMA"]}"')
        for sql, args in statements:  # the application's table: <name>_events
            db.execute(sql.replace("?", "%s").replace("stored_events", "trading_events"),
                       args)


def _key(env: dict[str, str], aggregate_id: UUID) -> Any:
    return aggregate_id.hex if "SQLITE_DBNAME" in env else aggregate_id  # as each stores it


def test_verify_finds_each_tampered_missing_and_reordered_event_with_its_position(
        store_env: dict[str, str], universe: Universe, clock: SimulatedClock,
        tmp_path: Path) -> None:
    """Tamper the real file/table behind the library's back: a changed byte of one
    event's stored state, a deleted row, two rows' versions swapped. Each is reported
    with its aggregate, version and position, and the CLI exits 1."""
    app = make_app(store_env, universe, snapshot_interval=0, clock=clock)
    desk = _desk(app, universe, clock)
    assert audit.verify(app).ok
    first, second = desk["orders"][0], desk["orders"][1]
    seller_position = ids.position_id(desk["seller"], desk["symbol"])
    stored_before = {r[1:3]: r for r in audit.stored_rows(app)}
    position_of = {(UUID(str(r[1])), r[2]): r[0] for r in stored_before.values()}
    original = app.recorder.select_events(first, lte=1)[0].state
    changed = original.replace(b'"quantity":100', b'"quantity":900')
    assert changed != original
    assert len(app.recorder.select_events(second)) >= 4
    app.close()
    statements = [
        ("UPDATE stored_events SET state = ? WHERE originator_id = ? AND "
         "originator_version = 1", (changed, _key(store_env, first))),
        ("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 2",
         (_key(store_env, second),)),
        ("UPDATE stored_events SET originator_version = -1 WHERE originator_id = ? "
         "AND originator_version = 2", (_key(store_env, seller_position),)),
        ("UPDATE stored_events SET originator_version = 2 WHERE originator_id = ? "
         "AND originator_version = 3", (_key(store_env, seller_position),)),
        ("UPDATE stored_events SET originator_version = 3 WHERE originator_id = ? "
         "AND originator_version = -1", (_key(store_env, seller_position),)),
    ]
    if "SQLITE_DBNAME" in store_env:
        _tamper_sqlite(store_env["SQLITE_DBNAME"], statements)
    else:
        _tamper_postgres(store_env, statements)

    reopened = audit.TradingStore(store_env)
    try:
        report = audit.verify(reopened)
        found = {(p.kind, p.aggregate_id, p.version): p for p in report.problems}
        assert set(found) == {("tampered", str(first), 1), ("missing", str(second), 2),
                              ("reordered", str(seller_position), 2)}, report.problems
        assert found[("tampered", str(first), 1)].position == position_of[(first, 1)]
        assert found[("missing", str(second), 2)].position is None  # it is not stored
        # the event written as version 2 and now stored as 3 comes first in the log; the
        # one now claiming version 2 (written as 3) is the one out of order
        assert found[("reordered", str(seller_position), 2)].position == \
            position_of[(seller_position, 3)]
        # one aggregate alone, in version order: the swap shows as broken links
        alone = audit.verify(reopened, seller_position)
        assert {p.kind for p in alone.problems} == {"reordered"}
        assert audit.verify(reopened, desk["buyer"]).ok
    finally:
        reopened.close()


def test_a_store_from_before_the_chain_verifies_as_an_unchained_prefix(
        store_env: dict[str, str], universe: Universe) -> None:
    """The legacy fixture's events carry no chain; the events written after them (on
    the same accounts, loaded from the legacy snapshots too) start a chain, and verify
    reports the old ones as an unchained prefix, not as tampering."""
    table = rows()
    base = audit.TradingStore(store_env)
    try:
        base.recorder.insert_events([stored(r) for r in table if r["table"] == "events"])
        assert base.snapshots is not None
        base.snapshots.recorder.insert_events(
            [stored(r) for r in table if r["table"] == "snapshots"])
    finally:
        base.close()
    legacy = sum(1 for r in table if r["table"] == "events")
    accounts = sorted({r["originator_id"] for r in table if r["table"] == "events"
                       and r["topic"].endswith("Account.Opened")})
    app = make_app(store_env, universe)
    try:
        for account in accounts:
            app.deposit(UUID(account), 1_000, meta("ops"))
        report = audit.verify(app)
        assert report.ok, report.problems
        assert report.unchained_prefix == legacy
        assert report.chained == app.head() - legacy >= len(accounts)
        # an account that had legacy events now chains from the genesis digest
        newest = app.recorder.select_events(UUID(accounts[0]), desc=True, limit=1)[0]
        assert links(newest.state) is not None and links(newest.state)[0] == GENESIS  # type: ignore[index]
    finally:
        app.close()


# -- state as of a time or a version -------------------------------------------------------


def test_state_as_of_a_version_or_a_time_is_the_replay_to_that_point(
        store_env: dict[str, str], universe: Universe, clock: SimulatedClock) -> None:
    app = make_app(store_env, universe, snapshot_interval=3, clock=clock)
    desk = _desk(app, universe, clock)
    buyer = desk["buyer"]
    history = list(app.events.get(buyer))
    assert len(history) > 6
    for version in range(1, len(history) + 1):
        expected = history[0].mutate(None)
        for event in history[1:version]:
            expected = event.mutate(expected)
        found = audit.state_at(app, buyer, version=version)
        assert state_of(found.aggregate) == state_of(expected), version
        if version >= 3:
            assert found.from_snapshot is not None and found.from_snapshot <= version
    # as of a time: the state after the last event at or before it
    fourth = history[3]
    at = audit.state_at(app, buyer, as_of=fourth.timestamp + timedelta(microseconds=0))
    assert at.version == max(e.originator_version for e in history
                             if e.timestamp <= fourth.timestamp)
    in_tokyo = fourth.timestamp.astimezone(UTC).astimezone(
        datetime.fromisoformat("2026-01-01T00:00:00+09:00").tzinfo)
    assert audit.state_at(app, buyer, as_of=in_tokyo).version == at.version

    view = audit.show(app, buyer, version=2)
    assert view["state"]["cash"] == 50_000_000 and view["version"] == 2
    assert [e["version"] for e in view["history"]] == list(range(1, len(history) + 1))
    first = view["history"][0]
    assert first["event"] == "Account.Opened" and first["principal"] == "buyer"
    assert first["command_id"] and first["correlation_id"] and first["causation_id"]
    assert first["timestamp"] == "2026-11-20T00:00:00.000000Z"
    app.close()


def test_bad_points_in_time_are_refused_naming_the_field_and_rule(
        store_env: dict[str, str], universe: Universe, clock: SimulatedClock) -> None:
    app = make_app(store_env, universe, clock=clock)
    account = funded(app, "a")
    last = len(list(app.events.get(account)))
    cases: list[tuple[dict[str, Any], type[Exception], str, str]] = [
        ({"version": 0}, RuleViolation, "version", f"an integer from 1 to {last}"),
        ({"version": last + 1}, RuleViolation, "version", f"an integer from 1 to {last}"),
        ({"as_of": START - timedelta(seconds=1)}, RuleViolation, "as_of",
         "at or after the aggregate's first event (2026-11-20T00:00:00.000000Z)"),
        ({"as_of": START.replace(tzinfo=None)}, RuleViolation, "as_of", "timezone-aware"),
        ({"as_of": START, "version": 1}, RuleViolation, "as_of", "either as_of or version"),
    ]
    for kwargs, error, field, rule in cases:
        with pytest.raises(error) as raised:
            audit.state_at(app, account, **kwargs)
        assert raised.value.field == field and raised.value.rule.startswith(rule), kwargs
    with pytest.raises(NotFound) as missing:
        audit.state_at(app, ids.account_id("nobody"))
    assert missing.value.field == "aggregate_id"
    with pytest.raises(RuleViolation) as naive:
        audit.parse_time("2026-11-20T09:00:00")
    assert naive.value.field == "as_of" and "timezone-aware" in naive.value.rule
    with pytest.raises(RuleViolation) as malformed:
        audit.parse_id("not-a-uuid")
    assert malformed.value.field == "aggregate_id"
    app.close()


def test_an_orders_trail_follows_its_flow_across_both_sides(
        store_env: dict[str, str], universe: Universe, clock: SimulatedClock) -> None:
    app = make_app(store_env, universe, clock=clock)
    desk = _desk(app, universe, clock)
    order = desk["orders"][-1]  # a buy that crossed the seller's resting sell
    timeline = audit.trail(app, order)
    positions = [e["position"] for e in timeline]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    touched = {(e["kind"], e["aggregate_id"]) for e in timeline}
    fills = [r for e in timeline if e["event"] == "Venue.Reported"
             for r in e["fields"]["reports"] if "maker" in r]
    assert fills and all(f["taker"] == str(order) for f in fills)
    expected = {("order", str(order)), ("account", str(desk["buyer"])),
                ("account", str(desk["seller"])),
                ("position", str(ids.position_id(desk["buyer"], desk["symbol"]))),
                ("position", str(ids.position_id(desk["seller"], desk["symbol"]))),
                ("venue", str(ids.venue_id(desk["symbol"])))}
    assert expected <= touched, touched
    for fill in fills:  # the maker's own fill is in the taker's flow
        assert ("order", fill["maker"]) in touched
    events = {e["event"] for e in timeline}
    assert {"Order.Placed", "Order.Filled", "Account.BuySettled", "Account.SellSettled",
            "Position.FillApplied", "Venue.Reported"} <= events
    other = desk["orders"][0]
    assert all(e["aggregate_id"] != str(other) for e in timeline)
    with pytest.raises(RuleViolation):
        audit.trail(app, desk["buyer"])  # an account is not an order
    app.close()


# -- export / import -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_and_import_round_trip_byte_exactly_and_verify(
        store_env: dict[str, str], universe: Universe, clock: SimulatedClock,
        tmp_path: Path, fmt: str) -> None:
    app = make_app(store_env, universe, clock=clock)
    _desk(app, universe, clock)
    source = list(audit.stored_rows(app))
    out = tmp_path / f"events.{fmt}"
    assert audit.export_events(app, out, fmt) == len(source)  # type: ignore[arg-type]

    with pytest.raises(Conflict) as refused:  # into a store that has events
        audit.import_events(app, out)
    assert refused.value.field == "store"
    assert list(audit.stored_rows(app)) == source  # nothing changed
    app.close()

    target_env = dict(store_env)
    if "SQLITE_DBNAME" in target_env:
        target_env["SQLITE_DBNAME"] = str(tmp_path / "imported.sqlite")
    else:
        from tests.conftest import postgres_env

        target_env = postgres_env()
    target = audit.TradingStore(target_env)
    try:
        assert audit.import_events(target, out) == len(source)
        imported = list(audit.stored_rows(target))
        assert [(p, str(i), v, t, bytes(s)) for p, i, v, t, s in imported] == \
            [(p, str(i), v, t, bytes(s)) for p, i, v, t, s in source]
        assert audit.verify(target).ok
    finally:
        target.close()


def test_an_import_of_a_broken_file_is_refused_and_stores_nothing(
        tmp_path: Path, store_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"position": 1, "originator_id": "x"}\n', encoding="utf-8")
    app = audit.TradingStore(store_env)
    try:
        with pytest.raises(RuleViolation) as raised:
            audit.import_events(app, bad)
        assert raised.value.field == "IN" and "line 1" in raised.value.message
        with pytest.raises(NotFound):
            audit.import_events(app, tmp_path / "absent.jsonl")
        assert not app.recorder.max_notification_id()  # type: ignore[attr-defined]
    finally:
        app.close()


@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("TRADECORE_SQLITE_PATH", str(tmp_path / "events.sqlite"))
    monkeypatch.setenv("TRADECORE_READMODEL_SQLITE_PATH", str(tmp_path / "read.sqlite"))
    monkeypatch.setenv("TRADECORE_PERSISTENCE", "sqlite")
    from infra.settings import get_settings

    get_settings.cache_clear()
    yield tmp_path / "events.sqlite"
    get_settings.cache_clear()


def test_the_cli_shows_verifies_and_refuses_bad_input_in_one_line(
        cli_store: Path, universe: Universe, clock: SimulatedClock) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli
    from infra.eventstore import eventsourcing_env
    from infra.settings import get_settings

    trading = make_app(eventsourcing_env(get_settings()), universe, clock=clock)
    desk = _desk(trading, universe, clock)
    trading.close()
    runner = CliRunner()
    buyer = str(desk["buyer"])

    shown = runner.invoke(cli, ["audit", "show", buyer, "--version", "2", "--json"])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert view["version"] == 2 and view["state"]["cash"] == 50_000_000
    table = runner.invoke(cli, ["audit", "show", buyer, "--as-of", "2026-11-20T09:00:00+09:00"])
    assert table.exit_code == 0 and "Account.Opened" in table.output, table.output
    ok = runner.invoke(cli, ["audit", "verify", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    trail = runner.invoke(cli, ["audit", "trail", str(desk["orders"][-1]), "--json"])
    assert trail.exit_code == 0 and "Venue.Reported" in trail.output
    assert runner.invoke(cli, ["events", buyer, "--json"]).exit_code == 0  # as before

    bad = {
        ("audit", "show", "nope"): "aggregate_id",  # an account name nobody opened
        ("audit", "trail", "nope"): "ORDER_ID",
        ("audit", "show", buyer, "--version", "0"): "version",
        ("audit", "show", buyer, "--version", "99"): "version",
        ("audit", "show", buyer, "--as-of", "2026-11-20T09:00:00"): "--as-of",
        ("audit", "show", buyer, "--as-of", "2020-01-01T00:00:00Z"): "as_of",
        ("audit", "show", buyer, "--as-of", "2026-11-20T09:00:00Z", "--version", "1"):
            "--as-of",
        ("audit", "trail", buyer): "order_id",
        ("audit", "verify", "--aggregate", str(ids.account_id("nobody"))): "aggregate",
        ("events", "export", "--format", "csv", "x.csv"): "--format",
    }
    for args, field in bad.items():
        done = runner.invoke(cli, list(args))
        assert done.exit_code == 2, (args, done.output)
        lines = done.output.strip().splitlines()
        assert "Traceback" not in done.output and lines[0].startswith("refused"), args
        assert f"field={field}" in done.output.replace("\n", " "), (args, done.output)

    with sqlite3.connect(cli_store) as db:
        db.execute("UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), "
                   "'50000000', '90000000') AS BLOB) "
                   "WHERE originator_id = ? AND originator_version = 2", (desk["buyer"].hex,))
    broken = runner.invoke(cli, ["audit", "verify"])
    assert broken.exit_code == 1, broken.output
    assert "tampered" in broken.output and buyer in broken.output.replace("\n", "")


def test_racing_writers_retried_on_conflict_keep_every_chain_whole(
        store_env: dict[str, str], universe: Universe) -> None:
    """Two writers (as two processes would) place baskets on the same account at once:
    the store refuses the loser's save and it decides again on fresh state, so each
    retried basket must chain to what the winner stored, not to what it first saw."""
    import threading

    from aggregates.application import OrderRequest

    first = TradingApplication(store_env, universe=universe)
    account = funded(first, "shared", cash=10_000_000_000)
    second = TradingApplication(store_env, universe=universe)
    symbol = "7203"
    price = universe.get(symbol).base_price

    def desk(app: TradingApplication, name: str, start: threading.Barrier) -> None:
        start.wait()
        for basket in range(15):
            app.place_orders([OrderRequest(account, f"{name}-{basket}-{i}", symbol, "buy", 100,
                                           meta(name), price=price) for i in range(3)])

    rounds = 0
    while rounds < 3 and first.conflicts + second.conflicts == 0:  # until they did race
        rounds += 1
        start = threading.Barrier(2)
        threads = [threading.Thread(target=desk, args=(app, f"{name}{rounds}", start))
                   for app, name in ((first, "a"), (second, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    try:
        assert first.conflicts + second.conflicts > 0, "the writers never raced"
        orders = rounds * 90
        assert len(first.recorder.select_events(account)) == 2 + orders  # + the holds
        report = audit.verify(first)
        assert report.ok, report.problems
        # the market, the account's events, the orders (PostgreSQL's log may have gaps
        # where a refused save took a number)
        assert report.chained == report.events == 1 + 2 + 2 * orders
    finally:
        first.close()
        second.close()
