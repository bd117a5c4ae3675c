"""The audit read side: state as of a time or version, trails, chain verification, and
event-log export/import, all read straight from the event store.

Why here: every answer is a replay of the event store, not a read model, so it needs
the store (infra), the event types and the state-at logic (:mod:`aggregates.audit`,
pure) together, and only a composition root may wire those; the HTTP route
(``GET /v1/audit/{id}``) and the CLI (``tradecore audit``, ``tradecore events
export|import``) are both in ``api/``, so this module sits beside them. It works on any
eventsourcing application over the store (:func:`open_store` opens a plain one that
writes nothing, unlike ``TradingApplication`` which opens the market on an empty store).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from aggregates import audit
from aggregates.errors import Conflict, NotFound, RuleViolation
from infra.chain import ChainReport, Row, verify_rows
from infra.eventstore import eventsourcing_env
from infra.settings import Settings

PAGE = 20_000
_TIMESTAMP_KEY = b'"timestamp":"'
_STAMP_LENGTH = 27  # 2026-11-20T00:01:02.000000Z

Format = Literal["jsonl", "parquet"]


class TradingStore(Application[UUID]):
    """The trading application's event store (its tables: the same ``name``), read
    through the codec with its snapshots, without the trading application's start-up
    writes (the market it opens on an empty store)."""

    name = "trading"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__({**(env or {}), "IS_SNAPSHOTTING_ENABLED": "y"})


def open_store(settings: Settings) -> Application[UUID]:
    """The configured event store (see :class:`TradingStore`)."""
    return TradingStore(eventsourcing_env(settings))


def _plaintext(app: Application[UUID]) -> Any:
    """Stored state -> the codec's bytes (undoing a configured cipher and compressor)."""
    cipher, compressor = app.mapper.cipher, app.mapper.compressor

    def plain(state: bytes) -> bytes:
        if cipher:
            state = cipher.decrypt(state)
        if compressor:
            state = compressor.decompress(state)
        return state

    return plain if (cipher or compressor) else None


def stored_rows(app: Application[UUID], aggregate_id: UUID | None = None) -> Iterator[Row]:
    """(position, aggregate id, version, topic, codec bytes): the whole log in
    notification order, or one aggregate's events in version order (position None)."""
    plain = _plaintext(app)
    if aggregate_id is not None:
        for s in app.recorder.select_events(aggregate_id):
            state = plain(s.state) if plain else s.state
            yield None, s.originator_id, s.originator_version, s.topic, state
        return
    recorder: Any = app.recorder
    page_of = _raw_pages(recorder)
    after = 0
    while True:
        page = page_of(after)
        if not page:
            return
        if plain:
            page = [(p, i, v, t, plain(s)) for p, i, v, t, s in page]
        yield from page
        after = page[-1][0]


def _raw_pages(recorder: Any) -> Any:
    """``after -> rows``: the next page of the log after notification ``after``.

    Read with one plain query on the library recorder's own datastore and table
    (``datastore``, ``events_table_name``), ids as the store keeps them: building a UUID
    and a Notification object per row cost three times the verification itself. Other
    recorders are read through ``select_notifications``."""
    module = type(recorder).__module__
    datastore = getattr(recorder, "datastore", None)
    table = getattr(recorder, "events_table_name", None)
    if datastore is not None and table is not None and "sqlite" in module:
        sql = (f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
               "WHERE rowid > ? ORDER BY rowid LIMIT ?")

        def sqlite_page(after: int) -> list[Row]:
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(sql, (after, PAGE))
                return cursor.fetchall()  # type: ignore[no-any-return]  # rows unpack as tuples

        return sqlite_page
    if datastore is not None and table is not None and "postgres" in module:
        from psycopg.sql import SQL, Identifier

        query = SQL("SELECT notification_id, originator_id::text, originator_version, topic, "
                    "state FROM {schema}.{table} WHERE notification_id > %s "
                    "ORDER BY notification_id LIMIT %s").format(
            schema=Identifier(datastore.schema), table=Identifier(table))

        def postgres_page(after: int) -> list[Row]:
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(query, (after, PAGE))
                return [tuple(r.values()) for r in cursor.fetchall()]  # type: ignore[misc]

        return postgres_page

    def library_page(after: int) -> list[Row]:
        return [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in recorder.select_notifications(after + 1, PAGE)]

    return library_page


def verify(app: Application[UUID], aggregate_id: UUID | None = None) -> ChainReport:
    """Walk the store (or one aggregate) and check every hash chain."""
    if aggregate_id is not None and not app.recorder.select_events(aggregate_id, limit=1):
        raise NotFound("aggregate", "exists", str(aggregate_id),
                       f"aggregate={aggregate_id} breaks rule 'exists' (no events)")
    return verify_rows(stored_rows(app, aggregate_id))


# -- state as of a version or a time -------------------------------------------------------


def parse_id(value: str, field: str = "aggregate_id") -> UUID:
    """An aggregate id from the command line or a URL, or a clear error."""
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise RuleViolation(field, "a UUID like 0f6c9c8e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
                            value) from None


def parse_time(value: str, field: str = "as_of") -> datetime:
    """An ISO 8601 time with its offset (``Z`` or ``+09:00``); naive is refused, since
    a wall-clock time without its zone names no moment."""
    try:
        moment = datetime.fromisoformat(value)
    except (ValueError, TypeError):
        raise RuleViolation(field, "an ISO 8601 time with offset, e.g. "
                            "2026-11-20T09:00:00.000000+09:00", value) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RuleViolation(field, "timezone-aware (end with Z or an offset like +09:00)",
                            value)
    return moment


def unknown(aggregate_id: UUID) -> NotFound:
    """The answer to an id with no events (and, over HTTP, to one the caller may not see)."""
    return NotFound("aggregate_id", "exists", str(aggregate_id), f"no aggregate {aggregate_id}")


@dataclass(frozen=True)
class AsOf:
    """The aggregate rebuilt at one point, how, and what it belongs to."""

    aggregate_id: UUID
    version: int
    last_version: int
    aggregate: Any
    from_snapshot: int | None  # the snapshot's version the rebuild started from
    account_id: UUID | None


def _stamp(app: Application[UUID], s: StoredEvent, plain: Any) -> str:
    """The event's timestamp as the codec writes it, read without decoding the event."""
    state = plain(s.state) if plain else s.state
    at = state.find(_TIMESTAMP_KEY)
    if at >= 0:
        start = at + len(_TIMESTAMP_KEY)
        stamp = bytes(state[start:start + _STAMP_LENGTH])
        if stamp.endswith(b"Z") and stamp[4:5] == b"-":
            return stamp.decode()
    event: Any = app.mapper.to_domain_event(s)  # an older stored form
    return audit.utc_text(event.timestamp)


def _version_at(app: Application[UUID], aggregate_id: UUID, limit: str, last: int,
                as_of: datetime) -> int:
    """The last version recorded at or before ``limit`` (UTC text), found by bisection
    over the versions, a point read each (about 14 for 10,000 events), instead of
    reading every event: an aggregate's events are stamped in version order (its
    writers are serialised by the store's optimistic concurrency, each stamping with
    the clock as it decides)."""
    plain = _plaintext(app)
    recorder = app.recorder

    def stamp(version: int) -> str:
        return _stamp(app, recorder.select_events(aggregate_id, gt=version - 1,
                                                  lte=version)[0], plain)

    first = stamp(1)
    if first > limit:
        raise RuleViolation("as_of", f"at or after the aggregate's first event ({first})",
                            as_of.isoformat())
    low, high = 1, last
    if stamp(last) <= limit:
        return last
    while high - low > 1:  # stamp(low) <= limit < stamp(high)
        middle = (low + high) // 2
        if stamp(middle) <= limit:
            low = middle
        else:
            high = middle
    return low


def state_at(app: Application[UUID], aggregate_id: UUID, *, as_of: datetime | None = None,
             version: int | None = None) -> AsOf:
    """The aggregate as it was after ``version``, or after its last event recorded at
    or before ``as_of`` (a time before its first event is an error, as is asking both):
    the newest snapshot at or before that version, then the events after it."""
    if as_of is not None and version is not None:
        raise RuleViolation("as_of", "either as_of or version, not both",
                            f"as_of={as_of.isoformat()}, version={version}")
    if as_of is not None and (as_of.tzinfo is None or as_of.utcoffset() is None):
        raise RuleViolation("as_of", "timezone-aware (end with Z or an offset like +09:00)",
                            as_of.isoformat())
    recorder = app.recorder
    newest = recorder.select_events(aggregate_id, desc=True, limit=1)
    if not newest:
        raise unknown(aggregate_id)
    last = newest[0].originator_version
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= last:
            raise RuleViolation("version", f"an integer from 1 to {last} (the last version)",
                                version)
        target = version
    elif as_of is not None:
        target = _version_at(app, aggregate_id, audit.utc_text(as_of), last, as_of)
    else:
        target = last
    start: Any = None
    after: int | None = None
    if app.snapshots is not None:
        for snapshot in app.snapshots.get(aggregate_id, lte=target, desc=True, limit=1):
            start = snapshot.mutate(None)  # type: ignore[attr-defined]
            after = snapshot.originator_version
    aggregate = audit.fold(start, app.events.get(aggregate_id, gt=after, lte=target))
    return AsOf(aggregate_id, target, last, aggregate, after, audit.account_of(aggregate))


def show(app: Application[UUID], aggregate_id: UUID, *, as_of: datetime | None = None,
         version: int | None = None, found: AsOf | None = None) -> dict[str, Any]:
    """State at the point asked (the newest by default) and the aggregate's full history
    (``found``: the state already rebuilt, e.g. to decide who may see it)."""
    if found is None:
        found = state_at(app, aggregate_id, as_of=as_of, version=version)
    return {
        "aggregate_id": str(aggregate_id),
        "kind": audit.kind_of(found.aggregate),
        "as_of": audit.utc_text(as_of) if as_of is not None else None,
        "version": found.version,
        "last_version": found.last_version,
        "rebuilt_from_snapshot": found.from_snapshot,
        "account_id": str(found.account_id) if found.account_id else None,
        "state": audit.state_of(found.aggregate),
        "history": [audit.entry(e) for e in app.events.get(aggregate_id)],
    }


def trail(app: Application[UUID], order_id: UUID) -> list[dict[str, Any]]:
    """Everything an order set off, across aggregates, in notification order: the
    events of every flow its own events belong to (by correlation id: its placement,
    amends and cancels, and what the saga and the venue did for them, on both
    accounts and positions), and the venue reports that name it (as maker, too)."""
    own: list[Any] = list(app.events.get(order_id))
    if not own:
        raise NotFound("order_id", "exists", str(order_id), f"no order {order_id}")
    if audit.kind_of(own[0]) != "order":
        raise RuleViolation("order_id", "the id of an order", str(order_id),
                            f"order_id={order_id} is a {audit.kind_of(own[0])}, not an order")
    flows = {e.correlation_id for e in own}
    needles = [c.encode() for c in flows] + [str(order_id).encode()]
    mapper = app.mapper
    out: list[dict[str, Any]] = []
    for position, aggregate_id, version, topic, state in stored_rows(app):
        if not any(n in state for n in needles):
            continue
        event: Any = mapper.to_domain_event(StoredEvent(aggregate_id, version, topic, state))
        if (event.correlation_id in flows or event.originator_id == order_id
                or _names(event, order_id)):
            out.append({"position": position, "kind": audit.kind_of(event),
                        **audit.entry(event)})
    return out


def _names(event: Any, order_id: UUID) -> bool:
    """A venue report about the order, or whose fills name it (taker or maker)."""
    if audit.kind_of(event) != "venue":
        return False
    if event.order_id == order_id:
        return True
    text = str(order_id)
    return any(text in json.dumps(r, default=str) for r in event.reports)


# -- export / import -----------------------------------------------------------------------


def export_events(app: Application[UUID], out: Path, fmt: Format) -> int:
    """Write every stored event (position, id, version, topic, the stored state bytes as
    they are) in notification order; the number written."""
    if fmt not in ("jsonl", "parquet"):
        raise RuleViolation("format", "jsonl or parquet", fmt)
    recorder: Any = app.recorder
    rows: list[tuple[int, str, int, str, bytes]] = []
    start = 1
    while page := recorder.select_notifications(start, PAGE):
        rows += [(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state))
                 for n in page]
        start = page[-1].id + 1
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if fmt == "jsonl":
        with partial.open("w", encoding="utf-8") as f:
            for position, aggregate_id, version, topic, state in rows:
                f.write(json.dumps(_jsonl_row(position, aggregate_id, version, topic, state),
                                   ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "position": pa.array([r[0] for r in rows], pa.int64()),
            "originator_id": pa.array([r[1] for r in rows], pa.string()),
            "originator_version": pa.array([r[2] for r in rows], pa.int64()),
            "topic": pa.array([r[3] for r in rows], pa.string()),
            "state": pa.array([r[4] for r in rows], pa.binary()),
        })
        pq.write_table(table, partial)
    partial.replace(out)  # a reader never sees half a file
    return len(rows)


def _jsonl_row(position: int, aggregate_id: str, version: int, topic: str, state: bytes
               ) -> dict[str, Any]:
    row: dict[str, Any] = {"position": position, "originator_id": aggregate_id,
                           "originator_version": version, "topic": topic}
    try:
        row["state"] = state.decode("utf-8")  # the codec's JSON: readable as it is
    except UnicodeDecodeError:  # compressed or encrypted
        row["state_base64"] = base64.b64encode(state).decode("ascii")
    return row


def read_export(path: Path) -> list[tuple[int, str, int, str, bytes]]:
    """The rows of an export (JSONL or Parquet, told apart by their first bytes)."""
    if not path.is_file():
        raise NotFound("IN", "an existing file", str(path), f"no file {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            cols = [table.column(name).to_pylist() for name in
                    ("position", "originator_id", "originator_version", "topic", "state")]
        except (KeyError, ValueError, OSError) as exc:
            raise RuleViolation("IN", "a Parquet export of `tradecore events export`",
                                str(path), f"IN={path}: not an event export ({exc})") from None
        return list(zip(*cols, strict=True))
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                state = (item["state"].encode("utf-8") if "state" in item
                         else base64.b64decode(item["state_base64"], validate=True))
                rows.append((int(item["position"]), str(item["originator_id"]),
                             int(item["originator_version"]), str(item["topic"]), state))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise RuleViolation("IN", "JSONL rows of `tradecore events export`",
                                    f"{path}:{number}",
                                    f"IN={path} line {number}: not an event row ({exc})"
                                    ) from None
    return rows


def import_events(app: Application[UUID], path: Path) -> int:
    """Store an export's events, in its order, into an EMPTY store, in one transaction
    (all or nothing); the number stored. A store with any event is refused."""
    rows = read_export(path)
    if app.recorder.max_notification_id():  # type: ignore[attr-defined]
        raise Conflict("store", "empty before an import", "non-empty",
                       "store=non-empty breaks rule 'empty before an import' (import into "
                       "a fresh store: another TRADECORE_SQLITE_PATH or schema)")
    positions = [r[0] for r in rows]
    if positions != sorted(positions) or len(set(positions)) != len(positions):
        raise RuleViolation("IN", "rows in increasing position order", str(path))
    events = [StoredEvent(originator_id=UUID(aggregate_id), originator_version=version,
                          topic=topic, state=state)
              for _, aggregate_id, version, topic, state in rows]
    if events:
        app.recorder.insert_events(events)
    return len(events)


def positions_of(app: Application[UUID]) -> Sequence[int]:
    """The notification ids of the store, in order (to compare an import with its export)."""
    return [row[0] or 0 for row in stored_rows(app)]
