"""The clock port: event timestamps come from the caller's clock, so a replay with a
simulated clock and the same command ids stores exactly the same events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application

from aggregates.account import Account
from aggregates.base import Meta
from aggregates.clock import Clock, SimulatedClock, SystemClock
from aggregates.market import Market
from aggregates.order import Order, OrderType, Side, TimeInForce
from aggregates.position import Position

JST = timezone(timedelta(hours=9))
START = datetime(2025, 1, 6, 9, 0, tzinfo=JST)
ACCOUNT = UUID(int=1)
ORDER = UUID(int=2)
POSITION = UUID(int=3)


# ---- the clocks ------------------------------------------------------------------------


def test_system_clock_answers_aware_utc_now() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert before <= now <= datetime.now(UTC)
    assert isinstance(SystemClock(), Clock)


def test_simulated_clock_moves_only_when_told() -> None:
    clock = SimulatedClock(START)
    assert isinstance(clock, Clock)
    assert clock.now() == START and clock.now().utcoffset() == timedelta(0)  # UTC
    assert clock.now() == clock.now()
    assert clock.advance(1.5) == START + timedelta(seconds=1.5)
    assert clock.advance(timedelta(minutes=1)) == START + timedelta(seconds=61.5)
    later = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)  # 12:00 JST
    assert clock.set(later) == later and clock.now() == later


def test_simulated_clock_refuses_naive_times_and_going_back() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedClock(datetime(2025, 1, 6, 9, 0))
    clock = SimulatedClock(START)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2025, 1, 7))
    with pytest.raises(ValueError, match="not before"):
        clock.set(START - timedelta(microseconds=1))
    with pytest.raises(ValueError, match="not negative"):
        clock.advance(-1)
    assert clock.now() == START


def test_meta_refuses_a_naive_moment() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Meta.command("alice", at=datetime(2025, 1, 6, 9, 0))


# ---- events carry the clock's time -------------------------------------------------------


def _session(clock: SimulatedClock) -> list[Any]:
    """A small flow over every aggregate type, one command per clock tick; the events."""

    def meta(command_id: str) -> Meta:
        clock.advance(0.25)
        return Meta.command("alice", command_id, at=clock.now())

    market = Market.create(meta("open-market"))
    account = Account.open(
        ACCOUNT, name="alice", owner="alice", allow_short=False, meta=meta("open")
    )
    account.deposit(1_000_000, meta("deposit"))
    order = Order.place(
        ORDER,
        account_id=ACCOUNT,
        client_order_id="c1",
        symbol="7203",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.DAY,
        quantity=100,
        price=28_000,
        meta=meta("place"),
    )
    account.reserve(ORDER, 281_000, meta("reserve"))
    step = Meta.caused_by(order.pending_events[-1], "risk", at=clock.advance(0.001))
    order.accept(281_000, 0, step)
    position = Position.open(POSITION, account_id=ACCOUNT, symbol="7203", meta=meta("pos"))
    market.halt("7203", "test", meta("halt"))
    return [
        *market.collect_events(),
        *account.collect_events(),
        *order.collect_events(),
        *position.collect_events(),
    ]


def test_events_take_exactly_the_simulated_clock_time() -> None:
    clock = SimulatedClock(START)
    meta = Meta.command("alice", "open", at=clock.now())
    account = Account.open(ACCOUNT, name="alice", owner="alice", allow_short=False, meta=meta)
    clock.advance(timedelta(hours=3))
    account.deposit(5_000, Meta.command("alice", "deposit", at=clock.now()))
    order = Order.place(
        ORDER,
        account_id=ACCOUNT,
        client_order_id="c1",
        symbol="7203",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.DAY,
        quantity=100,
        price=28_000,
        meta=Meta.command("alice", at=clock.now()),
    )
    position = Position.open(
        POSITION, account_id=ACCOUNT, symbol="7203", meta=Meta.command("alice", at=START)
    )
    market = Market.create(Meta.command("ops", at=START + timedelta(days=1)))

    opened, deposited = account.collect_events()
    assert opened.timestamp == START
    assert deposited.timestamp == START + timedelta(hours=3)
    assert (account.created_on, account.modified_on) == (START, START + timedelta(hours=3))
    assert [e.timestamp for e in order.collect_events()] == [START + timedelta(hours=3)]
    assert [e.timestamp for e in position.collect_events()] == [START]
    assert [e.timestamp for e in market.collect_events()] == [START + timedelta(days=1)]
    assert opened.timestamp.utcoffset() == timedelta(0)  # stored as UTC


def test_without_a_moment_events_get_the_system_time() -> None:
    before = datetime.now(UTC)
    account = Account.open(ACCOUNT, name="a", owner="a", allow_short=False, meta=Meta.command("a"))
    account.deposit(1, Meta.command("a"))
    for event in account.collect_events():
        assert before <= event.timestamp <= datetime.now(UTC)


def test_two_runs_with_the_same_clock_and_command_ids_give_identical_events() -> None:
    first = _session(SimulatedClock(START))
    second = _session(SimulatedClock(START))
    assert len(first) == len(second) == 8
    assert first == second  # every field: ids, versions, metadata and timestamps
    assert [e.timestamp for e in first] != [first[0].timestamp] * len(first)
    # and a different clock gives different events
    assert _session(SimulatedClock(START + timedelta(seconds=1))) != first


def test_stored_and_reloaded_events_keep_the_clock_time() -> None:
    clock = SimulatedClock(START)
    app: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    account = Account.open(
        ACCOUNT,
        name="alice",
        owner="alice",
        allow_short=False,
        meta=Meta.command("alice", "open", at=clock.now()),
    )
    account.deposit(5_000, Meta.command("alice", "d", at=clock.advance(60)))
    app.save(account)
    stored: list[Any] = list(app.events.get(ACCOUNT))
    assert [e.timestamp for e in stored] == [START, START + timedelta(seconds=60)]
    assert app.repository.get(ACCOUNT).modified_on == START + timedelta(seconds=60)
