"""Pre-trade risk and the TSE session: with ``enforce`` an order outside the continuous
sessions is refused naming the session rule and the time; ``ignore`` (the default)
and callers that give no moment are not affected."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from uuid import UUID

import pytest

from aggregates.account import Account
from aggregates.base import Meta
from aggregates.errors import RiskRejection, RuleViolation
from aggregates.fees import SCHEDULES
from aggregates.instruments import InstrumentRuleError, Universe
from aggregates.order import OrderType, Side, TimeInForce
from aggregates.risk import OrderTerms, RiskLimits, assess, check_session

JST = timezone(timedelta(hours=9))
RULE_NOW = "within the TSE trading session 09:00-11:30, 12:30-15:30 JST"
MONDAY = date(2025, 1, 6)


def jst(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=JST)


OPEN_INSTANTS = [
    jst(MONDAY, 9),
    jst(MONDAY, 10, 15),
    jst(MONDAY, 11, 29, 59, 999_999),
    jst(MONDAY, 12, 30),
    jst(MONDAY, 15, 25),  # the closing auction takes orders
    jst(MONDAY, 15, 29, 59, 999_999),
    datetime(2025, 1, 6, 0, 0, tzinfo=UTC),  # 09:00 JST given in UTC
]
CLOSED_INSTANTS = [
    (jst(MONDAY, 8, 59, 59, 999_999), "pre open"),
    (jst(MONDAY, 11, 30), "lunch break"),
    (jst(MONDAY, 12, 29, 59, 999_999), "lunch break"),
    (jst(MONDAY, 15, 30), "closed"),
    (jst(MONDAY, 0, 0), "closed"),
    (datetime(2025, 1, 6, 6, 30, tzinfo=UTC), "closed"),  # 15:30 JST given in UTC
]


@pytest.mark.parametrize("moment", OPEN_INSTANTS, ids=lambda m: m.isoformat())
def test_orders_inside_the_session_pass(moment: datetime) -> None:
    check_session("7203", moment, "enforce")


@pytest.mark.parametrize(("moment", "phase"), CLOSED_INSTANTS, ids=lambda m: str(m))
def test_orders_outside_the_session_are_refused_naming_rule_and_time(
    moment: datetime, phase: str
) -> None:
    with pytest.raises(RiskRejection) as error:
        check_session("7203", moment, "enforce")
    assert error.value.field == "session"
    assert error.value.rule == RULE_NOW
    assert error.value.value == moment.astimezone(JST).isoformat()
    assert error.value.category == "rejected"
    text = str(error.value)
    assert "7203" in text and RULE_NOW in text and phase in text
    assert moment.astimezone(JST).strftime("%H:%M:%S JST") in text


def test_weekends_and_the_year_end_break_are_not_trading_days() -> None:
    for day, weekday in (
        (date(2025, 1, 4), "Saturday"),
        (date(2025, 1, 5), "Sunday"),
        (date(2024, 12, 31), "Tuesday"),
        (date(2025, 1, 3), "Friday"),
    ):
        with pytest.raises(RiskRejection) as error:
            check_session("7203", jst(day, 10), "enforce")
        assert f"{day.isoformat()} ({weekday}) is not a TSE trading day" in str(error.value)
    check_session("7203", jst(date(2025, 1, 7), 10), "enforce")


def test_holidays_given_by_the_caller_are_closed() -> None:
    coming_of_age_day = date(2025, 1, 13)
    check_session("7203", jst(coming_of_age_day, 10), "enforce")  # not known by default
    with pytest.raises(RiskRejection, match="not a TSE trading day"):
        check_session(
            "7203", jst(coming_of_age_day, 10), "enforce", holidays=frozenset({coming_of_age_day})
        )


def test_the_rule_names_the_hours_in_force_that_day() -> None:
    before_extension = date(2024, 11, 1)  # afternoon closed at 15:00 until 2024-11-05
    check_session("7203", jst(before_extension, 14, 59, 59), "enforce")
    with pytest.raises(RiskRejection) as error:
        check_session("7203", jst(before_extension, 15), "enforce")
    assert error.value.rule == "within the TSE trading session 09:00-11:30, 12:30-15:00 JST"
    with pytest.raises(RiskRejection) as error:
        check_session("7203", jst(date(2010, 6, 1), 11, 15), "enforce")  # morning to 11:00
    assert error.value.rule == "within the TSE trading session 09:00-11:00, 12:30-15:00 JST"


def test_ignore_checks_nothing_and_bad_settings_or_naive_times_are_refused() -> None:
    check_session("7203", jst(date(2025, 1, 4), 3), "ignore")
    with pytest.raises(RuleViolation) as error:
        check_session("7203", jst(MONDAY, 10), "sometimes")  # type: ignore[arg-type]
    assert error.value.field == "session_rules"
    with pytest.raises(InstrumentRuleError) as naive:
        check_session("7203", datetime(2025, 1, 6, 10), "enforce")
    assert naive.value.field == "moment"


# ---- through assess -------------------------------------------------------------------


def _funded() -> Account:
    account = Account.open(
        UUID(int=7), name="desk", owner="desk", allow_short=False, meta=Meta.command("t")
    )
    account.deposit(100_000_000, Meta.command("t"))
    return account


def _assess(universe: Universe, **kwargs: object) -> object:
    instrument = universe.get("7203")
    terms = OrderTerms(
        "7203", Side.BUY, OrderType.LIMIT, TimeInForce.DAY, 100, instrument.base_price
    )
    return assess(
        terms,
        instrument=instrument,
        account=_funded(),
        position=None,
        last_price=None,
        symbol_halted=False,
        limits=RiskLimits(),
        schedule=SCHEDULES["tiered_online"],
        **kwargs,
    )  # type: ignore[arg-type]


def test_assess_checks_the_session_only_when_told(universe: Universe) -> None:
    lunch = jst(MONDAY, 12)
    assert _assess(universe)  # existing callers: no moment, no check
    assert _assess(universe, now=lunch)  # default rules: ignore
    assert _assess(universe, now=jst(MONDAY, 10), session_rules="enforce")
    with pytest.raises(RiskRejection) as error:
        _assess(universe, now=lunch, session_rules="enforce")
    assert (error.value.field, error.value.rule) == ("session", RULE_NOW)
    assert "lunch break" in str(error.value)
