"""What every aggregate and domain event shares: the command metadata.

Every event records who caused it (``principal``), under which command
(``command_id``), the business flow it belongs to (``correlation_id``: the id of the
user command that started the flow) and the event or command that directly caused it
(``causation_id``). Audit reads these; sagas propagate them.

``Meta.at`` is the moment the decision was taken, from the caller's clock
(:mod:`aggregates.clock`): the events of that command carry it as their ``timestamp``,
so a replay with a simulated clock stores events identical to the first run's. Without
it (``None``) the library stamps events with the system time, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

SAGA_PRINCIPAL = "saga:orders"
_HOLDERS_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class Meta:
    principal: str
    command_id: str
    correlation_id: str
    causation_id: str
    at: datetime | None = None
    """When the command was decided (aware); the timestamp of the events it records."""

    def __post_init__(self) -> None:
        at = self.at
        if at is not None and (at.tzinfo is None or at.utcoffset() is None):
            raise ValueError(f"at={at.isoformat()} breaks rule 'timezone-aware datetime'")

    @classmethod
    def command(
        cls, principal: str, command_id: str | None = None, *, at: datetime | None = None
    ) -> Meta:
        """Metadata for a user command: it starts its own correlation.

        ``at``: the clock's ``now()`` when the command is decided (``None``: system time).
        """
        cid = command_id or uuid4().hex
        return cls(principal, cid, cid, cid, at)

    @classmethod
    def caused_by(cls, event: Any, step: str, *, at: datetime | None = None) -> Meta:
        """Metadata for a saga step reacting to ``event`` (``at``: the step's moment)."""
        cause = f"{event.originator_id}:{event.originator_version}"
        return cls(
            principal=SAGA_PRINCIPAL,
            command_id=f"{step}:{cause}",
            correlation_id=event.correlation_id,
            causation_id=cause,
            at=at,
        )

    def fields(self) -> dict[str, str]:
        """The event attributes (``at`` is not one: it becomes the event's timestamp)."""
        # not dataclasses.asdict: that deep-copies, and this runs for every event
        return {
            "principal": self.principal,
            "command_id": self.command_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }


class TradingAggregate(Aggregate):
    """Base aggregate whose events carry :class:`Meta`."""

    class Event(Aggregate.Event):
        principal: str
        command_id: str
        correlation_id: str
        causation_id: str

        # (aggregate id, version) -> what keeps that stream's hash-chain head, for the
        # events collected to be stored; the event codec takes its entry when it stores
        # the event (a class attribute, so the codec finds it without importing this)
        _chain_holders: ClassVar[dict[tuple[Any, int], Any]] = {}

        def mutate(self, aggregate: Any) -> Any:
            """Apply as the library does; an event read from the store also moves the
            aggregate's hash-chain head to its digest (``_chain``, see
            :meth:`TradingAggregate.collect_events`)."""
            chain = self.__dict__.get("_chain")
            aggregate = super().mutate(aggregate)
            if chain is not None:
                aggregate.__dict__["_chain"] = chain
            return aggregate

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def _create_with(cls, event_class: type[Any], meta: Meta, *, id: UUID, **fields: Any) -> Self:
        """Create the aggregate with its first event, stamped like :meth:`_record`."""
        return cls._create(event_class, id=id, **fields, **meta.fields(), timestamp=meta.at)

    def collect_events(self) -> Any:
        """The new events to store, each pointing at this aggregate (in ``Event._chain_holders``, by
        aggregate id and version: nothing is added to the event itself).

        The event codec (``infra``) chains every stored event to its aggregate's previous
        one: it reads the aggregate's head (the digest of its last stored event, kept in
        ``_chain`` and in snapshots) when it stores an event and writes the new digest
        back, in version order. So the next event knows its predecessor without a read.
        An event read from the store carries its digest and moves the head on ``mutate``.
        """
        events = super().collect_events()
        holders = TradingAggregate.Event._chain_holders
        if len(holders) > _HOLDERS_KEPT:  # collected and never stored (tests, dry runs)
            holders.clear()
        for event in events:
            holders[(event.originator_id, event.originator_version)] = self
        return events

    @property
    def chain_head(self) -> str:
        """The digest of this aggregate's last stored event ("" when none is chained)."""
        return str(self.__dict__.get("_chain", ""))

    def _record(self, event_class: type[Any], meta: Meta, **fields: Any) -> None:
        # timestamp=None lets the library stamp the event with the system time
        self.trigger_event(event_class, **fields, **meta.fields(), timestamp=meta.at)

