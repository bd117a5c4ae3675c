"""The Order aggregate: a client's instruction and everything that happened to it.

Lifecycle (``status``)::

    placed -> accepted -> working -> partially_filled -> filled
       |          |          |  \\--------------------> cancelled | expired
       \\-> rejected          \\-> (cancel/amend requested while working)

Quantities are shares, prices integer price units (tenths of a yen), money integer yen.
Amending quantity down keeps time priority at the venue; changing the price (or raising
quantity) loses it: the venue decides and reports it back in ``Amended.priority_kept``.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from aggregates.base import Meta, TradingAggregate
from aggregates.errors import Conflict, IllegalTransition


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    PLACED = "placed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    WORKING = "working"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


OPEN_STATUSES = frozenset({OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED})
FINAL_STATUSES = frozenset(
    {OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
)


class Order(TradingAggregate):
    class Placed(TradingAggregate.Created):
        """A client's order, stored with what the command reserved for it.

        Version 2: the command assesses risk once and reserves funds and shares in the
        same transaction (``reserved_funds``/``reserved_shares``). Version-1 events
        (before the reservation moved into the command) upcast with both ``None``: the
        saga then assesses and reserves, as it did when they were stored.
        """

        class_version = 2

        account_id: UUID
        client_order_id: str
        symbol: str
        side: str
        order_type: str
        tif: str
        quantity: int
        price: int
        reserved_funds: int | None
        reserved_shares: int | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            state["reserved_funds"] = None
            state["reserved_shares"] = None

    class Accepted(TradingAggregate.Event):
        reserved_funds: int
        reserved_shares: int

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.ACCEPTED
            order.reserved_funds = self.reserved_funds
            order.reserved_shares = self.reserved_shares

    class Rejected(TradingAggregate.Event):
        field: str
        rule: str
        reason: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.REJECTED
            order.reject_reason = self.reason

    class Routed(TradingAggregate.Event):
        """Sent to the matching venue; self-contained so the venue needs nothing else."""

        account_id: UUID
        symbol: str
        side: str
        order_type: str
        tif: str
        quantity: int
        price: int
        engine_order_id: int
        owner: int

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.WORKING
            order.engine_order_id = self.engine_order_id

    class PartiallyFilled(TradingAggregate.Event):
        execution_id: str
        price: int
        quantity: int
        notional: int
        fee: int
        liquidity: str

        def apply(self, order: Order) -> None:
            order._apply_fill(self.execution_id, self.quantity, self.notional, self.fee)
            order.status = OrderStatus.PARTIALLY_FILLED

    class Filled(PartiallyFilled):
        def apply(self, order: Order) -> None:
            order._apply_fill(self.execution_id, self.quantity, self.notional, self.fee)
            order.status = OrderStatus.FILLED

    class CancelRequested(TradingAggregate.Event):
        def apply(self, order: Order) -> None:
            order.cancel_pending = True

    class CancelRouted(TradingAggregate.Event):
        """The cancel was sent to the venue: to the symbol's book (version 2)."""

        class_version = 2

        engine_order_id: int
        symbol: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            state["symbol"] = None  # version 1 named no book; the venue looks it up

    class CancelRejected(TradingAggregate.Event):
        reason: str

        def apply(self, order: Order) -> None:
            order.cancel_pending = False

    class Cancelled(TradingAggregate.Event):
        quantity: int
        reason: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.CANCELLED
            order.cancel_pending = False
            order.cancel_reason = self.reason

    class ExpiryRouted(TradingAggregate.Event):
        """Legacy: the venue was asked to expire a DAY order (the venue now expires DAY
        orders itself at the session close). Version 2 names the symbol's book."""

        class_version = 2

        engine_order_id: int
        symbol: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            state["symbol"] = None  # version 1 named no book; the venue looks it up

    class Expired(TradingAggregate.Event):
        quantity: int

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.EXPIRED

    class AmendRequested(TradingAggregate.Event):
        quantity: int
        price: int

        def apply(self, order: Order) -> None:
            order.amend_pending = True

    class AmendRouted(TradingAggregate.Event):
        """The amend was sent to the venue: to the symbol's book (version 2)."""

        class_version = 2

        engine_order_id: int
        quantity: int
        price: int
        reserved_funds: int
        symbol: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            state["symbol"] = None  # version 1 named no book; the venue looks it up

        def apply(self, order: Order) -> None:
            order.reserved_funds = self.reserved_funds

    class AmendRejected(TradingAggregate.Event):
        field: str
        rule: str
        reason: str
        reserved_funds: int

        def apply(self, order: Order) -> None:
            order.amend_pending = False
            order.reserved_funds = self.reserved_funds

    class Amended(TradingAggregate.Event):
        quantity: int
        price: int
        priority_kept: bool

        def apply(self, order: Order) -> None:
            order.amend_pending = False
            order.quantity = self.quantity
            order.price = self.price

    def __init__(
        self,
        account_id: UUID,
        client_order_id: str,
        symbol: str,
        side: str,
        order_type: str,
        tif: str,
        quantity: int,
        price: int,
        reserved_funds: int | None = None,
        reserved_shares: int | None = None,
    ) -> None:
        self.account_id = account_id
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = Side(side)
        self.order_type = OrderType(order_type)
        self.tif = TimeInForce(tif)
        self.quantity = quantity
        self.placed_quantity = quantity
        self.price = price
        self.status = OrderStatus.PLACED
        self.filled_quantity = 0
        self.filled_notional = 0
        self.fees = 0
        self.executions: set[str] = set()
        # None: placed before commands reserved (version-1 Placed); the saga reserves
        self.reserved_at_placement = reserved_funds is not None
        self.reserved_funds = reserved_funds or 0
        self.reserved_shares = reserved_shares or 0
        self.engine_order_id = 0
        self.cancel_pending = False
        self.amend_pending = False
        self.reject_reason = ""
        self.cancel_reason = ""

    # -- creation -------------------------------------------------------------------
    @classmethod
    def place(
        cls,
        id: UUID,
        *,
        account_id: UUID,
        client_order_id: str,
        symbol: str,
        side: Side,
        order_type: OrderType,
        tif: TimeInForce,
        quantity: int,
        price: int,
        meta: Meta,
        reserved_funds: int | None = None,
        reserved_shares: int | None = None,
    ) -> Order:
        return cls._create_with(
            cls.Placed,
            meta,
            id=id,
            account_id=account_id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side.value,
            order_type=order_type.value,
            tif=tif.value,
            quantity=quantity,
            price=price,
            reserved_funds=reserved_funds,
            reserved_shares=reserved_shares,
        )

    # -- queries --------------------------------------------------------------------
    @property
    def open_quantity(self) -> int:
        return self.quantity - self.filled_quantity

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def same_terms(
        self,
        symbol: str,
        side: Side,
        order_type: OrderType,
        tif: TimeInForce,
        quantity: int,
        price: int,
    ) -> bool:
        """Whether a resubmission with this client order id is the same instruction."""
        return (self.symbol, self.side, self.order_type, self.tif, self.price) == (
            symbol,
            side,
            order_type,
            tif,
            price,
        ) and self.placed_quantity == quantity

    # -- commands -------------------------------------------------------------------
    def accept(self, reserved_funds: int, reserved_shares: int, meta: Meta) -> None:
        self._require({OrderStatus.PLACED}, "accept")
        self._record(
            self.Accepted, meta, reserved_funds=reserved_funds, reserved_shares=reserved_shares
        )

    def reject(self, field: str, rule: str, reason: str, meta: Meta) -> None:
        self._require({OrderStatus.PLACED}, "reject")
        self._record(self.Rejected, meta, field=field, rule=rule, reason=reason)

    def route(self, engine_order_id: int, owner: int, meta: Meta) -> None:
        self._require({OrderStatus.ACCEPTED}, "route")
        self._record(
            self.Routed,
            meta,
            account_id=self.account_id,
            symbol=self.symbol,
            side=self.side.value,
            order_type=self.order_type.value,
            tif=self.tif.value,
            quantity=self.quantity,
            price=self.price,
            engine_order_id=engine_order_id,
            owner=owner,
        )

    def fill(
        self, execution_id: str, price: int, quantity: int, notional: int, fee: int,
        liquidity: str, meta: Meta,
    ) -> bool:
        """Apply one execution; a repeated execution id is ignored (returns False)."""
        if execution_id in self.executions:
            return False
        self._require(OPEN_STATUSES, "fill")
        if quantity <= 0 or quantity > self.open_quantity:
            raise Conflict(
                "quantity", "fill within open quantity", quantity,
                f"fill of {quantity} exceeds open quantity {self.open_quantity} of {self.id}",
            )
        event = self.Filled if quantity == self.open_quantity else self.PartiallyFilled
        self._record(
            event, meta, execution_id=execution_id, price=price, quantity=quantity,
            notional=notional, fee=fee, liquidity=liquidity,
        )
        return True

    def request_cancel(self, meta: Meta) -> None:
        self._require(OPEN_STATUSES | {OrderStatus.PLACED, OrderStatus.ACCEPTED}, "cancel")
        if self.cancel_pending:
            raise Conflict("status", "one cancel at a time", "cancel pending",
                           f"order {self.id} already has a cancel pending")
        self._record(self.CancelRequested, meta)

    def route_cancel(self, meta: Meta) -> None:
        self._record(self.CancelRouted, meta, engine_order_id=self.engine_order_id,
                     symbol=self.symbol)

    def reject_cancel(self, reason: str, meta: Meta) -> None:
        self._record(self.CancelRejected, meta, reason=reason)

    def cancel(self, quantity: int, reason: str, meta: Meta) -> None:
        self._require(OPEN_STATUSES | {OrderStatus.ACCEPTED}, "cancel")
        self._record(self.Cancelled, meta, quantity=quantity, reason=reason)

    def route_expiry(self, meta: Meta) -> None:
        self._require(OPEN_STATUSES, "expire")
        self._record(self.ExpiryRouted, meta, engine_order_id=self.engine_order_id,
                     symbol=self.symbol)

    def expire(self, quantity: int, meta: Meta) -> None:
        self._require(OPEN_STATUSES, "expire")
        self._record(self.Expired, meta, quantity=quantity)

    def request_amend(self, quantity: int, price: int, meta: Meta) -> None:
        # A placed order may be amended before it reaches the venue: the saga follows
        # the log in order, so the amend is routed after the order itself.
        self._require(OPEN_STATUSES | {OrderStatus.PLACED, OrderStatus.ACCEPTED}, "amend")
        if self.cancel_pending or self.amend_pending:
            raise Conflict("status", "no amend while a cancel or amend is pending",
                           self.status.value)
        self._record(self.AmendRequested, meta, quantity=quantity, price=price)

    def route_amend(self, quantity: int, price: int, reserved_funds: int, meta: Meta) -> None:
        self._record(
            self.AmendRouted, meta, engine_order_id=self.engine_order_id,
            quantity=quantity, price=price, reserved_funds=reserved_funds, symbol=self.symbol,
        )

    def reject_amend(
        self, field: str, rule: str, reason: str, reserved_funds: int, meta: Meta
    ) -> None:
        self._record(
            self.AmendRejected, meta, field=field, rule=rule, reason=reason,
            reserved_funds=reserved_funds,
        )

    def amended(self, quantity: int, price: int, priority_kept: bool, meta: Meta) -> None:
        self._require(OPEN_STATUSES, "amend")
        self._record(
            self.Amended, meta, quantity=quantity, price=price, priority_kept=priority_kept
        )

    # -- internals ------------------------------------------------------------------
    def _apply_fill(self, execution_id: str, quantity: int, notional: int, fee: int) -> None:
        self.executions.add(execution_id)
        self.filled_quantity += quantity
        self.filled_notional += notional
        self.fees += fee

    def _require(self, allowed: set[OrderStatus] | frozenset[OrderStatus], action: str) -> None:
        if self.status not in allowed:
            raise IllegalTransition("order", self.status.value, action)
