"""The matching stage: venue commands in, one ``Venue.Reported`` per command out.

What a consumer of the venue stream would notice: report shapes and metadata, explicit
refusals, expiry at the session close, depth once per symbol and batch, identical
outputs from either engine and whatever the batching, and restarts that replay only
the tail after the newest snapshot (and give exactly the outputs an uninterrupted run
gives).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates import ids
from aggregates.instruments import Universe
from aggregates.market import Market
from aggregates.order import Order
from aggregates.venue import Venue
from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from infra.snapshots import (
    MemorySnapshots,
    PostgresSnapshots,
    SQLiteSnapshots,
    snapshots_for_store,
)
from kernels.contract import execution_id
from streams.matching import (
    UNROUTED,
    VENUE_COMMAND_TOPICS,
    VENUE_PRINCIPAL,
    MatchingStage,
    make_engine,
    venue_snapshots,
)
from tests.streams.venue_flow import T0, Flow, ListSource, order_uuid

CLOCK = T0 + timedelta(hours=6)
KEY = "matching@trading:0"  # the tracking key of the event log's partition 0
A, B = "7203", "8306"  # 28,000 / 19,000 price units, tick 5 around there
TICK = 5


def stage(universe: Universe, engine: str = "kernel", *, snapshots: Any = None,
          every: int = 10_000) -> MatchingStage:
    return MatchingStage(make_engine(engine), universe.get, snapshots or MemorySnapshots(),
                         snapshot_every=every, clock=lambda: CLOCK)


def feed(s: MatchingStage, events: list[Any], start: int = 1) -> list[Any]:
    return s.apply(list(enumerate(events, start)))


def states(reported: list[Any]) -> list[dict[str, Any]]:
    return [dict(r.__dict__) for r in reported]


# --- the contract ---------------------------------------------------------------------------
def test_topics_are_the_mappers_and_engines_have_names() -> None:
    assert tuple(get_topic(c) for c in (
        Order.Routed, Order.CancelRouted, Order.AmendRouted, Order.ExpiryRouted,
        Market.SessionClosed, Market.BarsOpened)) == VENUE_COMMAND_TOPICS
    assert MatchingStage.name == "matching"
    assert type(make_engine("kernel")).__name__ == "KernelEngine"
    assert type(make_engine("reference")).__name__ == "ReferenceEngine"
    with pytest.raises(ValueError, match="matching_engine='numba'"):
        make_engine("numba")


def test_a_report_is_the_event_its_constructor_builds_and_survives_the_mapper(
        universe: Universe) -> None:
    f = Flow()
    routed = f.routed(1, A, "buy", 100, 28000)
    s = stage(universe)
    [made, filled] = feed(s, [routed, f.routed(2, A, "sell", 100, 28000)])
    expected = Venue.Reported(  # type: ignore[call-arg]
        originator_id=ids.venue_id(A), originator_version=1, timestamp=CLOCK,
        principal=VENUE_PRINCIPAL, command_id=f"match:{routed.originator_id}:3",
        correlation_id=routed.correlation_id, causation_id=f"{routed.originator_id}:3",
        symbol=A, sequence=1, command="new", order_id=routed.originator_id, reports=[],
        last_price=None, depth=None,
    )
    assert made == expected
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    mapper: Mapper[Any] = Mapper(transcoder=transcoder)
    again: Any = mapper.to_domain_event(mapper.to_stored_event(filled))
    assert again == filled and again.depth == {"bids": [], "asks": []}


def test_fills_carry_deterministic_execution_ids_and_the_last_price(
        universe: Universe) -> None:
    f = Flow()
    out = feed(stage(universe), [
        f.routed(1, A, "sell", 100, 28000), f.routed(2, A, "sell", 200, 28005),
        f.routed(3, A, "buy", 250, 28005),
    ])
    taker = out[2]
    assert (taker.symbol, taker.sequence, taker.command, taker.order_id) == (
        A, 3, "new", order_uuid(3))
    assert taker.reports == [
        {"kind": "fill", "execution_id": execution_id(A, 3, 0), "price": 28000, "quantity": 100,
         "taker": str(order_uuid(3)), "maker": str(order_uuid(1))},
        {"kind": "fill", "execution_id": execution_id(A, 3, 1), "price": 28005,
         "quantity": 150,
         "taker": str(order_uuid(3)), "maker": str(order_uuid(2))},
    ]
    assert [r.last_price for r in out] == [None, None, 28005]
    assert [r.originator_version for r in out] == [1, 2, 3]
    assert [r.depth for r in out[:2]] == [None, None]  # depth on the batch's last only
    assert out[2].depth == {"bids": [], "asks": [[28005, 50, 1]]}


def test_cancel_amend_and_remainders(universe: Universe) -> None:
    f = Flow()
    s = stage(universe)
    out = feed(s, [
        f.routed(1, A, "buy", 300, 27990, tif="gtc"),
        f.routed(2, A, "sell", 100, 27990),  # fills 100 of order 1
        f.amend(1, 250, 27990),  # total 250, 100 filled: 150 open, less size keeps place
        f.amend(1, 100, 27990),  # not above the filled quantity
        f.routed(3, A, "sell", 500, 27990, tif="ioc"),  # takes 150, 350 removed
        f.cancel(1),  # filled meanwhile: the venue no longer has it
        f.routed(4, A, "buy", 100, 27000),
        f.cancel(4),
    ])
    assert out[2].reports == [{"kind": "amended", "order_id": str(order_uuid(1)),
                               "quantity": 250, "price": 27990, "priority_kept": True}]
    assert out[3].reports == [{"kind": "refused", "order_id": str(order_uuid(1)),
                               "action": "amend", "reason": "not_above_filled_quantity"}]
    assert out[3].sequence == out[2].sequence  # the venue answered: no engine input
    assert [r["kind"] for r in out[4].reports] == ["fill", "removed"]
    assert out[4].reports[1] == {"kind": "removed", "order_id": str(order_uuid(3)),
                                 "quantity": 350, "reason": "ioc_remainder",
                                 "expired": False}
    # the cancel's event names no symbol and the order is gone: refused, explicitly
    assert (out[5].symbol, out[5].command, out[5].order_id, out[5].reports) == (
        UNROUTED, "cancel", order_uuid(1),
        [{"kind": "refused", "order_id": str(order_uuid(1)), "action": "cancel",
          "reason": "unknown_order"}])
    assert out[5].originator_id == ids.venue_id(UNROUTED)
    assert out[7].reports == [{"kind": "removed", "order_id": str(order_uuid(4)),
                               "quantity": 100, "reason": "requested", "expired": False}]
    assert s.books.tickets == {}


def test_a_cancel_naming_its_symbol_is_refused_on_that_symbols_stream(
        universe: Universe) -> None:
    f = Flow()
    cancel = f.cancel(9, symbol=A)  # version 2: the saga names the order's book
    [refused] = feed(stage(universe), [cancel])
    assert (refused.symbol, refused.originator_id, refused.reports[0]["reason"]) == (
        A, ids.venue_id(A), "unknown_order")


def test_session_close_expires_day_orders_of_every_symbol(universe: Universe) -> None:
    f = Flow()
    s = stage(universe)
    feed(s, [
        f.routed(1, A, "buy", 100, 27990), f.routed(2, A, "buy", 100, 27980, tif="gtc"),
        f.routed(3, B, "sell", 100, 19100), f.routed(4, B, "sell", 200, 19105),
        f.routed(5, "9432", "buy", 100, 1490, tif="gtc"),
    ])
    close = f.close()
    out = s.apply([(6, close)])
    assert [(r.symbol, r.command, r.order_id, r.originator_version) for r in out] == [
        (A, "expire", None, 3), (B, "expire", None, 3)]
    assert out[0].reports == [{"kind": "removed", "order_id": str(order_uuid(1)),
                               "quantity": 100, "reason": "expired", "expired": True}]
    assert {r["order_id"] for r in out[1].reports} == {str(order_uuid(3)),
                                                       str(order_uuid(4))}
    assert out[0].causation_id == f"{ids.MARKET_ID}:{close.originator_version}"
    assert out[0].depth == {"bids": [[27980, 100, 1]], "asks": []}  # the GTC stays
    assert s.apply([(7, f.close("2024-06-04"))]) == []  # no DAY order left: no report
    # a legacy expiry of a GTC order: removed, reported expired
    [expired] = s.apply([(8, f.expiry(2))])
    assert (expired.command, expired.reports[0]["expired"]) == ("expire", True)


@pytest.mark.parametrize("engine", ["kernel", "reference"])
def test_what_the_venue_cannot_take_is_refused_not_raised(universe: Universe,
                                                         engine: str) -> None:
    f = Flow()
    unknown, odd, off_tick = feed(stage(universe, engine), [
        f.routed(1, "0000", "buy", 100, 1000),
        f.routed(2, A, "buy", 100, 28000, tif="gtd"),
        f.routed(3, A, "buy", 100, 28001),
    ])
    assert unknown.reports == [{"kind": "refused", "order_id": str(order_uuid(1)),
                                "action": "new", "reason": "unknown_symbol"}]
    assert unknown.sequence == 0
    assert odd.reports[0]["reason"] == "bad_command"
    assert off_tick.reports[0]["reason"] == "off_tick"
    assert (odd.sequence, off_tick.sequence) == (1, 2)


# --- property tests ---------------------------------------------------------------------
@st.composite
def flows(draw: Any) -> list[Any]:
    """Random venue commands on two symbols, prices within a few ticks (often crossing),
    now and then off the tick grid; cancels/amends/expiries of any order ever routed,
    and a session close now and then. Some events name their symbol, some do not."""
    f = Flow()
    named = draw(st.booleans())
    events: list[Any] = []
    routed: list[tuple[int, str, int]] = []
    for _ in range(draw(st.integers(1, 60))):
        op = draw(st.sampled_from(["new"] * 5 + ["cancel", "amend", "amend", "expiry",
                                                 "close"]))
        if op == "new" or not routed:
            key = len(routed) + 1
            symbol = draw(st.sampled_from([A, B]))
            base = 28000 if symbol == A else 19000
            price = base + TICK * draw(st.integers(-3, 3)) + draw(
                st.sampled_from([0] * 12 + [1]))
            order_type = draw(st.sampled_from(["limit"] * 6 + ["market"]))
            tif = draw(st.sampled_from(["day", "gtc", "ioc", "fok"]))
            if order_type == "market":
                tif = "ioc"
            events.append(f.routed(key, symbol, draw(st.sampled_from(["buy", "sell"])),
                                   100 * draw(st.integers(1, 4)),
                                   0 if order_type == "market" else price,
                                   order_type=order_type, tif=tif))
            routed.append((key, symbol, base))
            continue
        if op == "close":
            events.append(f.close())
            continue
        key, symbol, base = draw(st.sampled_from(routed))
        event: Any
        if op == "cancel":
            event = f.cancel(key)
        elif op == "expiry":
            event = f.expiry(key)
        else:
            event = f.amend(key, 100 * draw(st.integers(1, 5)),
                            base + TICK * draw(st.integers(-3, 3)))
        if named:
            event.__dict__["symbol"] = symbol
        events.append(event)
    return events


def batches(events: list[Any], sizes: list[int]) -> Iterator[list[tuple[int, Any]]]:
    items = list(enumerate(events, 1))
    i = 0
    for size in sizes * (len(items) // max(1, min(sizes)) + 1):
        if i >= len(items):
            return
        yield items[i:i + size]
        i += size


def run_all(s: MatchingStage, events: list[Any], sizes: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for batch in batches(events, sizes):
        out += states(s.apply(batch))
        s.committed(batch[-1][0])
    return out


def without_depth(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "depth": None} for r in out]


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(events=flows(), sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4))
def test_kernel_reports_equal_the_reference_engines(universe: Universe, events: list[Any],
                                                    sizes: list[int]) -> None:
    kernel = run_all(stage(universe, "kernel"), events, sizes)
    reference = run_all(stage(universe, "reference"), events, sizes)
    assert kernel == reference
    assert sum(1 for _ in kernel) >= len(events) - sum(
        1 for e in events if type(e) is Market.SessionClosed)


@PROPERTY
@given(events=flows(), sizes=st.lists(st.integers(2, 40), min_size=1, max_size=3))
def test_batching_changes_nothing_but_where_depth_is_published(
        universe: Universe, events: list[Any], sizes: list[int]) -> None:
    one_by_one = stage(universe)
    batched = stage(universe)
    assert without_depth(run_all(one_by_one, events, [1])) == without_depth(
        run_all(batched, events, sizes))
    assert one_by_one.state_bytes() == batched.state_bytes()
    for symbol, sequence in batched.books.sequences.items():
        assert batched.books.engine.sequence(symbol) == sequence


@PROPERTY
@given(events=flows(), sizes=st.lists(st.integers(1, 8), min_size=1, max_size=3),
       every=st.integers(1, 6), data=st.data())
def test_a_restart_from_snapshot_and_tail_continues_exactly(
        universe: Universe, events: list[Any], sizes: list[int], every: int,
        data: Any) -> None:
    work = list(batches(events, sizes))
    stop = data.draw(st.integers(0, len(work)), label="batches before the crash")
    uninterrupted = stage(universe, every=every)
    expected = [states(uninterrupted.apply(b)) for b in work]
    snapshots = MemorySnapshots()
    first = stage(universe, snapshots=snapshots, every=every)
    for batch in work[:stop]:
        first.apply(batch)
        first.committed(batch[-1][0])
    if stop < len(work) and data.draw(st.booleans(), label="crash before the commit"):
        first.apply(work[stop])  # applied but never committed: must not leak
    tracked = work[stop - 1][-1][0] if stop else 0
    second = stage(universe, snapshots=snapshots, every=every)
    second.start(tracked, ListSource(list(enumerate(events, 1))))
    assert second.replayed <= every + max(sizes)
    assert [states(second.apply(b)) for b in work[stop:]] == expected[stop:]


# --- restarts and snapshot storage ----------------------------------------------------------
def test_start_up_replays_only_the_tail_after_the_newest_snapshot(
        universe: Universe, tmp_path: Path) -> None:
    f = Flow()
    events = []
    for i in range(1, 1201):  # resting orders accumulate on both sides of two books
        symbol = A if i % 2 else B
        base = 28000 if symbol == A else 19000
        side = "buy" if i % 4 < 2 else "sell"
        price = base - TICK * (1 + i % 5) if side == "buy" else base + TICK * (1 + i % 5)
        events.append(f.routed(i, symbol, side, 100, price, tif="gtc"))
    items = list(enumerate(events, 1))
    snapshots = SQLiteSnapshots(tmp_path / "events.sqlite")
    first = stage(universe, snapshots=snapshots, every=250)
    for i in range(0, len(items), 100):
        first.apply(items[i:i + 100])
        first.committed(items[i:i + 100][-1][0])
    # due after 250 inputs, taken at the commit that gets there; the newest 2 kept
    assert snapshots.positions(KEY) == [900, 1200]

    source = ListSource(items)
    at_snapshot = stage(universe, snapshots=snapshots, every=250)
    at_snapshot.start(1200, source)
    assert (at_snapshot.restored_from, at_snapshot.replayed, source.reads) == (1200, 0, 0)
    assert at_snapshot.state_bytes() == first.state_bytes()

    between = stage(universe, snapshots=snapshots, every=250)
    between.start(1150, source)
    assert (between.restored_from, between.replayed) == (900, 250)
    empty = stage(universe, snapshots=MemorySnapshots(), every=250)
    empty.start(1150, source)
    assert (empty.restored_from, empty.replayed) == (None, 1150)
    assert between.state_bytes() == empty.state_bytes()


def test_an_unusable_snapshot_means_a_full_replay_not_a_stuck_stage(
        universe: Universe, caplog: pytest.LogCaptureFixture) -> None:
    f = Flow()
    items = list(enumerate([f.routed(i, A, "buy", 100, 27990) for i in range(1, 6)], 1))
    snapshots = MemorySnapshots()
    snapshots.save(KEY, 3, b'{"format": 0}')
    s = stage(universe, snapshots=snapshots)
    s.start(5, ListSource(items))
    assert (s.restored_from, s.replayed, len(s.books.tickets)) == (None, 5, 5)
    assert "snapshot at 3 unusable" in caplog.text


def test_a_snapshot_that_cannot_be_stored_is_tried_again_later(
        universe: Universe, caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(MemorySnapshots):
        down = True

        def save(self, stage: str, position: int, data: bytes) -> None:
            if self.down:
                raise OSError("disk full")
            super().save(stage, position, data)

    snapshots = Flaky()
    s = stage(universe, snapshots=snapshots, every=2)
    f = Flow()
    s.apply([(1, f.routed(1, A, "buy", 100, 27990)), (2, f.routed(2, A, "buy", 100, 27990))])
    s.committed(2)
    assert "snapshot at 2 not stored" in caplog.text and snapshots.positions(KEY) == []
    snapshots.down = False
    s.apply([(3, f.routed(3, A, "buy", 100, 27990))])
    s.committed(3)
    assert snapshots.positions(KEY) == [3]


def test_snapshots_share_the_event_stores_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(persistence="sqlite", sqlite_path=tmp_path / "e.sqlite")
    app: Application[Any] = Application(env=eventsourcing_env(settings))
    snapshots = venue_snapshots(settings)
    assert isinstance(snapshots, SQLiteSnapshots) and snapshots.path == tmp_path / "e.sqlite"
    snapshots.save(KEY, 3, b"one")
    app.save(Aggregate())  # the store writes beside it
    snapshots.save(KEY, 7, b"two")
    snapshots.save(KEY, 9, b"three")
    assert snapshots.latest(KEY, 8) == (7, b"two")
    assert snapshots.latest(KEY, 100) == (9, b"three")
    assert snapshots.latest(KEY, 6) is None  # only the newest 2 are kept
    assert app.recorder.max_notification_id() == 1  # type: ignore[attr-defined]
    assert snapshots.latest("matching@tradecore.matching.in:3", 100) is None  # per key
    with pytest.raises(ValueError, match="stage"):
        snapshots.save("", 1, b"x")
    assert isinstance(venue_snapshots(Settings(persistence="sqlite",
                                               sqlite_path=Path(":memory:"))),
                      MemorySnapshots)


@pytest.mark.postgres
def test_snapshots_in_the_event_stores_postgres_schema() -> None:
    from tests.conftest import postgres_env

    env = postgres_env()
    # first use from several processes at once: the table is created once, no race
    many = [snapshots_for_store(env) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda s: s.latest(KEY, 100), many)) == [None] * 4
    for other in many:
        other.close()
    snapshots = snapshots_for_store(env)
    try:
        assert isinstance(snapshots, PostgresSnapshots)
        for position in (5, 10, 15):
            snapshots.save(KEY, position, f"state {position}".encode())
        assert snapshots.latest(KEY, 14) == (10, b"state 10")
        assert snapshots.latest(KEY, 4) is None
        assert snapshots.positions(KEY) == [10, 15]
        snapshots.save(KEY, 15, b"again")
        assert snapshots.latest(KEY, 15) == (15, b"again")
        assert snapshots.latest("matching@tradecore.matching.in:3", 100) is None
    finally:
        snapshots.close()


def test_snapshots_follow_the_sources_tracking_key(universe: Universe) -> None:
    class Partition(ListSource):
        name = "tradecore.matching.in"
        partition = 3

    snapshots = MemorySnapshots()
    s = stage(universe, snapshots=snapshots, every=1)
    events = [Flow().routed(1, A, "buy", 100, 28000)]
    s.start(0, Partition([]))
    s.apply(list(enumerate(events, 1)))
    s.committed(1)
    assert snapshots.positions("matching@tradecore.matching.in:3") == [1]
    assert snapshots.positions(KEY) == []


def test_clock_defaults_to_utc_now(universe: Universe) -> None:
    s = MatchingStage(make_engine("reference"), universe.get)
    [out] = s.apply([(1, Flow().routed(1, A, "buy", 100, 28000))])
    assert out.timestamp.tzinfo is UTC
    assert abs(out.timestamp - datetime.now(UTC)) < timedelta(seconds=60)
