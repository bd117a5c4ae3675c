"""The tracked processor: the one runner every stage of the order flow uses.

"Read a source in order, apply what you read, store the effects together with a
tracking record of the input position in ONE transaction, resume from the tracking
record." The saga, the matching stage and the projectors are such *steps*; this module
runs them, the same way in a thread of ``tradecore serve``, in the CLI's catch-up, and
in a ``tradecore worker`` on Kafka (``streams/kafka_bus.py``).

- It wakes on new input (the bus's signal, or polling the store for other processes'
  writes) and on start-up, never only after a command.
- A stage that must be single per partition holds a :class:`infra.locks.Fence` while it
  runs; a second one waits for it.
- A failed batch stores nothing (one transaction); the step's memory is rebuilt from
  its tracked position and the batch is tried again. An optimistic-concurrency
  conflict (another writer moved an aggregate first) is retried at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError, Tracking

from infra.locks import Fence
from streams.bus import Source

log = logging.getLogger("tradecore.stages")


class Step(Protocol):
    """What the processor drives: a stage with its sink."""

    name: str

    def position(self, key: str, fresh: bool = False) -> int:
        """The last input position whose effects are stored under ``key`` (``fresh``:
        read it again, another process may have moved it)."""

    def start(self, key: str, source: Source) -> None:
        """Rebuild in-memory state up to the tracked position (after a restart/failure)."""

    def process(self, key: str, batch: list[tuple[int, Any]]) -> None:
        """Apply ``batch``; store effects and its last position in one transaction."""


class Stage(Protocol):
    """A stage whose effects are new domain events in the event store."""

    name: str
    topics: Sequence[str]

    def start(self, tracked: int, source: Source) -> None: ...
    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]: ...
    def committed(self, position: int) -> None: ...


class EventStoreStep:
    """A :class:`Stage` whose events go to an eventsourcing application's store, with
    the tracking record in the same transaction (``events.put(..., tracking=)``)."""

    def __init__(self, stage: Stage, app: Any, *,
                 guard: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 legacy_tracking: str | None = None) -> None:
        self.stage = stage
        self.name = stage.name
        self.app = app
        # A store written before the stages has no record under this stage's key: its
        # position is the record an older single-process flow kept under this name.
        self.legacy_tracking = legacy_tracking
        # entered around apply + store when the stage decides on what this process's
        # commands decide on too (TradingApplication.deciding: one lock, one cache)
        self.guard = guard
        self._tracked: dict[str, int] = {}

    def position(self, key: str, fresh: bool = False) -> int:
        if fresh or key not in self._tracked:
            found = self.app.recorder.max_tracking_id(key)
            if found is None and self.legacy_tracking is not None:
                found = self.app.recorder.max_tracking_id(self.legacy_tracking)
            self._tracked[key] = int(found or 0)
        return self._tracked[key]

    def start(self, key: str, source: Source) -> None:
        self._tracked.pop(key, None)
        self.stage.start(self.position(key), source)

    def process(self, key: str, batch: list[tuple[int, Any]]) -> None:
        last = batch[-1][0]
        try:
            with self.guard():
                events = self.stage.apply(batch)
                recordings = self.app.events.put(events, tracking=Tracking(key, last))
        except BaseException:
            self._tracked.pop(key, None)
            raise
        self._tracked[key] = last
        if recordings:
            self.app.published(recordings[-1].notification.id)
        self.stage.committed(last)


@dataclass(frozen=True)
class Lag:
    """Where a stage is: its tracked position and how many inputs wait for it."""

    name: str
    position: int
    behind: int
    head: int
    running: bool = True  # this process runs it (else another process holds its fence)
    error: str | None = None
    state: str = "running"  # waiting (for its fence) | starting | running | failed


class TrackedProcessor:
    def __init__(self, step: Step, source: Source, *, batch_size: int = 256,
                 fence: Fence | None = None, pending_cap: int = 10_000) -> None:
        self.step = step
        self.source = source
        self.batch_size = batch_size
        self.fence = fence
        self.pending_cap = pending_cap
        self.key = f"{step.name}@{source.name}:{source.partition}"
        self.started = False
        self.starting = False  # fence taken, memory being rebuilt
        self.error: BaseException | None = None
        self.conflicts = 0  # batches decided again after another writer moved first

    @property
    def name(self) -> str:
        return self.step.name

    # -- lifecycle -----------------------------------------------------------------------
    def open(self, *, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the fence (waiting for another holder unless ``blocking`` is false) and
        rebuild the step's memory; False when the fence is held elsewhere."""
        if (self.fence is not None and not self.fence.held
                and not self.fence.acquire(blocking, timeout)):
            return False
        self.starting = True
        try:
            self.step.start(self.key, self.source)
        finally:
            self.starting = False
        self.started = True
        return True

    def close(self) -> None:
        self.started = False
        if self.fence is not None:
            self.fence.release()

    # -- running -------------------------------------------------------------------------
    def run_once(self) -> int:
        """Process the next batch; the number of inputs it covered (0: none waiting)."""
        assert self.started, f"{self.key}: open() first"
        position = self.step.position(self.key)
        batch = self.source.read(position, self.batch_size)
        if not batch:
            return 0
        try:
            for attempt in range(100):
                try:
                    self.step.process(self.key, batch)
                    return len(batch)
                except IntegrityError:
                    # Another writer moved an aggregate this batch changed: rebuild and
                    # decide the same inputs again on fresh state.
                    self.conflicts += 1
                    self.step.start(self.key, self.source)
                    if self.step.position(self.key) != position:
                        return 0  # someone else stored this batch (a fence was bypassed)
                    time.sleep(min(0.001 * attempt, 0.05))
            raise RuntimeError(f"{self.key}: batch after {position} kept conflicting")
        except BaseException:
            self.started = False  # memory may be ahead of the store: rebuild before more
            raise

    def catch_up(self) -> int:
        done = 0
        if not self.started:
            self.open()
        while n := self.run_once():
            done += n
        return done

    def run(self, stop: threading.Event, *, idle_s: float = 0.5) -> None:
        """Run until ``stop`` is set: wait for the fence, then follow the source. A
        failure (the store down, a bug) is logged, reported by :meth:`lag`, and retried
        from the tracked position after a second; the thread never dies of it."""
        try:
            while not stop.is_set():
                try:
                    if not self.started and not self.open(blocking=True, timeout=0.5):
                        continue  # another process holds the fence: keep waiting
                    if self.run_once():
                        self.error = None
                        continue
                    self.error = None
                except Exception as err:  # keep the stage alive; readiness reports it
                    log.exception("%s failed; rebuilding and retrying", self.key)
                    self.error = err
                    self.started = False
                    stop.wait(1.0)
                    continue
                self.source.wait(idle_s)
        finally:
            self.close()

    # -- reporting -----------------------------------------------------------------------
    def lag(self) -> Lag:
        position = self.step.position(self.key, fresh=not self.started)
        state = ("failed" if self.error is not None else "running" if self.started
                 else "starting" if self.starting else "waiting")
        return Lag(self.key, position, self.source.pending(position, self.pending_cap),
                   self.source.head(), self.started,
                   None if self.error is None else repr(self.error), state)


def tracking_key(stage: str, source: str = "trading", partition: int = 0) -> str:
    return f"{stage}@{source}:{partition}"
