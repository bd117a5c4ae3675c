"""The matching engine contract: commands in, events out, all plain integers.

Both engines behind the write model's ``MatchingEngine`` port speak this contract:
the readable pure-Python reference (``kernels.reference``) and the Numba kernel facade
(``kernels.engine``). Their outputs must be identical for identical inputs (property
tests hold them together), so every field here is an int or an int enum.

Prices are integers in the instrument's price units (for Japanese equities: tenths of
a yen, so the TOPIX100 table's 0.1-yen tick is representable). Quantities are shares.
Order ids are caller-chosen positive int64 values; ``owner`` is a caller-chosen int64
used only for self-trade prevention (0 = none).

Determinism: an engine's output is a pure function of its input sequence per symbol.
Every command, valid or not, gets the symbol's next input sequence number (1, 2, ...),
stamped on each event it produces; fills carry a ``fill_index`` (0, 1, ...) within
that command, so ``execution_id(symbol, sequence, fill_index)`` is stable on replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class Side(IntEnum):
    BUY = 1
    SELL = -1


class OrderType(IntEnum):
    LIMIT = 0
    MARKET = 1


class TimeInForce(IntEnum):
    DAY = 0  # rests until cancelled or expired at the end of the session
    GTC = 1  # rests until cancelled
    IOC = 2  # fills what it can now, the rest is cancelled
    FOK = 3  # fills completely now or not at all


class CommandKind(IntEnum):
    NEW = 0
    CANCEL = 1  # remove the whole remaining quantity
    REDUCE = 2  # partial cancel: ``quantity`` is the amount to take off; keeps priority
    AMEND = 3  # ``price`` and ``quantity`` are the new price and new open quantity


class EventKind(IntEnum):
    ACCEPTED = 0  # a NEW order passed validation (emitted before any of its fills)
    FILL = 1  # order_id = taker (aggressor), maker_id = resting order
    RESTED = 2  # the remainder of a NEW/AMEND now rests on the book (quantity = resting)
    CANCELLED = 3  # quantity = amount removed from the book or never rested; see reason
    REDUCED = 4  # quantity = amount taken off; remaining = what still rests
    AMENDED = 5  # price/quantity = new values; priority lost unless qty went down only
    REJECTED = 6  # nothing changed; see reason


class Reason(IntEnum):
    """Why an order was cancelled or a command rejected."""

    NONE = 0
    # cancellations
    REQUESTED = 1  # CANCEL command
    IOC_REMAINDER = 2  # IOC (or MARKET) did not fill completely
    FOK_UNFILLABLE = 3  # FOK could not fill completely: nothing traded
    NO_LIQUIDITY = 4  # MARKET order met an empty opposite side
    SELF_TRADE = 5  # self-trade prevention cancelled the incoming order
    # rejections
    UNKNOWN_ORDER = 10  # cancel/reduce/amend of an order that is not resting
    BAD_QUANTITY = 11  # zero or negative, or a reduce larger than the open quantity
    OFF_TICK = 12  # price not on the symbol's tick grid
    OUT_OF_RANGE = 13  # price outside the grid's [min_price, max_price]
    DUPLICATE_ID = 14  # NEW with an id that is resting already
    BAD_COMMAND = 15  # unknown kind/side/type/time in force


@dataclass(frozen=True, slots=True)
class Command:
    kind: CommandKind
    order_id: int
    side: Side = Side.BUY
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    price: int = 0  # ignored for MARKET and CANCEL
    quantity: int = 0
    owner: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One engine output. Per command the order is fixed:

    NEW: ACCEPTED, then FILLs (best price first, FIFO within a level), then RESTED
    (DAY/GTC remainder) or CANCELLED (IOC/MARKET remainder, FOK_UNFILLABLE with no fills,
    NO_LIQUIDITY, SELF_TRADE). AMEND: AMENDED, then, when the price changed, the order
    re-enters as an aggressor (FILLs, then RESTED). Invalid commands: one REJECTED.
    """

    kind: EventKind
    sequence: int  # the symbol's input sequence number of the command that caused it
    order_id: int
    maker_id: int = 0  # FILL only
    side: Side = Side.BUY  # side of ``order_id``
    price: int = 0  # FILL: execution price (the maker's); RESTED/AMENDED: book price
    quantity: int = 0  # FILL: executed; RESTED: resting; CANCELLED/REDUCED: removed
    remaining: int = 0  # open quantity of ``order_id`` after this event
    maker_remaining: int = 0  # FILL only: open quantity of the maker after the fill
    fill_index: int = 0  # FILL only: 0, 1, ... within the command
    reason: Reason = Reason.NONE


@dataclass(frozen=True, slots=True)
class TickBand:
    """Prices up to and including ``upper`` (price units) move in steps of ``tick``."""

    upper: int
    tick: int


@dataclass(frozen=True, slots=True)
class Level:
    price: int
    quantity: int
    orders: int


@dataclass(frozen=True, slots=True)
class Depth:
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first


def execution_id(symbol: str, sequence: int, fill_index: int) -> str:
    """Stable id of a fill: the same input sequence replayed gives the same ids."""
    return f"{symbol}:{sequence}:{fill_index}"


class Engine(Protocol):
    """What the write model needs from a matching engine (per-symbol books)."""

    def add_symbol(
        self, symbol: str, bands: Sequence[TickBand], min_price: int, max_price: int
    ) -> None:
        """Open a book; its grid is the tick bands clipped to [min_price, max_price]."""

    def regrid(self, symbol: str, min_price: int, max_price: int) -> None:
        """Move an empty book's grid to a new session's limits; the sequence carries on
        (``ValueError`` while orders rest)."""

    def submit(self, symbol: str, command: Command) -> list[Event]:
        """Apply one command; return its events in order."""

    def submit_batch(self, symbol: str, commands: Sequence[Command]) -> list[Event]:
        """Apply commands in order; same events as submitting them one by one."""

    def depth(self, symbol: str, levels: int = 10) -> Depth: ...

    def sequence(self, symbol: str) -> int:
        """Input sequence number of the last command applied to the symbol (0 = none)."""

    def snapshot(self) -> bytes:
        """Every book, grid and sequence, as bytes ``restore`` accepts."""

    def restore(self, data: bytes) -> None: ...
