"""The Market aggregate: venue-wide controls that risk and operations switch.

One per deployment (``ids.MARKET_ID``): which symbols are halted, and the closing of
each trading session (which expires DAY orders).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aggregates.base import Meta, TradingAggregate
from aggregates.errors import RuleViolation
from aggregates.ids import MARKET_ID
from aggregates.instruments import TOKYO
from aggregates.text import printable

SESSION_CLOSE_DAYS_BACK = 7
"""How far back a session may still be closed: a close forgotten over a long weekend or
the New Year holidays is caught up, while a typo (``9999-12-31``, ``2062-...``) that
would expire every resting DAY order is refused."""


def today_in_tokyo(moment: datetime | None) -> date:
    """The TSE session date at ``moment`` (the command's clock; system time when None)."""
    return (moment or datetime.now(UTC)).astimezone(TOKYO).date()


def session_close_rule() -> str:
    return (f"today's session in Tokyo or one of the {SESSION_CLOSE_DAYS_BACK} days "
            "before it")


class Market(TradingAggregate):
    class Created(TradingAggregate.Created):
        """The venue-wide controls came into being (one per deployment)."""

    class SymbolHalted(TradingAggregate.Event):
        """Trading in a symbol stopped: orders in it are refused."""

        symbol: str
        reason: str

        def apply(self, market: Market) -> None:
            market.halted_symbols.add(self.symbol)

    class SymbolResumed(TradingAggregate.Event):
        """Trading in a symbol allowed again."""

        symbol: str

        def apply(self, market: Market) -> None:
            market.halted_symbols.discard(self.symbol)

    class SessionClosed(TradingAggregate.Event):
        """A trading session (``YYYY-MM-DD``) closed: its DAY orders expire."""

        session_date: str

        def apply(self, market: Market) -> None:
            market.closed_sessions.append(self.session_date)

    def __init__(self) -> None:
        self.halted_symbols: set[str] = set()
        self.closed_sessions: list[str] = []

    @classmethod
    def create(cls, meta: Meta) -> Market:
        return cls._create_with(cls.Created, meta, id=MARKET_ID)

    def halt(self, symbol: str, reason: str, meta: Meta) -> None:
        printable("reason", reason)
        if symbol not in self.halted_symbols:
            self._record(self.SymbolHalted, meta, symbol=symbol, reason=reason)

    def resume(self, symbol: str, meta: Meta) -> None:
        if symbol in self.halted_symbols:
            self._record(self.SymbolResumed, meta, symbol=symbol)

    def close_session(self, session_date: str, meta: Meta) -> None:
        """Close the session of ``session_date``: today's in Tokyo by the command's
        clock, or a recent one not closed in time (see ``SESSION_CLOSE_DAYS_BACK``)."""
        try:
            day = date.fromisoformat(session_date)
        except (TypeError, ValueError):
            raise RuleViolation("session_date", "an existing date, YYYY-MM-DD",
                                session_date) from None
        today = today_in_tokyo(meta.at)
        earliest = today - timedelta(days=SESSION_CLOSE_DAYS_BACK)
        if not earliest <= day <= today:
            raise RuleViolation(
                "session_date", session_close_rule(), session_date,
                f"session_date={session_date} is not a session that can close now: "
                f"from {earliest.isoformat()} to {today.isoformat()} (today in Tokyo)")
        self._record(self.SessionClosed, meta, session_date=session_date)
