"""DEV BROKER ONLY: noticing that the dev/CI broker (Tansu, ``infra/kafka.sh``) lost its data.

Tansu keeps everything in memory (``../shared/KAFKA.md``): a restart loses every topic,
every record and every committed offset, and the next producer that names a topic gets
it auto-created, empty. A relay that did not notice would go on publishing from its
stored position, and whatever it had published before the restart would be gone from
Kafka for good. Apache Kafka keeps its logs on disk; none of this runs against it. The
relay uses this module only when ``settings.kafka_dev_broker`` is set.

The signal: a marker record. When the relay starts (and after each recovery) it creates
the deployment's topics plus a one-partition topic ``<prefix>.dev.marker`` that no one
else writes or reads, and writes one record to it. The broker lost its data when that
topic is missing from the metadata or holds no record. Why not "the topics vanished":
another client (a worker's producer, ``tradecore kafka init``) may have re-created them,
empty, before the relay looked; nobody re-creates the marker with a record in it.
Why ListOffsets can be trusted here despite fault 2 (LATEST is the start of the last
stored batch + 1): that is still >= 1 when any record is there, and 0 when none is.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from infra.kafka import TopicSpec, common_config, ensure_topics, topic_specs
from infra.settings import Settings

log = logging.getLogger("tradecore.kafka_dev")


def marker_topic(settings: Settings) -> str:
    return f"{settings.kafka_topic_prefix}.dev.marker"


class DevBrokerWatch:
    """Tells whether the dev broker still holds what the relay published (see module)."""

    def __init__(self, settings: Settings, timeout_s: float = 3.0) -> None:
        if not settings.kafka_dev_broker:
            raise ValueError("kafka_dev_broker: DevBrokerWatch is for the dev broker only")
        self.settings = settings
        self.topic = marker_topic(settings)
        self.timeout_s = timeout_s
        self._consumer: Any = None

    def _watermarks(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            # no subscription, no group join: only for ListOffsets and metadata
            self._consumer = Consumer({**common_config(self.settings),
                                       "group.id": f"{self.topic}.watch",
                                       "enable.auto.commit": False,
                                       "allow.auto.create.topics": False})
        return self._consumer

    def arm(self) -> dict[str, str]:
        """Create the deployment's topics and the marker topic, write the marker record;
        what :func:`infra.kafka.ensure_topics` says of each topic."""
        from confluent_kafka import Producer

        created = ensure_topics(self.settings, [*topic_specs(self.settings),
                                                TopicSpec(self.topic, 1)])
        producer = Producer({**common_config(self.settings), "acks": "all",
                             "allow.auto.create.topics": False,
                             "message.timeout.ms": int(self.timeout_s * 1000)})
        failed: list[str] = []
        producer.produce(self.topic, value=uuid.uuid4().hex.encode(),
                         on_delivery=lambda err, _m: failed.append(str(err)) if err else None)
        left = producer.flush(self.timeout_s)
        if failed or left:
            raise RuntimeError(f"{self.topic}: marker record not stored "
                               f"({failed[0] if failed else 'no delivery report'})")
        return created

    def lost(self) -> bool:
        """True when the broker no longer holds the marker record (it restarted, or it
        never held one: a fresh broker, or topics created without the relay)."""
        from confluent_kafka import TopicPartition

        consumer = self._watermarks()
        found = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            return True
        _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0),
                                                    timeout=self.timeout_s, cached=False)
        return bool(high <= 0)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
