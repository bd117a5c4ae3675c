"""The order saga: what follows each stored event, across Order, Account and Position.

    Order.Placed          -> Accepted + Routed (the command already assessed risk and
                             reserved; a version-1 Placed is assessed and reserved here)
    Order.CancelRequested -> CancelRouted (or CancelRejected when already final)
    Order.AmendRequested  -> risk on the new terms, reserve the extra -> AmendRouted
    Venue.Reported        -> fills (both orders, both positions, both accounts),
                             cancels, expiries, amends, refusals

The saga never calls the venue: the routed events it stores are the venue's commands,
which the matching stage consumes, and it learns what the venue did from the
``Venue.Reported`` events that stage stores. Every fill is applied to both orders, both
positions and both accounts, each deduplicated by execution id; after every change an
order's reservation is brought back to exactly what its open quantity still needs
(nothing once it is final).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from uuid import UUID

from aggregates.account import Account
from aggregates.base import Meta
from aggregates.clock import Clock, SystemClock
from aggregates.errors import DomainError
from aggregates.fees import CommissionSchedule
from aggregates.ids import engine_id
from aggregates.instruments import Instrument
from aggregates.market import Market
from aggregates.order import Order, OrderStatus, OrderType, Side
from aggregates.position import Position
from aggregates.risk import OrderTerms, Reservation, RiskLimits, assess, notional_yen, worst_price
from aggregates.venue import Venue


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
    last_price: Callable[[str], int | None]  # as the venue last published it
    limits: RiskLimits
    schedule: CommissionSchedule
    clock: Clock = field(default_factory=SystemClock)

    def _meta(self, event: Any, step: str) -> Meta:
        return Meta.caused_by(event, step, at=self.clock.now())

    def handle(self, event: Any, uow: Aggregates) -> None:
        handler = self._handlers.get(type(event).__qualname__)
        if handler is not None:
            handler(self, event, uow)

    # -- routing --------------------------------------------------------------------
    def on_placed(self, e: Order.Placed, uow: Aggregates) -> None:
        meta = self._meta(e, "route")
        order = uow.order(e.originator_id)
        if order.status is not OrderStatus.PLACED:
            return
        if order.reserved_at_placement:
            order.accept(order.reserved_funds, order.reserved_shares, meta)
        elif not self._reserve_legacy(order, uow, meta):
            return
        order.route(engine_id(order.id), engine_id(order.account_id), meta)

    def _reserve_legacy(self, order: Order, uow: Aggregates, meta: Meta) -> bool:
        """A version-1 Placed (stored before commands reserved): assess and reserve now."""
        account = uow.account(order.account_id)
        position = uow.position(order.account_id, order.symbol)
        market = uow.market()
        try:
            reservation = assess(
                _terms(order, order.quantity, order.price),
                instrument=self.instrument(order.symbol),
                account=account,
                position=position,
                last_price=self.last_price(order.symbol),
                symbol_halted=market is not None and order.symbol in market.halted_symbols,
                limits=self.limits,
                schedule=self.schedule,
            )
        except DomainError as err:
            order.reject(err.field, err.rule, err.message, meta)
            return False
        account.reserve(order.id, reservation.funds, meta)
        if reservation.shares:
            position = uow.position(order.account_id, order.symbol, meta)
            assert position is not None
            position.reserve(order.id, reservation.shares, meta)
        order.accept(reservation.funds, reservation.shares, meta)
        return True

    def on_cancel_requested(self, e: Order.CancelRequested, uow: Aggregates) -> None:
        meta = self._meta(e, "cancel")
        order = uow.order(e.originator_id)
        if order.is_open:
            order.route_cancel(meta)
        elif order.cancel_pending:
            order.reject_cancel(f"order is {order.status.value}", meta)

    def on_amend_requested(self, e: Order.AmendRequested, uow: Aggregates) -> None:
        meta = self._meta(e, "amend")
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
                last_price=self.last_price(order.symbol),
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

    # -- venue reports ----------------------------------------------------------------
    def on_reported(self, e: Venue.Reported, uow: Aggregates) -> None:
        meta = self._meta(e, "settle")
        for report in e.reports:
            kind = report["kind"]
            if kind == "fill":
                # a side that is None traded with liquidity from outside the system
                # (a backtest's bar, ``"external": true``): only our side settles
                if report["taker"] is not None:
                    self._fill(report, UUID(report["taker"]), "taker", uow, meta)
                if report["maker"] is not None:
                    self._fill(report, UUID(report["maker"]), "maker", uow, meta)
                continue
            if kind == "external":  # the outside liquidity offered: nothing of ours
                continue
            order = uow.order(UUID(report["order_id"]))
            if kind == "removed":
                if order.is_final:
                    continue
                if report["expired"]:
                    order.expire(report["quantity"], meta)
                else:
                    order.cancel(report["quantity"], report["reason"], meta)
            elif kind == "amended":
                if not order.is_open:
                    continue
                order.amended(report["quantity"], report["price"], report["priority_kept"],
                              meta)
            elif kind == "refused":
                action, reason = report["action"], report["reason"]
                if action == "cancel" and order.cancel_pending:
                    order.reject_cancel(f"order is {order.status.value}"
                                        if order.is_final else reason, meta)
                elif action == "amend" and order.amend_pending:
                    order.reject_amend("venue", "accepted by the venue", reason,
                                       order.reserved_funds, meta)
                elif action == "new" and order.is_open:
                    order.cancel(order.open_quantity, f"venue rejected: {reason}", meta)
            self._rebalance(order, uow, meta)

    def _fill(self, ex: dict[str, Any], order_id: UUID, liquidity: str, uow: Aggregates,
              meta: Meta) -> None:
        order = uow.order(order_id)
        price, quantity, execution_id = ex["price"], ex["quantity"], ex["execution_id"]
        notional = notional_yen(price, quantity)
        fee = (self.schedule.commission(order.filled_notional + notional)
               - self.schedule.commission(order.filled_notional))
        if not order.fill(execution_id, price, quantity, notional, fee, liquidity, meta):
            return
        leg = f"{execution_id}:{order.side.value}"
        position = uow.position(order.account_id, order.symbol, meta)
        assert position is not None
        position.apply_fill(order.id, leg, order.side.value, price, quantity, notional, meta)
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
        "Order.CancelRequested": on_cancel_requested,
        "Order.AmendRequested": on_amend_requested,
        "Venue.Reported": on_reported,
    }


def _terms(order: Order, quantity: int, price: int) -> OrderTerms:
    return OrderTerms(order.symbol, order.side, order.order_type, order.tif, quantity,
                      price if order.order_type is OrderType.LIMIT else 0)


TOPICS = tuple(f"{cls.__module__}:{cls.__qualname__}" for cls in (
    Order.Placed, Order.CancelRequested, Order.AmendRequested, Venue.Reported))
"""The events the saga consumes from the log."""
