"""The clock port: where the write model's "now" comes from.

Live, time is the system's; in a replay or a backtest it is the data's, so the same
inputs store the same events with the same timestamps. Whoever decides a command (the
command path, a saga step, the matching stage) asks its clock for the moment and puts it
in the :class:`aggregates.base.Meta` it hands the aggregates (``Meta.command(...,
at=clock.now())``); the aggregates stamp their events with it.

Every clock answers an aware UTC ``datetime``: naive datetimes are refused, because a
naive "09:15" means a different instant in Tokyo and on a UTC server.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now()`` returning an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time (UTC). The default for a live deployment."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


def _utc(moment: datetime, field: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{field}={moment!r} breaks rule 'a datetime'")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{field}={moment.isoformat()} breaks rule 'timezone-aware': pass an aware datetime"
        )
    return moment.astimezone(UTC)


class SimulatedClock:
    """Time that moves only when told: replays, backtests and tests.

    ``SimulatedClock(datetime(2025, 1, 6, 0, 0, tzinfo=UTC))`` starts there; ``set``
    jumps to an instant (never backwards: events are stored in time order, and a
    timestamp before the previous one would make "as of" queries lie), ``advance`` moves
    forward by a ``timedelta`` or a number of seconds. Thread-safe, so a backtest may
    share one clock between its stages.
    """

    def __init__(self, start: datetime) -> None:
        self._now = _utc(start, "start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> datetime:
        moment = _utc(moment, "moment")
        with self._lock:
            if moment < self._now:
                raise ValueError(
                    f"moment={moment.isoformat()} breaks rule 'not before the clock's "
                    f"current time {self._now.isoformat()}'"
                )
            self._now = moment
        return moment

    def advance(self, by: timedelta | float = 0.0) -> datetime:
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"by={by!r} breaks rule 'not negative' (time only moves forward)")
        with self._lock:
            self._now = self._now + step
            return self._now

    def __repr__(self) -> str:
        return f"SimulatedClock({self._now.isoformat()})"
