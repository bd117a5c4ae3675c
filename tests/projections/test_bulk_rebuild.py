"""The bulk rebuild (``tradecore projections rebuild``) writes what a row-by-row replay
writes: every table, every row, every tracking position, and the same indexes after it.

On SQLite, TimescaleDB and plain PostgreSQL, over order flows with fills, cancels,
amends, halts, session closes and fees; over empty and over populated read models; cut
off by ``--until``; killed half way (it must leave the read models as they were); and
fanned out over processes (PostgreSQL).
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.account import Account
from aggregates.errors import DomainError
from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from projections.projectors import Projector, RecorderLog, all_projections, until_position
from projections.rebuild import rebuild, secondary_indexes
from projections.schema import upgrade
from projections.store import ReadStore
from streams.projection_rebuild import groups_for, rebuild_in_processes
from tests.aggregates.helpers import funded, meta
from tests.aggregates.test_properties import SYMBOLS, UNIVERSE, command, run
from tests.projections.conftest import StoreFactory
from tests.projections.test_read_models import PINNED, Crash, CrashingInsert

FLOW = PINNED * 3  # fills, cancels, a session close, halts and resumes


def flow(env: dict[str, str] | None = None) -> Any:
    """The pinned flow, then a resting order amended twice and one amended into a fill
    (the pinned amends meet orders already filled)."""
    app = run(FLOW, env)
    trader = next(a for a in app.ids_of(Account) if app.get_account(a).name == "t0")
    symbol = SYMBOLS[0]
    inst = UNIVERSE.get(symbol)
    tick = inst.tick_size(inst.base_price)
    resting = app.place_order(trader, client_order_id="rest", symbol=symbol, side="buy",
                              quantity=200, price=inst.base_price - 5 * tick,
                              order_type="limit", tif="gtc", meta=meta()).order_id
    app.amend_order(resting, quantity=300, price=inst.base_price - 4 * tick, meta=meta())
    app.amend_order(resting, quantity=100, price=inst.base_price - 4 * tick, meta=meta())
    seller = funded(app, "t3", 30_000_000, allow_short=True)
    app.place_order(seller, client_order_id="hit", symbol=symbol, side="sell",
                    quantity=100, price=inst.base_price - 4 * tick, order_type="limit",
                    tif="day", meta=meta())
    return app


def trade_more(app: Any, tag: str) -> None:
    """More of a session on ``app``'s store, by two new accounts: an amended resting
    order filled in part, a cancel, a halt and resume; every symbol resumed first."""
    buyer = funded(app, f"{tag}-buyer", 30_000_000)
    seller = funded(app, f"{tag}-seller", 30_000_000, allow_short=True)
    for symbol in SYMBOLS:
        with suppress(DomainError):
            app.resume_symbol(symbol, meta("risk"))
        inst = UNIVERSE.get(symbol)
        price, tick = inst.base_price, inst.tick_size(inst.base_price)
        resting = app.place_order(buyer, client_order_id=f"{tag}-r{symbol}", symbol=symbol,
                                  side="buy", quantity=300, price=price - 2 * tick,
                                  order_type="limit", tif="gtc", meta=meta()).order_id
        app.amend_order(resting, quantity=400, price=price - tick, meta=meta())
        app.place_order(seller, client_order_id=f"{tag}-s{symbol}", symbol=symbol,
                        side="sell", quantity=200, price=price - tick, order_type="limit",
                        tif="day", meta=meta())
        app.cancel_order(resting, meta())
    app.halt_account(buyer, f"{tag} review", meta("risk"))
    app.resume_account(buyer, meta("risk"))
    app.halt_account(seller, f"{tag} review", meta("risk"))


def tables() -> list[str]:
    return [t for projection in all_projections() for t in projection.tables]


def everything(store: ReadStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection's table and every tracking position."""
    rows = {t: sorted(map(tuple, store.fetchall(f"SELECT * FROM {t}")), key=repr)
            for t in tables()}
    rows["projection_tracking"] = sorted(
        map(tuple, store.fetchall("SELECT name, position FROM projection_tracking")))
    return rows


def replayed(new_store: StoreFactory, log: RecorderLog, until: Any = None) -> ReadStore:
    """The reference: the log projected row by row, batch after batch."""
    store = new_store()
    upgrade(store)
    Projector(store, log, batch_size=97).rebuild(until)
    return store


def assert_flow_has_everything(store: ReadStore) -> None:
    """The flow exercises what the rebuild must reproduce (not an empty comparison)."""
    events = {e for (e,) in store.fetchall("SELECT DISTINCT event FROM order_events")}
    assert {"Filled", "PartiallyFilled", "Cancelled", "Amended", "Expired"} <= events, events
    assert store.fetchone("SELECT count(*) FROM fills WHERE fee > 0")[0] > 0  # type: ignore[index]
    assert store.fetchone("SELECT count(*) FROM halts")[0] > 0  # type: ignore[index]
    assert store.fetchone("SELECT count(*) FROM pnl WHERE fees > 0")[0] > 0  # type: ignore[index]


def test_bulk_rebuild_equals_a_row_by_row_replay(new_store: StoreFactory) -> None:
    app = flow()
    log = RecorderLog(app.recorder, app.mapper)
    reference = replayed(new_store, log)
    assert_flow_has_everything(reference)

    bulk = new_store()
    upgrade(bulk)
    indexes = secondary_indexes(bulk, tables())
    assert rebuild(bulk, log) == log.head()
    assert everything(bulk) == everything(reference)
    assert secondary_indexes(bulk, tables()) == indexes  # dropped for the load, built after
    assert {i.name for i in indexes} >= {"orders_account", "fills_account", "pnl_account"}

    # over read models that already hold rows (a projector followed part of the log)
    Projector(bulk, log, batch_size=13).rebuild(until_position(log.head() // 2))
    assert rebuild(bulk, log) == log.head()
    assert everything(bulk) == everything(reference)

    # a live projector carries on from the rebuild, projecting nothing twice
    assert Projector(bulk, log).catch_up() == 0
    assert everything(bulk) == everything(reference)


def test_bulk_rebuild_until_a_position_equals_the_replay_until_it(
        new_store: StoreFactory) -> None:
    app = flow()
    log = RecorderLog(app.recorder, app.mapper)
    cut = log.head() * 2 // 3
    reference = replayed(new_store, log, until_position(cut))
    bulk = new_store()
    upgrade(bulk)
    assert rebuild(bulk, log, until=until_position(cut)) == cut
    assert everything(bulk) == everything(reference)


def test_a_bulk_rebuild_killed_half_way_leaves_the_read_models_as_they_were(
        new_store: StoreFactory) -> None:
    app = flow()
    log = RecorderLog(app.recorder, app.mapper)
    store = new_store()
    upgrade(store)
    Projector(store, log, batch_size=50).rebuild(until_position(log.head() // 3))
    before = everything(store)
    indexes = secondary_indexes(store, tables())
    real_insert = store.insert
    store.insert = CrashingInsert(real_insert, 4)  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rebuild(store, log, chunk=25)
    store.insert = real_insert  # type: ignore[method-assign]
    assert everything(store) == before
    assert secondary_indexes(store, tables()) == indexes
    # and it restarts cleanly: a rebuild, or the projector resuming where it was
    Projector(store, log, batch_size=50).catch_up()
    assert everything(store) == everything(replayed(new_store, log))


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(commands=st.lists(command, min_size=1, max_size=30), chunk=st.integers(1, 60))
def test_random_flows_rebuild_in_bulk_as_they_replay(new_store: StoreFactory,
                                                     commands: list[tuple[Any, ...]],
                                                     chunk: int) -> None:
    app = run(commands)
    log = RecorderLog(app.recorder, app.mapper)
    bulk = new_store()
    upgrade(bulk)
    rebuild(bulk, log, chunk=chunk)
    assert everything(bulk) == everything(replayed(new_store, log))


def test_projections_share_processes_orders_first() -> None:
    names = [p.name for p in all_projections()]
    assert groups_for(names, 1) == [sorted(names)]
    assert groups_for(names, 2) == [["orders"], ["balances", "halts", "positions"]]
    assert groups_for(names, 3) == [["orders"], ["positions"], ["balances", "halts"]]
    assert groups_for(["balances", "orders"], 4) == [["orders"], ["balances"]]


@pytest.mark.postgres
@pytest.mark.parametrize("processes", [2, 3])
def test_a_rebuild_fanned_out_over_processes_equals_the_replay(
        tmp_path: Path, processes: int) -> None:
    from tests.projections.conftest import timescale_url

    events = Settings(persistence="sqlite", sqlite_path=tmp_path / "events.sqlite")
    app = flow(eventsourcing_env(events))
    log = RecorderLog(app.recorder, app.mapper)
    url = timescale_url()
    made: list[ReadStore] = []

    def new_store() -> ReadStore:
        import uuid

        made.append(ReadStore.postgres(url, f"rm_{uuid.uuid4().hex[:12]}"))
        return made[-1]

    try:
        reference = replayed(new_store, log)
        fanned = new_store()
        upgrade(fanned)
        Projector(fanned, log, batch_size=7).rebuild(until_position(10))  # rows to replace
        assert rebuild_in_processes(events, fanned, processes=processes) == log.head()
        assert everything(fanned) == everything(reference)
        only = new_store()
        upgrade(only)
        rebuild_in_processes(events, only, ["positions", "orders"], processes=processes)
        wanted = {"orders", "order_events", "fills", "bars", "positions",
                  "position_history", "marks", "pnl"}
        got, want = everything(only), everything(reference)
        assert {t: got[t] for t in wanted} == {t: want[t] for t in wanted}
        assert got["balances"] == [] and got["projection_tracking"] == [
            r for r in want["projection_tracking"] if r[0] in ("orders", "positions")]
    finally:
        for store in made:
            store.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
            store.close()
