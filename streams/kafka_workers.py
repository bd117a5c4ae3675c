"""The order flow's stages as Kafka consumers: the matching service and the saga.

Both are :class:`streams.kafka_bus.StageConsumer` s (``streams.worker.Runnable``) over
the same steps the embedded deployment runs on the log, one per assigned partition:

- matching: consumes ``matching.in`` (keyed by symbol). Each partition has its own
  :class:`streams.matching.MatchingStage` (its own books; snapshots keyed by
  ``matching@<prefix>.matching.in:<partition>``; restore = snapshot + tail, the tail
  read from the event store). The execution-id sequence is the routed command's
  notification id, as embedded. A session close and a session's bars reach every
  partition; each stage applies them to the symbols that hash to it only, so no two
  partitions write the same ``Venue.Reported`` stream.
- saga: consumes the saga's order events from ``events.order`` (filtered by the
  ``type`` header without decoding the rest) and ``Venue.Reported`` from
  ``matching.out``. Partitions of both are independent processors of one
  :class:`streams.saga.SagaStage` kind; aggregates they share (an account) are decided
  with optimistic concurrency, a conflict deciding the batch again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from aggregates.application import TradingApplication
from aggregates.saga import TOPICS as SAGA_TOPICS
from aggregates.venue import Venue
from infra.kafka import topics
from infra.settings import Settings
from streams.kafka_bus import Input, StageConsumer, aggregate_key, partition_for, symbol_key
from streams.matching import VENUE_COMMAND_TOPICS, MatchingStage, book_of
from streams.processor import EventStoreStep, Step
from streams.saga import saga_for

STORED = Counter("tradecore_stage_events_stored_total",
                 "Events a Kafka stage stored as its effects, by event type (Order.Filled, "
                 "Order.Accepted, Venue.Reported, ...)", ["stage", "type"])

REPORTED = f"{Venue.Reported.__module__}:{Venue.Reported.__qualname__}"
ORDER_TOPICS = tuple(t for t in SAGA_TOPICS if t != REPORTED)


class Counted:
    """A stage whose stored effects are counted by event type once their transaction
    committed (``committed`` is called only then): the dashboard's order outcomes and
    fills. Everything else is the wrapped stage's (``counted.restored_from``, ...)."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage
        self.name: str = stage.name
        self.topics = stage.topics
        self._applied: list[Any] = []

    def start(self, tracked: int, source: Any) -> None:
        self._applied = []
        self.stage.start(tracked, source)

    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]:
        self._applied = self.stage.apply(batch)
        return self._applied

    def committed(self, position: int) -> None:
        self.stage.committed(position)
        counts: dict[str, int] = {}
        for event in self._applied:
            kind = type(event).__qualname__
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            STORED.labels(self.name, kind).inc(n)
        self._applied = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stage, name)


def venue_key(app: TradingApplication) -> Callable[[Any], str | None]:
    """The key the relay gives a venue command on ``matching.in``
    (:func:`streams.matching.book_of`), an old command's order looked up in ``app``."""

    def order_symbol(order_id: Any) -> str | None:
        try:
            return str(app.get_order(order_id).symbol)
        except Exception:  # not found: unrouted, as the relay keys it
            return None

    return lambda event: book_of(event, order_symbol)


def matching_consumer(settings: Settings, app: TradingApplication,
                      make_stage: Callable[[], MatchingStage], *,
                      batch_size: int = 1024) -> StageConsumer:
    """The matching service: one venue per assigned partition of ``matching.in``."""
    partitions = settings.kafka_matching_partitions
    spec = Input(topics(settings).matching_in, partitions, frozenset(VENUE_COMMAND_TOPICS),
                 venue_key(app), VENUE_COMMAND_TOPICS)

    def step_for(topic: str, partition: int, count: int) -> Step:
        stage = make_stage()
        stage.books.owns = (lambda symbol: partition_for(symbol, count) == partition)
        if stage.chain_head is None:
            stage.chain_head = app.chain_head
        return EventStoreStep(Counted(stage), app)

    return StageConsumer(settings, "matching", [spec], step_for, app.mapper, app.recorder,
                         batch_size=batch_size)


def saga_consumer(settings: Settings, app: TradingApplication, *,
                  batch_size: int = 256) -> StageConsumer:
    """The saga: order requests from ``events.order``, venue reports from
    ``matching.out``, each partition its own tracked processor."""
    t = topics(settings)
    specs = [Input(t.events("order"), settings.kafka_event_partitions,
                   frozenset(ORDER_TOPICS), aggregate_key, ORDER_TOPICS),
             Input(t.matching_out, settings.kafka_matching_partitions,
                   frozenset({REPORTED}), symbol_key, (REPORTED,))]

    def step_for(topic: str, partition: int, count: int) -> Step:
        return EventStoreStep(Counted(saga_for(app)), app, guard=app.deciding)

    return StageConsumer(settings, "saga", specs, step_for, app.mapper, app.recorder,
                         batch_size=batch_size)
