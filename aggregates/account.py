"""The Account aggregate: a client's cash, what is reserved for open orders, and fees.

Invariants, checked on every command and re-checked by tests after every event:
``0 <= reserved <= cash`` and
``cash == deposited - withdrawn - bought - fees + sold``.
Settlement is applied on the trade (the cash effect of a Japanese T+2 settlement is
booked at execution; the settlement date itself is not modelled yet).
"""

from __future__ import annotations

from uuid import UUID

from aggregates.base import Meta, TradingAggregate
from aggregates.errors import Conflict, RiskRejection, RuleViolation
from aggregates.holds import Holds
from aggregates.text import printable


class Account(TradingAggregate, Holds):
    class Opened(TradingAggregate.Created):
        """A client account was opened, with no cash; ``allow_short`` permits short selling."""

        name: str
        owner: str
        allow_short: bool

    class Deposited(TradingAggregate.Event):
        """Cash paid in (yen)."""

        amount: int

        def apply(self, account: Account) -> None:
            account.cash += self.amount
            account.deposited += self.amount

    class Withdrawn(TradingAggregate.Event):
        """Cash paid out (yen), never more than was available."""

        amount: int

        def apply(self, account: Account) -> None:
            account.cash -= self.amount
            account.withdrawn += self.amount

    class FundsReserved(TradingAggregate.Event):
        """Cash held for an open buy order (notional and fees) or a sell's fees."""

        order_id: UUID
        amount: int

        def apply(self, account: Account) -> None:
            account._hold(self.order_id, self.amount)

    class FundsReleased(TradingAggregate.Event):
        """Cash no longer held for an order (cancelled, expired, rejected, filled better)."""

        order_id: UUID
        amount: int

        def apply(self, account: Account) -> None:
            account._take_hold(self.order_id, self.amount)

    class Settled(TradingAggregate.Event):
        """One fill's cash: ``from_reservation`` of it was held for the order."""

        order_id: UUID
        execution_id: str
        notional: int
        fee: int
        from_reservation: int

    class BuySettled(Settled):
        """A buy fill's cash paid: ``notional + fee``, ``from_reservation`` of it from the hold."""

        def apply(self, account: Account) -> None:
            account._take_hold(self.order_id, self.from_reservation)
            account.cash -= self.notional + self.fee
            account.bought += self.notional
            account.fees += self.fee

    class SellSettled(Settled):
        """A sell fill's cash received: ``notional - fee``; ``from_reservation`` of the fee held."""

        def apply(self, account: Account) -> None:
            account._take_hold(self.order_id, self.from_reservation)
            account.cash += self.notional - self.fee
            account.sold += self.notional
            account.fees += self.fee

    class Halted(TradingAggregate.Event):
        """Risk stopped the account: new orders are refused until it resumes."""

        reason: str

        def apply(self, account: Account) -> None:
            account.halted = True

    class Resumed(TradingAggregate.Event):
        """The account may trade again."""

        def apply(self, account: Account) -> None:
            account.halted = False

    def __init__(self, name: str, owner: str, allow_short: bool) -> None:
        self.name = name
        self.owner = owner
        self.allow_short = allow_short
        self.cash = 0
        self._init_holds()
        self.deposited = 0
        self.withdrawn = 0
        self.bought = 0
        self.sold = 0
        self.fees = 0
        self.halted = False

    @classmethod
    def open(cls, id: UUID, *, name: str, owner: str, allow_short: bool, meta: Meta) -> Account:
        if not name or len(name) > 64:
            raise RuleViolation("name", "1..64 characters", name)
        printable("name", name)
        printable("owner", owner)
        return cls._create_with(
            cls.Opened, meta, id=id, name=name, owner=owner, allow_short=allow_short
        )

    # -- queries --------------------------------------------------------------------
    @property
    def available(self) -> int:
        """Cash not reserved for open orders: what can be withdrawn or committed."""
        return self.cash - self.reserved

    # -- commands -------------------------------------------------------------------
    def deposit(self, amount: int, meta: Meta) -> None:
        _positive("amount", amount)
        self._record(self.Deposited, meta, amount=amount)

    def withdraw(self, amount: int, meta: Meta) -> None:
        _positive("amount", amount)
        if amount > self.available:
            raise RiskRejection(
                "amount", "withdrawal within available cash", amount,
                f"withdrawal of {amount} yen exceeds available cash {self.available} yen",
            )
        self._record(self.Withdrawn, meta, amount=amount)

    def reserve(self, order_id: UUID, amount: int, meta: Meta) -> None:
        if amount < 0:
            raise RuleViolation("amount", "not negative", amount)
        if amount > self.available:
            raise RiskRejection(
                "funds", "buying power", amount,
                f"order needs {amount} yen but only {self.available} yen is available",
            )
        if amount:
            self._record(self.FundsReserved, meta, order_id=order_id, amount=amount)

    def release(self, order_id: UUID, amount: int, meta: Meta) -> None:
        amount = min(amount, self.reserved_for(order_id))
        if amount > 0:
            self._record(self.FundsReleased, meta, order_id=order_id, amount=amount)

    def settle_buy(
        self, order_id: UUID, execution_id: str, notional: int, fee: int, meta: Meta
    ) -> None:
        cost = notional + fee
        taken = min(cost, self.reserved_for(order_id))
        if cost - taken > self.available:
            raise Conflict("cash", "cash never negative", self.cash - cost,
                           f"buy settlement of {cost} yen exceeds cash {self.cash} yen")
        self._record(self.BuySettled, meta, order_id=order_id, execution_id=execution_id,
                     notional=notional, fee=fee, from_reservation=taken)

    def settle_sell(
        self, order_id: UUID, execution_id: str, notional: int, fee: int, meta: Meta
    ) -> None:
        taken = min(fee, self.reserved_for(order_id))
        if self.cash + notional - fee < 0:
            raise Conflict("cash", "cash never negative", self.cash + notional - fee)
        self._record(self.SellSettled, meta, order_id=order_id, execution_id=execution_id,
                     notional=notional, fee=fee, from_reservation=taken)

    def halt(self, reason: str, meta: Meta) -> None:
        printable("reason", reason)
        if not self.halted:
            self._record(self.Halted, meta, reason=reason)

    def resume(self, meta: Meta) -> None:
        if self.halted:
            self._record(self.Resumed, meta)


def _positive(field: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise RuleViolation(field, "positive integer yen", value)
