"""The Position aggregate: shares held by one account in one symbol.

Average-cost accounting in integer yen: ``cost`` is the yen paid for the shares still
held (negative for a short: the yen received). Reducing a position by ``q`` of ``Q``
shares removes ``floor(cost * q / Q)`` (towards zero) and leaves the remainder in the
cost of what is still held, so over a full round trip realised PnL is exact to the yen.
Fees are not in the cost basis; the Account books them.

Shares reserved for open sell orders cannot be sold twice: ``available`` = held -
reserved. Short selling is allowed only for accounts opened with ``allow_short``.
"""

from __future__ import annotations

from uuid import UUID

from aggregates.base import Meta, TradingAggregate
from aggregates.errors import RiskRejection
from aggregates.holds import Holds


class Position(TradingAggregate, Holds):
    class Opened(TradingAggregate.Created):
        """An account's first holding of a symbol (no shares yet)."""

        account_id: UUID
        symbol: str

    class FillApplied(TradingAggregate.Event):
        """One execution booked: shares and average cost after it, PnL realised by it."""

        order_id: UUID
        execution_id: str
        side: str
        price: int
        quantity: int
        notional: int
        quantity_after: int
        cost_after: int
        realised: int
        from_reservation: int

        def apply(self, position: Position) -> None:
            position.quantity = self.quantity_after
            position.cost = self.cost_after
            position.realised_pnl += self.realised
            position._take_hold(self.order_id, self.from_reservation)

    class SharesReserved(TradingAggregate.Event):
        """Shares held for an open sell order."""

        order_id: UUID
        quantity: int

        def apply(self, position: Position) -> None:
            position._hold(self.order_id, self.quantity)

    class SharesReleased(TradingAggregate.Event):
        """Shares no longer held for an order (cancelled, expired, amended down)."""

        order_id: UUID
        quantity: int

        def apply(self, position: Position) -> None:
            position._take_hold(self.order_id, self.quantity)

    def __init__(self, account_id: UUID, symbol: str) -> None:
        self.account_id = account_id
        self.symbol = symbol
        self.quantity = 0
        self.cost = 0
        self.realised_pnl = 0
        self._init_holds()

    @classmethod
    def open(cls, id: UUID, *, account_id: UUID, symbol: str, meta: Meta) -> Position:
        return cls._create_with(cls.Opened, meta, id=id, account_id=account_id, symbol=symbol)

    @property
    def available(self) -> int:
        """Long shares not committed to open sell orders."""
        return max(self.quantity, 0) - self.reserved

    def reserve(self, order_id: UUID, quantity: int, meta: Meta) -> None:
        if quantity > self.available:
            raise RiskRejection(
                "quantity", "shares available to sell", quantity,
                f"sell of {quantity} {self.symbol} exceeds {self.available} available shares",
            )
        if quantity:
            self._record(self.SharesReserved, meta, order_id=order_id, quantity=quantity)

    def release(self, order_id: UUID, quantity: int, meta: Meta) -> None:
        quantity = min(quantity, self.reserved_for(order_id))
        if quantity > 0:
            self._record(self.SharesReleased, meta, order_id=order_id, quantity=quantity)

    def apply_fill(
        self, order_id: UUID, execution_id: str, side: str, price: int, quantity: int,
        notional: int, meta: Meta,
    ) -> None:
        """Book one execution.

        Not deduplicated here: the saga books a fill on the position only when the Order
        accepted it (orders drop repeated execution ids) and in the same transaction.
        """
        signed_qty = quantity if side == "buy" else -quantity
        signed_cash = notional if side == "buy" else -notional
        qty_after, cost_after, realised = _apply(self.quantity, self.cost, signed_qty, signed_cash)
        from_reservation = 0 if side == "buy" else min(quantity, self.reserved_for(order_id))
        self._record(
            self.FillApplied, meta, order_id=order_id, execution_id=execution_id, side=side,
            price=price, quantity=quantity, notional=notional, quantity_after=qty_after,
            cost_after=cost_after, realised=realised, from_reservation=from_reservation,
        )


def _apply(qty: int, cost: int, dq: int, dcash: int) -> tuple[int, int, int]:
    """Average-cost update: returns (quantity, cost, realised) after a signed fill.

    ``dq`` shares bought (+) or sold (-) for ``dcash`` yen (+ paid, - received).
    """
    if qty == 0 or (qty > 0) == (dq > 0):
        return qty + dq, cost + dcash, 0
    closing = min(abs(dq), abs(qty))
    # cost of the closed part, rounded towards zero; the remainder stays with what is held
    removed = abs(cost) * closing // abs(qty)
    removed = removed if cost >= 0 else -removed
    cash_for_closing = dcash * closing // abs(dq) if closing < abs(dq) else dcash
    # long closed by a sale: proceeds (-cash) minus cost; short closed by a buy: the same
    realised = -cash_for_closing - removed
    qty_after = qty + dq
    cost_after = cost - removed
    if closing < abs(dq):  # flipped through zero: the rest opens a new position
        cost_after = dcash - cash_for_closing
    return qty_after, cost_after, realised
