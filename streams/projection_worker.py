"""Projection workers: the read models projected by processes of their own, by projection.

``tradecore worker projections --projection orders --projection balances`` runs
:func:`projection_worker`: one :class:`~projections.projectors.Projector` over the named
projections (all four when none is named), following the event store's notification
log. Why by projection: each projection has its own tracking row and reads only the
events it handles, so ``orders`` and ``positions`` in two processes decode disjoint
parts of the log on two cores instead of one.

- **Fenced per projection** (:class:`ProjectionFence`): a worker takes one fence per
  projection it runs (``projection:<name>@trading:0``, in name order), so two workers
  never run the same projection; a second worker for it waits as a hot standby and
  takes over when the first dies (kill -9 included: the fence is a PostgreSQL session
  lock or a flock). ``tradecore serve``'s in-process projector takes the same fences.
- **Exactly once**: a batch's rows and its tracking rows are one read-model transaction,
  so a worker killed anywhere resumes after the last committed batch.
- **Positions stay notification ids of the whole log**: a worker reads only its topics,
  but a batch that reaches the head ends on the head's own notification
  (:class:`~projections.projectors.RecorderLog`), so a projection whose events are
  rare is not reported behind, and read-your-writes waits on it do not stall.

- **By share of the aggregates** where that is sound: the projections whose rows each
  depend on one aggregate's events (``balances``, ``halts``) split into
  ``TRADECORE_PROJECTION_SHARES`` shares (``balances#0of2``, ``balances#1of2``; see
  :func:`projections.projectors.share`), each with its own tracking row and fence, so a
  worker per share (``--projection balances#1of2``) scales one projection past a core.
  ``orders`` (bars mix a symbol's orders) and ``positions`` (marks and PnL cross
  accounts) stay whole; ``docs/read-models.md`` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Gauge

from aggregates.application import TradingApplication
from infra.eventstore import open_event_store
from infra.locks import Fence, stage_fence
from infra.settings import Settings
from projections.projectors import (
    Projection,
    Projector,
    RecorderLog,
    all_projections,
    check_layout,
    select,
    topics_of,
)
from projections.schema import upgrade
from projections.store import ReadStore
from streams.processor import TrackedProcessor

log = logging.getLogger("tradecore.projections")

# A worker's /metrics (``streams.worker``): where each of its projections is. Named apart
# from the API's ``tradecore_projection_lag_events``: `serve` imports this module too.
POSITION = Gauge("tradecore_projection_worker_position",
                 "Last notification a projection worker committed", ["projection"])
LAG = Gauge("tradecore_projection_worker_lag_events",
            "Notifications stored but not yet projected by this worker", ["projection"])


def open_event_log(settings: Settings) -> tuple[RecorderLog, Callable[[], None]]:
    """The trading application's notification log, opened to be read (no aggregates, no
    stages), and how to close it."""

    store = open_event_store(settings, TradingApplication.name)
    return RecorderLog(store.recorder, store.mapper), store.close


def projection_fence_key(name: str) -> str:
    return f"projection:{name}@trading:0"


class ProjectionFence:
    """One fence per projection, held together: all of them or none.

    Taken in name order, so workers of overlapping sets (``--projection orders`` and
    one running every projection) cannot deadlock: whoever has the first name in common
    goes first, the other waits.
    """

    def __init__(self, fences: Sequence[Fence]) -> None:
        self.fences = sorted(fences, key=lambda f: f.name)
        self.name = "+".join(f.name for f in self.fences)

    @property
    def held(self) -> bool:
        return all(f.held for f in self.fences)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        deadline = None if timeout < 0 else time.monotonic() + timeout
        taken: list[Fence] = []
        for fence in self.fences:
            left = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
            if fence.held or fence.acquire(blocking, left):
                taken.append(fence)
                continue
            for got in taken:  # all or none: never sit on some while waiting for others
                got.release()
            return False
        return True

    def release(self) -> None:
        for fence in reversed(self.fences):
            fence.release()


def projection_fence(settings: Settings, names: Sequence[str] = ()) -> ProjectionFence:
    """The fences of the named projections (every projection when none is named)."""
    chosen = select(all_projections(settings.projection_shares), names)
    return ProjectionFence([stage_fence(settings, projection_fence_key(p.name))
                            for p in chosen])


class LogSource:
    """The notification log as a projector's :class:`streams.bus.Source`: only the
    events of its projections are read and decoded, positions are the log's own."""

    def __init__(self, log: RecorderLog, *, poll_s: float = 0.05) -> None:
        self.log = log
        self.name = "trading"
        self.partition = 0
        self.poll_s = poll_s

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        return self.log.select(after + 1, limit)

    def pending(self, after: int, cap: int) -> int:
        return min(max(self.head() - after, 0), cap)

    def head(self) -> int:
        return self.log.head()

    def wait(self, timeout: float) -> None:
        threading.Event().wait(min(timeout, self.poll_s))


class ProjectionWorker:
    """A :class:`streams.worker.Runnable`: the named projections, fenced, following the
    log until stopped. ``open_store``/``open_log`` default to the settings' read-model
    database (migrated on start) and event store."""

    def __init__(self, settings: Settings, names: Sequence[str] = (), *,
                 open_store: Callable[[], ReadStore] | None = None,
                 open_log: Callable[[], tuple[RecorderLog, Callable[[], None]]] | None = None,
                 batch_size: int | None = None) -> None:
        self.settings = settings
        self.projections: list[Projection] = select(
            all_projections(settings.projection_shares), names)
        self.names = [p.name for p in self.projections]
        self.name = "projections" if not names else f"projections[{','.join(self.names)}]"
        self.batch_size = batch_size or settings.projection_batch_size
        self._open_store = open_store or (lambda: _migrated(ReadStore.from_settings(settings)))
        self._open_log = open_log or (lambda: open_event_log(settings))
        self.fence = projection_fence(settings, self.names)
        self.processor: TrackedProcessor | None = None
        self.position: int | None = None  # after the last batch this worker committed
        self._log: RecorderLog | None = None

    def run(self, stop: threading.Event) -> None:
        """Open the log and the read models, then run the tracked processor: it waits for
        the fences, follows the log, and retries (logged, reported by :meth:`health`)
        whatever fails, until ``stop`` is set; the batch in hand is committed first."""
        while not stop.is_set():
            try:
                store = self._open_store()
            except Exception:
                log.exception("%s: read-model database unreachable; retrying", self.name)
                stop.wait(1.0)
                continue
            try:
                event_log, close = self._open_log()
            except Exception:
                store.close()
                log.exception("%s: event store unreachable; retrying", self.name)
                stop.wait(1.0)
                continue
            try:
                filtered = RecorderLog(event_log.recorder, event_log.mapper,
                                       topics=topics_of(self.projections))
                self._log = filtered
                projector = Projector(store, filtered, projections=self.projections,
                                      batch_size=self.batch_size)
                projector.committed.append(self._committed)
                self.processor = TrackedProcessor(projector, LogSource(filtered),
                                                  batch_size=self.batch_size,
                                                  fence=self.fence)
                self.processor.run(_UntilLost(stop, store))
                if store.lost and not stop.is_set():
                    log.warning("%s: read-model connection lost; reconnecting", self.name)
            finally:
                self._log = None
                close()
                store.close()

    def _committed(self, position: int) -> None:
        self.position = position
        head = self._log.head() if self._log is not None else position
        for name in self.names:
            POSITION.labels(name).set(position)
            LAG.labels(name).set(max(head - position, 0))

    def health(self) -> dict[str, Any]:
        """From the health server's threads: only what the running thread published
        (its last committed position) and the log's head, never the projector's own
        connection, which is the running thread's."""
        processor, head = self.processor, None
        if self._log is not None:
            try:
                head = self._log.head()
            except Exception as err:  # the event store down: not ready, say why
                return {"ready": False, "state": "failed", "projections": self.names,
                        "error": repr(err)}
        state = ("starting" if processor is None else "failed" if processor.error
                 else "running" if processor.started
                 else "starting" if processor.starting else "waiting")
        return {"ready": state == "running", "state": state, "projections": self.names,
                "fence": self.fence.name, "position": self.position, "head": head,
                "behind": None if head is None or self.position is None
                else max(head - self.position, 0),
                "error": None if processor is None or processor.error is None
                else repr(processor.error)}


class _UntilLost(threading.Event):
    """The processor's stop: the worker's own, or its read-model connection cut (the
    processor would retry on the dead connection forever; the worker reconnects)."""

    def __init__(self, stop: threading.Event, store: ReadStore) -> None:
        super().__init__()
        self.stop, self.store = stop, store

    def is_set(self) -> bool:
        return self.stop.is_set() or self.store.lost

    def wait(self, timeout: float | None = None) -> bool:
        return self.stop.wait(timeout) or self.is_set()


def _migrated(store: ReadStore) -> ReadStore:
    upgrade(store)
    return store


def projection_worker(settings: Settings, names: list[str]) -> ProjectionWorker:
    """The ``tradecore worker projections`` runnable: ``names`` (all when empty), each
    with its own tracking row, fenced per projection. Raises ``ValueError`` naming an
    unknown projection, or (``LayoutChanged``) read models projected with other
    ``projection_shares`` than these settings say."""
    worker = ProjectionWorker(settings, names)
    store = _migrated(ReadStore.from_settings(settings))
    try:
        check_layout(dict(store.fetchall("SELECT name, position FROM projection_tracking")),
                     worker.projections)
    finally:
        store.close()
    return worker
