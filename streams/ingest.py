"""Market data in: J-Quants daily quotes as ``md.bars`` messages, from files replayed at a
chosen speed or by polling the J-Quants API (:class:`inference.data.JQuantsClient`).

A source yields *days*; each day becomes one :class:`~streams.market_data.Bars` per symbol
(keyed by its code) and one :class:`~streams.market_data.DayClose` per partition saying how
many bars that partition got. The sessions before the first day to predict (the
features' warm-up) are sent as a *backfill*: each symbol's warm-up bars in a few large
messages, and markers that close those days without predicting them.

The same messages drive both deployments: the Faust worker publishes them to Kafka, the
embedded loop hands them to its :class:`~streams.loop.Loop` directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from streams.market_data import Bars, DayClose, Message, bars_from_rows

#: Bars per symbol in one backfill message.
BACKFILL_CHUNK = 128


@dataclass(frozen=True)
class Routed:
    """A message and where it goes: keyed by code, or to one partition (markers)."""

    message: Message
    key: str
    partition: int | None = None


def partition_of(code: str, partitions: int) -> int:
    from streams.kafka_bus import partition_for

    return partition_for(code, partitions) if partitions > 1 else 0


def day_messages(day: date, rows: pl.DataFrame, partitions: int, *, rebase_splits: bool,
                 predict: bool = True) -> Iterator[Routed]:
    """One day's bars (one message per symbol), then every partition's end-of-day marker."""
    per_partition = [0] * partitions
    for bar in bars_from_rows(rows.sort("Code").iter_rows(named=True)):
        per_partition[partition_of(bar.Code, partitions)] += 1
        yield Routed(Bars(bar.Code, [bar], rebase_splits), bar.Code)
    for partition, count in enumerate(per_partition):
        yield Routed(DayClose(day, partition, count, predict), f"close:{day}", partition)


def backfill_messages(rows: pl.DataFrame, days: list[date], partitions: int, *,
                      chunk: int = BACKFILL_CHUNK) -> Iterator[Routed]:
    """The warm-up sessions: each symbol's bars in messages of ``chunk``, then one marker
    per partition that closes all of those days without predicting them."""
    sent = [0] * partitions
    for (code,), frame in rows.sort("Code", "Date").group_by(["Code"], maintain_order=True):
        bars = bars_from_rows(frame.iter_rows(named=True))
        sent[partition_of(str(code), partitions)] += len(bars)
        for k in range(0, len(bars), chunk):
            yield Routed(Bars(str(code), bars[k:k + chunk]), str(code))
    for partition, count in enumerate(sent):  # one marker per partition closes the range
        yield Routed(DayClose(days[-1], partition, count, False, days[0]),
                     f"close:{days[0]}..{days[-1]}", partition)


class FileSource:
    """Replay the J-Quants files of ``data`` from ``start`` (None: the first day with
    ``warmup`` sessions before it) to ``end``: the ``warmup`` sessions before ``start`` as
    a backfill, then day by day at ``speed`` days a second
    (0: as fast as the consumer takes them). ``after`` skips the days already sent (a
    restarted ingest resumes after the last day whose markers went out)."""

    rebase_splits = False  # the files' Adjustment* columns are on one scale already

    def __init__(self, data: Path, start: date | None, end: date | None, *, warmup: int,
                 speed: float = 0.0, after: date | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from inference.data import load_daily_quotes

        quotes = load_daily_quotes(data)
        if end is not None:
            quotes = quotes.filter(pl.col("Date") <= end)
        days = quotes.get_column("Date").unique().sort().to_list()
        if start is None:  # the first day the warm-up allows
            start = days[min(warmup, len(days) - 1)] if days else date.min
        live = [d for d in days if d >= start]
        if not live:
            raise ValueError(f"--from {start}: no session on or after it in {data}")
        first = days.index(live[0])
        self.warmup_days = days[max(0, first - warmup):first]
        self.days = live
        self.quotes = quotes
        self.speed, self.after, self.sleep = speed, after, sleep

    def messages(self, partitions: int) -> Iterator[tuple[date, bool, list[Routed]]]:
        """``(day, predict, messages)`` per day (the backfill as one step, its last day)."""
        after = self.after
        warm = [d for d in self.warmup_days if after is None or d > after]
        if warm:
            rows = self.quotes.filter(pl.col("Date").is_between(warm[0], warm[-1]))
            yield warm[-1], False, list(backfill_messages(rows, warm, partitions))
        by_day = self.quotes.filter(pl.col("Date") >= self.days[0]).partition_by(
            "Date", as_dict=True, maintain_order=True)
        for day in self.days:
            if after is not None and day <= after:
                continue
            started = time.monotonic()
            rows = by_day[(day,)]
            yield day, True, list(day_messages(day, rows, partitions,
                                               rebase_splits=self.rebase_splits))
            if self.speed > 0:
                self.sleep(max(0.0, 1.0 / self.speed - (time.monotonic() - started)))


class ApiSource:
    """Poll the J-Quants API (:class:`inference.data.JQuantsClient`) for each business
    day from ``start``: today's quotes are asked for again every ``interval_s`` until
    they are published; a past day without quotes is a holiday. Bars from the API
    re-base a symbol's held history on a split (``rebase_splits``)."""

    rebase_splits = True

    def __init__(self, client: Any, start: date, *, after: date | None = None,
                 interval_s: float = 60.0,
                 today: Callable[[], date] = date.today,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.start, self.after = client, start, after
        self.interval_s = interval_s
        self.today, self.sleep = today, sleep

    def messages(self, partitions: int) -> Iterator[tuple[date, bool, list[Routed]]]:
        day = max(self.start, (self.after + timedelta(days=1)) if self.after else self.start)
        while True:
            if day > self.today():
                self.sleep(self.interval_s)
                continue
            if day.weekday() >= 5:
                day += timedelta(days=1)
                continue
            rows = self.client.daily_quotes(date_=day)
            if rows.is_empty():
                if day < self.today():  # a past day without quotes: a holiday
                    day += timedelta(days=1)
                    continue
                self.sleep(self.interval_s)  # today's quotes are not published yet
                continue
            yield day, True, list(day_messages(day, rows, partitions,
                                               rebase_splits=self.rebase_splits))
            day += timedelta(days=1)


def market_data_folder(settings: Any) -> Path:
    """The J-Quants folder the loop reads (listed info always, quotes when replaying):
    ``streams_data``, else ``<data_dir>/jquants``."""
    return Path(settings.streams_data or settings.data_dir / "jquants")


def source_for(settings: Any, warmup: int) -> FileSource | ApiSource:
    """The market-data source the settings name: J-Quants files replayed
    (``streams_data``), or the J-Quants API polled (``jquants_refresh_token``)."""
    if settings.streams_source == "api":
        from inference.data import JQuantsClient

        if not settings.jquants_refresh_token:
            raise ValueError("TRADECORE_JQUANTS_REFRESH_TOKEN: unset; API polling needs it")
        client = JQuantsClient(settings.jquants_refresh_token,
                               base_url=settings.jquants_base_url)
        return ApiSource(client, settings.streams_from or date.today(),
                         interval_s=settings.streams_poll_s)
    return FileSource(market_data_folder(settings), settings.streams_from,
                      settings.streams_to, warmup=warmup, speed=settings.streams_speed)
