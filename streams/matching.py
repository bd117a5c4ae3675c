"""The matching stage: the venue behind a message boundary.

The saga stores venue commands (the routed order events); this stage consumes them in
log order, runs the engine, and returns one :class:`aggregates.venue.Venue.Reported` per
command (per symbol for a session close) for the processor to store with the stage's
tracking record in one transaction. Nothing else touches the engine: last prices, book
depth and the orders a session close expired reach the rest of the system only through
these reports.

Venue commands (event topics the stage consumes):

- ``Order.Routed``: a NEW order on ``symbol``'s book;
- ``Order.CancelRouted`` / ``Order.ExpiryRouted``: take the order off its book
  (``ExpiryRouted`` only in logs written before the venue expired orders itself; its
  removal is reported ``expired``);
- ``Order.AmendRouted``: new total quantity and price (the venue converts the total to
  a new open quantity with what it knows was filled);
- ``Market.SessionClosed``: expire every resting DAY order of every symbol, one
  ``Reported`` (``command="expire"``, ``order_id=None``) per symbol that had any;
- ``Market.BarsOpened`` (backtests): per bar, take the previous session's outside
  liquidity off the book, move the (then empty) book's grid to the session's price
  limits, set the last price to the open, and rest the outside world's liquidity: a
  sell at open + ``slippage_ticks`` ticks and a buy at open - ``slippage_ticks`` ticks,
  each of ``participation_bp`` of the bar's volume rounded down to the lot. One
  ``Reported`` (``command="open"``, ``order_id=None``) per bar, with an ``external``
  report; fills against that liquidity name ``None`` for the outside side and carry
  ``"external": true``. This is the whole of the backtest fill model, and it lives here,
  at the venue: the command path, risk and the saga are the live ones.

State (:class:`VenueBooks`: the engine's books, the tickets of resting orders, last
prices) is a pure function of the commands in order, and so are the reports: execution
ids come from ``kernels.contract.execution_id(symbol, sequence, fill_index)``. That is
what makes restarts cheap and safe: :meth:`MatchingStage.start` restores the newest
snapshot at or before the tracked position and feeds the few inputs after it through the
same code, discarding their reports (they are stored already, byte for byte the same).

Throughput: commands are grouped per symbol and handed to the engine in runs (one
``KernelEngine.submit_arrays`` call per run), and the reports are read back from the
event rows. A run ends early only where a command's translation needs the exact state
between two commands of the same run: a cancel or an amend of an order that an earlier
command of the run may have filled or removed (the venue must know whether it still
holds the order, and an amend's new open quantity is its new total minus what was
filled), and a session close. Outputs are therefore identical whatever the batching;
the property tests hold batch == one-by-one and kernel == reference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from types import SimpleNamespace
from typing import Any, Protocol
from uuid import UUID

import numpy as np

from aggregates import ids
from aggregates.errors import DomainError
from aggregates.instruments import Instrument, price_limits, round_to_tick
from aggregates.market import Market
from aggregates.order import Order
from aggregates.venue import Venue
from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from infra.snapshots import MemorySnapshots, snapshots_for_store
from kernels.contract import (
    Command,
    CommandKind,
    Depth,
    Engine,
    EventKind,
    OrderType,
    Reason,
    Side,
    TimeInForce,
    execution_id,
)
from kernels.snapshot import encode as encode_books

log = logging.getLogger("tradecore.matching")

VENUE_PRINCIPAL = "venue"
DEPTH_LEVELS = 10
UNROUTED = "?"
"""Symbol of the reports about a cancel, amend or expiry whose event names no symbol
(today's ``CancelRouted``/``AmendRouted``/``ExpiryRouted``) for an order the venue does
not hold: it cannot tell which book the order was on. Stream: ``ids.venue_id("?")``."""


def _topic(cls: type) -> str:
    """The event's topic as the eventsourcing mapper writes it (``module:qualname``)."""
    return f"{cls.__module__}:{cls.__qualname__}"


VENUE_COMMAND_TOPICS: tuple[str, ...] = (
    _topic(Order.Routed),
    _topic(Order.CancelRouted),
    _topic(Order.AmendRouted),
    _topic(Order.ExpiryRouted),
    _topic(Market.SessionClosed),
    _topic(Market.BarsOpened),
)


def book_of(command: Any, order_symbol: Callable[[UUID], str | None]) -> str | None:
    """The book a venue command is for: its ``symbol``; None for a session close or a
    session's bars (every book); for a cancel, amend or expiry stored before those named
    the book (version 1), ``order_symbol(order id)``, and :data:`UNROUTED` when that is
    unknown. The relay keys ``matching.in`` by it, and the matching service reads its
    partition's share of the log back by it: one rule for both."""
    if isinstance(command, (Market.SessionClosed, Market.BarsOpened)):
        return None
    symbol = getattr(command, "symbol", None)
    if isinstance(symbol, str):
        return symbol
    return order_symbol(command.originator_id) or UNROUTED


def make_engine(name: str) -> Engine:
    """The engine named by the ``matching_engine`` setting: ``kernel`` (Numba, the
    default in production) or ``reference`` (pure Python, the test oracle)."""
    if name == "reference":
        from kernels.reference import ReferenceEngine

        return ReferenceEngine()
    if name == "kernel":
        from kernels.engine import KernelEngine

        return KernelEngine()
    raise ValueError(f"matching_engine={name!r}: expected 'reference' or 'kernel'")


# --- the engine contract as plain ints (kernels.contract; rows as in kernels.matching) ---
_NEW, _CANCEL, _AMEND = int(CommandKind.NEW), int(CommandKind.CANCEL), int(CommandKind.AMEND)
_ROW = 8  # fields of a command row, in kernels.contract.Command's order
_LIMIT, _MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
_DAY = int(TimeInForce.DAY)
# event rows: fields in kernels.contract.Event's order, kinds by value
_ACCEPTED, _FILL, _RESTED, _CANCELLED = (int(k) for k in (
    EventKind.ACCEPTED, EventKind.FILL, EventKind.RESTED, EventKind.CANCELLED))
_AMENDED, _REJECTED = int(EventKind.AMENDED), int(EventKind.REJECTED)
_SIDES = {"buy": int(Side.BUY), "sell": int(Side.SELL)}
_TYPES = {"limit": _LIMIT, "market": _MARKET}
_TIFS = {t.name.lower(): int(t) for t in TimeInForce}
_REASONS = {int(r): r.name.lower() for r in Reason}
_HIGHEST = 1 << 62  # above any price: a market buy may trade at any price
_EXPIRED = "expired"
_UNKNOWN_ORDER = _REASONS[int(Reason.UNKNOWN_ORDER)]
_NOT_ABOVE_FILLED = "not_above_filled_quantity"
_UNKNOWN_SYMBOL = "unknown_symbol"

# venue command kinds (what the stage decodes events into)
NEW, CANCEL, AMEND, EXPIRE, CLOSE = "new", "cancel", "amend", "expire", "close"
OPEN = "open"
EXTERNAL = "external"
"""The order id of a ticket the venue rests for the outside world (a bar's liquidity)."""
EXTERNAL_OWNER = 1  # the engine owner of outside liquidity (accounts: engine_id(account))


@dataclass(slots=True)
class Ticket:
    """A resting order as the venue knows it (what reports need beyond the engine ids)."""

    engine_id: int
    order_id: str  # canonical UUID string, as reports carry it
    symbol: str
    side: int  # engine side: 1 buy, -1 sell
    tif: int  # engine time in force
    quantity: int  # the order's total quantity
    open: int  # what is still open at the venue
    price: int

    def row(self) -> list[Any]:
        return [self.engine_id, self.order_id, self.symbol, self.side, self.tif,
                self.quantity, self.open, self.price]


VenueCommand = tuple[str, "str | None", int, str, int, int, int, int, int, Any]
"""A venue command decoded from its event, what the venue needs and nothing more:
``(kind, symbol, engine_id, order_id, quantity, price, side, order_type, tif, owner)``.

``kind``: ``new`` | ``cancel`` | ``amend`` | ``expire`` | ``close``; ``symbol`` is None
for a cancel/amend/expiry whose event names none (the venue then finds the order's book
from its tickets) and for a session close; ``order_id`` the order's canonical UUID
string; ``quantity`` a NEW's quantity or an AMEND's new total; ``side``/``order_type``/
``tif`` engine ints. Plain tuples: the stage builds one per command. A session's bars
(``open``) are ``(open, session_date, 0, market id, participation_bp, slippage_ticks,
0, 0, 0, bars)``.
"""

Outcome = tuple[str, int, list[dict[str, Any]], "int | None"]
"""What the venue did with one command on one symbol's book: ``(symbol, sequence,
reports, last_price)``; ``sequence`` is the book's input sequence after the command
(0: no book)."""


def decode(event: Any) -> VenueCommand | None:
    """The venue command an event carries (None: not a venue command)."""
    handler = _DECODERS.get(type(event))
    return handler(event) if handler is not None else None


def _decode_routed(e: Any) -> VenueCommand:
    # an unknown side/type/time in force becomes a value the engine refuses
    # (bad_command), never an exception that would stop the stage at this input
    return (NEW, e.symbol, e.engine_order_id, str(e.originator_id), e.quantity, e.price,
            _SIDES.get(e.side, 0), _TYPES.get(e.order_type, -1), _TIFS.get(e.tif, -1),
            e.owner)


def _decode_cancel(e: Any) -> VenueCommand:
    return (CANCEL, getattr(e, "symbol", None), e.engine_order_id, str(e.originator_id),
            0, 0, 1, _LIMIT, _DAY, 0)


def _decode_expiry(e: Any) -> VenueCommand:
    return (EXPIRE, getattr(e, "symbol", None), e.engine_order_id, str(e.originator_id),
            0, 0, 1, _LIMIT, _DAY, 0)


def _decode_amend(e: Any) -> VenueCommand:
    return (AMEND, getattr(e, "symbol", None), e.engine_order_id, str(e.originator_id),
            e.quantity, e.price, 1, _LIMIT, _DAY, 0)


def _decode_close(e: Any) -> VenueCommand:
    return (CLOSE, None, 0, str(e.originator_id), 0, 0, 1, _LIMIT, _DAY, 0)


def _decode_bars(e: Any) -> VenueCommand:
    return (OPEN, e.session_date, 0, str(e.originator_id), e.participation_bp,
            e.slippage_ticks, 0, 0, 0, e.bars)


_DECODERS: dict[type, Callable[[Any], VenueCommand]] = {
    Order.Routed: _decode_routed,
    Order.CancelRouted: _decode_cancel,
    Order.ExpiryRouted: _decode_expiry,
    Order.AmendRouted: _decode_amend,
    Market.SessionClosed: _decode_close,
    Market.BarsOpened: _decode_bars,
}


def _refused(order_id: str, action: str, reason: str) -> dict[str, Any]:
    return {"kind": "refused", "order_id": order_id, "action": action, "reason": reason}


def depth_dict(depth: Depth) -> dict[str, Any]:
    """Depth as the ``Venue.Reported.depth`` JSON shape."""
    return {
        "bids": [[lv.price, lv.quantity, lv.orders] for lv in depth.bids],
        "asks": [[lv.price, lv.quantity, lv.orders] for lv in depth.asks],
    }


class _Run:
    """Commands of one symbol that go to the engine in one call, and what is needed to
    read their reports back (``slots``: per command its input index and context).

    ``touched``, ``max_buy`` and ``min_sell`` say which resting orders an earlier command
    of the run may have changed: those it named, and those an aggressor of the run may
    have traded with (a sell resting at or below ``max_buy``, a buy at or above
    ``min_sell``)."""

    __slots__ = ("max_buy", "min_sell", "rows", "slots", "symbol", "touched")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.rows: list[tuple[int, ...]] = []
        # (input index, action, ticket, engine rows, amend total, expired, answer): a
        # command the venue answers itself has no engine rows and its answer is
        # (stream symbol, reports)
        self.slots: list[tuple[int, str, Ticket | None, int, int, bool, Any]] = []
        self.touched: set[int] = set()  # engine ids a command of this run named
        self.max_buy = -1  # highest price a buy of this run may trade at
        self.min_sell = _HIGHEST  # lowest price a sell of this run may trade at


class VenueBooks:
    """The venue's state: the engine's books plus the tickets of resting orders and the
    last trade price per symbol. Each command is translated from domain terms (UUIDs,
    string enums, total quantities) into the engine contract and the engine's events
    back into report dicts. A pure function of the commands given, in order.
    """

    def __init__(self, engine: Engine, instrument: Callable[[str], Instrument]) -> None:
        self.engine = engine
        self._instrument = instrument
        self._submit_arrays: Callable[[str, np.ndarray], np.ndarray] | None = getattr(
            engine, "submit_arrays", None
        )
        self._depth_rows: Callable[[str, int], tuple[list[Any], list[Any]]] | None = getattr(
            engine, "depth_rows", None
        )
        self.tickets: dict[int, Ticket] = {}
        self.last_prices: dict[str, int] = {}
        # the symbols this venue answers for, when it is one partition of several (a
        # session's bars reach every partition: each opens only its own symbols' books,
        # so two partitions never write the same venue stream); None: every symbol
        self.owns: Callable[[str], bool] | None = None
        self.sequences: dict[str, int] = {}  # symbols with a book -> their input sequence
        self._grids: dict[str, tuple[int, int]] = {}  # books' price ranges set here
        self.engine.restore(self._empty_engine_image())

    @property
    def engine_path(self) -> str:
        name = type(self.engine).__name__
        return f"{name}.submit_arrays" if self._submit_arrays else f"{name}.submit_batch"

    # -- state ------------------------------------------------------------------------
    @staticmethod
    def _empty_engine_image() -> bytes:
        return encode_books([])

    def image(self) -> tuple[dict[str, Any], bytes]:
        """Everything needed to rebuild this state exactly: the venue's part
        (JSON-friendly) and the engine's snapshot (``kernels.snapshot``'s bytes)."""
        tickets = self.tickets
        return {
            "tickets": [tickets[eid].row() for eid in sorted(tickets)],
            "last_prices": dict(self.last_prices),
            "symbols": list(self.sequences),
        }, self.engine.snapshot()

    def load(self, image: dict[str, Any] | None, engine: bytes = b"") -> None:
        """Replace the state with ``image`` and the engine's snapshot (None: empty)."""
        self._grids = {}  # unknown after a restore: the next bar sets each again
        if image is None:
            self.engine.restore(self._empty_engine_image())
            self.tickets = {}
            self.last_prices = {}
            self.sequences = {}
            return
        self.engine.restore(engine)
        self.tickets = {row[0]: Ticket(*row) for row in image["tickets"]}
        self.last_prices = {s: int(p) for s, p in image["last_prices"].items()}
        self.sequences = {s: self.engine.sequence(s) for s in image["symbols"]}

    def depth(self, symbol: str, levels: int = DEPTH_LEVELS) -> dict[str, Any] | None:
        """The book's top ``levels`` a side as ``Venue.Reported.depth`` (None: no book)."""
        if symbol not in self.sequences:
            return None
        if self._depth_rows is not None:
            bids, asks = self._depth_rows(symbol, levels)
            return {"bids": bids, "asks": asks}
        return depth_dict(self.engine.depth(symbol, levels))

    def open_day_orders(self, symbol: str | None = None) -> list[Ticket]:
        return [t for t in self.tickets.values()
                if t.tif == _DAY and (symbol is None or t.symbol == symbol)]

    # -- commands ---------------------------------------------------------------------
    def run(self, commands: Sequence[VenueCommand | None]) -> list[Any]:
        """Apply ``commands`` in order. Per command: an :data:`Outcome`, a list of them
        (session close: one per symbol that had DAY orders), or None (not a command)."""
        results: list[Any] = [None] * len(commands)
        runs: dict[str, _Run] = {}
        routed_now: dict[int, str] = {}  # engine id -> symbol of the NEWs given here
        tickets = self.tickets
        sequences = self.sequences
        for index, command in enumerate(commands):
            if command is None:
                continue
            kind, symbol, eid, order_id, quantity, price, side, order_type, tif, owner = command
            if kind in (CLOSE, OPEN):
                for pending in runs.values():
                    self._flush(pending, results)
                runs.clear()
                results[index] = (self._close_session() if kind == CLOSE else
                                  self._open_session(str(symbol), quantity, price, owner))
                continue
            if symbol is None:  # older events: the order's book, if the venue knows it
                known = tickets.get(eid)
                symbol = known.symbol if known is not None else routed_now.get(eid)
                if symbol is None:
                    results[index] = (UNROUTED, 0, [_refused(order_id, _action(kind),
                                                             _UNKNOWN_ORDER)], None)
                    continue
                where = UNROUTED  # where a refusal goes: the event named no book
            else:
                where = symbol
            run = runs.get(symbol)
            if run is None:
                run = runs[symbol] = _Run(symbol)
            if kind == NEW:
                if symbol not in sequences and not self._open_book(symbol):
                    run.slots.append((index, NEW, None, 0, 0, False, (symbol, [_refused(
                        order_id, NEW, _UNKNOWN_SYMBOL)])))
                    continue
                routed_now[eid] = symbol
                run.rows.append((_NEW, eid, side, order_type, tif, price, quantity, owner))
                run.slots.append((index, NEW, Ticket(eid, order_id, symbol, side, tif, quantity,
                                                     quantity, price), 1, 0, False, None))
                run.touched.add(eid)
                # what this order may trade with: the other side up to its limit
                if side == 1:
                    p = _HIGHEST if order_type == _MARKET else price
                    if p > run.max_buy:
                        run.max_buy = p
                else:
                    p = -1 if order_type == _MARKET else price
                    if p < run.min_sell:
                        run.min_sell = p
                continue
            # cancel / expire / amend: the venue must know whether it still holds the
            # order (and an amend what was filled): when an earlier command of this run
            # may have changed it, the engine runs up to here first
            ticket = tickets.get(eid)
            if eid in run.touched or (ticket is not None and (
                    run.min_sell <= ticket.price if ticket.side == 1
                    else run.max_buy >= ticket.price)):
                self._flush(run, results)
                run = runs[symbol] = _Run(symbol)
                ticket = tickets.get(eid)
            if ticket is None or ticket.symbol != symbol:
                run.slots.append((index, kind, None, 0, 0, False, (where, [_refused(
                    order_id, _action(kind), _UNKNOWN_ORDER)])))
                continue
            run.touched.add(eid)
            if kind == AMEND:
                new_open = quantity - (ticket.quantity - ticket.open)
                if new_open <= 0:
                    run.slots.append((index, AMEND, None, 0, 0, False, (symbol, [_refused(
                        order_id, AMEND, _NOT_ABOVE_FILLED)])))
                    continue
                run.rows.append((_AMEND, eid, ticket.side, _LIMIT, ticket.tif, price,
                                 new_open, 0))
                run.slots.append((index, AMEND, ticket, 1, quantity, False, None))
                if price != ticket.price:  # re-enters the book as an aggressor
                    if ticket.side == 1:
                        run.max_buy = max(run.max_buy, price)
                    else:
                        run.min_sell = min(run.min_sell, price)
            else:
                run.rows.append((_CANCEL, eid, 1, _LIMIT, _DAY, 0, 0, 0))
                run.slots.append((index, CANCEL, ticket, 1, 0, kind == EXPIRE, None))
        for pending in runs.values():
            self._flush(pending, results)
        return results

    def _open_book(self, symbol: str) -> bool:
        try:
            instrument = self._instrument(symbol)
        except (LookupError, DomainError):  # unknown symbol: refused, no book
            return False
        limits = instrument.limits
        self.engine.add_symbol(symbol, instrument.tick_bands, limits.lower, limits.upper)
        self._grids[symbol] = (limits.lower, limits.upper)
        self.sequences[symbol] = 0
        return True

    def _close_session(self) -> list[Outcome]:
        """Expire every resting DAY order: one engine run per symbol that has any."""
        by_symbol: dict[str, list[Ticket]] = {}
        for t in self.tickets.values():
            if t.tif == _DAY:
                by_symbol.setdefault(t.symbol, []).append(t)
        outcomes: list[Outcome] = []
        for symbol in sorted(by_symbol):
            day = sorted(by_symbol[symbol], key=lambda t: t.engine_id)
            run = _Run(symbol)
            run.rows = [(_CANCEL, t.engine_id, 1, _LIMIT, _DAY, 0, 0, 0) for t in day]
            run.slots.append((0, EXPIRE, None, len(day), 0, True, None))
            results: list[Any] = [None]
            self._flush(run, results)
            if results[0][2] or any(t.order_id != EXTERNAL for t in day):
                outcomes.append(results[0])  # (outside liquidity alone leaves unreported)
        return outcomes

    def _open_session(self, session_date: str, participation_bp: int, slippage_ticks: int,
                      bars: list[dict[str, Any]]) -> list[Outcome]:
        """A session's bars: per symbol, the outside liquidity (see the module doc)."""
        external: dict[str, list[Ticket]] = {}
        ours: set[str] = set()
        for t in self.tickets.values():
            if t.order_id == EXTERNAL:
                external.setdefault(t.symbol, []).append(t)
            else:
                ours.add(t.symbol)
        outcomes: list[Outcome] = []
        owns = self.owns
        for bar in sorted(bars, key=lambda b: str(b["symbol"])):
            symbol = bar["symbol"]
            if owns is not None and not owns(symbol):
                continue  # another partition's venue opens it
            try:
                instrument = self._instrument(symbol)
            except (LookupError, DomainError):
                continue  # the command side stores bars only for known symbols
            if symbol not in self.sequences:
                self._open_book(symbol)
            run = _Run(symbol)
            gone = sorted(external.get(symbol, ()), key=lambda t: t.engine_id)
            if gone:  # the previous session's outside liquidity: off the book, unreported
                run.rows = [(_CANCEL, t.engine_id, 1, _LIMIT, _DAY, 0, 0, 0) for t in gone]
                run.slots.append((0, CANCEL, None, len(gone), 0, False, None))
                self._flush(run, [None])
                run = _Run(symbol)
            limits = price_limits(bar["base"])
            grid = (limits.lower, limits.upper)
            if symbol not in ours and self._grids.get(symbol) != grid:
                # an empty book: its grid follows the day's limits
                self.engine.regrid(symbol, *grid)
                self._grids[symbol] = grid
            table = instrument.tick_table
            open_ = bar["open"]
            self.last_prices[symbol] = open_
            ask, bid = open_, open_
            for _ in range(slippage_ticks):
                ask = round_to_tick(ask + 1, table, "up")
                bid = round_to_tick(bid - 1, table, "down") if bid > 1 else bid
            ask = min(ask, round_to_tick(limits.upper, table, "down"))
            bid = max(bid, round_to_tick(limits.lower, table, "up"))
            lot = instrument.lot_size
            size = bar["volume"] * participation_bp // 10_000 // lot * lot
            offered = {"ask": [ask, 0], "bid": [bid, 0]}
            sides: list[str] = []
            if size > 0:
                for side, price in ((-1, ask), (1, bid)):
                    name = "ask" if side == -1 else "bid"
                    eid = ids.engine_id(ids.external_liquidity_id(symbol, session_date, name))
                    ticket = Ticket(eid, EXTERNAL, symbol, side, _DAY, size, size, price)
                    run.rows.append((_NEW, eid, side, _LIMIT, _DAY, price, size,
                                     EXTERNAL_OWNER))
                    run.slots.append((len(sides), NEW, ticket, 1, 0, False, None))
                    sides.append(name)
            results: list[Any] = [None] * len(sides)
            if sides:
                self._flush(run, results)
            reports: list[dict[str, Any]] = [{"kind": "external", "session_date": session_date,
                                              "bid": offered["bid"], "ask": offered["ask"]}]
            sequence, last = self.sequences[symbol], self.last_prices.get(symbol)
            for name, (_, _, more, _) in zip(sides, results, strict=True):
                # the engine may refuse a price off this book's grid (kept for our
                # resting orders): that side then offers nothing
                refused = any(r["kind"] == "refused" for r in more)
                offered[name][1] = 0 if refused else size
                reports.extend(r for r in more if r["kind"] != "refused")
            if results:
                _, sequence, _, last = results[-1]
            outcomes.append((symbol, sequence, reports, last))
        return outcomes

    def _engine_events(self, symbol: str, rows: list[tuple[int, ...]]) -> list[list[int]]:
        """Event rows (``kernels.contract.Event`` field order) for command rows."""
        if self._submit_arrays is not None:
            # fromiter over the flattened rows: half the cost of np.array(list of tuples)
            flat = np.fromiter(chain.from_iterable(rows), np.int64, len(rows) * _ROW)
            return self._submit_arrays(symbol, flat.reshape(-1, _ROW)).tolist()  # type: ignore[no-any-return]
        events = self.engine.submit_batch(symbol, [Command(*r) for r in rows])  # type: ignore[arg-type]
        return [[int(e.kind), e.sequence, e.order_id, e.maker_id, int(e.side), e.price,
                 e.quantity, e.remaining, e.maker_remaining, e.fill_index, int(e.reason)]
                for e in events]

    def _flush(self, run: _Run, results: list[Any]) -> None:
        """Send the run's rows to the engine and read each command's reports back."""
        symbol = run.symbol
        events = self._engine_events(symbol, run.rows) if run.rows else []
        tickets = self.tickets
        reasons = _REASONS
        seq = self.sequences.get(symbol, 0)
        last = self.last_prices.get(symbol)
        j, n = 0, len(events)
        for index, action, ticket, nrows, amend_total, expired, answer in run.slots:
            if nrows == 0:  # the venue answered itself: (stream symbol, reports)
                where, refusal = answer
                results[index] = ((symbol, seq, refusal, last) if where == symbol
                                  else (where, 0, refusal, None))
                continue
            seq += nrows
            reports: list[dict[str, Any]] = []
            while j < n:
                ev = events[j]
                if ev[1] > seq:
                    break
                j += 1
                k = ev[0]
                if k == _ACCEPTED:
                    tickets[ev[2]] = ticket  # type: ignore[assignment]
                elif k == _RESTED:  # the open quantity is known already
                    continue
                elif k == _FILL:
                    maker = tickets[ev[3]]
                    taker = ticket if ticket is not None and ticket.engine_id == ev[2] \
                        else tickets[ev[2]]
                    taker.open = ev[7]
                    maker.open = ev[8]
                    if maker.open == 0:
                        del tickets[ev[3]]
                    last = ev[5]
                    fill = {"kind": "fill",
                            "execution_id": execution_id(symbol, ev[1], ev[9]),
                            "price": last, "quantity": ev[6],
                            "taker": taker.order_id, "maker": maker.order_id}
                    if fill["taker"] == EXTERNAL or fill["maker"] == EXTERNAL:
                        fill["taker"] = None if taker.order_id == EXTERNAL else taker.order_id
                        fill["maker"] = None if maker.order_id == EXTERNAL else maker.order_id
                        fill["external"] = True
                    reports.append(fill)
                elif k == _CANCELLED:
                    gone = tickets.pop(ev[2], None) or ticket
                    assert gone is not None
                    gone.open = 0
                    if gone.order_id == EXTERNAL:  # outside liquidity leaves unreported
                        continue
                    reports.append({"kind": "removed", "order_id": gone.order_id,
                                    "quantity": ev[6],
                                    "reason": _EXPIRED if expired else reasons[ev[10]],
                                    "expired": expired})
                elif k == _AMENDED:
                    assert ticket is not None
                    kept = ev[5] == ticket.price and ev[6] <= ticket.open
                    ticket.quantity, ticket.open, ticket.price = amend_total, ev[6], ev[5]
                    reports.append({"kind": "amended", "order_id": ticket.order_id,
                                    "quantity": amend_total, "price": ev[5],
                                    "priority_kept": kept})
                elif k == _REJECTED:
                    assert ticket is not None
                    reports.append(_refused(ticket.order_id, _action(action), reasons[ev[10]]))
                # REDUCED: never sent
            if ticket is not None and ticket.open == 0 and tickets.get(ticket.engine_id) is ticket:
                del tickets[ticket.engine_id]
            results[index] = (symbol, seq, reports, last)
        if run.rows:
            self.sequences[symbol] = seq
        if last is not None:
            self.last_prices[symbol] = last


def _action(kind: str) -> str:
    """The ``refused`` report's ``action`` (an expiry is a cancel at the engine)."""
    return CANCEL if kind == EXPIRE else kind


# --- snapshots ---------------------------------------------------------------------------
SNAPSHOT_FORMAT = 1


class VenueSnapshots(Protocol):
    """Where the stage keeps its snapshots, the newest few per tracking key
    (``infra.snapshots``: SQLite, PostgreSQL, memory)."""

    def save(self, stage: str, position: int, data: bytes) -> None:
        """Store ``stage``'s state after every input up to ``position``."""

    def latest(self, stage: str, at_most: int) -> tuple[int, bytes] | None:
        """``stage``'s newest snapshot at a position ``<= at_most`` (None: none)."""


def venue_snapshots(settings: Settings, *, schema: str | None = None) -> VenueSnapshots:
    """Snapshots beside the event store the settings name: a table in the same SQLite
    file, or in the same PostgreSQL database and schema (``schema`` as given to
    ``infra.eventstore.eventsourcing_env``); in memory for an in-memory store."""
    return snapshots_for_store(eventsourcing_env(settings, schema=schema))


class Source(Protocol):
    """What :meth:`MatchingStage.start` reads its tail from (``streams.bus.Source``;
    ``name`` and ``partition`` make the tracking key, as the processor's)."""

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]: ...


class MatchingStage:
    """The venue as a tracked stage (``streams.processor.Stage``).

    ``apply`` turns a batch of venue commands into ``Venue.Reported`` events (input
    order; per symbol versions 1, 2, 3, ... on ``ids.venue_id(symbol)``; ``depth`` on
    the last report of each symbol in the batch). ``committed(position)`` snapshots
    every ``snapshot_every`` inputs, under the tracking key
    ``f"matching@{source.name}:{source.partition}"`` of the source ``start`` was given;
    ``start(tracked, source)`` restores the newest snapshot at or before ``tracked`` and
    replays the inputs after it (``replayed`` says how many).

    Calls go ``start`` -> (``apply`` -> ``committed``)*; after a failed commit call
    ``start`` again (the stage's memory is then ahead of the store). ``snapshots=None``
    keeps them in memory (a process that replays from its start anyway). ``owns``: the
    symbols this venue answers for when it is one partition of several (the Kafka
    matching service); a session's bars open only those books.
    """

    name = "matching"
    topics: Sequence[str] = VENUE_COMMAND_TOPICS

    def __init__(
        self,
        engine: Engine,
        instrument: Callable[[str], Instrument],
        snapshots: VenueSnapshots | None = None,
        *,
        snapshot_every: int = 10_000,
        clock: Callable[[], datetime] | None = None,
        read_limit: int = 1000,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        if snapshot_every <= 0:
            raise ValueError(f"snapshot_every: must be positive, got {snapshot_every}")
        self.books = VenueBooks(engine, instrument)
        self.books.owns = owns
        self.snapshots: VenueSnapshots = snapshots if snapshots is not None else MemorySnapshots()
        self.key = f"{self.name}@trading:0"  # the tracking key; start() takes the source's
        self.snapshot_every = snapshot_every
        self.clock: Callable[[], datetime] = clock or _utc_now
        self.read_limit = read_limit
        self.versions: dict[str, int] = {}  # symbol -> originator_version of its last report
        self.position = 0  # the last input applied
        self.replayed = 0  # inputs the last start() fed through after its snapshot
        self.restored_from: int | None = None  # position of the snapshot start() used
        self._since_snapshot = 0
        self._venue_ids: dict[str, UUID] = {}
        # The hash chain of each symbol's venue stream (see infra.chain): one holder per
        # symbol that the codec reads the last digest from and writes the new one to.
        # After a restart a symbol's head is read once from the store with
        # ``chain_head`` (set by the composition root; without it the stream's chain
        # restarts, which ``tradecore audit verify`` reports).
        self.chain_head: Callable[[UUID], str] | None = None
        self._heads: dict[str, SimpleNamespace] = {}

    # -- Stage ------------------------------------------------------------------------
    def start(self, tracked: int, source: Source) -> None:
        """Rebuild memory up to ``tracked``: newest snapshot <= tracked, then the tail."""
        self.key = (f"{self.name}@{getattr(source, 'name', 'trading')}:"
                    f"{getattr(source, 'partition', 0)}")
        found = self.snapshots.latest(self.key, tracked)
        self._heads = {}
        self._load(None)
        self.position = 0
        self.restored_from = None
        if found is not None:
            try:
                self._load(found[1])
            except (ValueError, KeyError, TypeError) as exc:  # an older format, say
                log.warning("%s: snapshot at %d unusable (%s); replaying from the start",
                            self.key, found[0], exc)
                self._load(None)
            else:
                self.position = self.restored_from = found[0]
        self.replayed = 0
        self._since_snapshot = 0
        while self.position < tracked:
            items = [item for item in source.read(self.position, self.read_limit)
                     if item[0] <= tracked]
            if not items:
                break
            self._apply(items, publish=False)
            self.replayed += sum(1 for _, e in items if type(e) in _DECODERS)
        self.position = max(self.position, tracked)

    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]:
        return self._apply(batch, publish=True)

    def committed(self, position: int) -> None:
        """After the commit of everything up to ``position``: snapshot when due.

        A snapshot that cannot be stored is logged and tried again at the next commit:
        it only shortens restarts, and the batch is stored already."""
        if position < self.position:  # apply ran ahead of the commit: not this state
            return
        self.position = position
        if self._since_snapshot >= self.snapshot_every:
            try:
                self.snapshot()
            except Exception:
                log.exception("%s: snapshot at %d not stored", self.key, position)

    # -- snapshots --------------------------------------------------------------------
    def snapshot(self) -> None:
        """Store the state at ``self.position`` now."""
        self.snapshots.save(self.key, self.position, self.state_bytes())
        self._since_snapshot = 0

    def state_bytes(self) -> bytes:
        """The snapshot: one line of JSON (the venue's state, the position, the stream
        versions), a newline, then the engine's own snapshot bytes as they are (not
        nested in a JSON string, to be escaped and parsed twice)."""
        image, engine = self.books.image()
        image["format"] = SNAPSHOT_FORMAT
        image["position"] = self.position
        image["versions"] = dict(self.versions)
        return json.dumps(image, separators=(",", ":"), sort_keys=True).encode() + b"\n" + engine

    def _load(self, data: bytes | None) -> None:
        if data is None:
            self.books.load(None)
            self.versions = {}
            return
        head, _, engine = data.partition(b"\n")
        image = json.loads(head)
        if image.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"venue snapshot: format {image.get('format')!r} is not "
                             f"{SNAPSHOT_FORMAT}")
        self.books.load(image, engine)
        self.versions = {s: int(v) for s, v in image["versions"].items()}

    # -- the work ---------------------------------------------------------------------
    def _apply(self, batch: list[tuple[int, Any]], *, publish: bool) -> list[Any]:
        if not batch:
            return []
        decoders = _DECODERS
        events = [e for _, e in batch]
        commands = [None if (d := decoders.get(type(e))) is None else d(e) for e in events]
        results = self.books.run(commands)
        self.position = batch[-1][0]
        self._since_snapshot += len(commands) - commands.count(None)
        versions = self.versions
        if not publish:
            for outcome in results:
                if outcome is None:
                    continue
                for o in (outcome if type(outcome) is list else (outcome,)):
                    versions[o[0]] = versions.get(o[0], 0) + 1
            return []
        now = self.clock()
        new = object.__new__
        setattr_ = object.__setattr__
        cls = Venue.Reported
        venue_ids = self._venue_ids
        heads = self._heads
        holders = cls._chain_holders  # see TradingAggregate.collect_events
        if len(holders) > 100_000:  # reports made and never stored (tests, dry runs)
            holders.clear()
        out: list[Any] = []
        last_of: dict[str, Any] = {}
        for event, command, outcome in zip(events, commands, results, strict=True):
            if outcome is None:
                continue
            assert command is not None
            cause = f"{command[3]}:{event.originator_version}"
            command_id = "match:" + cause
            correlation = event.correlation_id
            kind = command[0]
            if kind in (CLOSE, OPEN):
                kind = EXPIRE if kind == CLOSE else OPEN
                order_id: UUID | None = None
                outcomes = outcome
            else:
                order_id = event.originator_id
                outcomes = (outcome,)
            for symbol, sequence, reports, last_price in outcomes:
                version = versions.get(symbol, 0) + 1
                versions[symbol] = version
                reported = new(cls)
                # How the eventsourcing mapper materialises a stored event: the object the
                # constructor builds (a test compares them), at a fraction of the cost.
                venue_id = venue_ids.get(symbol)
                if venue_id is None:
                    venue_id = venue_ids[symbol] = ids.venue_id(symbol)
                head = heads.get(symbol)
                if head is None:
                    head = heads[symbol] = self._chain_head_of(venue_id, version)
                setattr_(reported, "__dict__", {
                    "originator_id": venue_id,
                    "originator_version": version,
                    "timestamp": now,
                    "principal": VENUE_PRINCIPAL,
                    "command_id": command_id,
                    "correlation_id": correlation,
                    "causation_id": cause,
                    "symbol": symbol,
                    "sequence": sequence,
                    "command": kind,
                    "order_id": order_id,
                    "reports": reports,
                    "last_price": last_price,
                    "depth": None,
                })
                holders[(venue_id, version)] = head
                out.append(reported)
                last_of[symbol] = reported
        depth = self.books.depth
        for symbol, reported in last_of.items():
            reported.__dict__["depth"] = depth(symbol)
        return out

    def _chain_head_of(self, venue_id: UUID, version: int) -> SimpleNamespace:
        """The holder of a venue stream's chain head: empty for its first event, else
        the digest of its last stored event (one read, after a restart)."""
        head = SimpleNamespace()
        if version > 1 and self.chain_head is not None:
            digest = self.chain_head(venue_id)
            if digest:
                head._chain = digest
        return head


def _utc_now() -> datetime:
    return datetime.now(UTC)
