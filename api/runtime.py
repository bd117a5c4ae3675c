"""What one `tradecore serve` process runs (embedded deployment).

The write model (commands), the stages of the order flow as threads (saga, matching,
projections: :mod:`streams.embedded`), the order intake that coalesces concurrent order
requests into baskets (one store commit for many orders), and the fan-out of order and
fill updates to WebSocket clients. The HTTP app (:mod:`api.http`) holds one of these.

With ``tradecore serve --workers N`` every worker process holds one; the stages are
fenced, so one worker runs each stage and the others take over if it dies, while every
worker takes commands (optimistic concurrency decides them against the store).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aggregates.application import OrderRequest, Placement, TradingApplication
from aggregates.errors import DomainError
from aggregates.instruments import Universe
from api.wiring import trading_stages
from infra.settings import Settings
from projections.projectors import Lag as ProjectionLag
from projections.projectors import Projector, Update
from projections.queries import ReadModels
from projections.store import StorePool
from streams.processor import Lag

if TYPE_CHECKING:
    from streams.embedded import Stages
    from streams.loop import EmbeddedLoop

log = logging.getLogger("tradecore.runtime")

BASKET_LIMIT = 256


class OrderIntake:
    """Coalesces order requests arriving together into baskets (group commit).

    An idle intake sends a lone order at once; under load, every order that arrived while
    the previous basket was being stored goes into the next one. Each order is still
    checked and refused on its own (:meth:`TradingApplication.place_orders`).
    """

    def __init__(self, app: TradingApplication) -> None:
        self.app = app
        self._queue: queue.SimpleQueue[tuple[OrderRequest, Future[Placement]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, name="order-intake", daemon=True)
        self._thread.start()

    async def place(self, request: OrderRequest) -> Placement:
        future: Future[Placement] = Future()
        self._queue.put((request, future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            basket = [item]
            while len(basket) < BASKET_LIMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                basket.append(more)
            try:
                outcomes = self.app.place_orders([request for request, _ in basket])
            except BaseException as err:  # the store failed: every order in it fails
                for _, future in basket:
                    future.set_exception(err)
                continue
            for (_, future), outcome in zip(basket, outcomes, strict=True):
                if isinstance(outcome, DomainError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


@dataclass(eq=False)
class Subscription:
    """One WebSocket client: the updates waiting for it and what it may see."""

    loop: asyncio.AbstractEventLoop
    may_see: Callable[[str], bool]
    inbox: asyncio.Queue[Update] = field(default_factory=lambda: asyncio.Queue(10_000))
    overflowed: bool = False  # fell too far behind: the route closes it

    def offer(self, updates: list[Update]) -> None:
        for update in updates:
            try:
                self.inbox.put_nowait(update)
            except asyncio.QueueFull:
                self.overflowed = True
                return


class Broadcaster:
    """Order and fill updates from the projector to the WebSocket clients that may see them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[Subscription] = []

    def subscribe(self, may_see: Callable[[str], bool]) -> Subscription:
        subscription = Subscription(asyncio.get_running_loop(), may_see)
        with self._lock:
            self._clients.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._clients:
                self._clients.remove(subscription)

    def has_clients(self) -> bool:
        return bool(self._clients)

    def publish(self, updates: list[Update]) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            mine = [u for u in updates if client.may_see(u.account_id)]
            if mine:
                client.loop.call_soon_threadsafe(client.offer, mine)


def tune_gc() -> None:
    """For a long-running process, once its start-up objects exist: move them out of the
    collector's sight (``gc.freeze``) and collect the young generation less often. The
    stages create many short-lived events per batch; with the default thresholds, full
    collections over everything loaded at start-up (Numba's compiled kernels included)
    were the matching stage's largest cost (the venue stage's profile: 114k -> 165k
    commands/s)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Runtime:
    """``distributed``: the HTTP API of ``tradecore serve --distributed`` runs no stage
    in-process (commands only store events; the Kafka workers do the rest), and reads the
    projections' progress from the read models, which the projection workers keep by
    notification id like the embedded projector (so waiting for ``min_position`` works)."""

    def __init__(self, settings: Settings, *, universe: Universe | None = None,
                 distributed: bool = False) -> None:
        self.settings = settings
        self.stages: Stages | None
        if distributed or settings.bus == "kafka":  # the stages are the workers'
            from api.wiring import read_store, trading_app
            from projections.projectors import RecorderLog, all_projections

            self.stages = None
            self.app: TradingApplication = trading_app(settings, universe=universe)
            self.projector: Projector = Projector(
                read_store(settings), RecorderLog(self.app.recorder, self.app.mapper),
                projections=all_projections(settings.projection_shares),
                batch_size=settings.projection_batch_size)
            store = self.projector.store
        else:
            self.stages, found = trading_stages(settings, universe=universe, projector=True)
            assert found is not None
            store = found
            self.app = self.stages.app
            assert isinstance(self.stages.projections.step, Projector)  # type: ignore[union-attr]
            self.projector = self.stages.projections.step  # type: ignore[union-attr]
        self.reads = StorePool(store)
        self.intake = OrderIntake(self.app)
        self.broadcaster = Broadcaster()
        self.projector.listeners.append(self.broadcaster.publish)
        self.projector.wants_updates = self.broadcaster.has_clients
        self._progress = threading.Condition()
        self.projector.committed.append(self._projected)
        self._stopping = threading.Event()
        self._projection_names = [p.name for p in self.projector.projections]
        self._feed = threading.Thread(target=self._follow_read_models, name="stream-feed",
                                      daemon=True)
        # the market-data loop in-process (embedded only; on Kafka it is a worker's)
        self.market: EmbeddedLoop | None = None
        if self.stages is not None and settings.model_checkpoint and settings.streams_ingest:
            from streams.loop import embedded_loop

            self.market = embedded_loop(settings, self.app)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        tune_gc()
        if self.stages is not None:
            self.stages.start()
        self._feed.start()
        if self.market is not None:
            self.market.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.market is not None:
            self.market.stop()
        self.intake.stop()
        if self.stages is not None:
            self.stages.stop()
        if self._feed.is_alive():
            self._feed.join(timeout=5)
        self.reads.close()
        self.projector.store.close()
        self.app.close()

    def _follow_read_models(self, poll_s: float = 0.02) -> None:
        """The stream's updates when another process projects (``serve --workers N``):
        whatever the read models gained since the last look, for the clients of this
        process. In the process whose projector runs, the projector tells them itself."""
        seen: int | None = None
        while not self._stopping.wait(poll_s):
            if self._projecting() or not self.broadcaster.has_clients():
                seen = None  # told by our own projector, or nobody to tell
                continue
            try:
                upto = self.read_models().projected(self._projection_names)
                if seen is not None and upto > seen:
                    self.broadcaster.publish([
                        Update(account, kind, data)
                        for account, kind, data in self.read_models().changes(seen, upto)])
                seen = upto
            except Exception:  # the read models are busy or down: try again
                log.exception("stream feed failed; retrying")
                seen = None

    def _projecting(self) -> bool:
        """This process's own projector runs (else another process projects)."""
        return self.stages is not None and self.stages.projections is not None and (
            self.stages.projections.started)

    # -- read-your-writes --------------------------------------------------------------
    def _projected(self, position: int) -> None:
        with self._progress:
            self._progress.notify_all()

    @property
    def projected(self) -> int:
        """The notification every projection has reached. In the process that projects
        that is its own last commit; another worker reads it from the read models."""
        if self._projecting():
            return self.projector.position()
        return self.read_models().projected(self._projection_names)

    def head(self) -> int:
        """The newest notification in the event store."""
        return self.app.head()

    def lags(self) -> list[Lag]:
        """The in-process stages' lags (none in a distributed API: the workers report
        theirs on their own /readyz and in ``tradecore projections status``)."""
        return self.stages.lags() if self.stages is not None else []

    def projection_lags(self) -> list[ProjectionLag]:
        """Each projection's position and lag. Read through this thread's read-model
        connection: the projector's own belongs to its thread (and, when another worker
        projects, it never ran here)."""
        head = self.head()
        return [ProjectionLag(name, position, head) for name, position
                in self.read_models().tracked(self._projection_names).items()]

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every projection has reached ``position``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.projected < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # woken by this process's projector; polls when another worker projects
                self._progress.wait(min(left, 0.01))
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until every stage has nothing waiting and the read models hold the whole
        log (tests, scripts, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head = self.head()
            if (all(lag.behind == 0 for lag in self.lags())
                    and self.wait_for(head, max(deadline - time.monotonic(), 0))
                    and self.head() == head):
                return True
            time.sleep(0.01)
        return False

    def read_models(self) -> ReadModels:
        return ReadModels(self.reads.get)
