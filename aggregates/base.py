"""What every aggregate and domain event shares: the command metadata.

Every event records who caused it (``principal``), under which command
(``command_id``), the business flow it belongs to (``correlation_id``: the id of the
user command that started the flow) and the event or command that directly caused it
(``causation_id``). Audit reads these; sagas propagate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate

SAGA_PRINCIPAL = "saga:orders"


@dataclass(frozen=True, slots=True)
class Meta:
    principal: str
    command_id: str
    correlation_id: str
    causation_id: str

    @classmethod
    def command(cls, principal: str, command_id: str | None = None) -> Meta:
        """Metadata for a user command: it starts its own correlation."""
        cid = command_id or uuid4().hex
        return cls(principal, cid, cid, cid)

    @classmethod
    def caused_by(cls, event: Any, step: str) -> Meta:
        """Metadata for a saga step reacting to ``event``."""
        cause = f"{event.originator_id}:{event.originator_version}"
        return cls(
            principal=SAGA_PRINCIPAL,
            command_id=f"{step}:{cause}",
            correlation_id=event.correlation_id,
            causation_id=cause,
        )

    def fields(self) -> dict[str, str]:
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

    def _record(self, event_class: type[Any], meta: Meta, **fields: Any) -> None:
        self.trigger_event(event_class, **fields, **meta.fields())
