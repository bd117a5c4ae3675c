"""What `tradecore serve` runs in one process (embedded deployment).

The write model (with its saga and in-process matching), a projector thread following
the event store into the read models, the order desk that coalesces concurrent order
requests into baskets (one store commit for many orders), and the fan-out of order and
fill updates to WebSocket clients. The HTTP app (:mod:`api.http`) holds one of these.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from aggregates.application import OrderRequest, Placement, TradingApplication
from aggregates.errors import DomainError
from aggregates.instruments import Universe
from api.wiring import trading_app
from infra.settings import Settings
from projections.projectors import Lag, Projector, RecorderLog, Update
from projections.queries import ReadModels
from projections.schema import upgrade
from projections.store import ReadStore, StorePool

log = logging.getLogger("tradecore.runtime")

BASKET_LIMIT = 256
COALESCE_S = 0.01


class OrderDesk:
    """Coalesces order requests arriving together into baskets (group commit).

    An idle desk sends a lone order at once; under load, every order that arrived while
    the previous basket was being stored goes into the next one. Each order is still
    checked and refused on its own (:meth:`TradingApplication.place_orders`).
    """

    def __init__(self, app: TradingApplication) -> None:
        self.app = app
        self._queue: queue.SimpleQueue[tuple[OrderRequest, Future[Placement]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, name="order-desk", daemon=True)
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


class Runtime:
    def __init__(self, settings: Settings, *, universe: Universe | None = None) -> None:
        self.settings = settings
        self.app = trading_app(settings, universe=universe)
        store = ReadStore.from_settings(settings)
        upgrade(store)
        self.projector = Projector(store, RecorderLog(self.app.recorder, self.app.mapper),
                                   batch_size=settings.projection_batch_size)
        self.reads = StorePool(store)
        self.desk = OrderDesk(self.app)
        self.broadcaster = Broadcaster()
        self.projector.listeners.append(self.broadcaster.publish)
        self.projector.wants_updates = self.broadcaster.has_clients
        self._progress = threading.Condition()
        self._positions = self.projector.positions()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.app.listeners.append(lambda _position: self._wake.set())
        self._thread = threading.Thread(target=self._follow, name="projector", daemon=True)
        self.projector_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.desk.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.reads.close()
        self.projector.store.close()
        self.app.close()

    def _follow(self) -> None:
        """Project whatever the write model stored; sleep until it stores more."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.projector.catch_up()
                self.projector_error = None
            except Exception as err:  # keep serving; /readyz reports it, next wake retries
                log.exception("projector failed; retrying")
                self.projector_error = err
            with self._progress:
                self._positions = self.projector.positions()
                self._progress.notify_all()
            self._wake.wait(timeout=0.5)
            # Let a burst of commands land first: one batch for many orders costs far
            # less than a batch each (read-your-writes waits this much longer).
            time.sleep(COALESCE_S)

    # -- read-your-writes --------------------------------------------------------------
    @property
    def projected(self) -> int:
        """The notification every projection has reached (the projector thread's last
        report: its read-model connection is only ever used by that thread)."""
        return min(self._positions.values(), default=0)

    def head(self) -> int:
        """The newest notification in the event store."""
        return self.projector.log.head()

    def lags(self) -> list[Lag]:
        head = self.head()
        return [Lag(name, position, head) for name, position in self._positions.items()]

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every projection has reached ``position``; False on timeout."""
        with self._progress:
            return self._progress.wait_for(lambda: self.projected >= position, timeout)

    def read_models(self) -> ReadModels:
        return ReadModels(self.reads.get)
