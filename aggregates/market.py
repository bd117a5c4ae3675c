"""The Market aggregate: venue-wide controls that risk and operations switch.

One per deployment (``ids.MARKET_ID``): which symbols are halted, the closing of
each trading session (which expires DAY orders), and the session's opening bars when a
backtest replays history (:class:`Market.BarsOpened`: the outside world's liquidity,
which the venue turns into resting orders of counterparties outside the system).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

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

    class BarsOpened(TradingAggregate.Event):
        """A session opened with these daily bars (a backtest's market data).

        ``bars``: one ``{"symbol", "open", "high", "low", "close", "volume", "base"}``
        per symbol, prices in price units, ``base`` the previous close the session's
        price limits are based on. Fills happen only at the venue, against orders, so
        the bar's traders outside the system are modelled by the venue as liquidity:
        ``participation_bp`` (basis points of the bar's volume) offered at ``open``
        +/- ``slippage_ticks`` ticks (see ``docs/backtests.md``). The terms travel
        with the fact so that the log alone decides what the venue did."""

        session_date: str  # YYYY-MM-DD, the Tokyo session
        bars: list[dict[str, Any]]  # symbol, open, high, low, close, volume, base
        participation_bp: int  # outside liquidity a side, basis points of the bar's volume
        slippage_ticks: int  # outside ask/bid this many ticks from the open

        def apply(self, market: Market) -> None:
            market.opened_session = self.session_date

    def __init__(self) -> None:
        self.halted_symbols: set[str] = set()
        self.closed_sessions: list[str] = []
        self.opened_session: str | None = None

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

    def open_bars(self, session_date: str, bars: list[dict[str, Any]], *,
                  participation_bp: int, slippage_ticks: int, meta: Meta) -> None:
        """Record a session's opening bars (backtests): one fact per session, in
        session order, each bar with positive integer prices and a volume."""
        try:
            date.fromisoformat(session_date)
        except (TypeError, ValueError):
            raise RuleViolation("session_date", "an existing date, YYYY-MM-DD",
                                session_date) from None
        opened = getattr(self, "opened_session", None)  # absent in snapshots before bars
        if opened is not None and session_date <= opened:
            raise RuleViolation("session_date", "after the last session opened "
                                f"({opened})", session_date)
        if type(participation_bp) is not int or not 0 < participation_bp <= 10_000:
            raise RuleViolation("participation_bp", "an integer in 1..10000",
                                participation_bp)
        if type(slippage_ticks) is not int or not 1 <= slippage_ticks <= 100:
            raise RuleViolation(
                "slippage_ticks", "an integer in 1..100", slippage_ticks,
                f"slippage_ticks={slippage_ticks!r}: the outside bid and ask sit at least "
                "one tick from the open (at the open itself they would trade each other)")
        seen: set[str] = set()
        for bar in bars:
            symbol = bar.get("symbol")
            if not isinstance(symbol, str) or symbol in seen:
                raise RuleViolation("bars.symbol", "one bar per symbol", symbol)
            seen.add(symbol)
            for field in ("open", "high", "low", "close", "base"):
                value = bar.get(field)
                if type(value) is not int or value <= 0:
                    raise RuleViolation(f"bars.{field}", "a positive integer price", value)
            if type(bar.get("volume")) is not int or bar["volume"] < 0:
                raise RuleViolation("bars.volume", "a non-negative integer", bar.get("volume"))
        self._record(self.BarsOpened, meta, session_date=session_date, bars=bars,
                     participation_bp=participation_bp, slippage_ticks=slippage_ticks)
