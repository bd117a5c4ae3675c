"""The set-based rebuild: a whole log into empty read models, in bulk, in one transaction.

``Projector.rebuild`` projects the log again batch by batch, as a live projector does:
every batch reads the rows it changes back from the database, upserts current rows and
maintains every secondary index row by row. A rebuild from the start needs none of that:
the tables are empty, so nothing has to be read back, and every current row is final only
at the end. This module runs the *same* projection handlers (one code path for the rows,
so both rebuilds write the same rows) over the whole log with the database reads answered
"empty" (:class:`EmptyTables`), keeps current rows in memory, and loads:

- history rows (order events, fills, ledger, position history, PnL) with ``COPY`` after
  every chunk of the log (memory stays bounded by the current rows);
- current rows (orders, positions, balances, marks, bars, halts) with one ``COPY`` each
  at the end, instead of one upsert per row per batch;
- into tables whose secondary indexes were dropped first and are built once after the
  load (an index built from sorted input is far cheaper than one kept up to date row by
  row); primary keys stay, they guard the load.

All of it, and the tracking rows, happen in ONE read-model transaction (PostgreSQL and
SQLite both have transactional DDL): killed anywhere, the rebuild leaves the read models
and their tracking exactly as they were before it started, and a new rebuild (or the
running projector) starts cleanly from there.

A projector running meanwhile (``tradecore serve``, ``tradecore worker projections``)
keeps today's semantics: the rebuild holds each of its projections' batch locks
(PostgreSQL advisory transaction locks; SQLite's write lock) until it commits, so the
projector's next batch waits, then finds the tracked positions moved, drops its caches
and carries on from the end of the rebuild.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from projections.projectors import (
    EventLog,
    Projection,
    RecorderLog,
    all_projections,
    forget_tracking,
    lock_projections,
    topics_of,
    whole_families,
)
from projections.store import ReadStore


class EmptyTables:
    """The read-model store as a rebuild's projections see it: every table empty.

    Handlers read a row back only when it is not in memory (a current row made in an
    earlier batch, an account's last fees); in a rebuild from the start every such row
    was made by this rebuild and is still in memory, so the database is never asked.
    """

    def __init__(self, store: ReadStore) -> None:
        self.store = store
        self.dialect = store.dialect

    def fetchone(self, statement: str, params: Sequence[Any] = ()) -> None:
        return None

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return []

    def ts(self, moment: datetime) -> Any:
        return self.store.ts(moment)


@dataclass(frozen=True)
class Index:
    """A secondary index dropped for the load and built again after it."""

    name: str
    definition: str  # the CREATE INDEX statement that makes it again


def secondary_indexes(store: ReadStore, tables: Sequence[str]) -> list[Index]:
    """The indexes of ``tables`` that no constraint owns (primary keys stay)."""
    if store.dialect == "postgres":
        rows = store.fetchall(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = "
            "current_schema() AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
            "pg_constraint c WHERE c.conname = i.indexname AND c.connamespace = "
            "current_schema()::regnamespace) ORDER BY i.indexname", (list(tables),))
    else:
        marks = ", ".join("%s" for _ in tables)
        rows = store.fetchall(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN "
            f"({marks}) AND sql IS NOT NULL ORDER BY name", tuple(tables))
    return [Index(str(name), str(sql)) for name, sql in rows]


def _empty(store: ReadStore, tables: Sequence[str], projections: Sequence[Projection]
           ) -> None:
    if store.dialect == "postgres":
        # TRUNCATE drops a hypertable's chunks instead of deleting row by row
        store.execute(f"TRUNCATE {', '.join(tables)}")
    else:
        for table in tables:
            store.execute(f"DELETE FROM {table}")
    forget_tracking(store, projections)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Loader:
    """Loads history rows on a thread of its own while the caller computes the next
    chunk: the database works on one chunk (PostgreSQL in its own process) while Python
    turns the next into rows, instead of each waiting for the other.

    The caller's connection is used from this thread only between :meth:`load` and
    :meth:`finish`, while the caller does not touch it (the handlers read nothing: the
    tables are empty); a failed load is raised in the caller by the next call.
    """

    def __init__(self, store: ReadStore, depth: int = 2) -> None:
        self.store = store
        self.jobs: queue.Queue[list[tuple[str, Sequence[str], list[Any]]] | None] = (
            queue.Queue(maxsize=depth))
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rebuild-loader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.failed is not None:
                continue  # drain: the caller stops at its next call
            try:
                for table, columns, rows in job:
                    self.store.insert(table, columns, rows)
            except BaseException as err:  # handed to the caller
                self.failed = err

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed

    def load(self, job: list[tuple[str, Sequence[str], list[Any]]]) -> None:
        self._check()
        self.jobs.put(job)

    def close(self) -> None:
        """Wait for the loads in hand (whatever happened: the connection is the
        caller's again after this)."""
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()

    def finish(self) -> None:
        """Wait for every load; raise the first that failed."""
        self.close()
        self._check()


def rebuild(store: ReadStore, log: EventLog, projections: Sequence[Projection] | None = None,
            *, until: Callable[[int, Any], bool] | None = None, chunk: int = 20_000) -> int:
    """Empty ``projections``' tables and project the whole log (up to ``until``) again,
    in bulk and in one transaction; the notifications it covered (the log is numbered
    from 1 without gaps: the position it reached).

    Without ``until``, a log of the whole store (a :class:`RecorderLog` without topics) is
    read by topic, as the backtest's projector reads it: events stored under a topic
    since renamed (``register_topic``) would be skipped; none is, today."""
    chosen = whole_families(list(projections) if projections is not None
                            else all_projections())
    if until is None and isinstance(log, RecorderLog) and not log.topics:
        # only the events these projections handle are read and decoded (a tenth of an
        # order flow's log is venue reports); the filtered log still ends on the head,
        # so the tracked positions are the ones reading the whole log gives
        log = RecorderLog(log.recorder, log.mapper, topics=topics_of(chosen))
    names = sorted(p.name for p in chosen)
    tables = list(dict.fromkeys(t for p in chosen for t in p.tables))  # shares share them
    blank = cast(ReadStore, EmptyTables(store))
    handlers: dict[type, list[Callable[[Any, int, Any], None]]] = {}
    for projection in chosen:
        projection.clear()
        projection.store = blank
        projection.collect_updates = False
        for kind, handler in projection.handlers.items():
            handlers.setdefault(kind, []).append(handler)
    last = 0
    try:
        with store.transaction():
            lock_projections(store, names)
            indexes = secondary_indexes(store, tables)
            for index in indexes:
                assert _IDENT.match(index.name), index.name
                store.execute(f'DROP INDEX "{index.name}"')
            _empty(store, tables, chosen)
            ts = store.ts
            start, stopped = 1, False
            loader = Loader(store)
            try:
                while not stopped:
                    batch = log.select(start, chunk)
                    if until is not None:
                        for i, (seq, event) in enumerate(batch):
                            if until(seq, event):
                                batch, stopped = batch[:i], True
                                break
                    if not batch:
                        break
                    for seq, event in batch:
                        applies = handlers.get(type(event))
                        if applies is not None:
                            at = ts(event.timestamp)
                            for handler in applies:
                                handler(event, seq, at)
                    job: list[tuple[str, Sequence[str], list[Any]]] = []
                    for projection in chosen:
                        for history in projection.histories:
                            job.append((history.table, history.columns, history.rows))
                            history.rows = []
                    loader.load(job)
                    last = batch[-1][0]
                    start = last + 1
                loader.finish()
            finally:
                loader.close()
            for projection in chosen:
                projection.load(store)
            for index in indexes:
                store.execute(index.definition)
            if last:
                now = store.ts(datetime.now(UTC))
                store.executemany(
                    "INSERT INTO projection_tracking (name, position, updated_at) "
                    "VALUES (%s, %s, %s)", [(name, last, now) for name in names])
    finally:
        for projection in chosen:
            projection.clear()
            projection.store = store
    return last
