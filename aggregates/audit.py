"""What an aggregate was at a point of its history, and how each event reads in an audit.

Pure domain logic, no store: :mod:`api.audit` reads the events (and the snapshot before
the point asked about) and hands them here. An audit answers "what was true then, who
did it, and why": the state folded from the events up to a version, and every event
with its principal, command, correlation and causation ids, and timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from aggregates.account import Account
from aggregates.market import Market
from aggregates.order import Order
from aggregates.position import Position
from aggregates.venue import Venue

AUDIT_FIELDS = ("principal", "command_id", "correlation_id", "causation_id")
"""The metadata every event of the trading aggregates carries (see aggregates.base.Meta)."""

_ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", *AUDIT_FIELDS,
                       "originator_topic"})
_KINDS: tuple[tuple[type[Any], str], ...] = (
    (Account, "account"), (Order, "order"), (Position, "position"), (Market, "market"),
    (Venue, "venue"))


def utc_text(moment: datetime) -> str:
    """UTC to the microsecond, always 27 characters: ``2026-11-20T00:01:02.000000Z``."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def plain(value: Any) -> Any:
    """A value as JSON can carry it (UUIDs, enums, datetimes, sets as text and lists)."""
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_text(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((plain(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def event_name(event: Any) -> str:
    """``Order.Placed`` for an ``aggregates.order:Order.Placed`` event."""
    return type(event).__qualname__


def entry(event: Any) -> dict[str, Any]:
    """One event as the audit shows it: type, version, who, which command, which flow,
    what caused it, when (UTC, microseconds) and its own fields."""
    state = vars(event)
    return {
        "event": event_name(event),
        "aggregate_id": str(event.originator_id),
        "version": event.originator_version,
        **{name: state.get(name) for name in AUDIT_FIELDS},
        "timestamp": utc_text(event.timestamp),
        "fields": {k: plain(v) for k, v in own_fields(event).items()},
    }


def own_fields(event: Any) -> dict[str, Any]:
    """The event's own fields, as stored: not its envelope (id, version, time, topic,
    the command metadata) nor private attributes (the hash-chain digest it was read
    with)."""
    return {k: v for k, v in vars(event).items()
            if k not in _ENVELOPE and not k.startswith("_")}


def kind_of(aggregate_or_event: Any) -> str:
    """account | order | position | market | venue (or the class name)."""
    cls = aggregate_or_event if isinstance(aggregate_or_event, type) else type(aggregate_or_event)
    owner = cls if not hasattr(cls, "originator_version") else _owner(cls)
    for known, name in _KINDS:
        if owner is not None and issubclass(owner, known):
            return name
    return cls.__qualname__.split(".")[0].lower()


def _owner(event_class: type[Any]) -> type[Any] | None:
    outer = event_class.__qualname__.split(".")[0]
    return next((known for known, _ in _KINDS if known.__name__ == outer), None)


def fold(start: Any, events: Iterable[Any]) -> Any:
    """The aggregate after ``events`` applied to ``start`` (a snapshot's aggregate, or
    None to begin with the creating event). A venue's stream has no creating event (the
    matching stage only appends reports): its state is its last report."""
    aggregate = start
    last = None
    for event in events:
        last = event
        if isinstance(event, Venue.Reported):
            aggregate = event
            continue
        aggregate = event.mutate(aggregate)
    return aggregate if aggregate is not None else last


def state_of(aggregate: Any) -> dict[str, Any]:
    """The aggregate's attributes as plain JSON values, with its id, kind and version."""
    if isinstance(aggregate, Venue.Reported):  # a venue: its last report
        return {"id": str(aggregate.originator_id), "kind": "venue",
                "version": aggregate.originator_version,
                "last_report": {k: plain(v) for k, v in vars(aggregate).items()
                                if not k.startswith("_")}}
    state = vars(aggregate)
    return {
        "id": str(aggregate.id),
        "kind": kind_of(aggregate),
        "version": aggregate.version,
        "chain_head": str(state.get("_chain", "")),
        **{k: plain(v) for k, v in state.items() if not k.startswith("_")},
    }


def account_of(aggregate: Any) -> UUID | None:
    """The account an order, position or account belongs to (None: desk-wide only)."""
    if isinstance(aggregate, Account):
        return aggregate.id  # type: ignore[no-any-return]
    if isinstance(aggregate, Order | Position):
        return aggregate.account_id  # type: ignore[no-any-return]
    return None
