"""Commission schedules: every tier boundary, the integer rounding rule, bad input."""

from __future__ import annotations

import pytest

from aggregates.fees import (
    DEFAULT_SCHEDULE,
    CommissionSchedule,
    RateCommission,
    TieredCommission,
    get_schedule,
)

# The default plan as the broker publishes it (per order, tax included).
TIERED_ONLINE_PUBLISHED = [
    (50_000, 55),
    (100_000, 99),
    (200_000, 115),
    (500_000, 275),
    (1_000_000, 535),
    (1_500_000, 640),
    (30_000_000, 1_013),
]
ABOVE = 1_070


def tier_boundaries() -> list[tuple[int, int, int]]:
    """(X, fee at X, fee at X + 1 yen) for every published tier."""
    fees = [fee for _, fee in TIERED_ONLINE_PUBLISHED] + [ABOVE]
    return [(bound, fees[i], fees[i + 1]) for i, (bound, _) in enumerate(TIERED_ONLINE_PUBLISHED)]


def test_default_schedule_is_the_tiered_online_plan() -> None:
    assert DEFAULT_SCHEDULE == "tiered_online"
    schedule = get_schedule(DEFAULT_SCHEDULE)
    assert schedule.name == "tiered_online"
    assert isinstance(schedule, CommissionSchedule)


@pytest.mark.parametrize(("bound", "at", "above"), tier_boundaries())
def test_every_tier_boundary(bound: int, at: int, above: int) -> None:
    schedule = get_schedule("tiered_online")
    assert schedule.commission(bound) == at  # "up to X yen" includes X
    assert schedule.commission(bound + 1) == above


def test_tiered_smallest_and_largest_orders() -> None:
    schedule = get_schedule("tiered_online")
    assert schedule.commission(1) == 55
    assert schedule.commission(1_000_000_000) == ABOVE


def test_rate_commission_floors_in_integer_arithmetic() -> None:
    flat = get_schedule("flat_10bp")
    # 1,234,567 yen x 10 bp = 1,234.567 yen -> 1,234 yen (floor, never rounded up)
    assert flat.commission(1_234_567) == 1_234
    # 999 yen x 10 bp = 0.999 yen -> 0 yen
    assert flat.commission(999) == 0
    assert flat.commission(1_000) == 1
    # Beyond float precision the integer rule still holds exactly:
    # (10**17 + 9_999) x 10 / 10_000 = 10**14 + 9.999 -> 10**14 + 9
    assert flat.commission(10**17 + 9_999) == 10**14 + 9


def test_rate_commission_clamps_to_minimum_and_maximum() -> None:
    capped = RateCommission(name="capped", bps=25, minimum=100, maximum=2_000)
    assert capped.commission(10_000) == 100  # 25 yen -> minimum 100
    assert capped.commission(40_000) == 100  # exactly 100
    assert capped.commission(40_400) == 101  # 101 yen
    assert capped.commission(799_999) == 1_999  # 1,999.9975 -> 1,999
    assert capped.commission(800_000) == 2_000
    assert capped.commission(50_000_000) == 2_000  # 12,500 yen -> maximum 2,000


def test_no_execution_no_fee() -> None:
    assert get_schedule("tiered_online").commission(0) == 0
    assert RateCommission(name="m", bps=10, minimum=100).commission(0) == 0


@pytest.mark.parametrize("name", ["tiered_online", "flat_10bp", "zero"])
@pytest.mark.parametrize("bad", [-1, -50_000, 100.0, True, "1000"])
def test_negative_or_non_int_notional_is_rejected(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match="notional_yen"):
        get_schedule(name).commission(bad)  # type: ignore[arg-type]


def test_unknown_schedule_names_the_setting_and_the_known_names() -> None:
    with pytest.raises(ValueError) as error:
        get_schedule("cheap")
    message = str(error.value)
    assert "commission_schedule" in message
    assert "'cheap'" in message
    for known in ("tiered_online", "flat_10bp", "zero"):
        assert known in message


def test_zero_schedule_charges_nothing() -> None:
    assert get_schedule("zero").commission(123_456_789) == 0


@pytest.mark.parametrize(
    "tiers",
    [
        ((100_000, 99), (50_000, 55)),  # not ascending
        ((0, 10),),  # non-positive bound
        ((50_000, -1),),  # negative fee
    ],
)
def test_malformed_tiers_are_refused(tiers: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValueError):
        TieredCommission(name="bad", tiers=tiers, above=100)


def test_malformed_rate_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="bps"):
        RateCommission(name="bad", bps=-1)
    with pytest.raises(ValueError, match="maximum"):
        RateCommission(name="bad", bps=10, minimum=500, maximum=100)
