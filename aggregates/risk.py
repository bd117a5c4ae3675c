"""Pre-trade risk: one function decides whether an order may go to the market and
what it must reserve. The command handler runs it (so bad orders store nothing) and
the saga runs it again at reservation time (state may have moved since).

Session rules: with ``session_rules="enforce"`` (what a desk configures:
``TRADECORE_SESSION_RULES=enforce``) an order or amend decided outside the TSE's
continuous sessions (09:00-11:30 and 12:30-15:30 JST since 2024-11-05; the hours of
the day in question before that), on a weekend or in the year-end break is refused,
naming the session rule and the time. ``"ignore"`` (the default) lets the embedded
deployment and its README walk-through work at any hour. Pre-open and lunch-break
orders for the auctions are not modelled: they are refused like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal

from aggregates.account import Account
from aggregates.errors import RiskRejection, RuleViolation
from aggregates.fees import CommissionSchedule
from aggregates.instruments import (
    PRICE_SCALE,
    TOKYO,
    Instrument,
    Session,
    is_trading_day,
    session_at,
    trading_hours,
)
from aggregates.order import OrderType, Side, TimeInForce
from aggregates.position import Position

SessionRules = Literal["ignore", "enforce"]
_OPEN_SESSIONS: Final = frozenset({Session.MORNING, Session.AFTERNOON})
_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                    "Sunday")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_order_notional_yen: int = 1_000_000_000
    fat_finger_pct: int = 10


@dataclass(frozen=True, slots=True)
class OrderTerms:
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    quantity: int
    price: int  # price units; 0 for market orders


@dataclass(frozen=True, slots=True)
class Reservation:
    funds: int  # yen: notional at the worst price plus estimated commission
    shares: int


def notional_yen(price: int, quantity: int) -> int:
    """Yen value of ``quantity`` shares at ``price`` units, rounded up (never under-reserve).

    With lots of 100 shares and prices in tenths of a yen it is always exact.
    """
    return -(-price * quantity // PRICE_SCALE)


def check_terms(terms: OrderTerms, instrument: Instrument) -> None:
    """Rules on the order itself: sign, lot, tick, daily price limits, order type."""
    qty = terms.quantity
    if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
        raise RuleViolation("quantity", "positive whole shares", qty)
    instrument.check_quantity(qty)
    if terms.order_type is OrderType.MARKET:
        if terms.price != 0:
            raise RuleViolation("price", "market orders carry no price", terms.price)
        if terms.tif is TimeInForce.GTC:
            raise RuleViolation("tif", "market orders cannot rest (GTC)", terms.tif.value)
        return
    if not isinstance(terms.price, int) or isinstance(terms.price, bool) or terms.price <= 0:
        raise RuleViolation("price", "positive price for limit orders", terms.price)
    instrument.check_price(terms.price)


def worst_price(terms: OrderTerms, instrument: Instrument) -> int:
    """The price a buy is reserved at: its limit, or the daily upper limit for a market buy."""
    if terms.order_type is OrderType.MARKET:
        limits = instrument.limits
        return limits.upper if terms.side is Side.BUY else limits.lower
    return terms.price


def check_session(
    instrument: Instrument | str,
    now: datetime,
    rules: SessionRules = "enforce",
    *,
    holidays: frozenset[date] = frozenset(),
) -> None:
    """Raise :class:`RiskRejection` (field ``session``) when ``rules`` is ``"enforce"`` and
    ``now`` (aware, any timezone) is outside the TSE's morning and afternoon sessions,
    or on a day the exchange is closed (weekends, Dec 31-Jan 3, ``holidays``).

    The rule names the hours in force that day (``within the TSE trading session
    09:00-11:30, 12:30-15:30 JST``); the value is the moment, in JST. ``"ignore"`` checks
    nothing. ``instrument`` (or its symbol) is named in the message; every TSE stock
    shares one calendar.
    """
    if rules == "ignore":
        return
    if rules != "enforce":
        raise RuleViolation("session_rules", "one of ignore, enforce", rules)
    session = session_at(now, holidays)  # refuses a naive datetime (field "moment")
    if session in _OPEN_SESSIONS:
        return
    local = now.astimezone(TOKYO)
    symbol = instrument.symbol if isinstance(instrument, Instrument) else instrument
    day = local.date()
    rule = f"within the TSE trading session {trading_hours(day).describe()}"
    stamp = local.strftime("%Y-%m-%d %H:%M:%S JST")
    if not is_trading_day(day, holidays):
        why = f"{day.isoformat()} ({_WEEKDAYS[day.weekday()]}) is not a TSE trading day"
        why += f" (at {stamp})"
    else:
        why = f"it is {stamp} ({session.value.replace('_', ' ')})"
    raise RiskRejection(
        "session", rule, local.isoformat(),
        f"orders for {symbol} are accepted only {rule} on trading days; {why}",
    )


def check_price_band(price: int, reference: int, limits: RiskLimits) -> None:
    """The fat-finger check: a limit price within ``fat_finger_pct`` of the reference
    price (the last trade, else the instrument's base); no reference, no check."""
    if reference > 0 and abs(price - reference) * 100 > limits.fat_finger_pct * reference:
        raise RiskRejection(
            "price", f"within {limits.fat_finger_pct}% of last price", price,
            f"price {price / PRICE_SCALE:g} yen is more than {limits.fat_finger_pct}%"
            f" from the last price {reference / PRICE_SCALE:g} yen",
        )


def assess(
    terms: OrderTerms,
    *,
    instrument: Instrument,
    account: Account,
    position: Position | None,
    last_price: int | None,
    symbol_halted: bool,
    limits: RiskLimits,
    schedule: CommissionSchedule,
    already_reserved: Reservation = Reservation(0, 0),
    now: datetime | None = None,
    session_rules: SessionRules = "ignore",
    holidays: frozenset[date] = frozenset(),
) -> Reservation:
    """Raise a :class:`DomainError` if the order may not trade; else what to reserve.

    ``already_reserved`` is what this order holds now (an amend needs only the delta).
    ``now`` (the command's moment, from the caller's clock) with ``session_rules=
    "enforce"`` refuses orders outside the TSE session (:func:`check_session`); without
    ``now`` no session check is made.
    """
    check_terms(terms, instrument)
    if now is not None:
        check_session(instrument, now, session_rules, holidays=holidays)
    if account.halted:
        raise RiskRejection("account_id", "account not halted", str(account.id),
                            f"account {account.name} is halted by risk")
    if symbol_halted:
        raise RiskRejection("symbol", "symbol not halted", terms.symbol,
                            f"trading in {terms.symbol} is halted by risk")
    price = worst_price(terms, instrument)
    notional = notional_yen(price, terms.quantity)
    if notional > limits.max_order_notional_yen:
        raise RiskRejection(
            "quantity", "max order notional", notional,
            f"notional {notional:,} yen exceeds the limit of {limits.max_order_notional_yen:,}",
        )
    if terms.order_type is OrderType.LIMIT:
        check_price_band(terms.price, last_price or instrument.base_price, limits)
    fee = schedule.commission(notional)
    held = position.available + already_reserved.shares if position else 0
    if terms.side is Side.BUY:
        funds, shares = notional + fee, 0
    elif terms.quantity <= held:
        funds, shares = fee, terms.quantity
    elif account.allow_short:
        short = terms.quantity - max(held, 0)
        funds, shares = fee + notional_yen(price, short), max(held, 0)
    else:
        raise RiskRejection(
            "quantity", "shares available to sell (no short selling)", terms.quantity,
            f"sell of {terms.quantity} {terms.symbol} exceeds {max(held, 0)} available shares",
        )
    extra = funds - already_reserved.funds
    if extra > account.available:
        raise RiskRejection(
            "quantity", "buying power", funds,
            f"order needs {funds:,} yen (notional {notional:,} + est. commission {fee:,});"
            f" {account.available + already_reserved.funds:,} yen available",
        )
    return Reservation(funds, shares)
