"""``python -m api.cli.catalogue``: writes ``docs/events.md`` from the event classes.

The catalogue of the stored (and published) event contract: every aggregate's events
with their topic, ``schema_version``, fields (Python type, JSON type, the comment on the
field's line) and one-line meaning (the class docstring's first line). ``--check``
exits 1 when the file is out of date instead of writing it; the test suite runs the
same check, so an event changed without regenerating the catalogue fails CI.

It lives in ``api/`` because it reads the domain (``infra/`` may not); the form itself
is :mod:`infra.codec`'s.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import pkgutil
import re
import sys
import tokenize
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, CanInitAggregate, CanMutateAggregate, Snapshot

import aggregates
from infra.chain import GENESIS, seal
from infra.codec import SCHEMA_VERSION, EventSchema, codec

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"

# Events whose class has no docstring yet, in files this change does not own; a
# docstring on the class wins over these (and should replace them).
FALLBACK_MEANINGS: dict[str, str] = {
    "aggregates.order:Order.Placed": "A client placed an order: its terms as given.",
    "aggregates.order:Order.Accepted": (
        "Pre-trade risk passed: the funds (buy) or shares (sell) reserved for the order."
    ),
    "aggregates.order:Order.Rejected": (
        "Pre-trade risk refused the order: the field and the rule it broke."
    ),
    "aggregates.order:Order.PartiallyFilled": "One execution filled part of the open quantity.",
    "aggregates.order:Order.Filled": "One execution filled the rest of the open quantity.",
    "aggregates.order:Order.CancelRequested": "The client asked to cancel the order.",
    "aggregates.order:Order.CancelRouted": "The cancel was sent to the venue.",
    "aggregates.order:Order.CancelRejected": (
        "The cancel could not be done: the order was already final."
    ),
    "aggregates.order:Order.Cancelled": (
        "The open quantity left the venue: cancelled, IOC/FOK remainder, or refused there."
    ),
    "aggregates.order:Order.ExpiryRouted": (
        "The session closed: the venue was asked to expire the DAY order."
    ),
    "aggregates.order:Order.Expired": "The DAY order's open quantity expired at the close.",
    "aggregates.order:Order.AmendRequested": (
        "The client asked for a new total quantity and/or price."
    ),
    "aggregates.order:Order.AmendRouted": (
        "The amend passed risk (reservation topped up if needed) and went to the venue."
    ),
    "aggregates.order:Order.AmendRejected": (
        "The amend was refused (risk, status or venue); the reservation it leaves."
    ),
    "aggregates.order:Order.Amended": (
        "The venue applied the amend; `priority_kept`: whether time priority survived."
    ),
    "aggregates.venue:Venue.Reported": (
        "What the venue did with one venue command: fills, removals, amends, refusals."
    ),
}

# The fields every event carries, described once.
COMMON_FIELDS: dict[str, str] = {
    "originator_id": "the aggregate's id",
    "originator_version": "the aggregate's version after this event (1: it was created)",
    "timestamp": "when it happened",
    "originator_topic": "creation events only: the aggregate class (`module:Qualname`)",
    "principal": "who caused it: a user, or `saga:orders`",
    "command_id": "the command that stored it",
    "correlation_id": "the business flow: the id of the user command that started it",
    "causation_id": "what directly caused it: a command id, or `<aggregate id>:<version>`",
}

EXAMPLE_TOPIC = "aggregates.order:Order.Placed"
_EXAMPLE_VALUES: dict[str, Any] = {
    "originator_version": 1, "timestamp": datetime(2026, 11, 20, 0, 1, 2, tzinfo=UTC),
    "originator_topic": "aggregates.order:Order", "principal": "trader-1",
    "command_id": "9b1f0c5e4d3a4b2c8e7f6a5b4c3d2e1f", "client_order_id": "c-1",
    "symbol": "7203", "side": "buy", "order_type": "limit", "tif": "day", "quantity": 100,
    "price": 25_000,
}


@dataclass(frozen=True, slots=True)
class FieldDoc:
    name: str
    python: str
    json: str
    note: str


@dataclass(frozen=True, slots=True)
class EventDoc:
    cls: type[Any]
    schema: EventSchema
    meaning: str
    creates: bool
    fields: tuple[FieldDoc, ...]


# -- discovery ---------------------------------------------------------------------------


def aggregate_classes() -> list[type[Aggregate]]:
    """Every aggregate class defined in the ``aggregates`` package."""
    for info in pkgutil.iter_modules(aggregates.__path__):
        importlib.import_module(f"aggregates.{info.name}")
    found: set[type[Aggregate]] = set()
    pending = list(Aggregate.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("aggregates.") and cls.__qualname__ in _class_nodes(
            cls.__module__
        ):
            found.add(cls)
    # a base of other aggregates (TradingAggregate) is not one itself
    concrete = {c for c in found if not any(o is not c and issubclass(o, c) for o in found)}
    return sorted(concrete, key=lambda c: c.__qualname__)


def event_classes(aggregate: type[Aggregate]) -> list[type[Any]]:
    """The event classes written in the aggregate's body, in source order."""
    node = _class_nodes(aggregate.__module__)[aggregate.__qualname__]
    out = []
    for child in node.body:
        if isinstance(child, ast.ClassDef):
            cls = getattr(aggregate, child.name)
            if isinstance(cls, type) and issubclass(cls, CanMutateAggregate):
                out.append(cls)
    return out


def all_event_classes() -> list[type[Any]]:
    """Every domain event class, then the snapshot class: what the store can hold."""
    return [e for a in aggregate_classes() for e in event_classes(a)] + [Snapshot]


# -- description -------------------------------------------------------------------------


def describe(cls: type[Any]) -> EventDoc:
    schema = codec.schema(cls)
    notes = _field_notes(cls)
    fields = tuple(
        FieldDoc(name, python_type(hint), json_type(hint), notes.get(name, ""))
        for name, hint in schema.fields.items()
        if name not in COMMON_FIELDS
    )
    return EventDoc(cls, schema, meaning(cls), issubclass(cls, CanInitAggregate), fields)


def meaning(cls: type[Any]) -> str:
    """First line of the class's own docstring (as written), else the fallback; ''."""
    doc = _docstring(cls)
    if doc:
        return _first_paragraph(doc)
    return FALLBACK_MEANINGS.get(codec.schema(cls).topic, "")


def _first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line, reST ``code`` as Markdown `code`."""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def python_type(hint: Any) -> str:
    if hint is NoneType or hint is None:
        return "None"
    if hint is Any:
        return "Any"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        return " | ".join(python_type(a) for a in typing.get_args(hint))
    if origin is not None:
        args = ", ".join(python_type(a) for a in typing.get_args(hint))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(hint, "__name__", str(hint))


def json_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        optional = len(args) < len(typing.get_args(hint))
        text = " or ".join(json_type(a) for a in args)
        return f"{text} or null" if optional else text
    if origin is list or hint is list:
        return "array"
    if origin is dict or hint is dict:
        return "object"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "string: " + " \\| ".join(str(m.value) for m in hint)
    simple = {
        UUID: "string (UUID)", datetime: "string (UTC time)", bool: "boolean",
        int: "integer", float: "number", str: "string", Decimal: "string (decimal)",
        Any: "any JSON",
    }
    return simple.get(hint, python_type(hint))


def example_event(topic: str = EXAMPLE_TOPIC) -> Any:
    """An event of ``topic`` with fixed, plausible values (the catalogue's example)."""
    schema = codec.schema_for_topic(topic)
    values = {name: _EXAMPLE_VALUES.get(name, _example(name, hint))
              for name, hint in schema.fields.items()}
    values["correlation_id"] = values["causation_id"] = values["command_id"]
    return schema.cls(**values)


def _example(name: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        return None if NoneType in typing.get_args(hint) else _example(
            name, typing.get_args(hint)[0])
    if hint is UUID:
        return uuid5(UUID(int=0), name)
    if hint is int:
        return 0
    if hint is bool:
        return False
    if hint is datetime:
        return _EXAMPLE_VALUES["timestamp"]
    if origin is list or hint is list:
        return []
    if origin is dict or hint is dict:
        return {}
    return ""


# -- the document ------------------------------------------------------------------------


def render() -> str:
    aggs = aggregate_classes()
    events = {a: [describe(e) for e in event_classes(a)] for a in aggs}
    snapshot = describe(Snapshot)
    example = codec.encode(example_event()).decode()
    out = [
        "# Event catalogue",
        "",
        "<!-- Generated by `python -m api.cli.catalogue` from the event classes: do not edit.",
        "     tests/infra/test_event_catalogue.py fails when it is out of date. -->",
        "",
        "Every domain event is stored, in the event store (SQLite or PostgreSQL) and on "
        "Kafka",
        "(`tradecore.events.<aggregate>`, keyed by aggregate id), as the same bytes: one "
        "JSON",
        "object in the form of `infra/codec.py` (`encode(event) -> bytes`, "
        "`decode(topic, bytes)`):",
        "",
        f"- `{SCHEMA_VERSION}` first: the version of the event type (its class's "
        "`class_version`, 1",
        "  when it has none). Readers upcast older versions with the class's "
        "`upcast_vN_vN+1`",
        "  static methods, so every reader sees the current fields;",
        "- UUIDs as canonical strings; times in ISO 8601 UTC with microseconds and `Z`;",
        "  integers as integers (money in yen, prices in price units, quantities in shares);",
        "  enums as their values; an absent optional value as `null`;",
        "- the topic (`module:Qualname`, below) travels beside the bytes: the store's "
        "`topic`",
        "  column, a Kafka header. Events stored before the codec (the library's default",
        "  form, no `schema_version`) still load.",
        "",
        f"Example, `{EXAMPLE_TOPIC}`:",
        "",
        "```json",
        example,
        "```",
        "",
        "### The hash chain (stored form)",
        "",
        "In the event store every event's object ends with two more keys, always last "
        "and",
        "always this long (`infra/chain.py`; see `docs/audit.md`):",
        "",
        "- `prev_digest`: the `digest` of the same aggregate's previous event (version - "
        "1), or",
        f"  64 zeros (`{GENESIS[:8]}…`) for its first chained event;",
        "- `digest`: BLAKE2b-256 (hex) of the topic, a newline, and the stored bytes up to "
        "(not",
        "  including) `,\"digest\":` — every field, `originator_id`, `originator_version` "
        "and",
        "  `prev_digest` included.",
        "",
        "Readers of the fields ignore both keys (`decode` skips them); `tradecore audit "
        "verify`",
        "checks them. Snapshots are not chained (they are a cache, rebuilt from events); "
        "events",
        "stored before the chain existed have neither key (an *unchained prefix*). The "
        "example",
        "as stored, the first event of its aggregate:",
        "",
        "```json",
        seal(EXAMPLE_TOPIC, example.encode(), GENESIS)[0].decode(),
        "```",
        "",
        "## Index",
        "",
        "| event | topic | schema_version | meaning |",
        "|---|---|---|---|",
    ]
    for docs in events.values():
        for doc in docs:
            out.append(f"| [{doc.schema.name}](#{_anchor(doc.schema.name)}) | "
                       f"`{doc.schema.topic}` | {doc.schema.version} | {_cell(doc.meaning)} |")
    out += [
        "",
        "## Fields every event carries",
        "",
        "| field | type | JSON | meaning |",
        "|---|---|---|---|",
        f"| `{SCHEMA_VERSION}` | `int` | integer | the version of the event type |",
    ]
    sample = codec.schema(events[aggs[0]][0].cls).fields if aggs else {}
    for name, text in COMMON_FIELDS.items():
        hint = sample.get(name, str)
        out.append(f"| `{name}` | `{_cell(python_type(hint))}` | {json_type(hint)} | {text} |")
    for agg in aggs:
        out += ["", f"## {agg.__qualname__}", ""]
        agg_doc = _docstring(agg) or (sys.modules[agg.__module__].__doc__ or "")
        if agg_doc:
            out += [_first_paragraph(agg_doc), ""]
        for doc in events[agg]:
            out += _render_event(doc)
    out += ["", "## Snapshots", "",
            "Stored in the snapshot store only, never published. `state` is the "
            "aggregate's attributes;",
            "values JSON cannot hold keep their type as "
            '`{"_type_": "uuid" | "datetime" | "decimal" | "enum" | "set", "_data_": ...}`.',
            ""]
    out += _render_event(snapshot)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


def _render_event(doc: EventDoc) -> list[str]:
    lines = ["", f"### {doc.schema.name}", "",
             f"`{doc.schema.topic}` · schema_version **{doc.schema.version}**"
             + (" · creates the aggregate" if doc.creates else ""), ""]
    if doc.meaning:
        lines += [doc.meaning, ""]
    if doc.fields:
        lines += ["| field | type | JSON | note |", "|---|---|---|---|"]
        lines += [f"| `{f.name}` | `{_cell(f.python)}` | {f.json} | {_cell(f.note)} |"
                  for f in doc.fields]
    else:
        lines.append("No fields of its own.")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _anchor(name: str) -> str:
    return name.lower().replace(".", "")


# -- source reading ----------------------------------------------------------------------


@cache
def _source(module: str) -> str:
    path = sys.modules[module].__file__
    assert path is not None
    return Path(path).read_text(encoding="utf-8")


@cache
def _class_nodes(module: str) -> dict[str, ast.ClassDef]:
    """Every class written in ``module``, by qualified name."""
    nodes: dict[str, ast.ClassDef] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                name = f"{prefix}{node.name}"
                nodes[name] = node
                walk(node.body, f"{name}.")

    walk(ast.parse(_source(module)).body, "")
    return nodes


@cache
def _comments(module: str) -> dict[int, str]:
    """The comment at the end of each line, by line number."""
    tokens = tokenize.generate_tokens(io.StringIO(_source(module)).readline)
    return {t.start[0]: t.string.lstrip("#").strip()
            for t in tokens if t.type == tokenize.COMMENT}


def _docstring(cls: type[Any]) -> str:
    node = _class_nodes(cls.__module__).get(cls.__qualname__) \
        if cls.__module__ in sys.modules else None
    return (ast.get_docstring(node) or "") if node is not None else ""


def _field_notes(cls: type[Any]) -> dict[str, str]:
    """The comment on each annotated field's line, inherited ones included."""
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        node = _class_nodes(klass.__module__).get(klass.__qualname__) \
            if klass.__module__.startswith("aggregates.") else None
        if node is None:
            continue
        comments = _comments(klass.__module__)
        for child in node.body:
            if isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name):
                note = comments.get(child.end_lineno or child.lineno, "")
                if note:
                    notes[child.target.id] = note
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.cli.catalogue", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file is out of date instead of writing it")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python -m api.cli.catalogue",
                  file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
