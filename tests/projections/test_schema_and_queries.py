"""Migrations, time buckets, retention and paging, on SQLite, TimescaleDB and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections.queries import BUCKETS, ReadModels
from projections.retention import drop_older_than
from projections.schema import HYPERTABLES, MIGRATIONS, applied, upgrade
from projections.store import ReadStore
from tests.projections.conftest import StoreFactory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC


def migrated(new_store: StoreFactory) -> ReadStore:
    store = new_store()
    upgrade(store)
    return store


def test_upgrade_applies_each_migration_once(new_store: StoreFactory) -> None:
    store = new_store()
    first = upgrade(store)
    assert [line.split(":")[0] for line in first] == [str(m.version) for m in MIGRATIONS]
    assert upgrade(store) == []
    done = applied(store)
    assert sorted(done) == [m.version for m in MIGRATIONS]
    if store.timescale:
        names = {r[0] for r in store.fetchall(
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = %s", (store.schema,))}
        assert names == set(HYPERTABLES)
        assert "skipped" not in done[2]
    else:
        assert "skipped: no timescaledb" in done[2]


def _pnl(store: ReadStore, rows: list[tuple[timedelta, int, int]]) -> None:
    with store.transaction():
        store.insert("pnl", ("ts", "seq", "account_id", "realised", "unrealised", "fees"),
                     [(store.ts(T0 + offset), seq, "acct", realised, 0, seq)
                      for seq, (offset, realised, _) in enumerate(rows, start=1)])


def test_pnl_series_takes_the_last_snapshot_of_each_bucket(new_store: StoreFactory) -> None:
    store = migrated(new_store)
    _pnl(store, [(timedelta(seconds=5), 100, 0), (timedelta(seconds=50), 120, 0),
                 (timedelta(minutes=1, seconds=1), 90, 0), (timedelta(hours=1, minutes=2), 300, 0),
                 (timedelta(hours=1, minutes=2), 310, 0)])  # same instant: later seq wins
    reads = ReadModels(store)
    minutes = reads.pnl("acct", BUCKETS["1m"])
    assert [(p["bucket"], p["realised"]) for p in minutes] == [
        (T0, 120), (T0 + timedelta(minutes=1), 90), (T0 + timedelta(hours=1, minutes=2), 310)]
    assert minutes[0]["net"] == 120 - 2  # realised + unrealised - fees (fees = seq here)
    hours = reads.pnl("acct", BUCKETS["1h"])
    assert [(p["bucket"], p["realised"]) for p in hours] == [
        (T0, 90), (T0 + timedelta(hours=1), 310)]
    day = reads.pnl("acct", BUCKETS["1d"], since=T0 + timedelta(minutes=1))
    assert [(p["bucket"], p["realised"]) for p in day] == [
        (T0.replace(hour=0), 310)]
    assert reads.pnl("other", BUCKETS["1d"]) == []


def test_bars_roll_up_into_wider_buckets(new_store: StoreFactory) -> None:
    store = migrated(new_store)
    columns = ("ts", "symbol", "open", "high", "low", "close", "volume", "notional", "trades")
    with store.transaction():
        store.insert("bars", columns, [
            (store.ts(T0), "7203", 100, 110, 95, 105, 300, 31500, 3),
            (store.ts(T0 + timedelta(minutes=3)), "7203", 105, 120, 104, 119, 100, 11900, 1),
            (store.ts(T0 + timedelta(minutes=6)), "7203", 119, 119, 90, 91, 200, 18200, 2),
            (store.ts(T0), "6758", 1, 1, 1, 1, 1, 1, 1),
        ])
    bars = ReadModels(store).bars("7203", BUCKETS["5m"])
    assert [(b["bucket"], b["open"], b["high"], b["low"], b["close"], b["volume"], b["trades"])
            for b in bars] == [(T0, 100, 120, 95, 119, 400, 4),
                               (T0 + timedelta(minutes=5), 119, 119, 90, 91, 200, 2)]


def test_retention_drops_only_old_rows(new_store: StoreFactory) -> None:
    store = migrated(new_store)
    columns = ("ts", "seq", "execution_id", "order_id", "account_id", "symbol", "side",
               "price", "quantity", "notional", "fee", "liquidity")
    now = T0 + timedelta(days=40)
    with store.transaction():
        store.insert("fills", columns, [
            (store.ts(T0 + timedelta(days=d)), d + 1, f"x{d}", "o", "a", "7203", "buy", 1, 100,
             10, 0, "taker") for d in range(40)])
    dropped = drop_older_than(store, timedelta(days=10), now=now)
    left = [store.moment(r[0]) for r in store.fetchall("SELECT ts FROM fills ORDER BY ts")]
    assert left and min(left) >= now - timedelta(days=11)  # whole chunks (days) go at most
    assert all(moment >= now - timedelta(days=10) for moment in left) or store.timescale
    assert dropped["fills"] > 0
    assert len(left) < 40
    with pytest.raises(ValueError, match="age"):
        drop_older_than(store, timedelta(0))


def test_order_pages_are_stable_and_scoped(new_store: StoreFactory) -> None:
    store = migrated(new_store)
    columns = ("order_id", "seq", "account_id", "client_order_id", "symbol", "side",
               "order_type", "tif", "quantity", "price", "status", "filled_quantity",
               "filled_notional", "fees", "reason", "created_at", "updated_at", "version")
    marks = ", ".join("%s" for _ in columns)
    with store.transaction():
        store.executemany(f"INSERT INTO orders ({', '.join(columns)}) VALUES ({marks})", [
            (f"o{i}", i, "a" if i % 2 else "b", f"c{i}", "7203", "buy", "limit", "day", 100,
             1000, "working" if i % 3 else "filled", 0, 0, 0, "",
             store.ts(T0 + timedelta(seconds=i)), store.ts(T0), 1) for i in range(1, 26)])
    reads = ReadModels(store)
    seen, cursor = [], None
    while True:
        page = reads.orders(accounts={"a"}, cursor=cursor, limit=4)
        seen += [o["seq"] for o in page.items]
        assert all(o["account_id"] == "a" for o in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted((i for i in range(1, 26) if i % 2), reverse=True)
    assert reads.orders(accounts={"a"}, account_id="b").items == []  # not the caller's
    assert reads.orders(accounts=set()).items == []
    filled = reads.orders(accounts=None, status="filled", since=T0 + timedelta(seconds=10),
                          until=T0 + timedelta(seconds=20))
    assert [o["seq"] for o in filled.items] == [18, 15, 12]


def test_halts_list_every_symbol_halt_and_only_the_callers_account_halts(
        new_store: StoreFactory) -> None:
    """Projected from a real session: what a risk officer and a trader are shown."""
    from aggregates.account import Account
    from projections.projectors import Projector, RecorderLog
    from tests.aggregates.test_properties import SYMBOLS, run

    app = run([("halt", "account", 0), ("halt", "account", 1), ("halt", "symbol", 0),
               ("resume", "account", 1), ("halt", "account", 2)])
    store = migrated(new_store)
    Projector(store, RecorderLog(app.recorder, app.mapper), batch_size=3).catch_up()
    ids = {app.get_account(a).name: str(a) for a in app.ids_of(Account)}
    reads = ReadModels(store)

    everything = reads.halts(None)  # risk and admin: newest first
    assert [(h["kind"], h["name"] or h["target"], h["reason"], h["principal"])
            for h in everything] == [
        ("account", "t2", "limit breach n4", "risk"),
        ("symbol", SYMBOLS[0], "news pending n2", "risk"),
        ("account", "t0", "limit breach n0", "risk")]
    assert all(h["halted_at"].tzinfo is not None for h in everything)
    # a trader of t0 sees the symbol halt and their own account's; t1 (resumed): symbol only
    assert [h["target"] for h in reads.halts({ids["t0"]})] == [SYMBOLS[0], ids["t0"]]
    assert [h["target"] for h in reads.halts({ids["t1"]})] == [SYMBOLS[0]]
    assert [h["target"] for h in reads.halts(set())] == [SYMBOLS[0]]
