"""The readable matching engine: price-time priority in plain Python.

This is the specification the Numba kernels are held to (property tests compare their
event streams one for one) and the engine the write model uses by default. It favours
clarity over speed: a level is an insertion-ordered dict (FIFO with O(1) removal), a side
is a sorted list of prices.

Rules, in the order they are checked (stateless checks before book-state checks, so a
rejection never depends on what happens to be resting unless it has to):

* NEW: kind/side/type/time-in-force/order id known and positive, else BAD_COMMAND;
  quantity > 0, else BAD_QUANTITY; for LIMIT the price within the grid (OUT_OF_RANGE) and
  on its band's tick (OFF_TICK); the id not resting already (DUPLICATE_ID).
* CANCEL: id positive (BAD_COMMAND), resting (UNKNOWN_ORDER).
* REDUCE: id positive, quantity > 0, resting, quantity <= open quantity (BAD_QUANTITY).
  Reducing by the whole open quantity removes the order (REDUCED, remaining 0).
* AMEND: id positive, quantity > 0, price in range and on tick, resting. Same price and
  quantity down (or unchanged) keeps priority; same price and quantity up goes to the back
  of its level; a new price takes the order off the book and re-enters it as an aggressor.

MARKET orders ignore the price and never rest (remainder: IOC_REMAINDER; nothing on the
other side at all: NO_LIQUIDITY). FOK checks, before trading, that the whole quantity can
trade at acceptable prices in priority order; with self-trade prevention on, liquidity
behind the first same-owner order does not count. Self-trade prevention cancels the
incoming order's remainder when it reaches a resting order of the same non-zero owner
(fills before that stand).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from kernels.contract import (
    Command,
    CommandKind,
    Depth,
    Event,
    EventKind,
    Level,
    OrderType,
    Reason,
    Side,
    TickBand,
    TimeInForce,
)
from kernels.snapshot import BookImage, RestingOrder, decode, encode, validate_grid

_KINDS = {int(k) for k in CommandKind}
_TYPES = {int(t) for t in OrderType}
_TIFS = {int(t) for t in TimeInForce}
_SIDES = {int(s) for s in Side}


@dataclass(slots=True)
class _Order:
    order_id: int
    side: int
    price: int
    quantity: int  # open quantity
    owner: int
    tif: int


@dataclass(slots=True)
class _Grid:
    bands: tuple[TickBand, ...]
    min_price: int
    max_price: int

    def check(self, price: int) -> Reason:
        """NONE when ``price`` is a tradable price, else OUT_OF_RANGE or OFF_TICK."""
        if price < self.min_price or price > self.max_price:
            return Reason.OUT_OF_RANGE
        for band in self.bands:
            if price <= band.upper:
                return Reason.NONE if price % band.tick == 0 else Reason.OFF_TICK
        return Reason.OUT_OF_RANGE  # above the last band: not on the grid at all


@dataclass(slots=True)
class _Side:
    """One side of a book: price -> FIFO of orders, and the prices in ascending order."""

    is_bid: bool
    levels: dict[int, dict[int, _Order]] = field(default_factory=dict)
    prices: list[int] = field(default_factory=list)

    def best_first(self) -> list[int]:
        return self.prices[::-1] if self.is_bid else list(self.prices)

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def append(self, order: _Order) -> None:
        level = self.levels.get(order.price)
        if level is None:
            level = self.levels[order.price] = {}
            bisect.insort(self.prices, order.price)
        level[order.order_id] = order

    def remove(self, order: _Order) -> None:
        level = self.levels[order.price]
        del level[order.order_id]
        if not level:
            del self.levels[order.price]
            self.prices.pop(bisect.bisect_left(self.prices, order.price))


@dataclass(slots=True)
class _Book:
    grid: _Grid
    sequence: int = 0
    bids: _Side = field(default_factory=lambda: _Side(is_bid=True))
    asks: _Side = field(default_factory=lambda: _Side(is_bid=False))
    orders: dict[int, _Order] = field(default_factory=dict)

    def side_of(self, side: int) -> _Side:
        return self.bids if side == Side.BUY else self.asks

    def rest(self, order: _Order) -> None:
        self.side_of(order.side).append(order)
        self.orders[order.order_id] = order

    def take_off(self, order: _Order) -> None:
        self.side_of(order.side).remove(order)
        del self.orders[order.order_id]


def _crosses(side: int, limit: int | None, level_price: int) -> bool:
    """Whether an aggressor on ``side`` with ``limit`` (None = market) trades at a level."""
    if limit is None:
        return True
    return level_price <= limit if side == Side.BUY else level_price >= limit


class ReferenceEngine:
    """Pure-Python price-time-priority engine implementing :class:`kernels.contract.Engine`."""

    def __init__(self, self_trade_prevention: bool = False) -> None:
        self.self_trade_prevention = self_trade_prevention
        self._books: dict[str, _Book] = {}

    # ----------------------------------------------------------------- administration
    def add_symbol(
        self, symbol: str, bands: Sequence[TickBand], min_price: int, max_price: int
    ) -> None:
        if symbol in self._books:
            raise ValueError(f"symbol: {symbol!r} has a book already")
        grid_bands = tuple(bands)
        validate_grid(grid_bands, min_price, max_price)
        self._books[symbol] = _Book(_Grid(grid_bands, min_price, max_price))

    def regrid(self, symbol: str, min_price: int, max_price: int) -> None:
        """A new session's price limits for an empty book; the sequence carries on."""
        book = self._book(symbol)
        if book.orders:
            raise ValueError(f"symbol: {symbol!r} has resting orders; regrid needs an empty book")
        validate_grid(book.grid.bands, min_price, max_price)
        book.grid = _Grid(book.grid.bands, min_price, max_price)

    def _book(self, symbol: str) -> _Book:
        try:
            return self._books[symbol]
        except KeyError:
            raise KeyError(f"symbol: no book for {symbol!r}; call add_symbol first") from None

    def sequence(self, symbol: str) -> int:
        return self._book(symbol).sequence

    def depth(self, symbol: str, levels: int = 10) -> Depth:
        if levels < 0:
            raise ValueError(f"levels: must be >= 0, got {levels}")
        book = self._book(symbol)

        def side_levels(side: _Side) -> tuple[Level, ...]:
            out = []
            for price in side.best_first()[:levels]:
                queue = side.levels[price]
                out.append(Level(price, sum(o.quantity for o in queue.values()), len(queue)))
            return tuple(out)

        return Depth(bids=side_levels(book.bids), asks=side_levels(book.asks))

    # ----------------------------------------------------------------- commands
    def submit(self, symbol: str, command: Command) -> list[Event]:
        book = self._book(symbol)
        book.sequence += 1
        events: list[Event] = []
        kind = int(command.kind)
        if kind not in _KINDS or command.order_id <= 0:
            events.append(self._reject(book, command, Reason.BAD_COMMAND))
        elif kind == CommandKind.NEW:
            self._new(book, command, events)
        elif kind == CommandKind.CANCEL:
            self._cancel(book, command, events)
        elif kind == CommandKind.REDUCE:
            self._reduce(book, command, events)
        else:
            self._amend(book, command, events)
        return events

    def submit_batch(self, symbol: str, commands: Sequence[Command]) -> list[Event]:
        events: list[Event] = []
        for command in commands:
            events.extend(self.submit(symbol, command))
        return events

    @staticmethod
    def _reject(book: _Book, command: Command, reason: Reason) -> Event:
        side = Side(command.side) if int(command.side) in _SIDES else Side.BUY
        return Event(
            EventKind.REJECTED,
            book.sequence,
            command.order_id,
            side=side,
            price=command.price,
            quantity=command.quantity,
            reason=reason,
        )

    def _new(self, book: _Book, command: Command, events: list[Event]) -> None:
        if (
            int(command.side) not in _SIDES
            or int(command.order_type) not in _TYPES
            or int(command.tif) not in _TIFS
        ):
            events.append(self._reject(book, command, Reason.BAD_COMMAND))
            return
        if command.quantity <= 0:
            events.append(self._reject(book, command, Reason.BAD_QUANTITY))
            return
        is_market = command.order_type == OrderType.MARKET
        if not is_market:
            reason = book.grid.check(command.price)
            if reason != Reason.NONE:
                events.append(self._reject(book, command, reason))
                return
        if command.order_id in book.orders:
            events.append(self._reject(book, command, Reason.DUPLICATE_ID))
            return
        price = 0 if is_market else command.price
        side = Side(command.side)
        events.append(
            Event(
                EventKind.ACCEPTED,
                book.sequence,
                command.order_id,
                side=side,
                price=price,
                quantity=command.quantity,
                remaining=command.quantity,
            )
        )
        order = _Order(
            command.order_id, int(side), price, command.quantity, command.owner, int(command.tif)
        )
        self._enter(book, order, None if is_market else price, int(command.tif), events)

    def _enter(
        self, book: _Book, order: _Order, limit: int | None, tif: int, events: list[Event]
    ) -> None:
        """Match an aggressor against the other side, then rest or cancel the remainder."""
        opposite = book.side_of(-order.side)
        if limit is None and not opposite.prices:
            events.append(self._cancelled(book, order, Reason.NO_LIQUIDITY))
            return
        if tif == TimeInForce.FOK and not self._fillable(opposite, order, limit):
            events.append(self._cancelled(book, order, Reason.FOK_UNFILLABLE))
            return
        fill_index = 0
        while order.quantity > 0:
            best = opposite.best()
            if best is None or not _crosses(order.side, limit, best):
                break
            maker = next(iter(opposite.levels[best].values()))
            if self._self_trade(order, maker):
                events.append(self._cancelled(book, order, Reason.SELF_TRADE))
                return
            traded = min(order.quantity, maker.quantity)
            order.quantity -= traded
            maker.quantity -= traded
            events.append(
                Event(
                    EventKind.FILL,
                    book.sequence,
                    order.order_id,
                    maker_id=maker.order_id,
                    side=Side(order.side),
                    price=maker.price,
                    quantity=traded,
                    remaining=order.quantity,
                    maker_remaining=maker.quantity,
                    fill_index=fill_index,
                )
            )
            fill_index += 1
            if maker.quantity == 0:
                book.take_off(maker)
        if order.quantity == 0:
            return
        if limit is None or tif in (TimeInForce.IOC, TimeInForce.FOK):
            events.append(self._cancelled(book, order, Reason.IOC_REMAINDER))
            return
        book.rest(order)
        events.append(
            Event(
                EventKind.RESTED,
                book.sequence,
                order.order_id,
                side=Side(order.side),
                price=order.price,
                quantity=order.quantity,
                remaining=order.quantity,
            )
        )

    def _self_trade(self, taker: _Order, maker: _Order) -> bool:
        return self.self_trade_prevention and taker.owner != 0 and taker.owner == maker.owner

    def _fillable(self, opposite: _Side, order: _Order, limit: int | None) -> bool:
        """FOK pre-check: walk the other side in priority order, as matching would."""
        needed = order.quantity
        for price in opposite.best_first():
            if not _crosses(order.side, limit, price):
                return False
            for maker in opposite.levels[price].values():
                if self._self_trade(order, maker):
                    return False
                needed -= maker.quantity
                if needed <= 0:
                    return True
        return False

    @staticmethod
    def _cancelled(book: _Book, order: _Order, reason: Reason) -> Event:
        event = Event(
            EventKind.CANCELLED,
            book.sequence,
            order.order_id,
            side=Side(order.side),
            price=order.price,
            quantity=order.quantity,
            remaining=0,
            reason=reason,
        )
        order.quantity = 0
        return event

    def _cancel(self, book: _Book, command: Command, events: list[Event]) -> None:
        order = book.orders.get(command.order_id)
        if order is None:
            events.append(self._reject(book, command, Reason.UNKNOWN_ORDER))
            return
        book.take_off(order)
        events.append(self._cancelled(book, order, Reason.REQUESTED))

    def _reduce(self, book: _Book, command: Command, events: list[Event]) -> None:
        if command.quantity <= 0:
            events.append(self._reject(book, command, Reason.BAD_QUANTITY))
            return
        order = book.orders.get(command.order_id)
        if order is None:
            events.append(self._reject(book, command, Reason.UNKNOWN_ORDER))
            return
        if command.quantity > order.quantity:
            events.append(self._reject(book, command, Reason.BAD_QUANTITY))
            return
        order.quantity -= command.quantity
        if order.quantity == 0:
            book.take_off(order)
        events.append(
            Event(
                EventKind.REDUCED,
                book.sequence,
                order.order_id,
                side=Side(order.side),
                price=order.price,
                quantity=command.quantity,
                remaining=order.quantity,
            )
        )

    def _amend(self, book: _Book, command: Command, events: list[Event]) -> None:
        if command.quantity <= 0:
            events.append(self._reject(book, command, Reason.BAD_QUANTITY))
            return
        reason = book.grid.check(command.price)
        if reason != Reason.NONE:
            events.append(self._reject(book, command, reason))
            return
        order = book.orders.get(command.order_id)
        if order is None:
            events.append(self._reject(book, command, Reason.UNKNOWN_ORDER))
            return
        events.append(
            Event(
                EventKind.AMENDED,
                book.sequence,
                order.order_id,
                side=Side(order.side),
                price=command.price,
                quantity=command.quantity,
                remaining=command.quantity,
            )
        )
        if command.price == order.price:
            if command.quantity > order.quantity:  # more size: to the back of the queue
                book.take_off(order)
                order.quantity = command.quantity
                book.rest(order)
            else:  # less (or the same) size keeps its place
                order.quantity = command.quantity
            return
        book.take_off(order)
        order.price = command.price
        order.quantity = command.quantity
        self._enter(book, order, order.price, order.tif, events)

    # ----------------------------------------------------------------- snapshots
    def snapshot(self) -> bytes:
        images = []
        for symbol, book in self._books.items():
            orders = [
                RestingOrder(o.order_id, o.side, o.price, o.quantity, o.owner, o.tif)
                for side in (book.bids, book.asks)
                for price in side.best_first()
                for o in side.levels[price].values()
            ]
            images.append(
                BookImage(
                    symbol,
                    book.grid.bands,
                    book.grid.min_price,
                    book.grid.max_price,
                    book.sequence,
                    tuple(orders),
                )
            )
        return encode(images)

    def restore(self, data: bytes) -> None:
        """Replace every book with the snapshot's; a bad snapshot leaves the engine as it was."""
        books: dict[str, _Book] = {}
        for image in decode(data):
            validate_grid(image.bands, image.min_price, image.max_price)
            book = _Book(_Grid(image.bands, image.min_price, image.max_price), image.sequence)
            for o in image.orders:
                book.rest(_Order(o.order_id, o.side, o.price, o.quantity, o.owner, o.tif))
            books[image.symbol] = book
        self._books = books
