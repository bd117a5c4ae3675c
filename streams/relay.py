"""The relay: the event store's notification log, published to Kafka in log order.

The PostgreSQL event store is the record; Kafka carries copies. The relay reads the log
after its position, produces every event, waits until the broker confirmed every one of
them (idempotent producer, ``acks=all``), and only then stores the new position (the
last notification id of the batch) in its own table beside the events. A crash, a
broker outage or a refused batch therefore re-sends a stretch of the log, never skips
one: consumers drop every record at or below the notification id they have applied
(``docs/events.md``; :mod:`infra.kafka`), so the re-sends change nothing.

Routing (one stored event, one or more records, all in the form of
:func:`infra.kafka.event_message`):

- every event -> ``<prefix>.events.<aggregate>``, keyed by the aggregate id (a
  partition holds each aggregate's events in version order);
- venue commands (:data:`streams.matching.VENUE_COMMAND_TOPICS`) also ->
  ``<prefix>.matching.in`` keyed by symbol, so one matching worker holds a symbol's
  book; ``Market.SessionClosed`` and ``Market.BarsOpened`` name no single symbol: one
  copy to EVERY partition of ``matching.in``, key ``*``;
- ``Venue.Reported`` also -> ``<prefix>.matching.out`` keyed by its symbol.

One relay at a time per topic prefix: :meth:`Relay.run` takes the fence
``relay@<prefix>`` (a PostgreSQL advisory lock, dropped by the server when the holder
dies, kill -9 included); a second relay waits on it as a hot standby.

Throughput is bounded by the Python side of the producer (one ``produce`` call per
record, ~5 headers each) and by the dev broker's per-batch fetch cost
(``../shared/KAFKA.md`` fault 3); ``benchmarks/relay_figures.py`` measures it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from prometheus_client import Counter, Gauge, Info

from aggregates.market import Market
from aggregates.venue import Venue
from infra import codec
from infra.kafka import (
    Topics,
    aggregate_of,
    event_message,
    producer_config,
    topics,
)
from infra.locks import Fence, stage_fence
from infra.relay_store import RelayPositions, Stored
from infra.settings import Settings
from streams.matching import VENUE_COMMAND_TOPICS, book_of

log = logging.getLogger("tradecore.relay")

DELIVERY_TIMEOUT_MS = 30_000
"""How long the producer tries to deliver a record before it reports it failed (the
batch is then retried from the stored position with a new producer)."""
IDLE_POLL_S = 0.02
"""How often an idle relay looks for new notifications (one indexed query)."""
DEV_IDLE_CHECK_S = 1.0
"""Dev broker only: how often an idle relay asks whether the broker lost its data (two
requests; every batch asks before it produces and before its position is stored)."""
BROADCAST_KEY = "*"
_BROADCAST = frozenset({get_topic(Market.SessionClosed), get_topic(Market.BarsOpened)})
_REPORTED = get_topic(Venue.Reported)
_COMMANDS = frozenset(VENUE_COMMAND_TOPICS)
_SCHEMA_PREFIX = b'{"' + codec.SCHEMA_VERSION.encode() + b'":'

EVENTS = Counter("tradecore_relay_events", "Events the relay published (delivery confirmed).",
                 ["stream"])
BATCHES = Counter("tradecore_relay_batches", "Batches the relay published.", ["stream"])
FAILURES = Counter("tradecore_relay_failures", "Batches that failed and were retried.",
                   ["stream"])
LAG = Gauge("tradecore_relay_lag", "Notifications stored but not yet published "
            "(the log's head minus the relay's position).", ["stream"])
POSITION = Gauge("tradecore_relay_position", "Last notification id whose delivery the "
                 "broker confirmed.", ["stream"])
LAST_ERROR = Info("tradecore_relay_last_error", "The relay's last error (empty: none).",
                  ["stream"])


class DeliveryFailed(RuntimeError):
    """The broker did not confirm a batch; its position was not stored."""


class BrokerLost(RuntimeError):
    """The dev broker restarted and lost what was published (dev broker only)."""


def schema_version(state: bytes) -> int | None:
    """The ``schema_version`` the codec wrote first in the stored bytes (None for events
    stored in the library's old form, which has none)."""
    if not state.startswith(_SCHEMA_PREFIX):
        return None
    end = len(_SCHEMA_PREFIX)
    if state[end + 1:end + 2] == b",":  # one digit: nearly every event
        return state[end] - 48 if 48 <= state[end] <= 57 else None
    stop = state.find(b",", end)
    try:
        return int(state[end:stop if stop > 0 else state.find(b"}", end)])
    except ValueError:
        return None


def _event_store(settings: Settings) -> Any:
    """The trading application's stored events, opened for reading the log."""
    from aggregates.application import TradingApplication
    from infra.eventstore import open_event_store

    return open_event_store(settings, TradingApplication.name)


class Relay:
    """Publishes the event store's log to Kafka (see the module docstring)."""

    def __init__(self, settings: Settings, *, batch_size: int | None = None,
                 delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS) -> None:
        """``batch_size`` (default ``settings.relay_batch_size``): notifications per batch:
        one read, one produce burst, one wait for the broker's confirmations, one position
        write; big enough that those per-batch costs stay a few percent of the work.
        ``delivery_timeout_ms``: how long a record may wait for the broker before its
        batch counts as failed."""
        if settings.persistence != "postgres":
            raise ValueError(f"persistence={settings.persistence!r} breaks rule 'the relay "
                             "publishes a PostgreSQL event store'")
        from infra.eventstore import postgres_url

        self.settings = settings
        self.batch_size = batch_size or settings.relay_batch_size
        self.delivery_timeout_ms = delivery_timeout_ms
        self.stream = settings.kafka_topic_prefix
        self.name = f"relay@{self.stream}"
        self.topics: Topics = topics(settings)
        self.store = _event_store(settings)
        self.positions = RelayPositions(postgres_url(settings), settings.postgres_schema,
                                        self.store.recorder.events_table_name)
        self.position = self.positions.get(self.stream)
        self.head = self.position
        self._producer: Any = None
        self._failed: list[Any] = []
        self._matching_partitions = 0
        self._symbols: OrderedDict[str, str] = OrderedDict()  # order id -> symbol
        self._events_topics: dict[str, str] = {}  # event topic -> its Kafka topic
        self._state = "starting"
        self._error = ""
        self._broker_error = ""
        self._fence: Fence | None = None
        self._dev: Any = None
        self._checked = 0.0  # when the dev broker was last asked whether it lost its data
        if settings.kafka_dev_broker:
            from infra.kafka_dev import DevBrokerWatch

            self._dev = DevBrokerWatch(settings)
        self._metrics = [m.labels(stream=self.stream) for m in (EVENTS, BATCHES, FAILURES)]
        LAST_ERROR.labels(stream=self.stream).info({"reason": ""})

    # -- the batch ---------------------------------------------------------------------
    def publish_once(self, limit: int | None = None) -> int:
        """Publish up to ``limit`` notifications after the position and store the new
        position once the broker confirmed them all; how many (0: none waiting).
        Raises :class:`DeliveryFailed` (position unchanged) when any was not confirmed,
        and, on the dev broker, :class:`BrokerLost` after re-creating the topics and
        moving the position back to the start of the log."""
        notifications = self.positions.read(self.position, limit or self.batch_size)
        if not notifications:
            self.head = self.position
            LAG.labels(stream=self.stream).set(0)
            if time.monotonic() - self._checked >= DEV_IDLE_CHECK_S:
                self._check_broker()  # idle: noticed within a second, not 50 times one
            return 0
        self._check_broker()  # before producing: nothing may go to re-created topics
        producer = self._ensure_producer()
        produce, poll = producer.produce, producer.poll
        self._failed.clear()
        for topic, key, partition, message in self._records(notifications):
            while True:
                try:
                    if partition is None:
                        produce(topic, message.value, key, headers=message.headers)
                    else:
                        produce(topic, message.value, key, partition, headers=message.headers)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    poll(0.05)
        self._await_delivery(producer)
        self._check_broker()  # a restart during the wait: nothing of the batch is kept
        last = int(notifications[-1][0])
        self.positions.put(self.stream, last)
        self.position = last
        self.head = max(self.head, last)
        events, batches, _ = self._metrics
        events.inc(len(notifications))
        batches.inc()
        POSITION.labels(stream=self.stream).set(last)
        return len(notifications)

    def _records(self, notifications: Sequence[Any]
                 ) -> Iterator[tuple[str, str, int | None, Any]]:
        """(topic, key, partition or None, message) for each record of each notification."""
        events_topics = self._events_topics
        matching_in, matching_out = self.topics.matching_in, self.topics.matching_out
        for n in notifications:
            nid, originator_id, version, topic, state = n
            message = event_message(nid, originator_id, version, topic, state,
                                    schema_version=schema_version(state))
            events_topic = events_topics.get(topic)
            if events_topic is None:
                events_topic = events_topics[topic] = self.topics.events(aggregate_of(topic))
            yield events_topic, message.key, None, message
            if topic in _COMMANDS:
                if topic in _BROADCAST:
                    for partition in range(self._matching_partitions):
                        yield matching_in, BROADCAST_KEY, partition, message
                else:
                    yield matching_in, self._book_of(n), None, message
            elif topic == _REPORTED:
                yield matching_out, codec.decode(topic, state).symbol, None, message

    def _book_of(self, n: Stored) -> str:
        """The book a venue command goes to (:func:`streams.matching.book_of`)."""
        _nid, _order_id, _version, topic, state = n
        return str(book_of(codec.decode(topic, state), self._order_symbol))

    def _order_symbol(self, order_id: UUID) -> str | None:
        """An order's symbol, from its Placed event (for commands stored before they
        named their book), remembered for the order's next commands."""
        key = str(order_id)
        symbol = self._symbols.get(key)
        if symbol is None:
            first = self.store.recorder.select_events(order_id, lte=1)
            placed = (codec.codec.decode(first[0].topic, first[0].state,
                                         originator_id=key, originator_version=1)
                      if first else None)
            symbol = getattr(placed, "symbol", None)
            if symbol is None:
                return None
            self._symbols[key] = symbol
            if len(self._symbols) > 100_000:
                self._symbols.popitem(last=False)
        return str(symbol)

    # -- the producer ------------------------------------------------------------------
    def _ensure_producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            queue = max(100_000, 2 * self.batch_size + 1000)
            config = producer_config(
                self.settings, **{"message.timeout.ms": self.delivery_timeout_ms,
                                  # a missing topic is an error, never an empty new one
                                  "allow.auto.create.topics": False,
                                  "queue.buffering.max.messages": queue,
                                  "on_delivery": self._delivered,
                                  "error_cb": self._broker_state})
            producer = Producer(config)
            found = producer.list_topics(self.topics.matching_in, timeout=10).topics
            meta = found.get(self.topics.matching_in)
            if meta is None or meta.error is not None or not meta.partitions:
                producer.purge()
                raise DeliveryFailed(f"topic {self.topics.matching_in} does not exist "
                                     "(run `tradecore kafka init`)")
            self._matching_partitions = len(meta.partitions)
            self._producer = producer
        return self._producer

    def _delivered(self, err: Any, message: Any) -> None:
        if err is not None:
            self._failed.append((err, message.topic(), message.partition()))

    def _broker_state(self, err: Any) -> None:
        """librdkafka's client-level errors (all brokers down, authentication, ...)."""
        self._broker_error = err.str()

    def _await_delivery(self, producer: Any) -> None:
        waited = 0.0
        while True:
            left = producer.flush(1.0)
            if left == 0:
                break
            waited += 1.0
            if self._dev is not None:
                self._check_broker()  # a restarted dev broker: recover now, not in 30 s
        if self._failed:
            err, topic, partition = self._failed[0]
            failed = len(self._failed)
            self._failed.clear()
            where = topic if partition is None or partition < 0 else f"{topic}:{partition}"
            raise DeliveryFailed(f"{failed} records not confirmed by the broker, the first "
                                 f"to {where}: {err.str()}")

    def _discard_producer(self) -> None:
        if self._producer is not None:
            self._producer.purge()
            self._producer.flush(0)
            self._producer = None

    # -- the dev broker (DEV ONLY: Tansu loses everything when it restarts) -------------
    def _check_broker(self) -> None:
        if self._dev is None:
            return
        self._checked = time.monotonic()
        if not self._dev.lost():
            return
        self._discard_producer()  # nothing in flight may land in the new, empty topics
        self._dev.arm()
        before = self.position
        if before == 0:  # a fresh broker, or topics made without the relay: nothing to redo
            return
        # From the start of the log: consumers drop what they applied by notification id,
        # and only the start is safe for every stage that exists (the relay does not
        # know them all, nor which never stored a position).
        self.position = 0
        self.positions.put(self.stream, 0)
        self._symbols.clear()
        raise BrokerLost(f"the dev broker lost its data: topics re-created, publishing "
                         f"again from the start of the log (was at {before})")

    # -- the worker --------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Wait for the fence, then publish until ``stop``; failures are retried with
        backoff and logged once per change of state."""
        fence = stage_fence(self.settings, self.name)
        self._fence = fence
        self._set_state("waiting for the fence (another relay publishes)")
        while not stop.is_set():
            try:
                if fence.acquire(blocking=True, timeout=1.0):
                    break
            except Exception as err:  # the database is down: wait for it
                self._failure(err)
                stop.wait(1.0)
        if stop.is_set():
            return
        backoff = 0.1
        loaded = False
        try:
            while not stop.is_set():
                try:
                    if not loaded:  # what the previous holder stored, up to its death
                        self.position = self.positions.get(self.stream)
                        loaded = True
                    done = self.publish_once()
                except BrokerLost as lost:
                    log.warning("%s: %s", self.name, lost)
                    continue
                except Exception as err:
                    self._failure(err)
                    self._discard_producer()
                    with contextlib.suppress(Exception):
                        self._lag()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                self._set_state("publishing")
                if done == 0:
                    self._broker_answers()
                    stop.wait(IDLE_POLL_S)
                else:
                    self._broker_error = ""  # it confirmed a batch: it is up
                    self._lag()
        finally:
            self._discard_producer()
            with contextlib.suppress(Exception):  # a dead connection dropped it already
                fence.release()
            self._fence = None

    def _broker_answers(self) -> None:
        """An idle relay clears a broker error once the broker answers again."""
        if self._broker_error and self._producer is not None:
            try:
                self._producer.list_topics(self.topics.matching_in, timeout=1.0)
            except Exception:
                return
            self._broker_error = ""

    def _lag(self) -> None:
        head = self.positions.head()
        self.head = head
        LAG.labels(stream=self.stream).set(max(head - self.position, 0))

    def _failure(self, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}".strip()
        FAILURES.labels(stream=self.stream).inc()
        LAST_ERROR.labels(stream=self.stream).info({"reason": reason[:500]})
        if reason != self._error:
            log.warning("%s: %s (retrying with backoff, position %d stays)", self.name,
                        reason, self.position)
        self._error = reason
        self._state = "retrying"

    def _set_state(self, state: str) -> None:
        if self._error or state != self._state:
            if self._error:
                log.info("%s: %s again at position %d", self.name, state, self.position)
            self._error = ""
            self._broker_error = ""
            self._state = state

    def health(self) -> dict[str, Any]:
        ready = self._state == "publishing" and not self._error and not self._broker_error
        detail: dict[str, Any] = {"ready": ready, "state": self._state,
                                  "position": self.position, "head": self.head,
                                  "lag": max(self.head - self.position, 0)}
        if self._error:
            detail["error"] = self._error
        if self._broker_error:
            detail["broker"] = self._broker_error
        return detail

    def close(self) -> None:
        self._discard_producer()
        if self._dev is not None:
            self._dev.close()
        self.positions.close()
        self.store.close()

