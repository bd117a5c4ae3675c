"""What a trader sees for each command, from both engines (reference and kernel)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kernels.book import BookCapacityError
from kernels.contract import (
    Command,
    CommandKind,
    Depth,
    Engine,
    Event,
    EventKind,
    Level,
    OrderType,
    Reason,
    Side,
    TickBand,
    TimeInForce,
)
from kernels.engine import KernelEngine
from kernels.reference import ReferenceEngine

BUY, SELL = Side.BUY, Side.SELL
SYM = "7203"
# JPX-style banded grid in tenths of a yen: 1-yen ticks up to 3000 yen, 5 yen up to 5000.
BANDS = (TickBand(upper=30_000, tick=10), TickBand(upper=50_000, tick=50))


def limit(
    oid: int,
    side: Side,
    price: int,
    qty: int,
    tif: TimeInForce = TimeInForce.DAY,
    owner: int = 0,
) -> Command:
    return Command(CommandKind.NEW, oid, side, OrderType.LIMIT, tif, price, qty, owner)


def market(oid: int, side: Side, qty: int, tif: TimeInForce = TimeInForce.IOC) -> Command:
    return Command(CommandKind.NEW, oid, side, OrderType.MARKET, tif, 0, qty)


def cancel(oid: int) -> Command:
    return Command(CommandKind.CANCEL, oid)


def reduce(oid: int, qty: int) -> Command:
    return Command(CommandKind.REDUCE, oid, quantity=qty)


def amend(oid: int, price: int, qty: int) -> Command:
    return Command(CommandKind.AMEND, oid, price=price, quantity=qty)


EngineFactory = Callable[..., Engine]


def make_reference(self_trade_prevention: bool = False) -> Engine:
    return ReferenceEngine(self_trade_prevention=self_trade_prevention)


def make_kernel(self_trade_prevention: bool = False) -> Engine:
    # a tiny initial capacity so the tests also exercise growth outside the hot loop
    return KernelEngine(self_trade_prevention=self_trade_prevention, initial_capacity=2)


@pytest.fixture(params=[make_reference, make_kernel], ids=["reference", "kernel"])
def factory(request: pytest.FixtureRequest) -> EngineFactory:
    factory: EngineFactory = request.param
    return factory


@pytest.fixture
def engine(factory: EngineFactory) -> Engine:
    e = factory()
    e.add_symbol(SYM, BANDS, min_price=10, max_price=45_000)
    return e


def kinds(events: list[Event]) -> list[EventKind]:
    return [e.kind for e in events]


def book_of(engine: Engine) -> Depth:
    return engine.depth(SYM, 10)


def test_resting_limit_is_accepted_then_rested(engine: Engine) -> None:
    events = engine.submit(SYM, limit(1, BUY, 10_000, 300))
    assert events == [
        Event(EventKind.ACCEPTED, 1, 1, side=BUY, price=10_000, quantity=300, remaining=300),
        Event(EventKind.RESTED, 1, 1, side=BUY, price=10_000, quantity=300, remaining=300),
    ]
    assert book_of(engine) == Depth(bids=(Level(10_000, 300, 1),), asks=())
    assert engine.sequence(SYM) == 1


def test_crossing_limit_fills_best_price_first_at_maker_prices(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_020, 100))
    engine.submit(SYM, limit(2, SELL, 10_010, 100))
    engine.submit(SYM, limit(3, SELL, 10_030, 100))
    events = engine.submit(SYM, limit(4, BUY, 10_020, 250))
    assert events == [
        Event(EventKind.ACCEPTED, 4, 4, side=BUY, price=10_020, quantity=250, remaining=250),
        Event(
            EventKind.FILL,
            4,
            4,
            maker_id=2,
            side=BUY,
            price=10_010,
            quantity=100,
            remaining=150,
            maker_remaining=0,
            fill_index=0,
        ),
        Event(
            EventKind.FILL,
            4,
            4,
            maker_id=1,
            side=BUY,
            price=10_020,
            quantity=100,
            remaining=50,
            maker_remaining=0,
            fill_index=1,
        ),
        Event(EventKind.RESTED, 4, 4, side=BUY, price=10_020, quantity=50, remaining=50),
    ]
    assert book_of(engine) == Depth(bids=(Level(10_020, 50, 1),), asks=(Level(10_030, 100, 1),))


def test_fifo_within_a_level(engine: Engine) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, BUY, 10_000, 100))
    events = engine.submit(SYM, limit(3, SELL, 10_000, 150))
    fills = [
        (e.maker_id, e.quantity, e.maker_remaining) for e in events if e.kind == EventKind.FILL
    ]
    assert fills == [(1, 100, 0), (2, 50, 50)]
    assert book_of(engine).bids == (Level(10_000, 50, 1),)


def test_ioc_cancels_what_it_cannot_fill(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_000, 100))
    events = engine.submit(SYM, limit(2, BUY, 10_000, 300, TimeInForce.IOC))
    assert kinds(events) == [EventKind.ACCEPTED, EventKind.FILL, EventKind.CANCELLED]
    assert events[-1] == Event(
        EventKind.CANCELLED, 2, 2, side=BUY, price=10_000, quantity=200, reason=Reason.IOC_REMAINDER
    )
    assert book_of(engine) == Depth(bids=(), asks=())


def test_ioc_with_nothing_crossing_is_cancelled_whole(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_100, 100))
    events = engine.submit(SYM, limit(2, BUY, 10_000, 300, TimeInForce.IOC))
    assert kinds(events) == [EventKind.ACCEPTED, EventKind.CANCELLED]
    assert events[-1].quantity == 300 and events[-1].reason == Reason.IOC_REMAINDER


def test_fok_fills_completely_or_not_at_all(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_000, 100))
    engine.submit(SYM, limit(2, SELL, 10_010, 100))
    unfillable = engine.submit(SYM, limit(3, BUY, 10_010, 201, TimeInForce.FOK))
    assert kinds(unfillable) == [EventKind.ACCEPTED, EventKind.CANCELLED]
    assert unfillable[-1].reason == Reason.FOK_UNFILLABLE and unfillable[-1].quantity == 201
    assert book_of(engine).asks == (Level(10_000, 100, 1), Level(10_010, 100, 1))
    filled = engine.submit(SYM, limit(4, BUY, 10_010, 200, TimeInForce.FOK))
    assert kinds(filled) == [EventKind.ACCEPTED, EventKind.FILL, EventKind.FILL]
    assert book_of(engine) == Depth(bids=(), asks=())


def test_market_order_sweeps_then_cancels_remainder(engine: Engine) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, BUY, 9_990, 100))
    events = engine.submit(SYM, market(3, SELL, 250))
    assert [(e.kind, e.price, e.quantity) for e in events] == [
        (EventKind.ACCEPTED, 0, 250),
        (EventKind.FILL, 10_000, 100),
        (EventKind.FILL, 9_990, 100),
        (EventKind.CANCELLED, 0, 50),
    ]
    assert events[-1].reason == Reason.IOC_REMAINDER


def test_market_order_into_empty_side_has_no_liquidity(engine: Engine) -> None:
    events = engine.submit(SYM, market(1, BUY, 100, TimeInForce.DAY))
    assert kinds(events) == [EventKind.ACCEPTED, EventKind.CANCELLED]
    assert events[-1].reason == Reason.NO_LIQUIDITY and events[-1].quantity == 100


def test_market_fok_unfillable(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_000, 100))
    events = engine.submit(SYM, market(2, BUY, 101, TimeInForce.FOK))
    assert events[-1].reason == Reason.FOK_UNFILLABLE
    assert book_of(engine).asks == (Level(10_000, 100, 1),)


def test_cancel_removes_the_whole_open_quantity(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_000, 100))
    events = engine.submit(SYM, cancel(1))
    assert events == [
        Event(
            EventKind.CANCELLED,
            2,
            1,
            side=SELL,
            price=10_000,
            quantity=100,
            reason=Reason.REQUESTED,
        )
    ]
    assert book_of(engine) == Depth(bids=(), asks=())


def test_reduce_keeps_priority_and_full_reduce_removes(engine: Engine) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, BUY, 10_000, 100))
    events = engine.submit(SYM, reduce(1, 40))
    assert events == [
        Event(EventKind.REDUCED, 3, 1, side=BUY, price=10_000, quantity=40, remaining=60)
    ]
    fills = engine.submit(SYM, limit(3, SELL, 10_000, 60, TimeInForce.IOC))
    assert [e.maker_id for e in fills if e.kind == EventKind.FILL] == [1]
    gone = engine.submit(SYM, reduce(2, 100))
    assert gone[0].remaining == 0
    assert book_of(engine) == Depth(bids=(), asks=())


def test_amend_quantity_down_keeps_priority(engine: Engine) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, BUY, 10_000, 100))
    events = engine.submit(SYM, amend(1, 10_000, 50))
    assert events == [
        Event(EventKind.AMENDED, 3, 1, side=BUY, price=10_000, quantity=50, remaining=50)
    ]
    fills = engine.submit(SYM, limit(3, SELL, 10_000, 50, TimeInForce.IOC))
    assert [e.maker_id for e in fills if e.kind == EventKind.FILL] == [1]


def test_amend_quantity_up_loses_priority(engine: Engine) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, BUY, 10_000, 100))
    assert kinds(engine.submit(SYM, amend(1, 10_000, 150))) == [EventKind.AMENDED]
    fills = engine.submit(SYM, limit(3, SELL, 10_000, 100, TimeInForce.IOC))
    assert [e.maker_id for e in fills if e.kind == EventKind.FILL] == [2]
    assert book_of(engine).bids == (Level(10_000, 150, 1),)


def test_amend_price_loses_priority_and_can_trade(engine: Engine) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, BUY, 10_010, 100))
    engine.submit(SYM, limit(3, SELL, 10_030, 60))
    # moving to the level of order 2 puts it behind order 2
    assert kinds(engine.submit(SYM, amend(1, 10_010, 100))) == [EventKind.AMENDED, EventKind.RESTED]
    fills = engine.submit(SYM, limit(4, SELL, 10_010, 100, TimeInForce.IOC))
    assert [e.maker_id for e in fills if e.kind == EventKind.FILL] == [2]
    # moving through the ask makes it an aggressor at the maker's price
    events = engine.submit(SYM, amend(1, 10_030, 100))
    assert [(e.kind, e.maker_id, e.price, e.quantity) for e in events] == [
        (EventKind.AMENDED, 0, 10_030, 100),
        (EventKind.FILL, 3, 10_030, 60),
        (EventKind.RESTED, 0, 10_030, 40),
    ]
    assert book_of(engine) == Depth(bids=(Level(10_030, 40, 1),), asks=())


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (limit(9, BUY, 10_000, 0), Reason.BAD_QUANTITY),
        (limit(9, BUY, 10_000, -5), Reason.BAD_QUANTITY),
        (limit(9, BUY, 10_005, 100), Reason.OFF_TICK),  # half a yen in the 1-yen band
        (limit(9, BUY, 30_010, 100), Reason.OFF_TICK),  # the 5-yen band above 3000 yen
        (limit(9, BUY, 45_050, 100), Reason.OUT_OF_RANGE),  # above max_price
        (limit(9, BUY, 0, 100), Reason.OUT_OF_RANGE),
        (limit(1, SELL, 20_000, 100), Reason.DUPLICATE_ID),
        (limit(0, BUY, 10_000, 100), Reason.BAD_COMMAND),
        (
            Command(CommandKind.NEW, 9, 0, OrderType.LIMIT, TimeInForce.DAY, 10_000, 1),  # type: ignore[arg-type]
            Reason.BAD_COMMAND,
        ),
        (
            Command(9, 9, BUY, OrderType.LIMIT, TimeInForce.DAY, 10_000, 1),  # type: ignore[arg-type]
            Reason.BAD_COMMAND,
        ),
        (
            Command(CommandKind.NEW, 9, BUY, 7, TimeInForce.DAY, 10_000, 1),  # type: ignore[arg-type]
            Reason.BAD_COMMAND,
        ),
        (
            Command(CommandKind.NEW, 9, BUY, OrderType.LIMIT, 9, 10_000, 1),  # type: ignore[arg-type]
            Reason.BAD_COMMAND,
        ),
        (cancel(77), Reason.UNKNOWN_ORDER),
        (reduce(77, 10), Reason.UNKNOWN_ORDER),
        (reduce(1, 0), Reason.BAD_QUANTITY),
        (reduce(1, 101), Reason.BAD_QUANTITY),
        (amend(77, 10_000, 10), Reason.UNKNOWN_ORDER),
        (amend(1, 10_000, 0), Reason.BAD_QUANTITY),
        (amend(1, 10_001, 10), Reason.OFF_TICK),
        (amend(1, 50_050, 10), Reason.OUT_OF_RANGE),
    ],
)
def test_bad_input_is_rejected_and_changes_nothing(
    engine: Engine, command: Command, reason: Reason
) -> None:
    engine.submit(SYM, limit(1, BUY, 10_000, 100))
    engine.submit(SYM, limit(2, SELL, 10_100, 100))
    before = engine.snapshot()
    events = engine.submit(SYM, command)
    assert len(events) == 1
    assert events[0].kind == EventKind.REJECTED
    assert events[0].reason == reason
    assert events[0].sequence == 3 and events[0].order_id == command.order_id
    assert engine.sequence(SYM) == 3  # rejected commands still take a sequence number
    after = engine.snapshot()
    assert after.replace(b'"sequence":3', b'"sequence":2') == before


def test_band_upper_bound_is_inclusive(factory: EngineFactory) -> None:
    engine = factory()
    # tick 10 up to and including 1000; tick 50 above; the top band clipped by max_price
    engine.add_symbol(SYM, (TickBand(1_000, 10), TickBand(10_000, 50)), 10, 5_000)
    ok = [
        engine.submit(SYM, limit(i + 1, BUY, p, 1))[-1].kind
        for i, p in enumerate((10, 990, 1_000, 1_050, 5_000))
    ]
    assert ok == [EventKind.RESTED] * 5
    bad = [
        engine.submit(SYM, limit(i + 10, BUY, p, 1))[-1].reason
        for i, p in enumerate((1_010, 1_020, 5_050, 5))
    ]
    assert bad == [Reason.OFF_TICK, Reason.OFF_TICK, Reason.OUT_OF_RANGE, Reason.OUT_OF_RANGE]


def test_price_above_the_last_band_is_out_of_range(factory: EngineFactory) -> None:
    engine = factory()
    engine.add_symbol(SYM, (TickBand(1_000, 10),), 10, 2_000)
    assert engine.submit(SYM, limit(1, BUY, 1_500, 1))[0].reason == Reason.OUT_OF_RANGE


def test_self_trade_prevention_cancels_the_incoming_order(factory: EngineFactory) -> None:
    engine = factory(self_trade_prevention=True)
    engine.add_symbol(SYM, BANDS, 10, 45_000)
    engine.submit(SYM, limit(1, SELL, 10_000, 100, owner=7))
    engine.submit(SYM, limit(2, SELL, 10_000, 100, owner=8))
    engine.submit(SYM, limit(3, SELL, 10_010, 100, owner=7))
    events = engine.submit(SYM, limit(4, BUY, 10_010, 300, owner=8))
    assert [(e.kind, e.maker_id, e.quantity, e.reason) for e in events] == [
        (EventKind.ACCEPTED, 0, 300, Reason.NONE),
        (EventKind.FILL, 1, 100, Reason.NONE),
        (EventKind.CANCELLED, 0, 200, Reason.SELF_TRADE),
    ]
    assert book_of(engine).asks == (Level(10_000, 100, 1), Level(10_010, 100, 1))
    # FOK: liquidity behind one's own order does not count
    fok = engine.submit(SYM, limit(5, BUY, 10_010, 150, TimeInForce.FOK, owner=8))
    assert fok[-1].reason == Reason.FOK_UNFILLABLE
    # owner 0 means anonymous: never prevented
    anon = engine.submit(SYM, limit(6, BUY, 10_010, 200))
    assert [e.kind for e in anon].count(EventKind.FILL) == 2


def test_without_prevention_same_owner_trades(engine: Engine) -> None:
    engine.submit(SYM, limit(1, SELL, 10_000, 100, owner=7))
    events = engine.submit(SYM, limit(2, BUY, 10_000, 100, owner=7))
    assert kinds(events) == [EventKind.ACCEPTED, EventKind.FILL]


def test_self_trade_prevention_on_amend_cancels_the_moved_order(factory: EngineFactory) -> None:
    engine = factory(self_trade_prevention=True)
    engine.add_symbol(SYM, BANDS, 10, 45_000)
    engine.submit(SYM, limit(1, SELL, 10_010, 100, owner=7))
    engine.submit(SYM, limit(2, BUY, 10_000, 100, owner=7))
    events = engine.submit(SYM, amend(2, 10_010, 100))
    assert kinds(events) == [EventKind.AMENDED, EventKind.CANCELLED]
    assert events[-1].reason == Reason.SELF_TRADE
    assert book_of(engine) == Depth(bids=(), asks=(Level(10_010, 100, 1),))


def test_snapshot_restore_round_trip_keeps_priority_and_sequence(factory: EngineFactory) -> None:
    engine = factory()
    engine.add_symbol(SYM, BANDS, 10, 45_000)
    engine.add_symbol("6758", (TickBand(10**9, 1),), 1, 10**9)
    engine.submit(SYM, limit(1, BUY, 10_000, 100, TimeInForce.GTC, owner=3))
    engine.submit(SYM, limit(2, BUY, 10_000, 100))
    engine.submit(SYM, limit(3, SELL, 10_100, 50))
    engine.submit("6758", limit(1, SELL, 777, 5))
    data = engine.snapshot()
    restored = factory()
    restored.restore(data)
    assert restored.snapshot() == data
    assert restored.sequence(SYM) == 3 and restored.sequence("6758") == 1
    assert restored.depth(SYM) == engine.depth(SYM)
    follow_up = limit(4, SELL, 10_000, 150)
    assert restored.submit(SYM, follow_up) == engine.submit(SYM, follow_up)


def test_restore_refuses_garbage(factory: EngineFactory) -> None:
    engine = factory()
    with pytest.raises(ValueError, match="snapshot"):
        engine.restore(b"not a snapshot")
    with pytest.raises(ValueError, match=r"snapshot\.version"):
        engine.restore(b'{"version": 99, "symbols": []}')


def test_depth_aggregates_levels_best_first(engine: Engine) -> None:
    for i, (side, price, qty) in enumerate(
        [(BUY, 10_000, 5), (BUY, 10_000, 7), (BUY, 9_990, 1), (SELL, 10_020, 2), (SELL, 10_030, 3)]
    ):
        engine.submit(SYM, limit(i + 1, side, price, qty))
    assert engine.depth(SYM, 1) == Depth(bids=(Level(10_000, 12, 2),), asks=(Level(10_020, 2, 1),))
    assert engine.depth(SYM).bids == (Level(10_000, 12, 2), Level(9_990, 1, 1))


def test_batch_equals_one_by_one(factory: EngineFactory) -> None:
    commands = [limit(1, BUY, 10_000, 100), limit(2, SELL, 9_990, 30), cancel(1), cancel(1)]
    one, batch = factory(), factory()
    for e in (one, batch):
        e.add_symbol(SYM, BANDS, 10, 45_000)
    expected = [ev for c in commands for ev in one.submit(SYM, c)]
    assert batch.submit_batch(SYM, commands) == expected


@pytest.mark.parametrize(
    ("bands", "min_price", "max_price", "field"),
    [
        ((), 1, 10, "bands"),
        ((TickBand(100, 0),), 1, 10, r"bands\[0\].tick"),
        ((TickBand(100, 1), TickBand(100, 5)), 1, 10, r"bands\[1\].upper"),
        ((TickBand(100, 1),), 0, 10, "min_price"),
        ((TickBand(100, 1),), 5, 4, "max_price"),
    ],
)
def test_bad_grid_is_refused_naming_the_field(
    factory: EngineFactory, bands: tuple[TickBand, ...], min_price: int, max_price: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        factory().add_symbol(SYM, bands, min_price, max_price)


def test_unknown_symbol_and_duplicate_symbol_are_errors(engine: Engine) -> None:
    with pytest.raises(KeyError, match="symbol"):
        engine.submit("9999", cancel(1))
    with pytest.raises(ValueError, match="symbol"):
        engine.add_symbol(SYM, BANDS, 10, 45_000)


def test_kernel_book_overflow_is_a_clear_error_not_a_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    import kernels.book

    monkeypatch.setattr(kernels.book, "MAX_SLOTS", 16)
    engine = KernelEngine(initial_capacity=8)
    engine.add_symbol(SYM, BANDS, 10, 45_000)
    commands = [limit(i, BUY, 10_000 - 10 * (i % 5), 1) for i in range(1, 21)]
    with pytest.raises(BookCapacityError, match=r"commands \[0, 16\) of this batch were applied"):
        engine.submit_batch(SYM, commands)
    assert engine.resting(SYM) == 16 and engine.sequence(SYM) == 16


def test_negative_depth_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="levels"):
        engine.depth(SYM, -1)
