"""A day's deadline is not used up while the worker works through a backlog.

Found by the streams worker's restart test (tests/streams/test_streams_worker.py): the
restarted worker re-read its partitions at different paces, and days whose first bars
came early on a fast partition were published by deadline with a slower partition's
symbols missing (390 of 489 predictions), their bars then dropped as late.
"""

from __future__ import annotations

from datetime import date

from streams.market_data import Bar, Bars, BarWindow, DayClose

MONDAY, TUESDAY = date(2015, 12, 21), date(2015, 12, 22)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bars(code: str, day: date) -> Bars:
    return Bars(code, [Bar(day, code, 100.0, 101.0, 99.0, 100.0, 1000.0, 1e5, 1.0,
                           100.0, 101.0, 99.0, 100.0, 1000.0)])


def test_a_day_behind_a_backlog_gets_its_whole_deadline_once_it_is_the_oldest() -> None:
    clock = Clock()
    window = BarWindow({}, sessions=5, partitions=2, deadline_s=60, clock=clock)
    # partition 0 is ahead: both days' bars and markers at t=0
    for day in (MONDAY, TUESDAY):
        window.accept(bars("13010", day))
        window.close(DayClose(day, 0, 1))
    clock.now = 50  # partition 1 catches up with Monday
    window.accept(bars("13320", MONDAY))
    window.close(DayClose(MONDAY, 1, 1))
    assert window.ready() == [(MONDAY, "complete")]
    clock.now = 55
    window.publish(MONDAY, [])
    clock.now = 100  # 100 s after Tuesday's first bar, 45 s since it is the oldest
    assert window.ready() == []
    clock.now = 105
    window.accept(bars("13320", TUESDAY))
    window.close(DayClose(TUESDAY, 1, 1))
    assert window.ready() == [(TUESDAY, "complete")]
    assert window.window(TUESDAY)[1] == []  # nobody missing


def test_a_partition_that_stays_silent_still_closes_the_day_by_its_deadline() -> None:
    clock = Clock()
    window = BarWindow({}, sessions=5, partitions=2, deadline_s=60, clock=clock)
    window.accept(bars("13010", MONDAY))
    window.close(DayClose(MONDAY, 0, 1))
    clock.now = 59
    assert window.ready() == []
    clock.now = 60
    assert window.ready() == [(MONDAY, "deadline")]
    window.publish(MONDAY, [])
    window.accept(bars("13010", TUESDAY))  # its first bar as Monday is published
    clock.now = 119
    assert window.ready() == []
    clock.now = 120
    assert window.ready() == [(TUESDAY, "deadline")]
