"""The intraday kernel and its plain-Python reference give the same fills, fill for fill.

The kernel reads the replayed book; the reference reads the file's orderbook rows. On
random consistent days (and, in ``tests/streams/test_intraday.py``, on the real GOOG
day) every fill row and every agent counter must agree, for both agents and any
configuration.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.intraday import F_RULE, RULE_CROSSED, RULE_QUEUE, RULE_THROUGH
from kernels.intraday_reference import run_reference
from streams.replay.intraday import (
    MakerConfig,
    TwapConfig,
    params_for,
    run,
    schedule_for,
    times_ns,
)
from streams.replay.lobster import LobsterDay
from tests.kernels.lobster_days import random_day

START = 34_200.01


def assert_same_as_reference(day: LobsterDay, config: TwapConfig | MakerConfig) -> int:
    result = run(day, config)
    assert result.replay_counts["unexplained_mismatches"] == 0
    fills, counters = run_reference(day.messages, times_ns(day), day.orderbook,
                                    params_for(config), schedule_for(config))  # fmt: skip
    assert [tuple(row) for row in result.fills.tolist()] == fills
    assert result.agent == counters
    return len(fills)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    half_spread=st.integers(0, 4),
    size=st.sampled_from([50, 100, 300]),
    room=st.integers(1, 4),
    requote=st.sampled_from([0.05, 0.3, 1.0, 5.0]),
)
def test_maker_kernel_equals_reference_on_random_days(
    seed: int, half_spread: int, size: int, room: int, requote: float
) -> None:
    day = random_day(seed)
    end = float(day.times[-1]) - 1.0
    config = MakerConfig(half_spread_ticks=half_spread, size=size, inventory_limit=room * size,
                         requote_s=requote, start=START, end=max(end, START + 1))  # fmt: skip
    assert_same_as_reference(day, config)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    quantity=st.integers(1, 6_000),
    side=st.sampled_from([1, -1]),
    interval=st.sampled_from([1.0, 2.0, 3.5]),
    limit_ticks=st.integers(0, 4),
)
def test_twap_kernel_equals_reference_on_random_days(
    seed: int, quantity: int, side: int, interval: float, limit_ticks: int
) -> None:
    day = random_day(seed)
    config = TwapConfig(quantity=quantity, side=side, interval_s=interval,
                        limit_ticks=limit_ticks, start=START, end=float(day.times[-1]))  # fmt: skip
    assert_same_as_reference(day, config)


def test_random_days_do_exercise_every_fill_rule() -> None:
    """The equivalence above is not vacuous: these days produce fills by every rule."""
    rules: set[int] = set()
    total = 0
    for seed in range(12):
        day = random_day(seed)
        config = MakerConfig(half_spread_ticks=0, size=100, inventory_limit=400,
                             requote_s=1.0, start=START, end=float(day.times[-1]))  # fmt: skip
        total += assert_same_as_reference(day, config)
        rules |= set(run(day, config).fills[:, F_RULE].tolist())
    assert total > 0 and rules == {RULE_QUEUE, RULE_THROUGH, RULE_CROSSED}
