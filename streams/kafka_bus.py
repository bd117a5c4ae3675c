"""The Kafka transport of the bus: stages as consumer-group members, one tracked
processor per assigned partition.

Positions are event-store notification ids everywhere (the ``notification_id`` header):
a partition's processor tracks, under ``f"{stage}@{topic}:{partition}"``, the id of the
last input whose effects it stored, in the same transaction as those effects
(:class:`streams.processor.EventStoreStep`). Whatever arrives at or below it (a Kafka
redelivery, the relay re-sending a stretch after a crash) is dropped, so nothing is
applied twice. Offsets are committed to the consumer group only after the database
commit, and only as the place to resume reading from.

- :class:`KafkaSource` is one ``(topic, partition)`` as a :class:`streams.bus.Source`:
  the records the consumer fetched, decoded with the application's mapper. A stage that
  rebuilds its memory reads the stretch before what the consumer fetched (the matching
  stage's snapshot .. tracked replay) from the event store instead: the log is the
  truth and carries the same ids.
- :class:`StageConsumer` is one confluent-kafka consumer in group
  ``f"{prefix}.{stage}"`` running a processor per assigned partition: poll a batch,
  dispatch per partition, run the processors, commit; a partition whose buffer is full
  is paused (backpressure); a message that cannot be used goes to the dead-letter topic
  with its reason and the consumer goes on; a broker or database that is down is
  retried with backoff, logged, and reported by :meth:`StageConsumer.health`.

The dev broker's ListOffsets LATEST is wrong (``../shared/KAFKA.md``, fault 2), so lag
is measured against the high watermark that fetch responses carry, never asked for.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from infra.kafka import (
    HEADER_TYPE,
    BadMessage,
    consumer_config,
    dead_letter_headers,
    fetched_high_watermarks,
    producer_config,
    received_event,
    topics,
)
from infra.locks import Fence, stage_fence
from infra.settings import Settings
from streams.bus import EventLogSource
from streams.processor import Step, TrackedProcessor

log = logging.getLogger("tradecore.kafka")

CONSUMED = Counter("tradecore_kafka_consumed_total", "Records fetched from Kafka",
                   ["stage", "topic", "partition"])
APPLIED = Counter("tradecore_kafka_applied_total",
                  "Inputs whose effects were stored (with their tracking record)",
                  ["stage", "topic", "partition"])
DUPLICATES = Counter("tradecore_kafka_dropped_duplicate_total",
                     "Records dropped as at or below the tracked notification id",
                     ["stage", "topic", "partition"])
SKIPPED = Counter("tradecore_kafka_skipped_total",
                  "Records of event types this stage does not consume (not decoded)",
                  ["stage", "topic", "partition"])
DEAD_LETTERED = Counter("tradecore_kafka_dead_lettered_total",
                        "Records sent to the dead-letter topic", ["stage", "topic", "partition"])
LAG = Gauge("tradecore_kafka_lag_records",
            "Records between the partition's committed position and its high watermark",
            ["stage", "topic", "partition"])


# -- partitioning, as the producers do it ---------------------------------------------------
def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``; librdkafka's
    ``murmur2_random`` partitioner, set by ``infra.kafka.producer_config``)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length & ~3
    for i in range(0, whole, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length - whole
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: str, partitions: int) -> int:
    """The partition a keyed record lands on (Java clients, librdkafka murmur2, Faust)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


KeyOf = Callable[[Any], "str | None"]
"""The record key the relay gives a domain event on a topic (None: a copy on every
partition): what tells which partition's share of the log an event is."""


def aggregate_key(event: Any) -> str | None:
    """``events.<aggregate>``: keyed by aggregate id."""
    return str(event.originator_id)


def symbol_key(event: Any) -> str | None:
    """``matching.in`` / ``matching.out``: keyed by symbol; a session close or a
    session's bars (no symbol) are copied to every partition."""
    symbol = getattr(event, "symbol", None)
    return symbol if isinstance(symbol, str) else None


# -- one partition as a Source ------------------------------------------------------------
class KafkaSource:
    """One ``(topic, partition)`` of a stage's input as a :class:`streams.bus.Source`.

    The consumer loop :meth:`offer` s decoded records in fetch order; ``read`` hands them
    out by notification id. Ids within a partition increase except for the relay's
    re-sends, which repeat an earlier stretch: anything at or below the highest id
    already taken is dropped on arrival, so the buffer always increases strictly.
    ``floor`` is the tracked position when the partition's processor opened: a read from
    below it (a stage rebuilding its memory) comes from the event store's log, filtered
    to the stage's event types and then to this partition's keys.
    """

    def __init__(self, topic: str, partition: int, *, partitions: int,
                 log_source: EventLogSource | None = None, key_of: KeyOf | None = None
                 ) -> None:
        self.name = topic
        self.partition = partition
        self.partitions = partitions
        self.log_source = log_source
        self.key_of = key_of
        self.floor = 0
        self.high = 0  # the highest notification id taken into the buffer (or tracked)
        self.buffer: deque[tuple[int, int, Any]] = deque()  # (offset, nid, event)
        self.next_offset: int | None = None  # after the last record received
        self.high_watermark: int | None = None  # from the last fetch response
        self.dropped = 0

    # -- fed by the consumer loop ---------------------------------------------------------
    def rebase(self, tracked: int) -> None:
        """The processor opens at ``tracked``: older inputs come from the log now, and
        what the buffer holds at or below it is done already."""
        self.floor = tracked
        self.high = max(self.high, tracked)
        self.settle(tracked)

    def is_new(self, nid: int) -> bool:
        return nid > self.high

    def offer(self, offset: int, nid: int, event: Any) -> None:
        self.buffer.append((offset, nid, event))
        self.high = nid
        self.next_offset = offset + 1

    def passed(self, offset: int) -> None:
        """A record needing no processing (skipped, duplicate, dead-lettered)."""
        self.next_offset = offset + 1

    def settle(self, position: int) -> int:
        """Drop what is stored (ids at or below ``position``); how many."""
        done = 0
        while self.buffer and self.buffer[0][1] <= position:
            self.buffer.popleft()
            done += 1
        return done

    def commit_offset(self) -> int | None:
        """Where a consumer of the group resumes: the first record not yet stored."""
        return self.buffer[0][0] if self.buffer else self.next_offset

    def lag(self) -> int | None:
        """Records between the resume offset and the high watermark (None: unknown)."""
        at = self.commit_offset()
        if self.high_watermark is None:
            return len(self.buffer) or None
        return max(self.high_watermark - (at if at is not None else 0), 0)

    # -- Source ---------------------------------------------------------------------------
    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        if after < self.floor and self.log_source is not None:
            return self._from_log(after, limit)
        out: list[tuple[int, Any]] = []
        for _, nid, event in self.buffer:
            if nid <= after:
                continue
            out.append((nid, event))
            if len(out) >= limit:
                break
        return out

    def _from_log(self, after: int, limit: int) -> list[tuple[int, Any]]:
        assert self.log_source is not None
        out: list[tuple[int, Any]] = []
        start = after
        while not out and start < self.floor:
            page = self.log_source.read(start, max(limit, 500))
            if not page:
                break
            for nid, event in page:
                if nid > self.floor:
                    return out
                if self._mine(event):
                    out.append((nid, event))
                    if len(out) >= limit:
                        return out
            start = page[-1][0]
        return out

    def _mine(self, event: Any) -> bool:
        if self.key_of is None or self.partitions <= 1:
            return True
        key = self.key_of(event)
        return key is None or partition_for(key, self.partitions) == self.partition

    def pending(self, after: int, cap: int) -> int:
        lag = self.lag()
        return min(lag if lag is not None else len(self.buffer), cap)

    def head(self) -> int:
        return self.high

    def wait(self, timeout: float) -> None:  # the consumer loop feeds this source
        return None


# -- what a stage consumes ------------------------------------------------------------------
@dataclass(frozen=True)
class Input:
    """One topic a stage consumes: which event types it takes from it (None: all),
    how its records are keyed, and which event-store topics the same events are under
    (for reading a stretch from the log)."""

    topic: str
    partitions: int
    types: frozenset[str] | None
    key_of: KeyOf | None
    log_topics: Sequence[str] = ()


StepFor = Callable[[str, int, int], Step]
"""Builds the step of one partition (``topic``, ``partition``, the topic's partition
count as the broker has it): each owns its state."""


@dataclass
class Lane:
    """One assigned partition: its source, its processor, its health."""

    input: Input
    source: KafkaSource
    processor: TrackedProcessor
    labels: tuple[str, str, str]
    state: str = "waiting"  # waiting (fence) | running | failed
    error: str | None = None
    retry_at: float = 0.0
    backoff: float = 0.5
    paused: bool = False
    committed: int | None = None  # the last offset committed to the group
    applied: int = 0
    pauses: int = 0  # times the partition was paused for a full buffer
    peak: int = 0  # the most records its buffer held

    def detail(self) -> dict[str, Any]:
        try:
            position: int | None = self.processor.step.position(self.processor.key)
        except Exception:  # the database is down (the state says so): unknown
            position = None
        return {"state": self.state, "position": position,
                "offset": self.source.commit_offset(),
                "high_watermark": self.source.high_watermark, "lag": self.source.lag(),
                "buffered": len(self.source.buffer), "applied": self.applied,
                "paused": self.paused, "pauses": self.pauses, "error": self.error}


@dataclass
class ConsumerStats:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class StageConsumer:
    """A stage of the order flow as a member of consumer group ``f"{prefix}.{stage}"``
    (a :class:`streams.worker.Runnable`).

    On assignment every partition gets its own step (``step_for``), source and
    :class:`TrackedProcessor`, fenced by :func:`infra.locks.stage_fence` under its
    tracking key, so during a rebalance the old owner finishes its batch before the new
    one starts; reading resumes from the group's committed offset (else the start). On
    revocation the partition's stored position is committed and its fence released.
    """

    def __init__(self, settings: Settings, stage: str, inputs: Sequence[Input],
                 step_for: StepFor, mapper: Any, recorder: Any, *, batch_size: int = 256,
                 buffer_limit: int = 5000, fence_for: Callable[[str], Fence | None]
                 | None = None) -> None:
        self.settings = settings
        self.stage = stage
        self.name = f"{stage}-worker"
        self.inputs = {i.topic: i for i in inputs}
        self.step_for = step_for
        self.mapper = mapper
        self.recorder = recorder
        self.batch_size = batch_size
        self.buffer_limit = buffer_limit
        self.group = f"{settings.kafka_topic_prefix}.{stage}"
        self.fence_for = fence_for or (lambda key: stage_fence(settings, key))
        self.dead_letter_topic = topics(settings).dead_letter
        self.lanes: dict[tuple[str, int], Lane] = {}
        self.stats = ConsumerStats()
        self.broker_error: str | None = None
        self.subscribed = False
        self._consumer: Any = None
        self._producer: Any = None
        self._lock = threading.Lock()  # lanes vs. the health server's threads
        self._last_broker_check = 0.0
        self._stop: threading.Event | None = None

    # -- Runnable ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        from confluent_kafka import Consumer

        self._stop = stop
        config = consumer_config(self.settings, self.group, error_cb=self._on_error)
        self._consumer = consumer = Consumer(config)
        consumer.subscribe(list(self.inputs), on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.subscribed = True
        log.info("%s: group %s, topics %s", self.name, self.group, ", ".join(self.inputs))
        try:
            while not stop.is_set():
                # consume() waits its whole timeout unless the batch fills: wait for the
                # first record only (poll returns as it arrives), then take what is queued
                busy = any(lane.source.buffer for lane in self.lanes.values())
                first = consumer.poll(0 if busy else 0.2)
                messages = [] if first is None else [first]
                if first is not None or busy:
                    messages += consumer.consume(num_messages=self.batch_size * 4, timeout=0)
                try:
                    for message in messages:
                        self._receive(message)
                except _Stopped:  # stopped while a dead letter waited for the broker
                    break
                if messages:
                    self._watermarks()
                    self._backpressure()  # at its fullest: pause before more arrives
                self._drive(stop)
                self._commit()
                self._backpressure()
                self._check_broker()
        finally:
            self._shutdown()

    def health(self) -> dict[str, Any]:
        with self._lock:
            lanes = {f"{t}:{p}": lane.detail() for (t, p), lane in sorted(self.lanes.items())}
        failing = [k for k, d in lanes.items() if d["state"] == "failed"]
        ready = self.subscribed and self.broker_error is None and not failing
        reason = (self.broker_error if self.broker_error else
                  f"partition {failing[0]} failing: {lanes[failing[0]]['error']}" if failing
                  else None if self.subscribed else "not subscribed yet")
        return {"ready": ready, "reason": reason, "group": self.group,
                "partitions": lanes,
                "consumed": self.stats.consumed, "applied": self.stats.applied,
                "dropped_duplicate": self.stats.duplicates, "skipped": self.stats.skipped,
                "dead_lettered": self.stats.dead_lettered}

    # -- the loop ---------------------------------------------------------------------------
    def _receive(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            self._on_error(error)
            return
        key = (message.topic(), message.partition())
        lane = self.lanes.get(key)
        if lane is None:  # fetched before a revocation: the next owner reads it
            return
        self.broker_error = None
        source, labels, offset = lane.source, lane.labels, message.offset()
        self.stats.consumed += 1
        CONSUMED.labels(*labels).inc()
        headers = message.headers() or []
        types = lane.input.types
        if types is not None:
            raw = next((v for k, v in headers if k == HEADER_TYPE), None)
            kind = (raw or b"").decode("utf-8", "replace")
            if raw is not None and kind not in types:
                if not _known_topic(kind):
                    self._dead_letter(lane, message, f"unknown event type: {kind}")
                    return
                self.stats.skipped += 1
                SKIPPED.labels(*labels).inc()
                source.passed(offset)
                return
        try:
            received = received_event(headers, message.value())
        except BadMessage as err:
            self._dead_letter(lane, message, f"bad message: {err}")
            return
        if not source.is_new(received.notification_id):
            self.stats.duplicates += 1
            source.dropped += 1
            DUPLICATES.labels(*labels).inc()
            source.passed(offset)
            return
        try:
            event = self.mapper.to_domain_event(_stored(received))
        except Exception as err:  # unknown type, unknown schema version, bad JSON
            self._dead_letter(lane, message, f"cannot decode {received.topic}: {err}")
            return
        source.offer(offset, received.notification_id, event)

    def _watermarks(self) -> None:
        """Each partition's high watermark as the last fetch response reported it."""
        for (topic, partition), lane in self.lanes.items():
            wm = self._consumer.get_watermark_offsets(_tp(topic, partition), cached=True)
            if wm is not None and wm[1] >= 0:
                lane.source.high_watermark = wm[1]

    def _drive(self, stop: threading.Event, rounds: int = 8) -> None:
        now = time.monotonic()
        for lane in list(self.lanes.values()):
            if lane.retry_at > now:
                continue
            processor = lane.processor
            try:
                if not processor.started and not self._open(lane):
                    continue
                for _ in range(rounds):
                    if not lane.source.buffer:
                        break
                    done = processor.run_once()
                    if not done:
                        break
                    position = processor.step.position(processor.key)
                    lane.source.settle(position)
                    lane.applied += done
                    self.stats.applied += done
                    APPLIED.labels(*lane.labels).inc(done)
                    if stop.is_set():
                        break
            except Exception as err:  # the database down, a bug: retry from the store
                if lane.state != "failed":
                    log.exception("%s: failed; retrying with backoff", processor.key)
                else:
                    log.warning("%s: still failing (%r); next try in %.1f s",
                                processor.key, err, lane.backoff)
                lane.state, lane.error = "failed", repr(err)
                lane.retry_at = time.monotonic() + lane.backoff
                lane.backoff = min(lane.backoff * 2, 10.0)
                processor.started = False
                continue
            if lane.state == "failed":
                log.info("%s: recovered", processor.key)
            lane.state, lane.error, lane.backoff = "running", None, 0.5

    def _open(self, lane: Lane) -> bool:
        """Take the partition's fence (without waiting: the loop keeps polling) and
        rebuild the step's memory up to its tracked position."""
        processor = lane.processor
        fence = processor.fence
        if fence is not None and not fence.held and not fence.acquire(blocking=False):
            lane.state = "waiting"
            lane.retry_at = time.monotonic() + 0.2
            return False
        tracked = processor.step.position(processor.key, fresh=True)
        lane.source.rebase(tracked)
        processor.open()
        lane.state = "running"
        log.info("%s: running from notification %d", processor.key, tracked)
        return True

    def _commit(self, lanes: Iterable[Lane] | None = None, *, sync: bool = False) -> None:
        from confluent_kafka import KafkaException

        offsets = []
        for lane in (self.lanes.values() if lanes is None else lanes):
            at = lane.source.commit_offset()
            if at is not None and at != lane.committed and lane.processor.started:
                offsets.append((lane, _tp(lane.source.name, lane.source.partition, at)))
        for lane, _ in offsets:
            LAG.labels(*lane.labels).set(lane.source.lag() or 0)
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=[tp for _, tp in offsets], asynchronous=not sync)
        except KafkaException as err:  # a hint only: the next commit carries it
            log.warning("%s: offset commit failed (%s)", self.name, err)
            return
        for lane, tp in offsets:
            lane.committed = tp.offset

    def _backpressure(self) -> None:
        for lane in self.lanes.values():
            size = len(lane.source.buffer)
            lane.peak = max(lane.peak, size)
            tp = _tp(lane.source.name, lane.source.partition)
            if not lane.paused and size >= self.buffer_limit:
                self._consumer.pause([tp])
                lane.paused = True
                lane.pauses += 1
            elif lane.paused and size <= self.buffer_limit // 2:
                self._consumer.resume([tp])
                lane.paused = False

    def _dead_letter(self, lane: Lane, message: Any, reason: str) -> None:
        """Send ``message`` to the dead letters with ``reason``, and pass it only once
        the broker confirmed it: while it cannot (the broker down), retry with backoff;
        a stop meanwhile leaves it unpassed (the next owner reads it again)."""
        from confluent_kafka import Producer

        headers = dead_letter_headers(message.headers(), reason=reason, topic=message.topic(),
                                      partition=message.partition(), offset=message.offset())
        backoff = 0.5
        while True:
            if self._producer is None:
                self._producer = Producer(producer_config(self.settings))
            outcome: list[Any] = []
            self._producer.produce(self.dead_letter_topic, key=message.key(),
                                   value=message.value(), headers=headers,
                                   on_delivery=lambda err, _msg, out=outcome: out.append(err))
            self._producer.flush(10)
            if outcome and outcome[0] is None:
                break
            problem = outcome[0].str() if outcome else "not confirmed in 10 s"
            self._producer = None  # a new producer (the broker may have lost its ids)
            log.warning("%s: dead letter not delivered (%s); retrying in %.1f s", self.name,
                        problem, backoff)
            if self._stop is not None and self._stop.wait(backoff):
                raise _Stopped
            backoff = min(backoff * 2, 10.0)
        log.warning("%s: %s[%d]@%d dead-lettered: %s", self.name, message.topic(),
                    message.partition(), message.offset(), reason)
        self.stats.dead_lettered += 1
        short = reason.partition(":")[0]
        self.stats.by_reason[short] = self.stats.by_reason.get(short, 0) + 1
        DEAD_LETTERED.labels(*lane.labels).inc()
        lane.source.passed(message.offset())

    # -- rebalancing ---------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                if key in self.lanes:
                    continue
                spec = self.inputs[tp.topic]
                count = self._partition_count(consumer, tp.topic, spec.partitions)
                log_source = EventLogSource(self.recorder, self.mapper,
                                            topics=spec.log_topics) if spec.log_topics else None
                source = KafkaSource(tp.topic, tp.partition, partitions=count,
                                     log_source=log_source, key_of=spec.key_of)
                step = self.step_for(tp.topic, tp.partition, count)
                processor = TrackedProcessor(step, source, batch_size=self.batch_size)
                processor.fence = self.fence_for(processor.key)
                try:  # what arrives at or below it is done (else: known when it opens)
                    source.high = step.position(processor.key, fresh=True)
                except Exception:
                    log.warning("%s: tracked position unknown yet (database down?)",
                                processor.key)
                self.lanes[key] = Lane(spec, source, processor,
                                       (self.stage, tp.topic, str(tp.partition)))
        log.info("%s: assigned %s", self.name,
                 ", ".join(f"{tp.topic}:{tp.partition}" for tp in partitions))

    def _partition_count(self, consumer: Any, topic: str, configured: int) -> int:
        """The topic's partitions as the broker has them (what producers hash over);
        the setting when the metadata does not say."""
        from confluent_kafka import KafkaException

        try:
            found = consumer.list_topics(topic, timeout=5).topics.get(topic)
        except KafkaException:
            return configured
        count = len(found.partitions) if found is not None and found.partitions else 0
        if count and count != configured:
            log.warning("%s: %s has %d partitions, the settings say %d; keys hash over %d",
                        self.name, topic, count, configured, count)
        return count or configured

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Between batches (callbacks run inside ``consume``): commit what is stored,
        release the fences, forget the partitions."""
        lanes = [self.lanes[k] for tp in partitions
                 if (k := (tp.topic, tp.partition)) in self.lanes]
        self._commit(lanes, sync=True)
        self._drop(lanes)
        if lanes:
            log.info("%s: revoked %s", self.name,
                     ", ".join(f"{ln.source.name}:{ln.source.partition}" for ln in lanes))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        """Lost (session timed out): another member may own them already; commit nothing."""
        self._drop([self.lanes[k] for tp in partitions
                    if (k := (tp.topic, tp.partition)) in self.lanes])

    def _drop(self, lanes: Sequence[Lane]) -> None:
        with self._lock:
            for lane in lanes:
                self.lanes.pop((lane.source.name, lane.source.partition), None)
                try:
                    lane.processor.close()  # releases the fence
                except Exception:  # its connection is gone: so is the lock it held
                    log.exception("%s: fence not released cleanly", lane.processor.key)

    # -- the broker ------------------------------------------------------------------------
    def _on_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            # one connection dropped (a broker closes idle ones), a timeout: librdkafka
            # reconnects and retries by itself, and logs it; not a broker that is down
            log.debug("%s: %s", self.name, error.str())
            return
        reason = f"broker unreachable ({error.str()})"
        if self.broker_error is None:
            log.warning("%s: %s; librdkafka retries with backoff", self.name, reason)
        self.broker_error = reason

    def _check_broker(self) -> None:
        """While the broker is reported down, ask for metadata every 2 s: the first
        answer clears it (an idle consumer gets no record to tell it so)."""
        if self.broker_error is None or time.monotonic() - self._last_broker_check < 2:
            return
        self._last_broker_check = time.monotonic()
        from confluent_kafka import KafkaException

        try:
            self._consumer.list_topics(timeout=1)
        except KafkaException:
            return
        log.info("%s: broker reachable again", self.name)
        self.broker_error = None

    def _shutdown(self) -> None:
        consumer = self._consumer
        try:
            if consumer is not None:
                self._commit(list(self.lanes.values()), sync=True)
        except Exception:
            log.exception("%s: final commit failed (the next owner re-reads and drops)",
                          self.name)
        self._drop(list(self.lanes.values()))
        if consumer is not None:
            consumer.close()  # leaves the group: the others rebalance at once
        if self._producer is not None:
            self._producer.flush(10)
        self.subscribed = False


class _Stopped(Exception):
    """The worker was stopped while a record waited to be dead-lettered."""


@functools.lru_cache(maxsize=1024)
def _known_topic(topic: str) -> bool:
    """An event type this code base has a class for (a type the stage does not consume
    is skipped; one nobody knows is a bad message)."""
    from eventsourcing.utils import resolve_topic

    try:
        resolve_topic(topic)
    except Exception:
        return False
    return True


def _tp(topic: str, partition: int, offset: int | None = None) -> Any:
    from confluent_kafka import TopicPartition

    return (TopicPartition(topic, partition) if offset is None
            else TopicPartition(topic, partition, offset))


def _stored(received: Any) -> Any:
    from eventsourcing.persistence import StoredEvent

    return StoredEvent(originator_id=received.originator_id,
                       originator_version=received.originator_version,
                       topic=received.topic, state=received.state)


# -- the group's positions, seen from outside (``tradecore projections status``) ------------
@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # the group's offset (None: never committed)
    high_watermark: int | None

    @property
    def lag(self) -> int | None:
        if self.high_watermark is None:
            return None
        return max(self.high_watermark - (self.committed or 0), 0)


def group_lags(settings: Settings, group: str, topic_names: Iterable[str],
               timeout_s: float = 5.0) -> list[PartitionLag]:
    """Per partition of ``topic_names``: ``group``'s committed offset and the high
    watermark as a fetch response reports it (one short fetch per partition from the
    committed offset; the dev broker's ListOffsets LATEST is wrong)."""
    from confluent_kafka import Consumer, TopicPartition

    watcher = Consumer(consumer_config(settings, group))  # never subscribes: no rebalance
    try:
        metadata = watcher.list_topics(timeout=timeout_s).topics
        tps = [TopicPartition(t, p) for t in topic_names if t in metadata
               for p in sorted(metadata[t].partitions)]
        committed = {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                     for tp in watcher.committed(tps, timeout=timeout_s)}
    finally:
        watcher.close()
    marks = fetched_high_watermarks(settings, {k: c or 0 for k, c in committed.items()},
                                    group=f"{group}.probe", timeout_s=timeout_s)
    return [PartitionLag(group, topic, partition, offset, marks.get((topic, partition)))
            for (topic, partition), offset in committed.items()]


def stage_groups(settings: Settings) -> Mapping[str, list[str]]:
    """Each Kafka stage's consumer group and the topics it consumes."""
    t = topics(settings)
    return {f"{settings.kafka_topic_prefix}.matching": [t.matching_in],
            f"{settings.kafka_topic_prefix}.saga": [t.events("order"), t.matching_out]}
