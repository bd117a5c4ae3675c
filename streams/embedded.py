"""Every stage of the order flow over one event store: threads in ``tradecore serve``,
or stepped in the caller's thread (the CLI after a command, tests, backtests).

    command API / CLI -> event store -> saga -> matching -> saga -> projections

Each stage is a :class:`streams.processor.TrackedProcessor` reading the store's
notification log (the in-process bus). Each is fenced: one of each per store runs, in
whichever process took the fence first; the others wait and take over when it dies.
(The projector also checks, inside each batch's transaction, that nobody moved its
positions, so a rebuild from the CLI never races it into applying a batch twice.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from aggregates.application import TradingApplication
from infra.locks import Fence
from streams.bus import EventLogSource, Signal
from streams.matching import MatchingStage
from streams.processor import EventStoreStep, Lag, TrackedProcessor, tracking_key
from streams.saga import saga_for

log = logging.getLogger("tradecore.stages")

FenceFor = Callable[[str], Fence | None]

LEGACY_TRACKING = "trading"
"""Where the single-process flow before the stages (commit d07d3ea and earlier) kept its
position: its saga also drove the venue, so on such a store the saga and the matching
stage both start from there (the venue rebuilding its books from the routed events up to
it, their outputs already stored), and nothing already done is done again."""


class Stages:
    """The saga, the matching stage and (when given a projector) the projections."""

    def __init__(self, app: TradingApplication, matching: MatchingStage, *,
                 projector: Any = None, fence_for: FenceFor = lambda key: None,
                 saga_batch_size: int = 256, matching_batch_size: int = 1024,
                 projection_batch_size: int = 2000, poll_s: float = 0.1) -> None:
        self.app = app
        self.signal = Signal()
        if matching.chain_head is None:  # its venue streams' chain heads, after a restart
            matching.chain_head = app.chain_head
        app.listeners.append(self.signal.raise_)

        def source(topics: Any) -> EventLogSource:
            return EventLogSource(app.recorder, app.mapper, topics=topics,
                                  signal=self.signal, poll_s=poll_s)

        saga = saga_for(app)
        self.saga = TrackedProcessor(
            EventStoreStep(saga, app, guard=app.deciding, legacy_tracking=LEGACY_TRACKING),
            source(saga.topics),
            batch_size=saga_batch_size,
            fence=fence_for(tracking_key(saga.name)))
        self.matching = TrackedProcessor(
            EventStoreStep(matching, app, legacy_tracking=LEGACY_TRACKING),
            source(matching.topics),
            batch_size=matching_batch_size, fence=fence_for(tracking_key(matching.name)))
        self.processors = [self.saga, self.matching]
        self.projections: TrackedProcessor | None = None
        if projector is not None:
            # fenced too: one projector per read-model database does the work (a second
            # would only lose every batch to the first); the others follow the read models
            self.projections = TrackedProcessor(
                projector, source(()), batch_size=projection_batch_size,
                fence=fence_for(tracking_key(projector.name)))
            self.processors.append(self.projections)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- stepped in the caller's thread ---------------------------------------------------
    def settle(self, max_rounds: int = 10_000) -> int:
        """Run every stage this process may run until none has input left; the number of
        inputs processed. A stage fenced by another process (a running server) is left
        to that process."""
        done = 0
        with self._lock:
            runnable = [p for p in self.processors if p.started or p.open(blocking=False)]
            for _ in range(max_rounds):
                progress = sum(p.catch_up() for p in runnable)
                done += progress
                if not progress:
                    break
        return done

    # -- as threads ---------------------------------------------------------------------
    def start(self) -> None:
        """One thread per stage; each waits for its fence, then follows the log."""
        self._stop.clear()
        for processor in self.processors:
            thread = threading.Thread(target=processor.run, args=(self._stop,),
                                      name=f"stage-{processor.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.signal.raise_()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for processor in self.processors:
            if processor.started and processor.fence is not None:
                processor.close()

    def release(self) -> None:
        """Give up the fences taken by :meth:`settle`, so another process (a server)
        can take the stages over while this one lives on."""
        for processor in self.processors:
            processor.close()

    def lags(self) -> list[Lag]:
        return [p.lag() for p in self.processors]


def in_process(app: TradingApplication, *, engine: str = "kernel", fence_for: FenceFor = (
        lambda key: None), saga_batch_size: int = 256, matching_batch_size: int = 1024,
        snapshots: Any = None, snapshot_every: int = 10_000) -> Stages:
    """The stages over ``app``, run in the caller's thread after every command (the CLI,
    tests and scripts: a command returns once everything it set off has happened)."""
    from streams.matching import make_engine

    stages = Stages(app, MatchingStage(make_engine(engine), app.universe.get, snapshots,
                                       snapshot_every=snapshot_every, clock=app.clock.now),
                    fence_for=fence_for, saga_batch_size=saga_batch_size,
                    matching_batch_size=matching_batch_size)
    app.after_command = stages.settle
    return stages
