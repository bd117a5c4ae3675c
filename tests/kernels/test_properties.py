"""Properties of matching on random command streams, reference and kernel held together.

The streams are small on purpose (a handful of prices and ids) so that collisions that
matter happen often: duplicate ids, cancels of filled orders, amends across the spread,
self-trades, FOK at the edge of the available size, growth of a tiny kernel book.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels.contract import (
    Command,
    CommandKind,
    Event,
    EventKind,
    OrderType,
    Reason,
    Side,
    TickBand,
    TimeInForce,
    execution_id,
)
from kernels.engine import KernelEngine
from kernels.reference import ReferenceEngine

SYM = "9984"
BANDS = (TickBand(100, 1), TickBand(200, 5))
MIN_PRICE, MAX_PRICE = 90, 150
# mostly tradable prices around 100, plus off-tick (101..149 not /5) and out-of-range ones
PRICES = st.one_of(
    st.integers(99, 101),
    st.integers(98, 102),
    st.integers(98, 102),
    st.sampled_from([96, 105, 110, 103, 107, 89, 155, 0, -5]),
)
QUANTITIES = st.one_of(st.integers(1, 4), st.integers(1, 4), st.sampled_from([-1, 0, 6, 12]))

commands = st.builds(
    Command,
    kind=st.sampled_from(
        [CommandKind.NEW] * 5 + [CommandKind.CANCEL, CommandKind.REDUCE, CommandKind.AMEND] * 1
    ),
    order_id=st.integers(0, 10),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    order_type=st.sampled_from([OrderType.LIMIT] * 6 + [OrderType.MARKET]),
    tif=st.sampled_from(
        [TimeInForce.DAY, TimeInForce.GTC] * 2 + [TimeInForce.IOC, TimeInForce.FOK]
    ),
    price=PRICES,
    quantity=QUANTITIES,
    owner=st.integers(0, 2),
)


@st.composite
def follow_up(draw: st.DrawFn, target: Command) -> Command:
    """A cancel, reduce or amend aimed at an order submitted earlier in the stream, with
    prices and sizes near the original, so queue-position rules are really exercised."""
    kind = draw(st.sampled_from([CommandKind.AMEND] * 3 + [CommandKind.REDUCE, CommandKind.CANCEL]))
    if kind == CommandKind.CANCEL:
        return Command(kind, target.order_id)
    if kind == CommandKind.REDUCE:
        return Command(kind, target.order_id, quantity=draw(st.integers(1, target.quantity + 1)))
    price = target.price + draw(st.sampled_from([0, 0, 0, -1, 1]))
    quantity = target.quantity + draw(st.sampled_from([0, 0, -1, 1, 2]))
    return Command(kind, target.order_id, price=price, quantity=quantity)


@st.composite
def streams(draw: st.DrawFn) -> list[Command]:
    stream: list[Command] = []
    for _ in range(draw(st.integers(8, 60))):
        news = [c for c in stream if c.kind == CommandKind.NEW and c.quantity > 0]
        if news and draw(st.integers(0, 9)) < 4:
            stream.append(draw(follow_up(draw(st.sampled_from(news)))))
        else:
            stream.append(draw(commands))
    return stream


PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# the invariant checks re-read the book after every command: fewer, equally varied streams
INVARIANT_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=100)


def engines(stp: bool) -> tuple[ReferenceEngine, KernelEngine]:
    reference = ReferenceEngine(self_trade_prevention=stp)
    kernel = KernelEngine(self_trade_prevention=stp, initial_capacity=2)
    for engine in (reference, kernel):
        engine.add_symbol(SYM, BANDS, MIN_PRICE, MAX_PRICE)
    return reference, kernel


@PROPERTY_SETTINGS
@given(stream=streams(), stp=st.booleans())
def test_kernel_emits_exactly_the_reference_events(stream: list[Command], stp: bool) -> None:
    reference, kernel = engines(stp)
    batched = KernelEngine(self_trade_prevention=stp, initial_capacity=2)
    batched.add_symbol(SYM, BANDS, MIN_PRICE, MAX_PRICE)
    expected: list[Event] = []
    for command in stream:
        events = reference.submit(SYM, command)
        assert kernel.submit(SYM, command) == events
        expected.extend(events)
    assert batched.submit_batch(SYM, stream) == expected
    assert kernel.depth(SYM, 50) == reference.depth(SYM, 50) == batched.depth(SYM, 50)
    assert kernel.snapshot() == reference.snapshot() == batched.snapshot()
    assert kernel.sequence(SYM) == reference.sequence(SYM) == len(stream)


@st.composite
def queue_streams(draw: st.DrawFn) -> list[Command]:
    """Crowded levels on one side (nothing trades), then amends and reduces: queue order
    inside a level is all that can differ, and the snapshot shows it."""
    count = draw(st.integers(2, 8))
    stream = [
        Command(CommandKind.NEW, oid, Side.BUY, price=draw(st.sampled_from([99, 100])), quantity=3)
        for oid in range(1, count + 1)
    ]
    for _ in range(draw(st.integers(1, 12))):
        target = draw(st.integers(1, count))
        if draw(st.booleans()):
            price = draw(st.sampled_from([99, 100]))
            stream.append(
                Command(CommandKind.AMEND, target, price=price, quantity=draw(st.integers(1, 4)))
            )
        else:
            stream.append(Command(CommandKind.REDUCE, target, quantity=1))
    return stream


@PROPERTY_SETTINGS
@given(stream=queue_streams())
def test_queue_positions_match_the_reference(stream: list[Command]) -> None:
    reference, kernel = engines(False)
    for command in stream:
        assert kernel.submit(SYM, command) == reference.submit(SYM, command)
        assert kernel.snapshot() == reference.snapshot()


@INVARIANT_SETTINGS
@given(stream=streams(), stp=st.booleans(), cut=st.integers(0, 60))
def test_snapshot_restores_into_either_engine(stream: list[Command], stp: bool, cut: int) -> None:
    reference, _ = engines(stp)
    reference.submit_batch(SYM, stream[:cut])
    restored_kernel = KernelEngine(self_trade_prevention=stp, initial_capacity=2)
    restored_kernel.restore(reference.snapshot())
    restored_reference = ReferenceEngine(self_trade_prevention=stp)
    restored_reference.restore(restored_kernel.snapshot())
    rest = stream[cut:]
    expected = reference.submit_batch(SYM, rest)
    assert restored_kernel.submit_batch(SYM, rest) == expected
    assert restored_reference.submit_batch(SYM, rest) == expected


@INVARIANT_SETTINGS
@given(stream=streams(), stp=st.booleans())
def test_book_is_never_crossed_and_quantity_is_conserved(stream: list[Command], stp: bool) -> None:
    _, kernel = engines(stp)
    submitted = resting_out = 0  # quantity put on / taken off orders
    open_qty: dict[int, int] = {}
    for command in stream:
        for e in kernel.submit(SYM, command):
            if e.kind == EventKind.ACCEPTED:
                submitted += e.quantity
                open_qty[e.order_id] = e.quantity
            elif e.kind == EventKind.AMENDED:
                submitted += e.quantity - open_qty[e.order_id]
                open_qty[e.order_id] = e.quantity
            elif e.kind == EventKind.FILL:
                resting_out += 2 * e.quantity  # the taker's and the maker's open quantity
                open_qty[e.order_id] = e.remaining
                open_qty[e.maker_id] = e.maker_remaining
            elif e.kind in (EventKind.CANCELLED, EventKind.REDUCED):
                resting_out += e.quantity
                open_qty[e.order_id] = e.remaining
        depth = kernel.depth(SYM, 1000)
        if depth.bids and depth.asks:
            assert depth.bids[0].price < depth.asks[0].price
        resting = sum(level.quantity for level in depth.bids + depth.asks)
        assert submitted == resting + resting_out  # submitted = resting + filled + cancelled
        assert resting == sum(open_qty.values())


@INVARIANT_SETTINGS
@given(stream=streams(), stp=st.booleans())
def test_fills_follow_price_time_priority(stream: list[Command], stp: bool) -> None:
    """Every fill hits the best resting order on the other side (best price, then oldest
    time priority), with priorities derived from the events alone: resting sets it, a
    same-price amend keeps it when size does not grow, anything else renews it."""
    _, kernel = engines(stp)
    resting: dict[int, tuple[int, int, int]] = {}  # order -> (side, price, time priority)
    open_qty: dict[int, int] = {}

    def priority(order_id: int) -> tuple[int, int]:
        side, price, time = resting[order_id]
        return (-price if side == Side.BUY else price, time)

    for command in stream:
        fill_count = 0
        for e in kernel.submit(SYM, command):
            if e.kind == EventKind.ACCEPTED:
                open_qty[e.order_id] = e.quantity
            elif e.kind == EventKind.FILL:
                assert e.fill_index == fill_count
                fill_count += 1
                makers = [o for o, (side, _, _) in resting.items() if side == -e.side]
                assert e.maker_id == min(makers, key=priority), "maker out of priority"
                assert e.price == resting[e.maker_id][1]
                open_qty[e.order_id] = e.remaining
                open_qty[e.maker_id] = e.maker_remaining
                if e.maker_remaining == 0:
                    del resting[e.maker_id]
            elif e.kind == EventKind.RESTED:
                resting[e.order_id] = (e.side, e.price, e.sequence)
                open_qty[e.order_id] = e.quantity
            elif e.kind in (EventKind.CANCELLED, EventKind.REDUCED):
                open_qty[e.order_id] = e.remaining
                if e.remaining == 0:
                    resting.pop(e.order_id, None)
            elif e.kind == EventKind.AMENDED:
                side, price, time = resting.pop(e.order_id)
                if e.price == price:
                    grew = e.quantity > open_qty[e.order_id]
                    resting[e.order_id] = (side, price, e.sequence if grew else time)
                open_qty[e.order_id] = e.quantity
        assert set(resting) == {o for o, q in open_qty.items() if q > 0}


@INVARIANT_SETTINGS
@given(stream=streams(), stp=st.booleans())
def test_replay_gives_identical_unique_execution_ids(stream: list[Command], stp: bool) -> None:
    runs = []
    for _ in range(2):
        _, kernel = engines(stp)
        events = kernel.submit_batch(SYM, stream)
        runs.append(
            [
                execution_id(SYM, e.sequence, e.fill_index)
                for e in events
                if e.kind == EventKind.FILL
            ]
        )
    assert runs[0] == runs[1]
    assert all(count == 1 for count in Counter(runs[0]).values())


def test_streams_reach_every_event_kind_and_reason() -> None:
    """Guard for the generators above: a fixed stream touching every outcome."""
    reference, kernel = engines(True)
    stream = [
        Command(CommandKind.NEW, 1, Side.SELL, OrderType.LIMIT, TimeInForce.DAY, 100, 5, 1),
        Command(CommandKind.NEW, 2, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 100, 7, 2),
        Command(CommandKind.NEW, 3, Side.BUY, OrderType.MARKET, TimeInForce.IOC, 0, 1, 2),
        Command(CommandKind.NEW, 4, Side.BUY, OrderType.LIMIT, TimeInForce.FOK, 100, 1, 2),
        Command(CommandKind.NEW, 5, Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 105, 5, 2),
        Command(CommandKind.NEW, 6, Side.BUY, OrderType.LIMIT, TimeInForce.DAY, 105, 5, 2),
        Command(CommandKind.REDUCE, 5, quantity=1),
        Command(CommandKind.AMEND, 5, price=110, quantity=2),
        Command(CommandKind.CANCEL, 5),
        Command(CommandKind.CANCEL, 5),
    ]
    events = reference.submit_batch(SYM, stream)
    assert kernel.submit_batch(SYM, stream) == events
    seen_kinds = {e.kind for e in events}
    seen_reasons = {e.reason for e in events}
    assert seen_kinds == set(EventKind)
    assert {
        Reason.IOC_REMAINDER,
        Reason.NO_LIQUIDITY,
        Reason.FOK_UNFILLABLE,
        Reason.SELF_TRADE,
        Reason.REQUESTED,
        Reason.UNKNOWN_ORDER,
    } <= seen_reasons
