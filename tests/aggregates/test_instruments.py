"""Instrument rules against JPX's published tables, TSE hours and the two universes.

The expected tables below are restated from JPX's pages in yen, exactly as published
("X円以下" for ticks, "X円未満" for limits), independently of the module's own tables.
"""

from __future__ import annotations

import csv
import gzip
import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from aggregates.instruments import (
    LOT_SIZE,
    PRICE_CEILING,
    PRICE_SCALE,
    Instrument,
    InstrumentRuleError,
    PriceLimits,
    Session,
    TickTable,
    Universe,
    UnknownSymbolError,
    bundled_universe,
    is_closing_auction,
    is_continuous_trading,
    is_on_tick,
    limit_width,
    load_universe,
    price_limits,
    round_to_tick,
    session_at,
    tick_bands,
    tick_size,
)
from inference.data.listings import Listing, read_listings
from kernels.contract import TickBand
from tests.conftest import require_data

JST = timezone(timedelta(hours=9))


def units(yen: str | int) -> int:
    """Yen (as published, possibly '0.1') to price units, exactly."""
    value = Decimal(str(yen)) * PRICE_SCALE
    assert value == value.to_integral_value()
    return int(value)


# ---- JPX 呼値の単位, (upper bound in yen inclusive or None = above, tick in yen) ----------

STANDARD_PUBLISHED = [
    (3_000, "1"),
    (5_000, "5"),
    (30_000, "10"),
    (50_000, "50"),
    (300_000, "100"),
    (500_000, "500"),
    (3_000_000, "1000"),
    (5_000_000, "5000"),
    (30_000_000, "10000"),
    (50_000_000, "50000"),
    (None, "100000"),
]
TOPIX100_PUBLISHED = [
    (1_000, "0.1"),
    (3_000, "0.5"),
    (10_000, "1"),
    (30_000, "5"),
    (100_000, "10"),
    (300_000, "50"),
    (1_000_000, "100"),
    (3_000_000, "500"),
    (10_000_000, "1000"),
    (30_000_000, "5000"),
    (None, "10000"),
]
PUBLISHED = {TickTable.STANDARD: STANDARD_PUBLISHED, TickTable.TOPIX100: TOPIX100_PUBLISHED}


def boundary_cases() -> list[tuple[TickTable, int, int, int]]:
    """(table, upper bound in units, tick at the bound, tick just above it)."""
    cases = []
    for table, rows in PUBLISHED.items():
        for (upper, tick), (_, next_tick) in itertools.pairwise(rows):
            assert upper is not None
            cases.append((table, units(upper), units(tick), units(next_tick)))
    return cases


@pytest.mark.parametrize("table", list(TickTable))
def test_tick_bands_are_the_published_table_in_price_units(table: TickTable) -> None:
    expected = tuple(
        TickBand(upper=PRICE_CEILING if upper is None else units(upper), tick=units(tick))
        for upper, tick in PUBLISHED[table]
    )
    assert tick_bands(table) == expected
    assert tick_bands(table.value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "upper", "tick", "next_tick"), boundary_cases())
def test_every_band_boundary(table: TickTable, upper: int, tick: int, next_tick: int) -> None:
    # "X円以下": the bound itself still uses the finer tick...
    assert tick_size(upper, table) == tick
    assert tick_size(upper - 1, table) == tick
    assert is_on_tick(upper, table)
    # ...one price unit above it the coarser tick applies.
    assert tick_size(upper + 1, table) == next_tick
    assert not is_on_tick(upper + 1, table)
    assert is_on_tick(upper + next_tick, table)
    if next_tick > 1:
        assert not is_on_tick(upper + next_tick - 1, table)
    # Rounding just above the bound goes back to the bound or forward one coarse tick.
    assert round_to_tick(upper + 1, table, "down") == upper
    assert round_to_tick(upper + 1, table, "up") == upper + next_tick
    if tick > 1:
        assert round_to_tick(upper - 1, table, "up") == upper
        assert round_to_tick(upper - 1, table, "down") == upper - tick


def test_topix100_tick_is_a_tenth_of_a_yen_below_1000_yen() -> None:
    assert tick_size(units("999.9"), TickTable.TOPIX100) == 1
    assert is_on_tick(units("999.9"), TickTable.TOPIX100)
    assert not is_on_tick(units("999.9"), TickTable.STANDARD)
    assert is_on_tick(units("2500.5"), TickTable.TOPIX100)
    assert not is_on_tick(units("2500.1"), TickTable.TOPIX100)
    assert round_to_tick(units("2500.3"), TickTable.TOPIX100, "up") == units("2500.5")
    assert round_to_tick(units("2500.3"), TickTable.TOPIX100, "down") == units("2500")


def test_round_to_tick_keeps_prices_already_on_the_grid() -> None:
    for table in TickTable:
        for price in (units(1), units(3_000), units(4_995), units(1_000_000)):
            if is_on_tick(price, table):
                assert round_to_tick(price, table, "down") == price
                assert round_to_tick(price, table, "up") == price


def test_rounding_below_the_smallest_tick_has_no_valid_price_down() -> None:
    with pytest.raises(InstrumentRuleError) as error:
        round_to_tick(5, TickTable.STANDARD, "down")  # 0.5 yen: nothing at or below
    assert (error.value.field, error.value.rule) == ("price", "positive")
    assert round_to_tick(5, TickTable.STANDARD, "up") == units(1)


@pytest.mark.parametrize("bad", [0, -10, 1.5, True, "100"])
def test_tick_functions_reject_non_positive_or_non_int_prices(bad: object) -> None:
    assert not is_on_tick(bad, TickTable.STANDARD)  # type: ignore[arg-type]
    with pytest.raises(InstrumentRuleError) as error:
        tick_size(bad, TickTable.STANDARD)  # type: ignore[arg-type]
    assert error.value.field == "price"
    assert error.value.value == bad


def test_round_to_tick_rejects_an_unknown_direction() -> None:
    with pytest.raises(InstrumentRuleError, match="direction 'nearest'"):
        round_to_tick(100, TickTable.STANDARD, "nearest")  # type: ignore[arg-type]


# ---- JPX 制限値幅: (base price below X yen, width in yen); last row: and above ----------

LIMITS_PUBLISHED = [
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
]
LIMIT_ABOVE_LAST = 10_000_000


def limit_boundary_cases() -> list[tuple[int, int, int]]:
    """(bound in yen, width just below it, width at it) for every published row."""
    widths = [w for _, w in LIMITS_PUBLISHED] + [LIMIT_ABOVE_LAST]
    return [(bound, widths[i], widths[i + 1]) for i, (bound, _) in enumerate(LIMITS_PUBLISHED)]


@pytest.mark.parametrize(("bound", "below", "at"), limit_boundary_cases())
def test_limit_width_at_every_published_bound(bound: int, below: int, at: int) -> None:
    # "X円未満": a base price a tenth of a yen below the bound is in the row, X is not.
    assert limit_width(units(bound) - 1) == units(below)
    assert limit_width(units(bound)) == units(at)


@pytest.mark.parametrize(
    ("base_yen", "lower_yen", "upper_yen"),
    [
        ("2500", "2000", "3000"),  # < 3,000 yen: 500 yen
        ("2999.5", "2499.5", "3499.5"),
        ("3000", "2300", "3700"),  # < 5,000 yen: 700 yen
        ("150", "100", "200"),  # < 200 yen: 50 yen
        ("99", "69", "129"),  # < 100 yen: 30 yen
        ("60000", "50000", "70000"),  # < 70,000 yen: 10,000 yen
        ("80000000", "70000000", "90000000"),  # 50,000,000 yen and above
    ],
)
def test_price_limits_hand_computed(base_yen: str, lower_yen: str, upper_yen: str) -> None:
    assert price_limits(units(base_yen)) == PriceLimits(units(lower_yen), units(upper_yen))


@pytest.mark.parametrize("base_yen", ["1", "20", "30", "30.5"])
def test_lower_limit_never_goes_below_one_yen(base_yen: str) -> None:
    limits = price_limits(units(base_yen))
    assert limits.lower == max(units(base_yen) - units(30), units(1))
    assert limits.lower >= units(1)
    assert limits.upper == units(base_yen) + units(30)


@pytest.mark.parametrize("bad", [0, -1, 2.5, None])
def test_price_limits_reject_a_bad_base_price(bad: object) -> None:
    with pytest.raises(InstrumentRuleError) as error:
        price_limits(bad)  # type: ignore[arg-type]
    assert error.value.field == "base_price"


# ---- sessions ---------------------------------------------------------------------------

MONDAY = date(2025, 3, 3)


def jst(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=JST)


@pytest.mark.parametrize(
    ("clock", "session", "continuous"),
    [
        ((7, 59, 59), Session.CLOSED, False),
        ((8, 0, 0), Session.PRE_OPEN, False),
        ((8, 59, 59), Session.PRE_OPEN, False),
        ((9, 0, 0), Session.MORNING, True),
        ((11, 29, 59), Session.MORNING, True),
        ((11, 30, 0), Session.LUNCH_BREAK, False),
        ((12, 29, 59), Session.LUNCH_BREAK, False),
        ((12, 30, 0), Session.AFTERNOON, True),
        ((15, 0, 0), Session.AFTERNOON, True),  # was the close before 2024-11-05
        ((15, 24, 59), Session.AFTERNOON, True),
        ((15, 25, 0), Session.AFTERNOON, False),  # closing auction: orders collected
        ((15, 29, 59), Session.AFTERNOON, False),
        ((15, 30, 0), Session.CLOSED, False),
        ((23, 0, 0), Session.CLOSED, False),
    ],
)
def test_session_boundaries_since_2024_11_05(
    clock: tuple[int, int, int], session: Session, continuous: bool
) -> None:
    moment = jst(MONDAY, *clock)
    assert session_at(moment) is session
    assert is_continuous_trading(moment) is continuous
    assert is_closing_auction(moment) is ((15, 25, 0) <= clock < (15, 30, 0))


def test_afternoon_closed_at_15_00_before_the_2024_extension() -> None:
    day = date(2015, 6, 1)  # a Monday inside the shared data's history
    assert session_at(jst(day, 14, 59, 59)) is Session.AFTERNOON
    assert is_continuous_trading(jst(day, 14, 59, 59))
    assert session_at(jst(day, 15, 0)) is Session.CLOSED
    assert not is_closing_auction(jst(day, 14, 59))


def test_morning_closed_at_11_00_before_2011_11_21() -> None:
    assert session_at(jst(date(2011, 11, 18), 11, 15)) is Session.LUNCH_BREAK
    assert session_at(jst(date(2011, 11, 21), 11, 15)) is Session.MORNING


@pytest.mark.parametrize("day", [date(2025, 3, 1), date(2025, 3, 2)])
def test_weekends_are_closed(day: date) -> None:
    assert session_at(jst(day, 10, 0)) is Session.CLOSED
    assert not is_continuous_trading(jst(day, 10, 0))


def test_exchange_holidays_come_from_the_caller() -> None:
    vernal_equinox = date(2025, 3, 20)  # a Thursday
    assert session_at(jst(vernal_equinox, 10, 0)) is Session.MORNING
    holidays = frozenset({vernal_equinox})
    assert session_at(jst(vernal_equinox, 10, 0), holidays) is Session.CLOSED
    assert not is_continuous_trading(jst(vernal_equinox, 10, 0), holidays)
    assert session_at(jst(date(2025, 3, 21), 10, 0), holidays) is Session.MORNING


@pytest.mark.parametrize("day", [date(2025, 12, 31), date(2026, 1, 2), date(2024, 1, 3)])
def test_year_end_break_is_closed_without_a_holiday_list(day: date) -> None:
    assert day.weekday() < 5
    assert session_at(jst(day, 10, 0)) is Session.CLOSED


def test_moments_are_converted_to_tokyo_time() -> None:
    # 00:30 UTC on Monday is 09:30 JST: morning session.
    assert session_at(datetime(2025, 3, 3, 0, 30, tzinfo=UTC)) is Session.MORNING
    # 15:00 UTC on Friday is 00:00 JST Saturday: closed, although Friday in London.
    assert session_at(datetime(2025, 2, 28, 15, 0, tzinfo=UTC)) is Session.CLOSED
    # 20:00 New York (UTC-5) on Sunday is 10:00 JST Monday.
    new_york = timezone(timedelta(hours=-5))
    assert session_at(datetime(2025, 3, 2, 20, 0, tzinfo=new_york)) is Session.MORNING


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InstrumentRuleError) as error:
        session_at(datetime(2025, 3, 3, 10, 0))
    assert (error.value.field, error.value.rule) == ("moment", "timezone_aware")


# ---- instruments -------------------------------------------------------------------------


def toyota(base_yen: str = "2500") -> Instrument:
    return Instrument(
        symbol="7203",
        jquants_code="72030",
        name="Toyota Motor",
        sector33="3700",
        scale_category="TOPIX Core30",
        tick_table=TickTable.TOPIX100,
        lot_size=LOT_SIZE,
        base_price=units(base_yen),
    )


def small_cap(base_yen: str = "2500") -> Instrument:
    return Instrument(
        "7951",
        "79510",
        "Yamaha",
        "3800",
        "TOPIX Mid400",
        TickTable.STANDARD,
        LOT_SIZE,
        units(base_yen),
    )


def test_instrument_exposes_its_limits_and_grid() -> None:
    instrument = toyota("2500")
    assert instrument.limits == PriceLimits(units(2000), units(3000))
    assert instrument.tick_bands == tick_bands(TickTable.TOPIX100)
    assert instrument.tick_size(units(2500)) == units("0.5")


def test_check_price_accepts_on_tick_prices_inside_the_limits() -> None:
    instrument = toyota("2500")
    for price in (units("2000"), units("2500.5"), units("3000")):
        instrument.check_price(price)


def test_off_tick_price_error_names_field_rule_value_and_grid() -> None:
    with pytest.raises(InstrumentRuleError) as error:
        small_cap().check_price(25001)
    assert (error.value.field, error.value.rule, error.value.value) == ("price", "tick", 25001)
    assert str(error.value) == (
        "price 25001 (2500.1 yen) is off the 1-yen tick grid for 7951 (standard table)"
    )
    assert isinstance(error.value, ValueError)
    with pytest.raises(InstrumentRuleError, match=r"0\.5-yen tick grid for 7203 \(topix100"):
        toyota().check_price(25001)


@pytest.mark.parametrize("price_yen", ["1999", "3001"])
def test_price_outside_the_daily_limits_is_refused(price_yen: str) -> None:
    with pytest.raises(InstrumentRuleError) as error:
        toyota("2500").check_price(units(price_yen))
    assert (error.value.field, error.value.rule) == ("price", "price_limit")
    assert error.value.value == units(price_yen)
    assert "2000..3000 yen" in str(error.value)


@pytest.mark.parametrize(
    ("price", "rule"), [(0, "positive"), (-5, "positive"), (2500.0, "integer"), (True, "integer")]
)
def test_non_positive_or_non_int_prices_are_refused(price: object, rule: str) -> None:
    with pytest.raises(InstrumentRuleError) as error:
        toyota().check_price(price)  # type: ignore[arg-type]
    assert (error.value.field, error.value.rule) == ("price", rule)


@pytest.mark.parametrize(
    ("quantity", "rule"),
    [(150, "lot_size"), (1, "lot_size"), (0, "positive"), (-100, "positive"), (100.0, "integer")],
)
def test_quantities_must_be_whole_trading_units(quantity: object, rule: str) -> None:
    with pytest.raises(InstrumentRuleError) as error:
        toyota().check_quantity(quantity)  # type: ignore[arg-type]
    assert (error.value.field, error.value.rule, error.value.value) == ("quantity", rule, quantity)
    assert str(quantity) in str(error.value)


def test_whole_lots_are_accepted() -> None:
    for quantity in (100, 200, 1_000_000):
        toyota().check_quantity(quantity)


def test_instrument_refuses_a_malformed_symbol_or_base_price() -> None:
    with pytest.raises(InstrumentRuleError) as error:
        Instrument("72030", "72030", "x", "3700", "TOPIX Core30", TickTable.TOPIX100, 100, 10)
    assert error.value.field == "symbol"
    with pytest.raises(InstrumentRuleError) as error:
        toyota("0")
    assert error.value.field == "base_price"


# ---- universes ---------------------------------------------------------------------------

BUNDLED_SYMBOLS = {
    "7203",
    "6758",
    "9984",
    "8306",
    "6861",
    "9432",
    "4063",
    "8035",
    "6501",
    "7974",
    "4502",
    "9983",
}


def test_bundled_universe() -> None:
    for universe in (load_universe(None), bundled_universe()):
        assert set(universe.symbols) >= BUNDLED_SYMBOLS
        assert len(universe) == len(universe.symbols) == len(list(universe))
        toyota_ = universe.get("7203")
        assert toyota_.jquants_code == "72030"
        assert toyota_.tick_table is TickTable.TOPIX100
        assert toyota_.lot_size == 100
        assert universe.get("7951").tick_table is TickTable.STANDARD
        for symbol in universe:
            instrument = universe.get(symbol)
            # Each reference price is a price someone could actually trade at.
            instrument.check_price(instrument.base_price)
    assert bundled_universe().get("7203").base_price == 2_800 * PRICE_SCALE


def test_the_domain_reads_no_files(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="universe_from_files"):
        load_universe(tmp_path)  # type: ignore[arg-type]


def _listing(code: str, close: Decimal | str | int | None, category: str = "TOPIX Mid400"
             ) -> Listing:
    return Listing(code, f"name {code}", "3700", category, close, date(2015, 1, 5))  # type: ignore[arg-type]


def test_universe_from_listing_records() -> None:
    universe = Universe.from_listings(
        [
            _listing("72030", Decimal("2454.5"), "TOPIX Core30"),
            _listing("67580", "3500.0", "TOPIX Large70"),
            _listing("3197", 2900),  # a 4-digit code works too
            _listing("99840", None),  # no close yet: no limits, not tradable
        ],
        source="test records",
    )
    assert universe.symbols == ("3197", "6758", "7203")
    assert universe.source == "test records"
    toyota_ = universe.get("7203")
    assert (toyota_.jquants_code, toyota_.name, toyota_.sector33) == ("72030", "name 72030", "3700")
    assert toyota_.base_price == 24_545 and toyota_.tick_table is TickTable.TOPIX100
    assert universe.get("6758").tick_table is TickTable.TOPIX100
    assert universe.get("3197").tick_table is TickTable.STANDARD
    assert universe.get("3197").base_price == 29_000 and universe.get("3197").lot_size == LOT_SIZE


@pytest.mark.parametrize(
    ("close", "rule"),
    [(Decimal("100.05"), "tenth_of_yen"), ("12x", "decimal_yen"), (12.5, "decimal_yen"),
     (Decimal("NaN"), "tenth_of_yen")],
)
def test_listing_closes_must_be_exact_tenths_of_a_yen(close: object, rule: str) -> None:
    with pytest.raises(InstrumentRuleError) as error:
        Universe.from_listings([_listing("72030", close)], source="src")  # type: ignore[arg-type]
    assert (error.value.field, error.value.rule) == ("base_price", rule)
    assert "src 72030" in str(error.value)


def test_a_symbol_listed_twice_is_refused() -> None:
    with pytest.raises(InstrumentRuleError) as error:
        Universe.from_listings([_listing("72030", 1), _listing("7203", 2)])
    assert (error.value.field, error.value.rule) == ("symbol", "unique")


def test_unknown_symbol_error_names_the_symbol_field() -> None:
    universe = load_universe(None)
    with pytest.raises(UnknownSymbolError) as error:
        universe.get("1234")
    assert (error.value.field, error.value.value) == ("symbol", "1234")
    assert "1234" in str(error.value)
    assert isinstance(error.value, ValueError)
    assert "1234" not in universe
    assert "7203" in universe
    assert universe.get("72030") is universe.get("7203")  # the J-Quants code also works


def _last_closes_by_scan(
    path: Path, codes: set[str], as_ofs: tuple[date, ...]
) -> dict[date, dict[str, int]]:
    """An independent reading of the quotes file with the standard library, one pass:
    {as_of: {code: last Close on or before as_of}}."""
    last: dict[date, dict[str, tuple[str, str]]] = {as_of: {} for as_of in as_ofs}
    with gzip.open(path, "rt", newline="") as handle:
        header = next(csv.reader([handle.readline()]))
        close_at = header.index("Close")
        for line in handle:
            day, code, _ = line.split(",", 2)
            if code not in codes:
                continue
            close = line.rstrip("\n").split(",")[close_at]
            for as_of in as_ofs:
                seen = last[as_of].get(code)
                if close and day <= as_of.isoformat() and (seen is None or day > seen[0]):
                    last[as_of][code] = (day, close)
    return {
        as_of: {code: units(close) for code, (_, close) in found.items()}
        for as_of, found in last.items()
    }


def test_universe_from_the_shared_jquants_files() -> None:
    quotes = require_data("jquants/daily_quotes.csv.gz")
    require_data("jquants/listed_info.json")
    jquants = quotes.parent
    codes = {"72030", "67580", "99840"}
    as_of = date(2012, 6, 1)

    latest = Universe.from_listings(read_listings(jquants))
    dated = Universe.from_listings(read_listings(jquants, as_of=as_of))

    assert len(latest) > 400
    assert "7203" in latest and "6758" in latest
    assert latest.get("7203").tick_table is TickTable.TOPIX100
    assert latest.get("7203").scale_category == "TOPIX Core30"
    assert latest.get("7203").sector33 == "3700"
    assert all(latest.get(s).lot_size == LOT_SIZE for s in latest)
    expected = _last_closes_by_scan(quotes, codes, (date.max, as_of))
    expected_latest, expected_dated = expected[date.max], expected[as_of]
    for code in codes:
        symbol = code[:4]
        assert latest.get(symbol).base_price == expected_latest[code]
        assert dated.get(symbol).base_price == expected_dated[code]
    assert latest.get("7203").base_price != dated.get("7203").base_price
    mid = [latest.get(s) for s in latest if latest.get(s).scale_category == "TOPIX Mid400"]
    assert mid and all(i.tick_table is TickTable.STANDARD for i in mid)


def test_universe_before_the_first_quote_is_empty() -> None:
    quotes = require_data("jquants/daily_quotes.csv.gz")
    require_data("jquants/listed_info.json")
    assert read_listings(quotes.parent, as_of=date(2007, 12, 31)) == []
