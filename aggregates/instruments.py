"""Japanese-equity instrument rules: tick sizes, daily price limits, lots and sessions.

These are the rules the Tokyo Stock Exchange applies before an order may rest on its book,
so the write model checks them before it accepts an order: a price off the tick grid, a
price outside the day's limit band or a quantity that is not a whole number of trading
units would be rejected by the exchange anyway, and a rejected command must store nothing.

Units (all plain ints, never floats):

* price: tenths of a yen (``PRICE_SCALE = 10`` price units per yen), so the TOPIX100
  table's 0.1-yen tick is a whole number. 2,500.5 yen is ``25005``.
* money: whole yen (see ``aggregates.fees``).
* quantity: shares; TSE trades in units of ``LOT_SIZE = 100`` shares since 2018-10-01.

Sources: JPX "呼値の単位" (tick size tables, in force since 2014-07-22 for TOPIX100
constituents and unchanged for other stocks), JPX "制限値幅" (daily price limit table),
and the TSE trading hours as extended on 2024-11-05 (afternoon session to 15:30 with a
closing auction from 15:25). See ``docs/instruments.md``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import ClassVar, Final, Literal, Protocol
from zoneinfo import ZoneInfo

from aggregates.errors import NotFound, RuleViolation
from kernels.contract import TickBand

PRICE_SCALE: Final[int] = 10
"""Price units per yen: prices are ints in tenths of a yen."""

LOT_SIZE: Final[int] = 100
"""TSE trading unit (単元株) for every domestic stock since 2018-10-01."""

PRICE_CEILING: Final[int] = 2**63 - 1
"""Upper bound of the last, open-ended tick band: the largest int64, so kernels that keep
bands in int64 arrays can store it. Real grids are clipped to the day's price limits."""

TOKYO: Final[ZoneInfo] = ZoneInfo("Asia/Tokyo")

# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


class InstrumentRuleError(RuleViolation):
    """A value broke an exchange rule; names the field, the rule and the offending value.

    The command side turns it into a 4xx problem body, so the message is written for the
    person who typed the order, and ``field``/``rule``/``value`` for the program. It is a
    ``ValueError`` (through ``DomainError``) with category ``invalid``.
    """

    def __init__(self, field: str, rule: str, value: object, message: str | None = None):
        super().__init__(field, rule, value, message)


class UnknownSymbolError(InstrumentRuleError, NotFound):
    """The symbol is not in the tradable universe (category ``not_found``)."""

    category: ClassVar[str] = "not_found"

    def __init__(self, symbol: object, known: int | None = None):
        suffix = f" ({known} instruments are known)" if known is not None else ""
        super().__init__(
            "symbol",
            "known_symbol",
            symbol,
            f"symbol {symbol!r} is not in the tradable universe{suffix}",
        )
        self.symbol = symbol


def _yen(price: int) -> str:
    """Price units as a yen string for messages: 25001 -> '2500.1', 25000 -> '2500'."""
    whole, tenths = divmod(price, PRICE_SCALE)
    return f"{whole}" if tenths == 0 else f"{whole}.{tenths}"


def _require_int(field: str, value: object) -> int:
    # bool is an int subclass; True as a price or quantity is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstrumentRuleError(
            field, "integer", value, f"{field} {value!r} must be an int (no floats decide money)"
        )
    return value


# --------------------------------------------------------------------------------------
# tick sizes (呼値の単位)
# --------------------------------------------------------------------------------------


class TickTable(StrEnum):
    """Which JPX tick size table applies: TOPIX100 constituents have finer ticks."""

    STANDARD = "standard"
    TOPIX100 = "topix100"


def _bands(rows: Iterable[tuple[int | None, int | Decimal]]) -> tuple[TickBand, ...]:
    """JPX rows (upper bound in yen or None for 'above', tick in yen) to price units."""
    out = []
    for upper_yen, tick_yen in rows:
        upper = PRICE_CEILING if upper_yen is None else upper_yen * PRICE_SCALE
        tick = tick_yen * PRICE_SCALE
        if isinstance(tick, Decimal):
            tick = int(tick)
        out.append(TickBand(upper=upper, tick=int(tick)))
    return tuple(out)


# "その他の銘柄" — every stock that is not a TOPIX100 constituent. Upper bounds inclusive.
_STANDARD_BANDS: Final = _bands(
    [
        (3_000, 1),
        (5_000, 5),
        (30_000, 10),
        (50_000, 50),
        (300_000, 100),
        (500_000, 500),
        (3_000_000, 1_000),
        (5_000_000, 5_000),
        (30_000_000, 10_000),
        (50_000_000, 50_000),
        (None, 100_000),
    ]
)

# "TOPIXニューインデックスシリーズのTOPIX100構成銘柄". Upper bounds inclusive.
_TOPIX100_BANDS: Final = _bands(
    [
        (1_000, Decimal("0.1")),
        (3_000, Decimal("0.5")),
        (10_000, 1),
        (30_000, 5),
        (100_000, 10),
        (300_000, 50),
        (1_000_000, 100),
        (3_000_000, 500),
        (10_000_000, 1_000),
        (30_000_000, 5_000),
        (None, 10_000),
    ]
)

_TABLES: Final[dict[TickTable, tuple[TickBand, ...]]] = {
    TickTable.STANDARD: _STANDARD_BANDS,
    TickTable.TOPIX100: _TOPIX100_BANDS,
}
_UPPERS: Final[dict[TickTable, list[int]]] = {
    table: [band.upper for band in bands] for table, bands in _TABLES.items()
}


def tick_bands(table: TickTable) -> tuple[TickBand, ...]:
    """The table's bands in price units, ascending; each upper bound is inclusive."""
    return _TABLES[TickTable(table)]


def _band_index(price: int, table: TickTable) -> int:
    return bisect.bisect_left(_UPPERS[TickTable(table)], price)


def tick_size(price: int, table: TickTable) -> int:
    """Tick (price units) that applies at ``price``; a price on a band's upper bound
    belongs to that band (JPX: "3,000円以下" -> 1 yen at exactly 3,000 yen)."""
    price = _require_int("price", price)
    if price <= 0:
        raise InstrumentRuleError("price", "positive", price, f"price {price} must be > 0")
    return _TABLES[TickTable(table)][_band_index(price, table)].tick


def is_on_tick(price: int, table: TickTable) -> bool:
    """Whether ``price`` is a price the exchange would accept under ``table``.

    Each band's grid starts at the previous band's upper bound (JPX's bands all start at
    a multiple of their tick, so this equals ``price % tick == 0``)."""
    if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
        return False
    return price % tick_size(price, table) == 0


def round_to_tick(price: int, table: TickTable, direction: Literal["down", "up"]) -> int:
    """The nearest valid price at or below (``down``) or at or above (``up``) ``price``.

    Rounding up can cross into the next band (a coarser tick starts above the bound), and
    the band's upper bound is itself on the lower band's grid, so both directions land on a
    price ``is_on_tick`` accepts."""
    price = _require_int("price", price)
    if direction not in ("down", "up"):
        raise InstrumentRuleError(
            "direction", "down_or_up", direction, f"direction {direction!r} must be 'down' or 'up'"
        )
    if price <= 0:
        raise InstrumentRuleError("price", "positive", price, f"price {price} must be > 0")
    tick = tick_size(price, table)
    below = price - price % tick
    if direction == "down" or below == price:
        if below <= 0:
            raise InstrumentRuleError(
                "price", "positive", price, f"price {price} rounds down to 0: no valid price"
            )
        return below
    return below + tick


# --------------------------------------------------------------------------------------
# daily price limits (値幅制限)
# --------------------------------------------------------------------------------------


def nearest_tick(yen: float, table: TickTable) -> int:
    """A yen price (a close, say) as price units on ``table``'s grid: the nearest tick
    (the lower one on a tie), at least one unit."""
    units = max(1, round(yen * PRICE_SCALE))
    down = round_to_tick(units, table, "down") if units > 1 else 1
    up = round_to_tick(units, table, "up")
    return down if units - down <= up - units else up


@dataclass(frozen=True, slots=True)
class PriceLimits:
    """The day's limit band, inclusive, in price units."""

    lower: int
    upper: int

    def __contains__(self, price: object) -> bool:
        return isinstance(price, int) and self.lower <= price <= self.upper


# JPX "制限値幅": (base price below this many yen, limit width in yen); the last row's
# bound is None: 50,000,000 yen and above.
_LIMIT_ROWS_YEN: Final[tuple[tuple[int | None, int], ...]] = (
    (100, 30),
    (200, 50),
    (500, 80),
    (700, 100),
    (1_000, 150),
    (1_500, 300),
    (2_000, 400),
    (3_000, 500),
    (5_000, 700),
    (7_000, 1_000),
    (10_000, 1_500),
    (15_000, 3_000),
    (20_000, 4_000),
    (30_000, 5_000),
    (50_000, 7_000),
    (70_000, 10_000),
    (100_000, 15_000),
    (150_000, 30_000),
    (200_000, 40_000),
    (300_000, 50_000),
    (500_000, 70_000),
    (700_000, 100_000),
    (1_000_000, 150_000),
    (1_500_000, 300_000),
    (2_000_000, 400_000),
    (3_000_000, 500_000),
    (5_000_000, 700_000),
    (7_000_000, 1_000_000),
    (10_000_000, 1_500_000),
    (15_000_000, 3_000_000),
    (20_000_000, 4_000_000),
    (30_000_000, 5_000_000),
    (50_000_000, 7_000_000),
    (None, 10_000_000),
)
_LIMIT_BOUNDS: Final[list[int]] = [b * PRICE_SCALE for b, _ in _LIMIT_ROWS_YEN if b is not None]
_LIMIT_WIDTHS: Final[list[int]] = [w * PRICE_SCALE for _, w in _LIMIT_ROWS_YEN]

LOWEST_LIMIT_PRICE: Final[int] = 1 * PRICE_SCALE
"""JPX: when base price minus the width would fall below 1 yen, the lower limit is 1 yen."""


def limit_width(base_price: int) -> int:
    """The limit width (price units) for a base price (price units), from JPX's table:
    the row is the first whose "未満" bound the base price is strictly below."""
    base_price = _require_int("base_price", base_price)
    if base_price <= 0:
        raise InstrumentRuleError(
            "base_price", "positive", base_price, f"base_price {base_price} must be > 0"
        )
    return _LIMIT_WIDTHS[bisect.bisect_right(_LIMIT_BOUNDS, base_price)]


def price_limits(base_price: int) -> PriceLimits:
    """The day's limit band around ``base_price`` (usually the previous close).

    ``upper = base + width``; ``lower = max(base - width, 1 yen)`` following JPX's rule
    that the lower limit never goes below 1 yen. Widths are whole yen, so the band edges
    are on the tick grid whenever the base price is on the grid of the edge's band; the
    tradable prices are the on-tick prices inside the band.
    """
    width = limit_width(base_price)
    return PriceLimits(lower=max(base_price - width, LOWEST_LIMIT_PRICE), upper=base_price + width)


# --------------------------------------------------------------------------------------
# trading sessions
# --------------------------------------------------------------------------------------


class Session(StrEnum):
    """Phase of a TSE trading day (JST)."""

    PRE_OPEN = "pre_open"  # 08:00-09:00 orders accepted for the opening auction
    MORNING = "morning"  # 前場
    LUNCH_BREAK = "lunch_break"
    AFTERNOON = "afternoon"  # 後場, ends with the closing auction
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class TradingHours:
    """One era of TSE trading hours (JST); intervals are half-open [start, end)."""

    since: date
    pre_open: time
    morning_open: time
    morning_close: time
    afternoon_open: time
    closing_auction: time | None  # start of the closing call period, if any
    afternoon_close: time

    def describe(self) -> str:
        """The two sessions as people write them: ``09:00-11:30, 12:30-15:30 JST``."""

        def hm(t: time) -> str:
            return t.strftime("%H:%M")

        return (
            f"{hm(self.morning_open)}-{hm(self.morning_close)}, "
            f"{hm(self.afternoon_open)}-{hm(self.afternoon_close)} JST"
        )


# Oldest first. 2011-11-21: the morning session was extended from 11:00 to 11:30.
# 2024-11-05: the afternoon session was extended to 15:30 with a closing auction
# (order acceptance for the close) from 15:25.
_HOURS: Final[tuple[TradingHours, ...]] = (
    TradingHours(date.min, time(8), time(9), time(11), time(12, 30), None, time(15)),
    TradingHours(
        date(2011, 11, 21), time(8), time(9), time(11, 30), time(12, 30), None, time(15)
    ),
    TradingHours(
        date(2024, 11, 5), time(8), time(9), time(11, 30), time(12, 30), time(15, 25), time(15, 30)
    ),
)


def trading_hours(day: date) -> TradingHours:
    """The TSE hours in force on ``day`` (a JST date)."""
    current = _HOURS[0]
    for era in _HOURS:
        if day >= era.since:
            current = era
    return current


def is_trading_day(day: date, holidays: frozenset[date] = frozenset()) -> bool:
    """Weekdays that are neither in ``holidays`` nor in the TSE year-end break.

    The year-end break (Dec 31 to Jan 3) is an exchange rule, not a national holiday, so
    it is applied here; national holidays change every year and come in ``holidays``.
    """
    if day.weekday() >= 5 or day in holidays:
        return False
    return not ((day.month == 12 and day.day == 31) or (day.month == 1 and day.day <= 3))


def _tokyo(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InstrumentRuleError(
            "moment",
            "timezone_aware",
            moment,
            f"moment {moment.isoformat()} has no timezone: pass an aware datetime",
        )
    return moment.astimezone(TOKYO)


def session_at(moment: datetime, holidays: frozenset[date] = frozenset()) -> Session:
    """The TSE session at ``moment`` (any timezone; converted to Asia/Tokyo)."""
    local = _tokyo(moment)
    if not is_trading_day(local.date(), holidays):
        return Session.CLOSED
    hours = trading_hours(local.date())
    now = local.time()
    if hours.pre_open <= now < hours.morning_open:
        return Session.PRE_OPEN
    if hours.morning_open <= now < hours.morning_close:
        return Session.MORNING
    if hours.morning_close <= now < hours.afternoon_open:
        return Session.LUNCH_BREAK
    if hours.afternoon_open <= now < hours.afternoon_close:
        return Session.AFTERNOON
    return Session.CLOSED


def is_closing_auction(moment: datetime, holidays: frozenset[date] = frozenset()) -> bool:
    """Whether ``moment`` is in the closing call period (15:25-15:30 since 2024-11-05),
    when orders are collected for the closing auction and nothing trades continuously."""
    local = _tokyo(moment)
    hours = trading_hours(local.date())
    return (
        hours.closing_auction is not None
        and session_at(local, holidays) is Session.AFTERNOON
        and local.time() >= hours.closing_auction
    )


def is_continuous_trading(moment: datetime, holidays: frozenset[date] = frozenset()) -> bool:
    """Whether orders match continuously (ザラバ) at ``moment``: inside the morning or
    afternoon session and outside the closing auction."""
    return session_at(moment, holidays) in (
        Session.MORNING,
        Session.AFTERNOON,
    ) and not is_closing_auction(moment, holidays)


# --------------------------------------------------------------------------------------
# instruments and the universe
# --------------------------------------------------------------------------------------

_SYMBOL = re.compile(r"^[0-9][0-9A-Z]{2}[0-9A-Z]$")
TOPIX100_CATEGORIES: Final[frozenset[str]] = frozenset({"TOPIX Core30", "TOPIX Large70"})


def tick_table_for(scale_category: str) -> TickTable:
    """TOPIX Core30 and Large70 together are the TOPIX100: they use the finer table."""
    return TickTable.TOPIX100 if scale_category in TOPIX100_CATEGORIES else TickTable.STANDARD


@dataclass(frozen=True)
class Instrument:
    """A listed stock with the rules an order for it must follow today."""

    symbol: str  # 4-character TSE code, e.g. "7203"
    jquants_code: str  # 5-character J-Quants code, e.g. "72030"
    name: str
    sector33: str  # TSE 33-sector code, e.g. "3700"
    scale_category: str  # "TOPIX Core30", "TOPIX Large70", "TOPIX Mid400", ...
    tick_table: TickTable
    lot_size: int
    base_price: int  # price units; the previous close the day's limits are based on

    def __post_init__(self) -> None:
        if not _SYMBOL.match(self.symbol):
            raise InstrumentRuleError(
                "symbol", "tse_code", self.symbol, f"symbol {self.symbol!r} is not a TSE code"
            )
        if _require_int("lot_size", self.lot_size) <= 0:
            raise InstrumentRuleError(
                "lot_size", "positive", self.lot_size, f"lot_size {self.lot_size} must be > 0"
            )
        limit_width(self.base_price)  # validates type and sign
        object.__setattr__(self, "tick_table", TickTable(self.tick_table))

    @property
    def limits(self) -> PriceLimits:
        return price_limits(self.base_price)

    @property
    def tick_bands(self) -> tuple[TickBand, ...]:
        return tick_bands(self.tick_table)

    def tick_size(self, price: int) -> int:
        return tick_size(price, self.tick_table)

    def check_price(self, price: int) -> None:
        """Raise ``InstrumentRuleError`` unless ``price`` is a positive int on the tick
        grid and inside today's limit band."""
        price = _require_int("price", price)
        if price <= 0:
            raise InstrumentRuleError(
                "price", "positive", price, f"price {price} must be > 0 (price units)"
            )
        tick = tick_size(price, self.tick_table)
        if price % tick:
            raise InstrumentRuleError(
                "price",
                "tick",
                price,
                f"price {price} ({_yen(price)} yen) is off the {_yen(tick)}-yen tick grid "
                f"for {self.symbol} ({self.tick_table.value} table)",
            )
        limits = self.limits
        if price not in limits:
            raise InstrumentRuleError(
                "price",
                "price_limit",
                price,
                f"price {price} ({_yen(price)} yen) is outside today's limits for "
                f"{self.symbol}: {_yen(limits.lower)}..{_yen(limits.upper)} yen "
                f"(base {_yen(self.base_price)} yen)",
            )

    def check_quantity(self, quantity: int) -> None:
        """Raise ``InstrumentRuleError`` unless ``quantity`` is a positive whole number
        of trading units (no odd lots on the exchange book)."""
        quantity = _require_int("quantity", quantity)
        if quantity <= 0:
            raise InstrumentRuleError(
                "quantity", "positive", quantity, f"quantity {quantity} must be > 0 shares"
            )
        if quantity % self.lot_size:
            raise InstrumentRuleError(
                "quantity",
                "lot_size",
                quantity,
                f"quantity {quantity} is not a multiple of the {self.lot_size}-share "
                f"trading unit for {self.symbol}",
            )


def symbol_of(code: str) -> str:
    """J-Quants codes are the 4-character TSE code plus a check digit, "0" for stock."""
    code = code.strip()
    if len(code) == 5 and code.endswith("0"):
        return code[:4]
    return code


class ListedStock(Protocol):
    """What a universe is built from: one listed stock and its base price.

    The data layer's records (``inference.data.listings.Listing``) have this shape; so
    do the bundled stocks. ``last_close`` is in yen (``Decimal``, decimal text or int,
    at most one decimal): the raw close the day's price limits are based on.
    """

    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def sector33(self) -> str: ...
    @property
    def scale_category(self) -> str: ...
    @property
    def last_close(self) -> Decimal | str | int | None: ...


class Universe:
    """The tradable instruments by symbol; changed only by :meth:`rebase` when a new
    session's price limits take effect."""

    def __init__(self, instruments: Iterable[Instrument], source: str = ""):
        by_symbol: dict[str, Instrument] = {}
        for instrument in instruments:
            if instrument.symbol in by_symbol:
                raise InstrumentRuleError(
                    "symbol",
                    "unique",
                    instrument.symbol,
                    f"symbol {instrument.symbol!r} appears twice in the universe",
                )
            by_symbol[instrument.symbol] = instrument
        self._by_symbol = dict(sorted(by_symbol.items()))
        self.source = source

    @classmethod
    def from_listings(cls, listings: Iterable[ListedStock], source: str = "") -> Universe:
        """Instruments from listing records: the tick table from the scale category, the
        base price from the last close, TSE's 100-share unit. Listings without a close
        (no trade yet: no base price, so no limits) are left out."""
        instruments = []
        for listing in listings:
            if listing.last_close is None:
                continue
            code = str(listing.code).strip()
            category = str(listing.scale_category or "")
            instruments.append(
                Instrument(
                    symbol=symbol_of(code),
                    jquants_code=code,
                    name=str(listing.name or code),
                    sector33=str(listing.sector33 or ""),
                    scale_category=category,
                    tick_table=tick_table_for(category),
                    lot_size=LOT_SIZE,
                    base_price=_price_units(listing.last_close, f"{source or 'listing'} {code}"),
                )
            )
        return cls(instruments, source=source)

    def rebase(self, base_prices: dict[str, int]) -> None:
        """A new session: each named instrument's limits are based on its previous close
        from now on (in place, so everyone holding this universe sees the same day)."""
        by_symbol = self._by_symbol
        for symbol, base in base_prices.items():
            current = self.get(symbol)
            if current.base_price != base:
                by_symbol[current.symbol] = replace(current, base_price=base)

    def get(self, symbol: str) -> Instrument:
        """The instrument for a 4-character symbol (a 5-digit J-Quants code also works)."""
        key = symbol_of(symbol) if isinstance(symbol, str) else symbol
        try:
            return self._by_symbol[key]
        except (KeyError, TypeError):
            raise UnknownSymbolError(symbol, len(self._by_symbol)) from None

    __getitem__ = get

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._by_symbol)

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        return tuple(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_symbol)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and symbol_of(symbol) in self._by_symbol

    def __repr__(self) -> str:
        return f"Universe({len(self)} instruments from {self.source or 'memory'})"


def _price_units(close: Decimal | str | int, where: str) -> int:
    """A yen amount (``Decimal('2454.5')``, ``'2454.0'``, ``2800``) to price units,
    exactly (no float)."""
    if isinstance(close, bool) or not isinstance(close, Decimal | str | int):
        raise InstrumentRuleError(
            "base_price", "decimal_yen", close,
            f"{where}: price {close!r} must be a Decimal, str or int yen amount",
        )
    try:
        units = Decimal(close.strip() if isinstance(close, str) else close) * PRICE_SCALE
    except InvalidOperation:
        raise InstrumentRuleError(
            "base_price", "decimal_yen", close, f"{where}: price {close!r} is not a number"
        ) from None
    if not units.is_finite() or units != units.to_integral_value():
        raise InstrumentRuleError(
            "base_price",
            "tenth_of_yen",
            close,
            f"{where}: price {close!r} has finer precision than 0.1 yen",
        )
    return int(units)


def bundled_universe() -> Universe:
    """The 14 stocks of :mod:`aggregates.universe_small`: what the embedded deployment and
    the tests trade when no J-Quants files are there."""
    from aggregates.universe_small import BUNDLED_STOCKS

    return Universe.from_listings(BUNDLED_STOCKS, source="bundled universe_small")


def load_universe(data_dir: None = None) -> Universe:
    """The bundled universe (``load_universe(None)``, as tests call it).

    Reading J-Quants files is not the domain's job: the composition root builds the
    real universe (:func:`api.wiring.load_instruments`, from
    ``inference.data.listings.read_listings`` records and :meth:`Universe.from_listings`).
    """
    if data_dir is not None:
        raise TypeError(
            "aggregates.instruments.load_universe reads no files: build a Universe from "
            "J-Quants files with api.wiring.universe_from_files(data_dir, as_of)"
        )
    return bundled_universe()
