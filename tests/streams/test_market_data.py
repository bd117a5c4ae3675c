"""The market-data window's rules: what a bar on the stream does to the features a day
is predicted from.

Each bad-input rule of :mod:`streams.market_data` is checked twice: by its counted
reason, and by what it leaves in the window, mostly as the day's features compared with
the offline pipeline reading the J-Quants files (the small real folder of
tests/streams/test_backtest.py: 12 stocks over 2015).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from streams.ingest import backfill_messages, day_messages
from streams.market_data import (
    BadMessage,
    Bar,
    Bars,
    BarWindow,
    DayClose,
    bars_from_rows,
    decode,
    encode,
)
from streams.signals import features_for_day, quotes_frame
from tests.streams.test_backtest import data, shared  # noqa: F401  (fixtures)

#: Trading dates a day's features are built from in these tests (the loop's own is the
#: checkpoint's look-back plus a margin; the rules do not depend on it).
SESSIONS = 80
DAY = date(2015, 11, 16)  # a Monday well inside the data
CODE = "72030"
SPLIT_CODE, SPLIT_DAY = "94320", date(2015, 6, 26)  # NTT's 1:2 split (AdjustmentFactor 0.5)


class Clock:
    """A clock the test moves (``BarWindow`` reads it for day deadlines)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bar(day: date, code: str = CODE, close: float = 100.0, **fields: float | None) -> Bar:
    values: dict[str, float | None] = {
        "Open": close, "High": close + 1, "Low": close - 1, "Close": close, "Volume": 1000.0,
        "TurnoverValue": close * 1000, "AdjustmentFactor": 1.0, "AdjustmentOpen": close,
        "AdjustmentHigh": close + 1, "AdjustmentLow": close - 1, "AdjustmentClose": close,
        "AdjustmentVolume": 1000.0}  # fmt: skip
    values.update(fields)
    return Bar(day, code, **values)  # type: ignore[arg-type]


def _sessions(n: int, start: date = date(2024, 1, 1)) -> list[date]:
    """``n`` weekdays from ``start``."""
    days: list[date] = []
    day = start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _feed(window: BarWindow, quotes: pl.DataFrame, *, publish: bool = True,
          rebase_splits: bool = False) -> None:
    """Everything before the last date as a backfill, then the last date as a live day
    (its markers in), published as the loops do (window, then publish) when ``publish``."""
    days = quotes.get_column("Date").unique().sort().to_list()
    for routed in backfill_messages(quotes.filter(pl.col("Date") < days[-1]), days[:-1], 1):
        _apply(window, [routed.message])
    for day, _ in window.ready():
        window.publish(day, window.window(day)[1])
    last = quotes.filter(pl.col("Date") == days[-1])
    _apply(window, [r.message for r in day_messages(days[-1], last, 1,
                                                     rebase_splits=rebase_splits)])
    if publish:
        for day, _ in window.ready():
            window.publish(day, window.window(day)[1])


def _apply(window: BarWindow, messages: Iterable[Bars | DayClose]) -> None:
    for message in messages:
        if isinstance(message, Bars):
            window.accept(message)
        else:
            window.close(message)


def _up_to(quotes: pl.DataFrame, day: date) -> pl.DataFrame:
    """The file's rows of the last SESSIONS dates up to ``day`` (what the stream holds)."""
    dates = quotes.filter(pl.col("Date") <= day).get_column("Date").unique().sort()
    return quotes.filter(pl.col("Date").is_between(dates[-SESSIONS], day))


def _online(window: BarWindow, listed: pl.DataFrame, day: date) -> pl.DataFrame:
    rows, _ = window.window(day)
    return features_for_day(quotes_frame(rows), listed, day, SESSIONS).filter(
        pl.col("date") == day)


def _offline(quotes: pl.DataFrame, listed: pl.DataFrame, day: date) -> pl.DataFrame:
    return features_for_day(quotes, listed, day, SESSIONS).filter(pl.col("date") == day)


def _one(quotes: pl.DataFrame, day: date, code: str) -> pl.Expr:
    return (pl.col("Date") == day) & (pl.col("Code") == code)


def _with(quotes: pl.DataFrame, day: date, code: str, **values: float | None
          ) -> pl.DataFrame:
    """``quotes`` with some fields of one row replaced."""
    return quotes.with_columns(
        [pl.when(_one(quotes, day, code)).then(pl.lit(v, dtype=pl.Float64))
         .otherwise(pl.col(k)).alias(k) for k, v in values.items()])


@pytest.fixture(scope="module")
def real(data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:  # noqa: F811
    """The small folder's quotes and listed info, as the offline pipeline reads them."""
    from inference.data import load_daily_quotes, load_listed_info

    return load_daily_quotes(data), load_listed_info(data)


# -- messages ------------------------------------------------------------------------------
def test_messages_round_trip_and_a_bad_one_names_the_field() -> None:
    bars = Bars("72030", [_bar(date(2015, 11, 16)), _bar(date(2015, 11, 17), Open=None)],
                rebase_splits=True)
    marker = DayClose(date(2015, 11, 17), 3, 12, predict=False)
    assert decode(encode(bars)) == bars
    assert decode(encode(marker)) == marker
    with pytest.raises(BadMessage, match="not JSON"):
        decode(b"{not json")
    with pytest.raises(BadMessage, match=r"md\.bars: not JSON"):
        decode(None)
    with pytest.raises(BadMessage, match=r"\$\.partition"):
        decode(b'{"type": "close", "day": "2015-11-17", "partition": "x", "bars": 1}')
    with pytest.raises(BadMessage, match="type"):
        decode(b'{"type": "trade", "code": "72030"}')


def test_bars_from_rows_reads_nan_as_missing() -> None:
    rows = [{"Date": date(2015, 11, 16), "Code": "72030", "Open": float("nan"),
             "AdjustmentClose": 7000.0}]
    (bar,) = bars_from_rows(rows)
    assert bar.Open is None and bar.AdjustmentClose == 7000.0 and bar.Volume is None


def test_a_window_needs_two_sessions() -> None:
    with pytest.raises(ValueError, match="sessions=1 breaks rule 'at least 2'"):
        BarWindow({}, sessions=1)


# -- dropped bars --------------------------------------------------------------------------
def test_a_late_bar_for_a_published_day_is_dropped_and_changes_nothing() -> None:
    window = BarWindow({}, sessions=5)
    d1, d2 = _sessions(2)
    window.accept(Bars(CODE, [_bar(d1)]))
    window.close(DayClose(d1, 0, 1))
    window.publish(d1, [])
    store = dict(window.store)
    assert window.accept(Bars("67580", [_bar(d1, "67580")]))["late"] == 1
    window.close(DayClose(d1, 0, 1))  # a marker again, after the day was published
    assert window.counts["late"] == 1 and window.counts["late_close"] == 1
    assert window.window(d1) == ([_bar(d1)], []) and window.store == store
    assert window.open_days() == [] and window.ready() == []
    assert window.accept(Bars(CODE, [_bar(d2)]))["accepted"] == 1  # the next day is open


def test_a_duplicate_is_dropped_and_of_a_conflicting_one_the_first_stands() -> None:
    window = BarWindow({}, sessions=5)
    (d1,) = _sessions(1)
    first = _bar(d1, close=100.0, AdjustmentOpen=None)
    assert window.accept(Bars(CODE, [first])) == {"accepted": 1, "repaired_price": 1}
    assert window.accept(Bars(CODE, [first])) == {"duplicate": 1}
    assert window.accept(Bars(CODE, [_bar(d1, close=120.0)])) == {"conflicting_duplicate": 1}
    # the same bar twice in one message: the second one is the duplicate
    assert window.accept(Bars("67580", [_bar(d1, "67580")] * 2)) == {"accepted": 1,
                                                                     "duplicate": 1}
    rows, _ = window.window(d1)
    assert [(b.Code, b.AdjustmentClose) for b in rows] == [("67580", 100.0), (CODE, 100.0)]
    assert len(window.store) == 2  # one chunk per accepted message, nothing for the drops


def test_a_bar_without_a_usable_close_is_dropped_and_the_features_are_the_files_without_it(
        real: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    quotes, listed = real
    window = BarWindow({}, sessions=SESSIONS)
    held = _up_to(quotes, DAY)
    for bad in (None, float("nan"), float("inf"), 0.0, -5.0):
        outcome = window.accept(Bars(CODE, [_bar(DAY, AdjustmentClose=bad)]))
        assert outcome == {"bad_close": 1}
    _feed(window, _with(held, DAY, CODE, AdjustmentClose=float("nan")))
    assert window.counts["bad_close"] == 6  # the five above and the file's NaN row
    rows, missing = window.window(DAY)
    assert not [b for b in rows if b.Code == CODE and b.Date == DAY]
    assert missing == [CODE]  # it traded the session before: reported when the day closes
    assert window.published(DAY) == [CODE]
    online = _online(window, listed, DAY)
    assert CODE not in online["code"].to_list() and online.height == 11
    assert online.equals(_offline(held.filter(~_one(held, DAY, CODE)), listed, DAY))
    # the offline cleaning drops a null close the same way, so the files with it agree too
    assert online.equals(_offline(_with(held, DAY, CODE, AdjustmentClose=None), listed, DAY))


def test_a_bad_code_is_dropped() -> None:
    window = BarWindow({}, sessions=5)
    (d1,) = _sessions(1)
    assert window.accept(Bars("7203X", [_bar(d1, "7203X"), _bar(d1, "7203X")])) == {
        "bad_code": 2}
    assert window.accept(Bars("", [])) == {"bad_code": 1}
    # a bar filed under another symbol's key is not that symbol's bar
    assert window.accept(Bars(CODE, [_bar(d1, "67580"), _bar(d1)])) == {"bad_code": 1,
                                                                         "accepted": 1}
    # a 4-digit ticker is the J-Quants code with its trailing 0
    assert window.accept(Bars("6758", [_bar(d1, "6758")])) == {"accepted": 1}
    assert sorted(b.Code for b in window.window(d1)[0]) == ["67580", CODE]
    assert window.counts["bad_code"] == 4


# -- kept bars -----------------------------------------------------------------------------
def test_an_out_of_order_bar_is_kept_in_its_place_while_its_day_is_open() -> None:
    window = BarWindow({}, sessions=5)
    d1, d2, d3 = _sessions(3)
    window.accept(Bars(CODE, [_bar(d1, close=100.0)]))
    window.accept(Bars(CODE, [_bar(d3, close=103.0)]))
    assert window.accept(Bars(CODE, [_bar(d2, close=102.0)])) == {"accepted": 1,
                                                                  "out_of_order": 1}
    rows, _ = window.window(d3)
    assert [(b.Date, b.AdjustmentClose) for b in rows] == [(d1, 100.0), (d2, 102.0),
                                                           (d3, 103.0)]
    assert window.open_days() == [d1, d2, d3]


def test_a_missing_open_high_low_or_volume_is_kept_and_repaired_as_offline(
        real: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    quotes, listed = real
    held = _up_to(quotes, DAY)
    bad = _with(held, DAY, CODE, AdjustmentOpen=None, AdjustmentLow=-1.0,
                AdjustmentVolume=None)
    window = BarWindow({}, sessions=SESSIONS)
    _feed(window, bad)
    assert window.counts["repaired_price"] == 1 and window.counts["repaired_volume"] == 1
    rows, missing = window.window(DAY)
    (kept,) = [b for b in rows if b.Code == CODE and b.Date == DAY]
    assert kept.AdjustmentOpen is None and kept.AdjustmentLow == -1.0 and missing == []
    online = _online(window, listed, DAY)
    assert CODE in online["code"].to_list() and online.height == 12
    assert online.equals(_offline(bad, listed, DAY))
    # the repair is the offline one: the stock's returns are those of its good closes
    assert online.filter(pl.col("code") == CODE)["ret_1d"].equals(
        _offline(held, listed, DAY).filter(pl.col("code") == CODE)["ret_1d"])


def test_a_bar_without_trades_is_kept_and_its_features_stay_finite(
        real: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    quotes, listed = real
    quiet = _with(_up_to(quotes, DAY), DAY, CODE, Volume=0.0, AdjustmentVolume=0.0,
                  TurnoverValue=0.0)
    window = BarWindow({}, sessions=SESSIONS)
    _feed(window, quiet)
    assert window.counts["zero_volume"] == 1 and window.counts["repaired_volume"] == 0
    online = _online(window, listed, DAY)
    assert online.equals(_offline(quiet, listed, DAY))
    row = online.filter(pl.col("code") == CODE)
    assert row.height == 1
    values = row.select(pl.selectors.float()).unpivot()["value"].drop_nulls()
    assert values.len() > 50 and values.is_finite().all()


def _as_served_live(quotes: pl.DataFrame) -> pl.DataFrame:
    """The split stock's rows before the split as the API served them at the time: on
    the scale of their own day (Adjustment* equal to the raw prices and volume)."""
    before = _one(quotes, SPLIT_DAY, SPLIT_CODE).not_() & (pl.col("Code") == SPLIT_CODE) & (
        pl.col("Date") < SPLIT_DAY)
    return quotes.with_columns(
        [pl.when(before).then(pl.col(raw)).otherwise(pl.col(f"Adjustment{raw}"))
         .alias(f"Adjustment{raw}") for raw in ("Open", "High", "Low", "Close", "Volume")])


def test_a_split_from_a_live_source_re_bases_the_held_history(
        real: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    quotes, listed = real
    files = _up_to(quotes, SPLIT_DAY)
    live = _as_served_live(files)
    before = live.filter(pl.col("Code") == SPLIT_CODE, pl.col("Date") < SPLIT_DAY)
    assert (before["AdjustmentClose"] / files.filter(
        pl.col("Code") == SPLIT_CODE, pl.col("Date") < SPLIT_DAY)["AdjustmentClose"]
            ).to_list() == [2.0] * before.height  # the files hold them on the split's scale

    rebased = BarWindow({}, sessions=SESSIONS)
    _feed(rebased, live, rebase_splits=True)
    assert rebased.counts["split"] == 1
    held = [b for b in rebased.window(SPLIT_DAY)[0] if b.Code == SPLIT_CODE]
    expected = files.filter(pl.col("Code") == SPLIT_CODE).sort("Date")
    assert [b.AdjustmentClose for b in held] == expected["AdjustmentClose"].to_list()
    assert [b.AdjustmentVolume for b in held] == expected["AdjustmentVolume"].to_list()
    online = _online(rebased, listed, SPLIT_DAY)
    assert online.equals(_offline(files, listed, SPLIT_DAY))
    (ret,) = online.filter(pl.col("code") == SPLIT_CODE)["ret_1d"].to_list()
    assert abs(ret) < 0.05  # a quiet day for NTT, not the halving of its share price

    # the same bars from files (rebase_splits False) are taken as they are: their
    # Adjustment* columns are on one scale already, so here the split is a jump
    as_is = BarWindow({}, sessions=SESSIONS)
    _feed(as_is, live, rebase_splits=False)
    assert as_is.counts["split"] == 1
    (jump,) = _online(as_is, listed, SPLIT_DAY).filter(
        pl.col("code") == SPLIT_CODE)["ret_1d"].to_list()
    assert jump == pytest.approx(ret * 0.5 - 0.5, abs=1e-3)


def test_a_split_re_bases_only_the_bars_before_it_and_the_store_follows() -> None:
    window = BarWindow({}, sessions=10)
    d1, d2, d3 = _sessions(3)
    window.accept(Bars(CODE, [_bar(d1, close=200.0), _bar(d2, close=210.0)]))
    window.accept(Bars("67580", [_bar(d1, "67580"), _bar(d2, "67580")]))
    split = _bar(d3, close=104.0, AdjustmentFactor=0.5)
    assert window.accept(Bars(CODE, [split], rebase_splits=True)) == {"accepted": 1,
                                                                       "split": 1}
    closes = [(b.Code, b.AdjustmentClose, b.AdjustmentVolume) for b in window.window(d3)[0]]
    assert closes == [("67580", 100.0, 1000.0), ("67580", 100.0, 1000.0),
                      (CODE, 100.0, 2000.0), (CODE, 105.0, 2000.0), (CODE, 104.0, 1000.0)]
    # the re-based history replaced the old chunks: a restart reads the same
    assert BarWindow(dict(window.store), sessions=10).window(d3) == window.window(d3)
    assert sum(k.startswith(f"b|{CODE}|".encode()) for k in window.store) == 1


class DyingStore(dict[bytes, bytes]):
    """A store whose worker is killed after ``left`` more changes: what a Faust table
    recovers from its changelog is the changes made before."""

    left = 10**9

    class Killed(Exception):
        pass

    def _change(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise self.Killed

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._change()
        super().__setitem__(key, value)

    def pop(self, key: bytes, *default: Any) -> Any:  # type: ignore[override]
        self._change()
        return super().pop(key, *default)


def test_a_worker_killed_in_the_middle_of_a_split_s_re_base_recovers_the_whole_history(
        ) -> None:
    days = _sessions(4)
    split = Bars(CODE, [_bar(days[3], close=104.0, AdjustmentFactor=0.5)], rebase_splits=True)

    def held_before_split() -> DyingStore:
        store = DyingStore()
        window = BarWindow(store, sessions=10)
        for i, day in enumerate(days[:3]):  # three chunks, as three live days leave them
            window.accept(Bars(CODE, [_bar(day, close=200.0 + 2 * i)]))
        return store

    intact = BarWindow(dict(held_before_split()), sessions=10)
    intact.accept(split)
    expected = intact.window(days[3])
    assert [b.AdjustmentClose for b in expected[0]] == [100.0, 101.0, 102.0, 104.0]
    for changes in range(10):  # killed after 0, 1, ... of the re-base's changes
        store = held_before_split()
        store.left = changes
        try:
            BarWindow(store, sessions=10).accept(split)
        except DyingStore.Killed:
            pass
        else:  # it got through this time
            assert changes >= 2  # after one change or more in between
            break
        recovered = BarWindow(dict(store), sessions=10)
        recovered.accept(split)  # redelivered: its offset was not committed
        assert recovered.window(days[3]) == expected, changes
        assert BarWindow(dict(recovered.store), sessions=10).window(days[3]) == expected
    else:
        raise AssertionError("the re-base never completed")


# -- days ----------------------------------------------------------------------------------
def test_a_day_is_complete_when_every_partition_closed_it() -> None:
    clock = Clock()
    window = BarWindow({}, sessions=5, partitions=2, deadline_s=30, clock=clock)
    (d1,) = _sessions(1)
    window.accept(Bars(CODE, [_bar(d1)]))
    window.close(DayClose(d1, 0, 1))
    assert window.ready() == []
    window.close(DayClose(d1, 0, 1))  # the same partition again is not the other one
    assert window.ready() == []
    window.close(DayClose(d1, 1, 0))
    assert window.ready() == [(d1, "complete")] and window.predicts(d1)


def test_a_marker_for_a_partition_the_window_does_not_have_is_dropped() -> None:
    """A worker told of 2 partitions reading a topic that has more (or a corrupt
    marker): such a marker must not stand in for a partition whose bars are not in."""
    window = BarWindow({}, sessions=5, partitions=2)
    (d1,) = _sessions(1)
    window.accept(Bars(CODE, [_bar(d1)]))
    window.close(DayClose(d1, 0, 1))
    store = dict(window.store)
    for partition in (2, 7, -1):
        window.close(DayClose(d1, partition, 0))
    assert window.ready() == [] and window.store == store
    assert window.counts["bad_partition"] == 3
    window.close(DayClose(d1, 1, 0))
    assert window.ready() == [(d1, "complete")]


def test_a_day_missing_a_symbol_closes_on_its_deadline_and_reports_it() -> None:
    clock = Clock()
    window = BarWindow({}, sessions=5, deadline_s=30, clock=clock)
    d1, d2 = _sessions(2)
    for code in (CODE, "67580", "83060"):
        window.accept(Bars(code, [_bar(d1, code)]))
    window.close(DayClose(d1, 0, 3))
    window.publish(d1, window.window(d1)[1])
    clock.now += 100  # the quiet time between sessions does not count against d2
    for code in (CODE, "83060"):
        window.accept(Bars(code, [_bar(d2, code)]))
    clock.now += 29.9
    assert window.ready() == []
    clock.now += 0.1
    assert window.ready() == [(d2, "deadline")]
    rows, missing = window.window(d2)
    assert missing == ["67580"] and len([b for b in rows if b.Date == d2]) == 2
    window.publish(d2, missing)
    assert window.published(d2) == ["67580"] and window.counts["missing"] == 1
    # its state is kept: its bar of d1 is still in the window
    assert [b.Date for b in window.window(d2)[0] if b.Code == "67580"] == [d1]
    assert window.accept(Bars("67580", [_bar(d2, "67580")])) == {"late": 1}


def test_a_day_waits_for_the_days_before_it() -> None:
    clock = Clock()
    window = BarWindow({}, sessions=5, deadline_s=30, clock=clock)
    d1, d2 = _sessions(2)
    window.accept(Bars(CODE, [_bar(d1)]))
    clock.now += 10
    window.accept(Bars(CODE, [_bar(d2)]))
    window.close(DayClose(d2, 0, 1))
    assert window.ready() == []  # d2 is complete, but d1 is neither complete nor due
    clock.now += 20
    assert window.ready() == [(d1, "deadline"), (d2, "complete")]


def test_backfill_markers_close_days_without_predicting_them() -> None:
    window = BarWindow({}, sessions=5)
    d1, d2 = _sessions(2)
    window.accept(Bars(CODE, [_bar(d1), _bar(d2)]))
    window.close(DayClose(d1, 0, 1, predict=False))
    window.close(DayClose(d2, 0, 1))
    assert window.ready() == [(d1, "complete"), (d2, "complete")]
    assert not window.predicts(d1) and window.predicts(d2)


def test_the_window_is_exactly_the_last_sessions_and_publishing_prunes_the_rest() -> None:
    window = BarWindow({}, sessions=4)
    days = _sessions(10)
    for i, day in enumerate(days):
        window.accept(Bars(CODE, [_bar(day, close=100.0 + i)]))
        if i % 3:  # a symbol that trades only some days does not shift the window
            window.accept(Bars("67580", [_bar(day, "67580")]))
    for day in days[:6]:
        window.close(DayClose(day, 0, 1))
    for day in days[:3]:
        assert window.ready()[0] == (day, "complete")
        window.publish(day, window.window(day)[1])
    rows, _ = window.window(days[6])
    assert sorted({b.Date for b in rows}) == days[3:7]
    assert [b.AdjustmentClose for b in rows if b.Code == CODE] == [103.0, 104.0, 105.0, 106.0]
    assert window.ready() == [(day, "complete") for day in days[3:6]]
    for day in days[3:6]:
        window.publish(day, window.window(day)[1])
    # nothing older than the last 4 sessions up to the published day is held or stored
    assert window.dates() == days[2:]
    assert all(b.Date >= days[2] for b in window.window(days[9])[0])
    stored = {key.decode().split("|")[2] for key in window.store if key.startswith(b"b|")}
    assert min(stored) == days[2].isoformat()
    assert {k.decode() for k in window.store if not k.startswith(b"b|")} == {
        *(f"c|{day}|0" for day in days[2:6]), *(f"p|{day}" for day in days[2:6])}
    assert window.open_days() == days[6:]


def test_a_fresh_window_over_the_same_store_after_a_crash_mid_day_has_the_same_state(
        real: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    quotes, listed = real
    store: dict[bytes, bytes] = {}
    window = BarWindow(store, sessions=SESSIONS)
    held = _up_to(quotes, DAY)
    _feed(window, held.filter(pl.col("Date") < DAY))
    today = held.filter(pl.col("Date") == DAY)
    messages = [r.message for r in day_messages(DAY, today, 1, rebase_splits=False)]
    _apply(window, messages[:7])  # the worker dies with 7 of the day's 12 bars in
    assert window.open_days() == [DAY]

    recovered = BarWindow(dict(store), sessions=SESSIONS)  # a Faust table's recovery
    assert recovered.window(DAY) == window.window(DAY)
    assert recovered.dates() == window.dates()
    assert recovered.last_published == window.last_published
    assert recovered.open_days() == [DAY] and recovered.ready() == []
    # the redelivered messages are duplicates; the rest complete the day
    _apply(recovered, messages)
    assert recovered.counts["duplicate"] == 7 and recovered.counts["accepted"] == 5
    assert recovered.ready() == [(DAY, "complete")]
    assert _online(recovered, listed, DAY).equals(_offline(held, listed, DAY))


def test_the_store_holds_msgspec_chunks_a_faust_table_can_carry() -> None:
    store: dict[bytes, bytes] = {}
    window = BarWindow(store, sessions=5)
    d1, d2 = _sessions(2)
    window.accept(Bars(CODE, [_bar(d1), _bar(d2)]))
    (key,) = store
    assert key == f"b|{CODE}|{d1}".encode()
    assert msgspec.msgpack.decode(store[key], type=list[Bar]) == [_bar(d1), _bar(d2)]


def test_a_backfill_marker_closes_its_range_whatever_arrives_first_and_survives_a_restart(
        ) -> None:
    """One marker per partition closes a backfill's days, even days whose bars reach the
    window after it (another partition's backlog), and a restarted window keeps it."""
    days = [date(2015, 11, 2), date(2015, 11, 4), date(2015, 11, 5)]

    def bar(code: str, day: date) -> Bar:
        return Bar(day, code, AdjustmentOpen=100.0, AdjustmentHigh=101.0, AdjustmentLow=99.0,
                   AdjustmentClose=100.0, AdjustmentVolume=1000.0)

    store: dict[bytes, bytes] = {}
    window = BarWindow(store, sessions=2, partitions=2)
    window.accept(Bars("72030", [bar("72030", d) for d in days[:1]]))
    window.close(DayClose(days[-1], 0, 3, False, days[0]))  # partition 0: all three days
    assert window.ready() == []  # partition 1 has said nothing yet
    window.accept(Bars("67580", [bar("67580", d) for d in days]))  # its bars, late
    window.accept(Bars("72030", [bar("72030", d) for d in days[1:]]))
    restarted = BarWindow(store, sessions=2, partitions=2)  # a crash: the store survives
    restarted.close(DayClose(days[-1], 1, 3, False, days[0]))
    assert restarted.ready() == [(d, "complete") for d in days]
    assert not any(restarted.predicts(d) for d in days)  # warm-up: closed unpredicted
    for d in days:
        restarted.publish(d, [])
    later = [date(2015, 11, 6), date(2015, 11, 9)]
    for d in later:  # the range goes once its last day has left the window
        for code in ("72030", "67580"):
            restarted.accept(Bars(code, [bar(code, d)]))
        for partition in (0, 1):
            restarted.close(DayClose(d, partition, 1))
        assert restarted.ready() == [(d, "complete")]
        restarted.publish(d, [])
    assert not any(k.startswith(b"r|") for k in store)
