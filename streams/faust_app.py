"""The streams worker on Kafka (``tradecore worker streams``): a Faust app whose agents run
the market-data loop (:mod:`streams.loop`) with their state in Faust tables.

Agents and topics::

    ingest --> <prefix>.md.bars --> bars --> <prefix>.predictions --> strategy --> place_orders
    (task)     keyed by code,       (agent,   keyed by date,            (agent,
    files|API  + day markers        window)   + a done marker           desk)

- **ingest** (when a source is configured): J-Quants files replayed at a chosen speed, or
  the J-Quants API polled (:mod:`streams.ingest`). The last day fully sent is kept in the
  ``ingest`` table; a restart resumes after it.
- **bars**: applies the bad-input rules and keeps the rolling window
  (:class:`streams.market_data.BarWindow`) in the ``window`` table; when a day is
  complete (every partition's end-of-day marker) or its deadline passes, it builds the
  features and calls the predictor in a worker thread, sends one prediction per stock and
  a done marker, then marks the day published.
- **strategy** (when an account is configured): holds a day's predictions in memory,
  their events unacknowledged; on the done marker decides the day's orders once
  (remembered in the ``strategy`` table before any is placed), places them through the
  command handlers under (strategy, date, symbol) idempotency keys, then acknowledges
  the day's events (a crash before that: the broker delivers the day again).

Tables are changelog-backed (Faust's ``memory://`` store: recovered from the changelog
on every start; on the dev broker with :mod:`infra.faust_dev`'s end-offset workaround).
Delivery is at least once: a crash repeats at most the day in hand, and every step
downstream takes a repeat idempotently (duplicate bars are dropped, a day is published
once, decisions are remembered, orders carry their keys).

One worker runs the loop at a time: a day's cross-section is one model call over the
whole universe, so the worker owns every partition; a second worker started beside it
waits on the ``streams`` fence as a hot standby.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import faust

from infra.kafka import partition_count, topic_specs, topics
from infra.settings import Settings
from streams.ingest import Routed
from streams.loop import BARS, Loop, StrategyDesk, desk_for
from streams.market_data import BadMessage, decode, encode
from streams.signals import (
    Prediction,
    PredictionsDone,
    decode_prediction,
    encode_prediction,
)

log = logging.getLogger("tradecore.streams")


def _table(app: faust.App, name: str, partitions: int) -> Any:
    # bytes in, bytes out; use_partitioner: the timer may close a day outside any event
    table: Any = app.Table(name, default=None, key_type=bytes, value_type=bytes,
                      partitions=partitions, use_partitioner=True)
    table.key_serializer = table.value_serializer = "raw"  # Faust infers json from bytes
    return table


@dataclass
class StreamsWorker:
    """The Faust app and its agents around one :class:`Loop` and, optionally, one desk."""

    settings: Settings
    predictor: Any
    listed: Any
    desk: Callable[[Any], StrategyDesk] | None = None  # the strategy table -> a desk
    source: Any = None  # streams.ingest.FileSource | ApiSource
    datadir: Path | None = None
    partitions: int = 0  # of md.bars (0: as its spec says); markers go to each of them

    def __post_init__(self) -> None:
        s = self.settings
        names = topics(s)
        self.partitions = self.partitions or next(
            spec.partitions for spec in topic_specs(s) if spec.name == names.bars)
        self.app = faust.App(
            f"{s.kafka_topic_prefix}-streams",
            broker=[f"kafka://{h.strip()}" for h in s.kafka_bootstrap.split(",")],
            store="memory://",
            processing_guarantee="at_least_once",
            # aiokafka's idempotent producer fails on the dev broker (KAFKA.md)
            producer_acks=-1,
            producer_linger_ms=s.kafka_linger_ms,
            broker_session_timeout=s.kafka_session_timeout_ms / 1000,
            broker_heartbeat_interval=1,
            broker_rebalance_timeout=max(6, s.kafka_session_timeout_ms // 1000),
            consumer_auto_offset_reset="earliest",
            topic_partitions=self.partitions,
            topic_replication_factor=s.kafka_replication_factor,
            web_enabled=False,
            web_bind="127.0.0.1",
            web_port=s.worker_port + 1 if s.worker_port else 6066,
            datadir=str(self.datadir or Path(tempfile.mkdtemp(prefix="tradecore-faust-"))),
            autodiscover=False,
        )
        app = self.app
        self.bars_topic = app.topic(names.bars, key_type=bytes, value_type=bytes,
                                    key_serializer="raw", value_serializer="raw",
                                    partitions=self.partitions)
        self.predictions_topic = app.topic(names.predictions, key_type=bytes,
                                           value_type=bytes, key_serializer="raw",
                                           value_serializer="raw")
        self.window_table = _table(app, "window", self.partitions)
        self.ingest_table = _table(app, "ingest", self.partitions)
        self.strategy_table = _table(app, "strategy", self.partitions)
        self.loop = Loop(self.window_table, self.predictor, self.listed,
                         partitions=self.partitions, deadline_s=s.streams_deadline_s)
        self.trading = self.desk(self.strategy_table) if self.desk is not None else None
        self._closing = asyncio.Lock()
        self.started = threading.Event()
        self.days_closed = 0
        self.last_day: date | None = None
        self.last_traded: date | None = None  # the strategy runs behind the bars agent

        @self.window_table.on_recover
        async def window_recovered() -> None:
            self.loop.window.reindex()
            log.info("window recovered: %d dates, last published %s",
                     len(self.loop.window.dates()), self.loop.window.last_published)

        app.agent(self.bars_topic, name="bars")(self._bars)
        app.agent(self.predictions_topic, name="strategy")(self._strategy)
        app.timer(1.0, name="deadlines")(self._deadlines)
        if self.source is not None:
            app.task(self._ingest)

        self.recovered = asyncio.Event()

        @app.on_rebalance_complete.connect
        async def tables_recovered(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
            self.recovered.set()  # the tables hold what they held before any restart
            self.started.set()

    # -- bars -> predictions ---------------------------------------------------------------
    async def _bars(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                message = decode(event.value)
            except BadMessage as exc:
                self.loop.window.counts["malformed"] += 1
                BARS.labels("malformed").inc()
                log.warning("dropped a malformed md.bars message at %s[%d]@%d: %s",
                            event.message.topic, event.message.partition,
                            event.message.offset, exc)
                continue
            self.loop.on_message(message)
            await self._close_ready()

    async def _deadlines(self) -> None:
        await self._close_ready()

    async def _close_ready(self) -> None:
        async with self._closing:
            for day, reason in self.loop.ready():
                started = time.perf_counter()
                if self.loop.window.predicts(day):  # features and the model: off the loop
                    result = await asyncio.get_running_loop().run_in_executor(
                        None, self.loop.compute, day, reason)
                else:  # a warm-up day closes without either
                    result = self.loop.compute(day, reason)
                messages = self.loop.messages(result)
                if result.reason != "warm-up":
                    await self._send_predictions(result, messages)
                self.loop.publish(result, len(messages))
                self.days_closed += 1
                self.last_day = day
                log.info("%s closed (%s): %d predictions in %.3f s", day, result.reason,
                         len(messages), time.perf_counter() - started)

    async def _send_predictions(self, result: Any, messages: list[Prediction]) -> None:
        """The day's predictions and its done marker, delivered before the day is marked
        published. Keyed by date, all on partition 0: a strategy trades days in order."""
        key = result.day.isoformat().encode()
        done = PredictionsDone(result.day, len(messages), result.reason, result.missing)
        wire = [encode_prediction(m) for m in messages] + [encode_prediction(done)]
        futures = [await self.predictions_topic.send(key=key, value=value, partition=0)
                   for value in wire]
        await asyncio.gather(*futures)

    # -- predictions -> orders -------------------------------------------------------------
    async def _strategy(self, stream: Any) -> None:
        """A day's predictions are held in memory and their events acknowledged only once
        the day is traded: Faust commits no offset past an unacknowledged event, so after
        a crash the broker delivers the day again, and nothing needs storing."""
        held: dict[date, dict[str, tuple[Prediction, Any]]] = {}
        async for event in stream.noack().events():
            try:
                message = decode_prediction(event.value)
            except Exception as exc:
                log.warning("dropped a malformed prediction: %s", exc)
                event.ack()
                continue
            if self.trading is None:
                event.ack()
                continue
            if isinstance(message, Prediction):
                day = held.setdefault(message.day, {})
                before = day.get(message.code)
                if before is not None:  # the same day predicted again (a restart)
                    before[1].ack()
                day[message.code] = (message, event)
                continue
            assert isinstance(message, PredictionsDone)
            day = held.pop(message.day, {})
            await self._trade(message, [p for p, _ in day.values()])
            for _, e in day.values():
                e.ack()
            event.ack()

    async def _trade(self, done: PredictionsDone, predictions: list[Prediction]) -> None:
        desk = self.trading
        assert desk is not None
        if len(predictions) != done.count:
            log.error("%s: %d of %d predictions held; the day is not traded", done.day,
                      len(predictions), done.count)
            return
        run = asyncio.get_running_loop().run_in_executor
        intents = await run(None, desk.decide, done.day, predictions)
        desk.remember(done.day, intents)  # before any order: a restart places these again
        submitted = await run(None, desk.submit, done.day, intents)
        self.last_traded = done.day
        log.info("%s: %s %s", done.day, desk.strategy.name, dict(submitted.outcomes))

    # -- market data in ----------------------------------------------------------------------
    async def _ingest(self) -> None:
        # where the ingest stopped is in its table: read it once the table is recovered
        await self.recovered.wait()
        after = self.ingest_table.get(b"after")
        self.source.after = date.fromisoformat(after.decode()) if after else None
        days: Iterator[tuple[date, bool, list[Routed]]] = self.source.messages(self.partitions)
        run = asyncio.get_running_loop().run_in_executor
        while True:
            step = await run(None, next, days, None)
            if step is None:
                log.info("ingest: the source has no more days")
                return
            day, _predict, routed = step
            futures = [await self.bars_topic.send(key=r.key.encode(), value=encode(r.message),
                                                  partition=r.partition) for r in routed]
            await asyncio.gather(*futures)
            self.ingest_table[b"after"] = day.isoformat().encode()

    # -- health --------------------------------------------------------------------------------
    name = "streams"

    def health(self) -> dict[str, Any]:
        window = self.loop.window
        return {"ready": self.started.is_set() and not self.app.rebalancing,
                "days_closed": self.days_closed,
                "last_published": str(window.last_published) if window.last_published
                else None, "open_days": [str(d) for d in window.open_days()[:5]],
                "last_traded": str(self.last_traded) if self.last_traded else None,
                "bars": dict(window.counts)}


def build_worker(settings: Settings, *, predictor: Any, app: Any = None,
                 source: Any | None = None, datadir: Path | None = None) -> StreamsWorker:
    """The streams worker the settings describe: ``predictor`` on their listed info, and
    a desk trading ``strategy_account`` through ``app`` (a TradingApplication) when set."""
    from inference.data import load_listed_info
    from streams.ingest import market_data_folder

    listed = load_listed_info(market_data_folder(settings))
    desk = None
    account = settings.strategy_account
    if account and app is not None:
        def desk(table: Any) -> StrategyDesk:
            return desk_for(app, account, settings.strategy_fraction, table)
    partitions = partition_count(settings, topics(settings).bars)
    return StreamsWorker(settings, predictor, listed, desk, source, datadir, partitions)
