"""The order saga: what follows each stored event, across Order, Account and Position.

    Order.Placed        -> pre-trade risk -> reserve funds/shares -> Accepted + Routed
                           (or Rejected, nothing reserved)
    Order.Routed        -> venue NEW  -> fills / rests / IOC-FOK remainder cancelled
    Order.CancelRequested -> CancelRouted (or CancelRejected when already final)
    Order.CancelRouted  -> venue CANCEL -> Cancelled + reservation released
    Order.AmendRequested -> risk on the new terms, reserve the extra -> AmendRouted
    Order.AmendRouted   -> venue AMEND -> Amended (+ fills) or AmendRejected
    Market.SessionClosed -> ExpiryRouted for every resting DAY order
    Order.ExpiryRouted  -> venue CANCEL -> Expired + reservation released

Every fill is applied to both orders, both positions and both accounts, each
deduplicated by execution id; after every change an order's reservation is brought
back to exactly what its open quantity still needs (nothing once it is final).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from uuid import UUID

from aggregates.account import Account
from aggregates.base import Meta
from aggregates.errors import DomainError
from aggregates.fees import CommissionSchedule
from aggregates.ids import engine_id
from aggregates.instruments import Instrument
from aggregates.market import Market
from aggregates.matching import (
    AmendReport,
    Execution,
    MatchingDesk,
    Refusal,
    Removal,
    Report,
)
from aggregates.order import Order, OrderStatus, OrderType, Side
from aggregates.position import Position
from aggregates.risk import OrderTerms, Reservation, RiskLimits, assess, notional_yen, worst_price


class Aggregates(Protocol):
    """The unit of work the saga reads and changes aggregates through."""

    def order(self, id: UUID) -> Order: ...
    def account(self, id: UUID) -> Account: ...
    def position(self, account_id: UUID, symbol: str, meta: Meta | None = None) -> Position | None:
        """The position, created when ``meta`` is given and it does not exist yet."""

    def market(self) -> Market | None: ...


@dataclass
class OrderSaga:
    instrument: Callable[[str], Instrument]
    desk: MatchingDesk
    limits: RiskLimits
    schedule: CommissionSchedule

    def handle(self, event: Any, uow: Aggregates) -> None:
        handler = self._handlers.get(type(event).__qualname__)
        if handler is not None:
            handler(self, event, uow)

    # -- routing --------------------------------------------------------------------
    def on_placed(self, e: Order.Placed, uow: Aggregates) -> None:
        meta = Meta.caused_by(e, "risk")
        order = uow.order(e.originator_id)
        if order.status is not OrderStatus.PLACED:
            return
        account = uow.account(order.account_id)
        position = uow.position(order.account_id, order.symbol)
        market = uow.market()
        try:
            reservation = assess(
                _terms(order, order.quantity, order.price),
                instrument=self.instrument(order.symbol),
                account=account,
                position=position,
                last_price=self.desk.last_price(order.symbol),
                symbol_halted=market is not None and order.symbol in market.halted_symbols,
                limits=self.limits,
                schedule=self.schedule,
            )
        except DomainError as err:
            order.reject(err.field, err.rule, err.message, meta)
            return
        account.reserve(order.id, reservation.funds, meta)
        if reservation.shares:
            position = uow.position(order.account_id, order.symbol, meta)
            assert position is not None
            position.reserve(order.id, reservation.shares, meta)
        order.accept(reservation.funds, reservation.shares, meta)
        order.route(engine_id(order.id), engine_id(order.account_id), meta)

    def to_venue(self, e: Any) -> list[Report]:
        """Send a routed event to the venue. Also how the desk is rebuilt after a restart."""
        kind = type(e).__qualname__
        if kind == "Order.Routed":
            return self.desk.new(
                order_id=e.originator_id, account_id=e.account_id, symbol=e.symbol,
                side=e.side, order_type=e.order_type, tif=e.tif, quantity=e.quantity,
                price=e.price, engine_order_id=e.engine_order_id, owner=e.owner,
            )
        if kind == "Order.CancelRouted":
            return self.desk.cancel(e.engine_order_id)
        if kind == "Order.ExpiryRouted":
            return self.desk.cancel(e.engine_order_id, expire=True)
        if kind == "Order.AmendRouted":
            return self.desk.amend(e.engine_order_id, e.quantity, e.price)
        return []

    def on_routed(self, e: Order.Routed, uow: Aggregates) -> None:
        self._apply(self.to_venue(e), uow, Meta.caused_by(e, "match"))

    def on_cancel_requested(self, e: Order.CancelRequested, uow: Aggregates) -> None:
        meta = Meta.caused_by(e, "cancel")
        order = uow.order(e.originator_id)
        if order.is_open:
            order.route_cancel(meta)
        elif order.cancel_pending:
            order.reject_cancel(f"order is {order.status.value}", meta)

    def on_cancel_routed(self, e: Order.CancelRouted, uow: Aggregates) -> None:
        self._apply(self.to_venue(e), uow, Meta.caused_by(e, "match"))
        order = uow.order(e.originator_id)
        if order.cancel_pending:  # the venue no longer had it: it filled meanwhile
            order.reject_cancel(f"order is {order.status.value}", Meta.caused_by(e, "match"))

    def on_amend_requested(self, e: Order.AmendRequested, uow: Aggregates) -> None:
        meta = Meta.caused_by(e, "amend")
        order = uow.order(e.originator_id)
        account = uow.account(order.account_id)
        position = uow.position(order.account_id, order.symbol)
        held = Reservation(account.reserved_for(order.id),
                           position.reserved_for(order.id) if position else 0)
        if not order.is_open:
            order.reject_amend("status", "order is open", f"order is {order.status.value}",
                               held.funds, meta)
            return
        try:
            if e.quantity <= order.filled_quantity:
                raise DomainError("quantity", "above the filled quantity", e.quantity)
            market = uow.market()
            needed = assess(
                _terms(order, e.quantity - order.filled_quantity, e.price),
                instrument=self.instrument(order.symbol), account=account, position=position,
                last_price=self.desk.last_price(order.symbol),
                symbol_halted=market is not None and order.symbol in market.halted_symbols,
                limits=self.limits, schedule=self.schedule, already_reserved=held,
            )
        except DomainError as err:
            order.reject_amend(err.field, err.rule, err.message, held.funds, meta)
            return
        if needed.funds > held.funds:
            account.reserve(order.id, needed.funds - held.funds, meta)
        if needed.shares > held.shares and position is not None:
            position.reserve(order.id, needed.shares - held.shares, meta)
        order.route_amend(e.quantity, e.price, max(needed.funds, held.funds), meta)

    def on_amend_routed(self, e: Order.AmendRouted, uow: Aggregates) -> None:
        meta = Meta.caused_by(e, "match")
        reports = self.to_venue(e)
        order = uow.order(e.originator_id)
        if not reports and order.amend_pending:  # gone from the venue meanwhile
            order.reject_amend("status", "order is open", f"order is {order.status.value}",
                               order.reserved_funds, meta)
        self._apply(reports, uow, meta)
        self._rebalance(order, uow, meta)

    def on_session_closed(self, e: Market.SessionClosed, uow: Aggregates) -> None:
        meta = Meta.caused_by(e, "expire")
        for ticket in self.desk.open_day_orders():
            order = uow.order(ticket.order_id)
            if order.is_open:
                order.route_expiry(meta)

    def on_expiry_routed(self, e: Order.ExpiryRouted, uow: Aggregates) -> None:
        self._apply(self.to_venue(e), uow, Meta.caused_by(e, "match"))

    # -- venue reports ----------------------------------------------------------------
    def _apply(self, reports: list[Report], uow: Aggregates, meta: Meta) -> None:
        for report in reports:
            if isinstance(report, Execution):
                self._fill(report, report.taker.order_id, "taker", uow, meta)
                self._fill(report, report.maker.order_id, "maker", uow, meta)
            elif isinstance(report, Removal):
                order = uow.order(report.ticket.order_id)
                if order.is_final:
                    continue
                if report.expired:
                    order.expire(report.quantity, meta)
                else:
                    order.cancel(report.quantity, report.reason, meta)
                self._rebalance(order, uow, meta)
            elif isinstance(report, AmendReport):
                order = uow.order(report.ticket.order_id)
                order.amended(report.quantity, report.price, report.priority_kept, meta)
                self._rebalance(order, uow, meta)
            elif isinstance(report, Refusal):
                order = uow.order(report.ticket.order_id)
                if report.action == "cancel" and order.cancel_pending:
                    order.reject_cancel(report.reason, meta)
                elif report.action == "amend" and order.amend_pending:
                    order.reject_amend("venue", "accepted by the venue", report.reason,
                                       order.reserved_funds, meta)
                elif report.action == "new" and order.is_open:
                    order.cancel(order.open_quantity, f"venue rejected: {report.reason}", meta)
                self._rebalance(order, uow, meta)

    def _fill(self, ex: Execution, order_id: UUID, liquidity: str, uow: Aggregates,
              meta: Meta) -> None:
        order = uow.order(order_id)
        notional = notional_yen(ex.price, ex.quantity)
        fee = (self.schedule.commission(order.filled_notional + notional)
               - self.schedule.commission(order.filled_notional))
        if not order.fill(ex.execution_id, ex.price, ex.quantity, notional, fee, liquidity,
                          meta):
            return
        leg = f"{ex.execution_id}:{order.side.value}"
        position = uow.position(order.account_id, order.symbol, meta)
        assert position is not None
        position.apply_fill(order.id, leg, order.side.value, ex.price, ex.quantity, notional,
                            meta)
        account = uow.account(order.account_id)
        if order.side is Side.BUY:
            account.settle_buy(order.id, leg, notional, fee, meta)
        else:
            account.settle_sell(order.id, leg, notional, fee, meta)
        self._rebalance(order, uow, meta)

    def _rebalance(self, order: Order, uow: Aggregates, meta: Meta) -> None:
        """Release whatever the order's reservation holds beyond what its open part needs."""
        account = uow.account(order.account_id)
        position = uow.position(order.account_id, order.symbol)
        need = self._still_needed(order, account, position)
        excess = account.reserved_for(order.id) - need.funds
        if excess > 0:
            account.release(order.id, excess, meta)
        if position is not None:
            extra_shares = position.reserved_for(order.id) - need.shares
            if extra_shares > 0:
                position.release(order.id, extra_shares, meta)

    def _still_needed(self, order: Order, account: Account, position: Position | None
                      ) -> Reservation:
        if not order.is_open:
            return Reservation(0, 0)
        open_qty = order.open_quantity
        instrument = self.instrument(order.symbol)
        price = worst_price(_terms(order, open_qty, order.price), instrument)
        notional = notional_yen(price, open_qty)
        fee = (self.schedule.commission(order.filled_notional + notional)
               - self.schedule.commission(order.filled_notional))
        if order.side is Side.BUY:
            return Reservation(notional + fee, 0)
        shares = min(open_qty, position.reserved_for(order.id) if position else 0)
        return Reservation(fee + notional_yen(price, open_qty - shares), shares)

    _handlers: ClassVar[dict[str, Callable[[OrderSaga, Any, Aggregates], None]]] = {
        "Order.Placed": on_placed,
        "Order.Routed": on_routed,
        "Order.CancelRequested": on_cancel_requested,
        "Order.CancelRouted": on_cancel_routed,
        "Order.AmendRequested": on_amend_requested,
        "Order.AmendRouted": on_amend_routed,
        "Order.ExpiryRouted": on_expiry_routed,
        "Market.SessionClosed": on_session_closed,
    }


def _terms(order: Order, quantity: int, price: int) -> OrderTerms:
    return OrderTerms(order.symbol, order.side, order.order_type, order.tif, quantity,
                      price if order.order_type is OrderType.LIMIT else 0)


ROUTED_TOPICS = ("Order.Routed", "Order.CancelRouted", "Order.AmendRouted", "Order.ExpiryRouted")
"""Events that feed the venue: replaying them rebuilds the desk after a restart."""

