"""Read models equal the event store, however the projector was interrupted.

Random command sequences run through the real write model; a projector follows the log
with small batches and is killed mid-transaction (a write fails inside the batch) and
restarted with empty caches, several times. Afterwards:

- every current row equals the aggregate the write model loads from its events
  (orders, balances, positions, halts), and history rows add up to it (fills, cash
  ledger);
- every table equals a fresh rebuild from the log in one go.

On SQLite, TimescaleDB and plain PostgreSQL.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.account import Account
from aggregates.ids import MARKET_ID
from aggregates.instruments import PRICE_SCALE
from aggregates.market import Market
from aggregates.order import Order
from aggregates.position import Position
from projections.projectors import Projector, RecorderLog, all_projections
from projections.schema import upgrade
from projections.store import ReadStore
from tests.aggregates.helpers import meta
from tests.aggregates.test_properties import SYMBOLS, command, run
from tests.projections.conftest import StoreFactory

PINNED = [
    ("place", 0, SYMBOLS[0], "buy", 0, 2, "day"), ("place", 1, SYMBOLS[0], "sell", 0, 1, "gtc"),
    ("place", 2, SYMBOLS[0], "sell", -1, 3, "gtc"), ("amend", 0, 1, 1), ("cancel", 2),
    ("place", 1, SYMBOLS[1], "buy", 1, 2, "ioc"), ("place", 0, SYMBOLS[1], "sell", 0, 4, "day"),
    ("place", 2, SYMBOLS[1], "buy", 0, 1, "market"), ("close",),
    ("place", 0, SYMBOLS[0], "sell", 0, 1, "fok"),
    ("halt", "symbol", 0), ("halt", "account", 1), ("place", 1, SYMBOLS[1], "buy", 0, 1, "day"),
    ("halt", "symbol", 1), ("resume", "symbol", 0), ("halt", "account", 2),
    ("resume", "account", 2), ("place", 0, SYMBOLS[0], "buy", 0, 1, "day"),
]


class Crash(Exception):
    """A projector killed in the middle of writing a batch."""


class CrashingInsert:
    """Stands in for ``store.insert`` and fails on its ``at``-th call: a kill mid-batch."""

    def __init__(self, real: Any, at: int) -> None:
        self.real, self.at, self.calls = real, at, 0

    def __call__(self, table: str, columns: Any, rows: Any) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise Crash(table)
        self.real(table, columns, rows)


def project_with_crashes(store: ReadStore, log: RecorderLog, seed: int) -> None:
    """Follow the log in small batches, crashing inside some and restarting each time."""
    rng = random.Random(seed)
    crashes = 0
    for _ in range(100):  # a projector that never reaches the head fails, not hangs
        projector = Projector(store, log, batch_size=rng.randint(1, 40))
        if crashes < 4 and rng.random() < 0.7:
            crashes += 1
            real_insert = store.insert
            store.insert = CrashingInsert(real_insert, rng.randint(1, 6))  # type: ignore[method-assign]
            try:
                projector.catch_up()
            except Crash:
                continue  # restart: a new projector, nothing cached
            finally:
                store.insert = real_insert  # type: ignore[method-assign]
        else:
            projector.catch_up()
        if projector.position() == log.head():
            return
    raise AssertionError(f"projected up to {projector.position()}, never the head "
                         f"{log.head()}")


def snapshot(store: ReadStore) -> dict[str, list[tuple[Any, ...]]]:
    tables = [t for projection in all_projections() for t in projection.tables]
    return {t: sorted(map(tuple, store.fetchall(f"SELECT * FROM {t}")), key=repr)
            for t in tables}


def assert_equals_write_model(store: ReadStore, app: Any) -> None:
    for order_id in app.ids_of(Order):
        order = app.get_order(order_id)
        row = store.fetchone(
            "SELECT status, quantity, price, filled_quantity, filled_notional, fees "
            "FROM orders WHERE order_id = %s", (str(order_id),))
        assert row == (order.status.value, order.quantity, order.price,
                       order.filled_quantity, order.filled_notional, order.fees), order_id
        fills = store.fetchone("SELECT COUNT(*), COALESCE(SUM(quantity), 0) FROM fills "
                               "WHERE order_id = %s", (str(order_id),))
        assert fills == (len(order.executions), order.filled_quantity)
    for account_id in app.ids_of(Account):
        account = app.get_account(account_id)
        row = store.fetchone(
            "SELECT cash, reserved, deposited, withdrawn, bought, sold, fees, halted "
            "FROM balances WHERE account_id = %s", (str(account_id),))
        assert row is not None
        assert row[:7] == (account.cash, account.reserved, account.deposited,
                           account.withdrawn, account.bought, account.sold, account.fees)
        assert bool(row[7]) == account.halted
        last = store.fetchone("SELECT cash_after FROM cash_ledger WHERE account_id = %s "
                              "ORDER BY seq DESC LIMIT 1", (str(account_id),))
        assert (last[0] if last else 0) == account.cash
    halted_symbols: set[str] = set()
    if app.ids_of(Market):
        market: Market = app.repository.get(MARKET_ID)
        halted_symbols = market.halted_symbols
    assert {s for (s,) in store.fetchall(
        "SELECT target FROM halts WHERE kind = 'symbol'")} == halted_symbols
    halted_accounts = {str(a) for a in app.ids_of(Account) if app.get_account(a).halted}
    assert {a for (a,) in store.fetchall(
        "SELECT target FROM halts WHERE kind = 'account'")} == halted_accounts
    for position_id in app.ids_of(Position):
        position: Position = app.repository.get(position_id)
        row = store.fetchone(
            "SELECT quantity, cost, realised_pnl, reserved FROM positions "
            "WHERE account_id = %s AND symbol = %s",
            (str(position.account_id), position.symbol))
        assert row == (position.quantity, position.cost, position.realised_pnl,
                       position.reserved), position.symbol


def assert_pnl_rows_follow_the_position_history(store: ReadStore) -> None:
    """Each pnl row, recomputed from ``position_history`` alone: realised is the sum of
    every fill's realised PnL of the account so far; unrealised, over the positions
    holding shares then, quantity x the symbol's last fill price (any account's) - cost."""
    fills = store.fetchall("SELECT seq, account_id, symbol, price, quantity_after, "
                           "cost_after, realised FROM position_history ORDER BY seq")
    rows = store.fetchall("SELECT seq, account_id, realised, unrealised FROM pnl ORDER BY seq")
    held: dict[str, dict[str, tuple[int, int]]] = {}
    realised: dict[str, int] = {}
    marks: dict[str, int] = {}
    i = 0
    for seq, account, got_realised, got_unrealised in rows:
        while i < len(fills) and fills[i][0] <= seq:
            _, who, symbol, price, quantity, cost, gain = fills[i]
            marks[symbol] = price
            realised[who] = realised.get(who, 0) + gain
            held.setdefault(who, {})[symbol] = (quantity, cost)
            i += 1
        unrealised = sum(quantity * marks[symbol] // PRICE_SCALE - cost
                         for symbol, (quantity, cost) in held.get(account, {}).items()
                         if quantity)
        assert (got_realised, got_unrealised) == (realised.get(account, 0), unrealised), seq


def check(new_store: StoreFactory, commands: list[tuple[Any, ...]], seed: int) -> ReadStore:
    app = run(commands)
    log = RecorderLog(app.recorder, app.mapper)
    interrupted = new_store()
    upgrade(interrupted)
    project_with_crashes(interrupted, log, seed)
    assert_equals_write_model(interrupted, app)
    assert_pnl_rows_follow_the_position_history(interrupted)
    fresh = new_store()
    upgrade(fresh)
    Projector(fresh, log, batch_size=5000).rebuild()
    assert snapshot(interrupted) == snapshot(fresh)
    return interrupted


def test_pinned_session_on_every_store(new_store: StoreFactory) -> None:
    store = check(new_store, PINNED, seed=7)
    # What the desk sees as halted: the symbol still halted, the account never resumed;
    # the resumed symbol and account are gone. Reason and principal as commanded.
    halts = store.fetchall("SELECT h.kind, h.reason, h.principal, b.name FROM halts h "
                           "LEFT JOIN balances b ON b.account_id = h.target ORDER BY h.seq")
    n = len(PINNED)
    assert [tuple(h) for h in halts] == [
        ("account", f"limit breach n{n - 7}", "risk", "t1"),
        ("symbol", f"news pending n{n - 5}", "risk", None)]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(commands=st.lists(command, min_size=1, max_size=30), seed=st.integers(0, 10**6))
def test_random_sessions_project_exactly_once(new_store: StoreFactory,
                                              commands: list[tuple[Any, ...]],
                                              seed: int) -> None:
    check(new_store, commands, seed)


def test_two_projectors_on_one_store_never_apply_a_batch_twice(new_store: StoreFactory,
                                                               tmp_path: Path) -> None:
    """A second projector started by mistake (or a rebuild racing a server) only wastes work."""
    import threading

    app = run(PINNED * 3, {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                           "SQLITE_DBNAME": str(tmp_path / "events.sqlite")})
    log = RecorderLog(app.recorder, app.mapper)
    shared = new_store()
    upgrade(shared)
    other = shared.reopen()
    errors: list[BaseException] = []

    def follow(store: ReadStore, batch: int) -> None:
        try:
            Projector(store, log, batch_size=batch).catch_up()
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=follow, args=(store, batch))
               for store, batch in ((shared, 3), (other, 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert not errors, errors
    assert_equals_write_model(shared, app)
    fresh = new_store()
    upgrade(fresh)
    Projector(fresh, log).rebuild()
    assert snapshot(shared) == snapshot(fresh)


def test_a_log_read_by_topic_projects_the_same_rows_up_to_the_head(
        new_store: StoreFactory) -> None:
    """The backtest's projector reads only the topics it projects (venue reports and
    market events are skipped, not decoded); interrupted or not, it must write what the
    whole log writes and record the same positions (the head), or ``projections status``
    would show it behind forever."""
    app = run(PINNED * 2)
    app.halt_symbol(SYMBOLS[1], "news pending", meta("ops"))  # a market event, unprojected
    whole = RecorderLog(app.recorder, app.mapper)
    fresh = new_store()
    upgrade(fresh)
    Projector(fresh, whole, batch_size=5000).rebuild()
    by_topic = new_store()
    upgrade(by_topic)
    topics = Projector(by_topic, whole).topics()
    log = RecorderLog(app.recorder, app.mapper, topics=topics)
    stored = [n.topic for n in app.recorder.select_notifications(start=1, limit=10_000)]
    assert "aggregates.venue:Venue.Reported" in stored
    assert "aggregates.venue:Venue.Reported" not in topics
    assert stored[-1] not in topics  # the log ends with events no projection reads
    project_with_crashes(by_topic, log, seed=11)
    assert snapshot(by_topic) == snapshot(fresh)
    head = whole.head()
    assert set(Projector(by_topic, log).positions().values()) == {head}
    assert set(Projector(fresh, whole).positions().values()) == {head}
