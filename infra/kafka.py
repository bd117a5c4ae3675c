"""Kafka plumbing for the distributed deployment: topic names and specs, client settings,
topic creation, and the message form of a stored event.

Domain-free: topics and keys are strings, events are the event store's stored events
(``originator_id``, ``originator_version``, ``topic``, ``state`` bytes). Everything is
read from :class:`infra.settings.Settings`; the same code runs against Apache Kafka and
against the dev/CI broker (Tansu, started by ``infra/kafka.sh``). The few places that
work around the dev broker's faults (``../shared/KAFKA.md``) test
``settings.kafka_dev_broker`` and say so where they do.

Message form (a public contract, see ``docs/events.md``):

- key: the aggregate id (``tradecore.events.<aggregate>``) or the symbol
  (``tradecore.matching.in|out``), UTF-8;
- value: the stored event's bytes, exactly as in the event store (the codec's
  versioned JSON, ``schema_version`` first);
- headers: ``type`` (the event topic, ``aggregates.order:Order.Placed``),
  ``schema_version``, ``aggregate_id``, ``aggregate_version``, ``notification_id``
  (its position in the event store's log: consumers track it and drop anything at or
  below what they have applied, so the relay's re-sends change nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from infra.settings import Settings

AGGREGATES: tuple[str, ...] = ("order", "account", "position", "venue", "market")
"""Aggregates whose events have a ``<prefix>.events.<aggregate>`` topic."""

HEADER_TYPE = "type"
HEADER_SCHEMA = "schema_version"
HEADER_AGGREGATE = "aggregate_id"
HEADER_VERSION = "aggregate_version"
HEADER_NOTIFICATION = "notification_id"


def aggregate_of(event_topic: str) -> str:
    """``order`` for ``aggregates.order:Order.Placed`` (the class before the first dot)."""
    return event_topic.rpartition(":")[2].partition(".")[0].lower()


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """The DESIGN.md topics under one prefix."""

    prefix: str = "tradecore"

    def events(self, aggregate: str) -> str:
        return f"{self.prefix}.events.{aggregate}"

    @property
    def matching_in(self) -> str:
        return f"{self.prefix}.matching.in"

    @property
    def matching_out(self) -> str:
        return f"{self.prefix}.matching.out"

    @property
    def bars(self) -> str:
        return f"{self.prefix}.md.bars"

    @property
    def trades(self) -> str:
        return f"{self.prefix}.md.trades"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}.predictions"

    @property
    def dead_letter(self) -> str:
        """Messages a consumer could not use, with the reason in a ``reason`` header."""
        return f"{self.prefix}.deadletter"


def topics(settings: Settings) -> Topics:
    return Topics(settings.kafka_topic_prefix)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the distributed deployment, with partitions and configs."""
    t = topics(settings)
    keep = {"cleanup.policy": "delete", "retention.ms": str(settings.kafka_retention_ms)}
    specs = [TopicSpec(t.events(a), settings.kafka_event_partitions, keep) for a in AGGREGATES]
    specs += [TopicSpec(t.matching_in, settings.kafka_matching_partitions, keep),
              TopicSpec(t.matching_out, settings.kafka_matching_partitions, keep),
              TopicSpec(t.bars, settings.kafka_event_partitions, keep),
              TopicSpec(t.trades, settings.kafka_event_partitions, keep),
              TopicSpec(t.predictions, settings.kafka_event_partitions, keep),
              TopicSpec(t.dead_letter, 1, keep)]
    return specs


# -- client settings ----------------------------------------------------------------------
def common_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap,
            # a broker that is down is retried by librdkafka itself; say so quickly
            "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 2000}


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, ``acks=all``, keys on the partitions Java clients and Faust use."""
    return {**common_config(settings), "enable.idempotence": True, "acks": "all",
            "linger.ms": settings.kafka_linger_ms, "partitioner": "murmur2_random",
            "compression.type": "none", **extra}


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """Manual commits (positions live in the sink's database), fast group joins."""
    return {**common_config(settings), "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False,
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 6),
            "fetch.wait.max.ms": settings.kafka_fetch_wait_ms,
            "partition.assignment.strategy": "range", **extra}


def admin(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(common_config(settings))


def ensure_topics(settings: Settings, specs: Sequence[TopicSpec] | None = None,
                  timeout_s: float = 30.0) -> dict[str, str]:
    """Create the topics that do not exist; ``{name: "created" | "exists"}``.

    Idempotent. A topic that exists with fewer partitions than its spec is grown
    (partitions can only be added); one with more is left as it is and reported."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewPartitions, NewTopic

    client = admin(settings)
    specs = list(specs if specs is not None else topic_specs(settings))
    existing = client.list_topics(timeout=timeout_s).topics
    result: dict[str, str] = {}
    new = [NewTopic(s.name, num_partitions=s.partitions,
                    replication_factor=settings.kafka_replication_factor, config=dict(s.config))
           for s in specs if s.name not in existing]
    for name, future in (client.create_topics(new, request_timeout=timeout_s).items()
                         if new else []):
        try:
            future.result(timeout_s)
            result[name] = "created"
        except KafkaException as err:
            if err.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
            result[name] = "exists"
    grow = {}
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            result[spec.name] = "exists"
            if have < spec.partitions:
                grow[spec.name] = NewPartitions(spec.name, spec.partitions)
                result[spec.name] = f"has {have} partitions, wants {spec.partitions}"
    for name, future in (client.create_partitions(list(grow.values())).items()
                         if grow else []):
        try:
            future.result(timeout_s)
            result[name] = "grown"
        except KafkaException as err:  # the dev broker cannot add partitions
            result[name] += f" (not grown: {err.args[0].str()})"
    return result


def partition_count(settings: Settings, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions ``topic`` has on the broker (its spec's count if it is absent)."""
    found = admin(settings).list_topics(topic, timeout=timeout_s).topics.get(topic)
    if found is not None and found.error is None and found.partitions:
        return len(found.partitions)
    return next((s.partitions for s in topic_specs(settings) if s.name == topic), 1)


def fetched_high_watermarks(settings: Settings, starts: Mapping[tuple[str, int], int], *,
                            group: str, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
    """Each ``(topic, partition)``'s high watermark as a fetch response reports it: a short
    fetch from its start offset, never ListOffsets LATEST, which the dev broker answers
    wrongly (``../shared/KAFKA.md``, fault 2). Partitions with no answer within
    ``timeout_s`` are left out. ``group`` names the probing consumer, which never
    subscribes (no rebalance of anyone's group)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer(consumer_config(settings, group))
    try:
        probe.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
        deadline = time.monotonic() + timeout_s
        marks: dict[tuple[str, int], int] = {}
        while len(marks) < len(starts) and time.monotonic() < deadline:
            probe.consume(num_messages=1, timeout=0.1)
            for key in starts:
                if key not in marks:
                    wm = probe.get_watermark_offsets(TopicPartition(*key), cached=True)
                    if wm is not None and wm[1] >= 0:
                        marks[key] = wm[1]
        return marks
    finally:
        probe.close()


# -- the message form of a stored event ---------------------------------------------------
@dataclass(frozen=True)
class EventMessage:
    """One stored event as it travels on Kafka."""

    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


def event_message(notification_id: int, originator_id: UUID | str, originator_version: int,
                  event_topic: str, state: bytes, *, key: str | None = None,
                  schema_version: int | None = None) -> EventMessage:
    aggregate_id = str(originator_id)
    headers = [(HEADER_TYPE, event_topic.encode()),
               (HEADER_AGGREGATE, aggregate_id.encode()),
               (HEADER_VERSION, str(originator_version).encode()),
               (HEADER_NOTIFICATION, str(notification_id).encode())]
    if schema_version is not None:
        headers.insert(1, (HEADER_SCHEMA, str(schema_version).encode()))
    return EventMessage(key if key is not None else aggregate_id, state, headers)


class BadMessage(ValueError):
    """A message that is not a stored event of this contract (goes to the dead letters)."""


@dataclass(frozen=True)
class ReceivedEvent:
    notification_id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


def received_event(headers: Iterable[tuple[str, bytes | None]] | None,
                   value: bytes | None) -> ReceivedEvent:
    """The stored event a message carries; :class:`BadMessage` naming what is wrong."""
    found = {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or ())}
    for name in (HEADER_TYPE, HEADER_AGGREGATE, HEADER_VERSION, HEADER_NOTIFICATION):
        if not found.get(name):
            raise BadMessage(f"header {name!r} is missing")
    try:
        notification_id = int(found[HEADER_NOTIFICATION])
        version = int(found[HEADER_VERSION])
    except ValueError as err:
        raise BadMessage(f"header notification_id/aggregate_version: not an integer ({err})"
                         ) from None
    try:
        originator_id = UUID(found[HEADER_AGGREGATE])
    except ValueError:
        raise BadMessage(f"header aggregate_id: not a UUID ({found[HEADER_AGGREGATE]!r})"
                         ) from None
    if not value:
        raise BadMessage("value is empty")
    return ReceivedEvent(notification_id, originator_id, version, found[HEADER_TYPE], value)


def dead_letter_headers(headers: Iterable[tuple[str, bytes | None]] | None, *, reason: str,
                        topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The original headers plus where the message came from and why it was refused."""
    return [*((k, v or b"") for k, v in (headers or ())),
            ("reason", reason.encode()), ("source_topic", topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode())]
