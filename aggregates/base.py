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
from typing import Any, Self
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

SAGA_PRINCIPAL = "saga:orders"


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

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def _create_with(cls, event_class: type[Any], meta: Meta, *, id: UUID, **fields: Any) -> Self:
        """Create the aggregate with its first event, stamped like :meth:`_record`."""
        return cls._create(event_class, id=id, **fields, **meta.fields(), timestamp=meta.at)

    def _record(self, event_class: type[Any], meta: Meta, **fields: Any) -> None:
        # timestamp=None lets the library stamp the event with the system time
        self.trigger_event(event_class, **fields, **meta.fields(), timestamp=meta.at)

