"""The matching port: the saga talks to a venue through :class:`MatchingDesk`.

The desk translates domain orders (UUIDs, string enums) into the engine contract
(``kernels.contract``: ints only) and engine events back into domain reports. Which
engine sits behind it (the readable reference or the Numba kernel facade) is a
setting; both obey the same contract and produce identical outputs.

The desk's state (the engine's books plus the tickets of resting orders) is a pure
function of the routed commands it was given, in order. After a restart the
application rebuilds it by replaying the routed events it had already processed,
so fills derived again carry the same execution ids and are dropped as duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from aggregates.instruments import Instrument
from kernels.contract import (
    Command,
    CommandKind,
    Depth,
    Engine,
    EventKind,
    Reason,
    execution_id,
)
from kernels.contract import OrderType as EngineOrderType
from kernels.contract import Side as EngineSide
from kernels.contract import TimeInForce as EngineTif

MatchingEngine = Engine
"""The port's engine interface (see ``kernels.contract.Engine``)."""

_SIDES = {"buy": EngineSide.BUY, "sell": EngineSide.SELL}
_TYPES = {"limit": EngineOrderType.LIMIT, "market": EngineOrderType.MARKET}
_TIFS = {"day": EngineTif.DAY, "gtc": EngineTif.GTC, "ioc": EngineTif.IOC, "fok": EngineTif.FOK}


def make_engine(name: str) -> MatchingEngine:
    """The engine named by the ``matching_engine`` setting."""
    if name == "reference":
        from kernels.reference import ReferenceEngine

        return ReferenceEngine()
    if name == "kernel":
        from kernels.engine import KernelEngine

        return KernelEngine()
    raise ValueError(f"matching_engine={name!r}: expected 'reference' or 'kernel'")


@dataclass(slots=True)
class Ticket:
    """A routed order as the venue knows it."""

    order_id: UUID
    account_id: UUID
    symbol: str
    side: str
    tif: str
    engine_id: int
    quantity: int  # the order's total quantity
    open: int  # what is still open at the venue
    price: int


@dataclass(frozen=True, slots=True)
class Execution:
    execution_id: str
    symbol: str
    price: int
    quantity: int
    taker: Ticket
    maker: Ticket


@dataclass(frozen=True, slots=True)
class Removal:
    ticket: Ticket
    quantity: int
    reason: str
    expired: bool


@dataclass(frozen=True, slots=True)
class AmendReport:
    ticket: Ticket
    quantity: int  # new total quantity
    price: int
    priority_kept: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    ticket: Ticket
    action: str  # "new" | "cancel" | "amend"
    reason: str


Report = Execution | Removal | AmendReport | Refusal


class MatchingDesk:
    def __init__(self, engine: MatchingEngine, instrument: Callable[[str], Instrument]) -> None:
        self.engine = engine
        self._instrument = instrument
        self._symbols: set[str] = set()
        self.tickets: dict[int, Ticket] = {}
        self.last_prices: dict[str, int] = {}

    # -- commands -----------------------------------------------------------------------
    def new(
        self, *, order_id: UUID, account_id: UUID, symbol: str, side: str, order_type: str,
        tif: str, quantity: int, price: int, engine_order_id: int, owner: int,
    ) -> list[Report]:
        self._open_book(symbol)
        ticket = Ticket(order_id, account_id, symbol, side, tif, engine_order_id, quantity,
                        quantity, price)
        if engine_order_id in self.tickets:
            return [Refusal(ticket, "new", Reason.DUPLICATE_ID.name.lower())]
        self.tickets[engine_order_id] = ticket
        command = Command(CommandKind.NEW, engine_order_id, _SIDES[side], _TYPES[order_type],
                          _TIFS[tif], price, quantity, owner)
        return self._submit(symbol, command, "new", ticket)

    def cancel(self, engine_order_id: int, *, expire: bool = False) -> list[Report]:
        ticket = self.tickets.get(engine_order_id)
        if ticket is None:
            return []
        return self._submit(ticket.symbol, Command(CommandKind.CANCEL, engine_order_id),
                            "cancel", ticket, expire=expire)

    def amend(self, engine_order_id: int, quantity: int, price: int) -> list[Report]:
        """Amend to a new total ``quantity``; the venue converts it to a new open quantity."""
        ticket = self.tickets.get(engine_order_id)
        if ticket is None:
            return []
        filled = ticket.quantity - ticket.open
        new_open = quantity - filled
        if new_open <= 0:
            return [Refusal(ticket, "amend", "quantity not above the filled quantity")]
        command = Command(CommandKind.AMEND, engine_order_id, _SIDES[ticket.side],
                          EngineOrderType.LIMIT, _TIFS[ticket.tif], price, new_open)
        return self._submit(ticket.symbol, command, "amend", ticket, amend_total=quantity)

    # -- queries ------------------------------------------------------------------------
    def open_day_orders(self) -> list[Ticket]:
        return [t for t in self.tickets.values() if t.tif == "day"]

    def last_price(self, symbol: str) -> int | None:
        return self.last_prices.get(symbol)

    def depth(self, symbol: str, levels: int) -> Depth:
        """Top ``levels`` price levels a side (empty for a symbol nobody has traded)."""
        if symbol not in self._symbols:
            return Depth((), ())
        return self.engine.depth(symbol, levels)

    # -- internals ----------------------------------------------------------------------
    def _open_book(self, symbol: str) -> None:
        if symbol not in self._symbols:
            instrument = self._instrument(symbol)
            limits = instrument.limits
            self.engine.add_symbol(symbol, instrument.tick_bands, limits.lower, limits.upper)
            self._symbols.add(symbol)

    def _submit(
        self, symbol: str, command: Command, action: str, ticket: Ticket, *,
        expire: bool = False, amend_total: int = 0,
    ) -> list[Report]:
        reports: list[Report] = []
        for ev in self.engine.submit(symbol, command):
            if ev.kind is EventKind.FILL:
                maker = self.tickets[ev.maker_id]
                taker = self.tickets[ev.order_id]
                taker.open = ev.remaining
                maker.open = ev.maker_remaining
                if maker.open == 0:
                    del self.tickets[ev.maker_id]
                self.last_prices[symbol] = ev.price
                reports.append(Execution(execution_id(symbol, ev.sequence, ev.fill_index),
                                         symbol, ev.price, ev.quantity, taker, maker))
            elif ev.kind is EventKind.CANCELLED:
                gone = self.tickets.pop(ev.order_id, ticket)
                reports.append(Removal(gone, ev.quantity, ev.reason.name.lower(), expire))
            elif ev.kind is EventKind.AMENDED:
                kept = ev.price == ticket.price and ev.quantity <= ticket.open
                ticket.quantity, ticket.open, ticket.price = amend_total, ev.quantity, ev.price
                reports.append(AmendReport(ticket, amend_total, ev.price, kept))
            elif ev.kind is EventKind.REJECTED:
                if action == "new":
                    self.tickets.pop(ev.order_id, None)
                reports.append(Refusal(ticket, action, ev.reason.name.lower()))
            elif ev.kind is EventKind.REDUCED:
                ticket.open = ev.remaining
        if ticket.open == 0:
            self.tickets.pop(ticket.engine_id, None)
        return reports
