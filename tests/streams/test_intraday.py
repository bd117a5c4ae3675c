"""Intraday backtest: the queue rules on small books, the TWAP schedule, the real GOOG
day (fills the book offered, no impact on the replay, kernel == reference), the report
and the ``tradecore backtest intraday`` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.intraday import (
    F_MESSAGE,
    F_PRICE,
    F_QTY,
    F_QUEUE_NS,
    F_RULE,
    F_SIDE,
    F_TIME_NS,
    RULE_CROSSED,
    RULE_QUEUE,
    RULE_TAKE,
    RULE_THROUGH,
)
from kernels.intraday_reference import run_reference
from streams.replay.intraday import (
    IntradayConfigError,
    MakerConfig,
    TwapConfig,
    params_for,
    report,
    run,
    schedule_for,
    times_ns,
    twap_slices,
)
from streams.replay.lobster import LobsterDay, load, replay
from tests.conftest import require_data
from tests.kernels.lobster_days import Message, build_day, write_zip
from tests.processes import TRADECORE, env_for

GOOG = "lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"
BID, ASK = 1_000_000, 1_000_200  # $100.00 / $100.02: the maker joins both touches
JOIN = 34_200.2  # the maker's only requote: after the messages timed up to 34200.1


def maker_fills(seed: list[tuple[int, int, int, int]], messages: list[Message]) -> np.ndarray:
    """Fills of a maker that quotes once at JOIN (100 shares at the touch) and never moves."""
    day = build_day(seed, messages)
    result = run(day, MakerConfig(half_spread_ticks=0, size=100, inventory_limit=1_000,
                                  requote_s=1_000.0, start=JOIN, end=34_300.0))  # fmt: skip
    assert result.replay_counts["unexplained_mismatches"] == 0
    assert result.agent["quotes_placed"] == 2  # one bid, one ask, kept all along
    return result.fills


ASK_SEED = [(900, -1, ASK, 100)]
A_300 = (34_200.1, 1, 1, 300, BID, 1)  # submitted before the maker joins: ahead of it


def test_a_quote_behind_300_shares_fills_only_after_300_are_executed_at_its_level() -> None:
    fills = maker_fills(ASK_SEED, [
        A_300,
        (34_200.3, 1, 2, 200, BID, 1),  # joins behind the maker
        (34_200.4, 4, 1, 200, BID, 1),  # 100 still ahead
        (34_200.5, 4, 1, 100, BID, 1),  # exactly 300 executed: the queue ahead is gone
        (34_200.6, 4, 2, 60, BID, 1),  # the next 60 executed at the level are the maker's
    ])  # fmt: skip
    assert fills[:, [F_MESSAGE, F_SIDE, F_PRICE, F_QTY, F_RULE]].tolist() == [
        [5, 1, BID, 60, RULE_QUEUE]
    ]
    assert fills[0, F_QUEUE_NS] == 400_000_000  # joined at 34200.2, filled at 34200.6


def test_a_cancellation_ahead_of_the_quote_moves_it_up() -> None:
    fills = maker_fills(ASK_SEED, [
        A_300,
        (34_200.3, 1, 2, 200, BID, 1),
        (34_200.4, 2, 1, 100, BID, 1),  # order 1 (ahead) cancels 100: 200 ahead
        (34_200.5, 4, 1, 200, BID, 1),
        (34_200.6, 4, 2, 60, BID, 1),  # filled: only 200 had to trade first
    ])  # fmt: skip
    assert fills[:, [F_MESSAGE, F_QTY]].tolist() == [[5, 60]]


def test_a_cancellation_behind_the_quote_does_not_move_it() -> None:
    fills = maker_fills(ASK_SEED, [
        A_300,
        (34_200.3, 1, 2, 200, BID, 1),
        (34_200.4, 3, 2, 200, BID, 1),  # order 2 (behind) deleted: still 300 ahead
        (34_200.5, 1, 3, 200, BID, 1),
        (34_200.6, 4, 1, 250, BID, 1),  # 50 still ahead
        (34_200.7, 4, 1, 50, BID, 1),  # 300 executed: no fill yet
        (34_200.8, 4, 3, 30, BID, 1),  # now the maker
    ])  # fmt: skip
    assert fills[:, [F_MESSAGE, F_QTY]].tolist() == [[7, 30]]


def test_a_cancellation_of_unknown_age_is_taken_from_behind_first() -> None:
    """Orders 77 and 78 rested before the open: the replay knows their level, not when
    they arrived, so deleting 77 is charged to the 200 behind the maker first."""
    fills = maker_fills([(77, 1, BID, 150), (78, 1, BID, 150), *ASK_SEED], [
        (34_200.3, 1, 2, 200, BID, 1),  # 200 behind the maker (300 ahead)
        (34_200.4, 3, 77, 150, BID, 1),  # 150 of unknown age: 200 behind cover it
        (34_200.5, 4, 78, 150, BID, 1),  # 150 of the 300 ahead
        (34_200.6, 4, 2, 170, BID, 1),  # 150 more ahead, then 20 for the maker
    ])  # fmt: skip
    assert fills[:, [F_MESSAGE, F_QTY]].tolist() == [[4, 20]]


def test_a_sweep_through_the_quote_and_a_crossing_remainder_fill_it() -> None:
    fills = maker_fills(ASK_SEED, [
        A_300,
        (34_200.3, 1, 5, 100, BID - 100, 1),
        (34_200.4, 4, 1, 300, BID, 1),  # the level is gone (no fill: 300 were ahead)
        (34_200.5, 4, 5, 40, BID - 100, 1),  # a seller trades below the maker's bid
        (34_200.6, 1, 6, 30, BID, -1),  # a sell rests at the maker's bid price
    ])  # fmt: skip
    assert fills[:, [F_MESSAGE, F_PRICE, F_QTY, F_RULE]].tolist() == [
        [4, BID, 40, RULE_THROUGH],
        [5, BID, 30, RULE_CROSSED],
    ]


def test_hidden_executions_never_fill_the_quote() -> None:
    fills = maker_fills(ASK_SEED, [A_300, (34_200.3, 5, 0, 500, BID, 1)])
    assert fills.shape[0] == 0


@settings(max_examples=200, deadline=None)
@given(quantity=st.integers(1, 10**7), window=st.integers(1, 23_400),
       interval=st.integers(1, 5_000))  # fmt: skip
def test_a_twap_schedule_slices_exactly_the_parent_quantity(
    quantity: int, window: int, interval: int
) -> None:
    config = TwapConfig(quantity=quantity, start=34_200.0, end=34_200.0 + window,
                        interval_s=float(interval))  # fmt: skip
    schedule = schedule_for(config)
    assert int(schedule[:, 1].sum()) == quantity
    assert schedule[:, 1].max() - schedule[:, 1].min() <= 1  # even slices
    assert len(schedule) == -(-window // interval)  # one child per interval started
    assert schedule[0, 0] == 34_200 * 10**9 and (np.diff(schedule[:, 0]) == interval * 10**9).all()


def test_twap_slices_of_a_small_parent() -> None:
    assert twap_slices(10, 4) == [2, 3, 2, 3] and sum(twap_slices(7, 3)) == 7


def test_a_twap_never_takes_the_same_liquidity_twice() -> None:
    """300 offered at the best ask, limit 0 ticks: five children of 200 get 300 in all,
    then history's own buyer trades those 300 and 100 new shares arrive for the last."""
    day = build_day([(1, 1, BID, 500), (2, -1, ASK, 300), (3, -1, ASK + 100, 5_000)], [
        (34_203.5, 4, 2, 300, ASK, -1),
        (34_203.6, 1, 4, 100, ASK, -1),
        (34_205.0, 1, 5, 100, BID - 100, 1),
    ])  # fmt: skip
    result = run(day, TwapConfig(quantity=1_000, start=34_200.0, end=34_205.0,
                                 interval_s=1.0, limit_ticks=0))  # fmt: skip
    fills = result.fills
    assert fills[:, [F_TIME_NS, F_PRICE, F_QTY, F_RULE]].tolist() == [
        [34_200 * 10**9, ASK, 200, RULE_TAKE],
        [34_201 * 10**9, ASK, 100, RULE_TAKE],
        [34_204 * 10**9, ASK, 100, RULE_TAKE],
    ]
    figures = report(result)
    assert figures["twap"] == {"parent": 1_000, "children": 5, "filled": 400, "unfilled": 600,
                               "arrival": 100.01, "children_without_book": 0}  # fmt: skip
    assert figures["fills"]["vwap"] == 100.02
    # each share paid one tick over the mid on arrival: 1 tick, ~1 bp
    assert figures["slippage_vs_order_arrival"] == {"quantity": 400, "bps": 0.9999, "ticks": 1.0}


def test_the_maker_stays_inside_its_inventory_limit_and_its_pnl_adds_up() -> None:
    from tests.kernels.lobster_days import random_day

    for seed in range(6):
        day = random_day(seed, messages=600)
        config = MakerConfig(half_spread_ticks=0, size=100, inventory_limit=200,
                             requote_s=0.5, start=34_200.01, end=float(day.times[-1]))  # fmt: skip
        result = run(day, config)
        inventory = np.cumsum(result.fills[:, F_SIDE] * result.fills[:, F_QTY])
        assert (np.abs(inventory) <= 200).all()
        fills = result.fills
        cash = -int((fills[:, F_SIDE] * fills[:, F_PRICE] * fills[:, F_QTY]).sum())
        maker = report(result)["maker"]
        final = int(inventory[-1]) if len(inventory) else 0
        assert maker["inventory_final"] == final
        assert maker["pnl"] == round((cash + final * result.agent["mark"]) / 10_000, 6)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (TwapConfig(quantity=0), "quantity"),
        (TwapConfig(limit_ticks=10), "limit_ticks"),
        (TwapConfig(interval_s=0), "interval"),
        (TwapConfig(interval_s=0.5), "interval"),
        (TwapConfig(interval_s=float("inf")), "interval"),
        (TwapConfig(quantity=10**20), "quantity"),
        (MakerConfig(requote_s=0.001), "requote"),
        (MakerConfig(inventory_limit=10**12), "inventory_limit"),
        (TwapConfig(start=30_000.0), "start"),
        (TwapConfig(end=60_000.0), "end"),
        (TwapConfig(start=40_000.0, end=40_000.0), "end"),
        (MakerConfig(size=0), "size"),
        (MakerConfig(size=100, inventory_limit=99), "inventory_limit"),
        (MakerConfig(requote_s=-1.0), "requote"),
        (MakerConfig(half_spread_ticks=-1), "half_spread_ticks"),
    ],
)
def test_a_configuration_the_model_cannot_honour_is_refused_by_name(
    config: TwapConfig | MakerConfig, field: str
) -> None:
    day = build_day(ASK_SEED, [A_300], depth=10)
    with pytest.raises(IntradayConfigError) as refused:
        run(day, config)
    assert refused.value.field == field


# -------------------------------------------------------------------- the real day
@pytest.fixture(scope="module")
def goog() -> LobsterDay:
    return load(require_data(GOOG))


TWAP = TwapConfig(quantity=20_000, interval_s=300.0, limit_ticks=5)
MAKER = MakerConfig(half_spread_ticks=1, size=100, inventory_limit=1_000, requote_s=1.0)


def test_goog_agents_leave_the_replay_exactly_as_without_them(goog: LobsterDay) -> None:
    plain = replay(goog).counts
    for config in (TWAP, MAKER):
        assert run(goog, config).replay_counts == plain


def test_goog_twap_fills_only_what_the_book_showed_at_that_moment(goog: LobsterDay) -> None:
    result = run(goog, TWAP)
    figures = report(result)
    assert figures["twap"]["children"] == 78  # 09:30-16:00 every 5 minutes
    assert figures["twap"]["filled"] + figures["twap"]["unfilled"] == 20_000
    assert figures["twap"]["filled"] > 10_000
    for row in result.fills.tolist():
        book = goog.orderbook[row[F_MESSAGE]]  # the file's book when the child was sent
        asks = {int(book[4 * k]): int(book[4 * k + 1]) for k in range(10) if book[4 * k + 1]}
        assert row[F_PRICE] in asks and row[F_QTY] <= asks[row[F_PRICE]]
        assert row[F_PRICE] <= min(asks) + 5 * 100  # within the child's limit


def test_goog_maker_fills_each_follow_a_message_that_reached_its_price(goog: LobsterDay) -> None:
    result = run(goog, MAKER)
    assert result.fills.shape[0] > 100
    for row in result.fills.tolist():
        kind, _oid, size, price, side = goog.messages[row[F_MESSAGE]].tolist()
        assert row[F_QTY] <= size
        if row[F_RULE] == RULE_QUEUE:
            assert (kind, price, side) == (4, row[F_PRICE], row[F_SIDE])
        elif row[F_RULE] == RULE_THROUGH:
            assert kind == 4 and side == row[F_SIDE] and (price - row[F_PRICE]) * side < 0
        else:
            assert row[F_RULE] == RULE_CROSSED
            assert kind == 1 and side == -row[F_SIDE] and (row[F_PRICE] - price) * side <= 0
    maker = report(result)["maker"]
    assert -1_000 <= maker["inventory_min"] <= maker["inventory_max"] <= 1_000
    assert maker["inventory_path"][0] == ["09:30:00", 0]
    assert maker["inventory_path"][-1] == ["16:00:00", maker["inventory_final"]]


@pytest.mark.slow
def test_goog_kernel_equals_reference_fill_for_fill(goog: LobsterDay) -> None:
    for config in (TWAP, MAKER):
        result = run(goog, config)
        fills, counters = run_reference(goog.messages, times_ns(goog), goog.orderbook,
                                        params_for(config), schedule_for(config))  # fmt: skip
        assert [tuple(row) for row in result.fills.tolist()] == fills
        assert result.agent == counters


# -------------------------------------------------------------------- the command
def tradecore(*args: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADECORE, "backtest", "intraday", *args], capture_output=True,
                          text=True, env=env_for(folder), timeout=300, check=False)  # fmt: skip


def test_the_command_prints_the_same_report_twice(tmp_path: Path) -> None:
    from tests.kernels.lobster_days import random_day

    data = write_zip(random_day(7, messages=600), tmp_path)
    args = ("--data", str(data), "--agent", "maker", "--start", "09:30:00", "--end", "09:30:20",
            "--requote", "0.5", "--half-spread-ticks", "0", "--json")  # fmt: skip
    first, second = tradecore(*args, folder=tmp_path), tradecore(*args, folder=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    figures = json.loads(first.stdout)
    assert figures["agent"] == "maker" and figures["fills"]["count"] > 0
    assert figures["time_in_queue_s"]["median"] is not None


def test_goog_command_reports_twap_deterministically(goog: LobsterDay, tmp_path: Path) -> None:
    data = str(require_data(GOOG))
    runs = [tradecore("--data", data, "--agent", "twap", "--quantity", "20000", "--json",
                      folder=tmp_path) for _ in range(2)]  # fmt: skip
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    figures = json.loads(runs[0].stdout)
    assert figures["replay"]["unexplained_mismatches"] == 0
    assert figures["twap"]["parent"] == 20_000 and figures["fills"]["quantity"] > 0
    text = tradecore("--data", data, "--agent", "maker", folder=tmp_path)
    assert text.returncode == 0 and "time in queue (passive fills): median" in text.stdout
    assert "inventory path: 09:30:00 0," in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--agent", "vwap"), "--agent: must be twap or maker"),
        (("--agent", "twap", "--quantity", "-5"), "--quantity: must be 1..1,000,000,000 shares"),
        (("--agent", "twap", "--side", "short"), "--side: must be buy or sell"),
        (("--agent", "twap", "--start", "9h30"), "--start: '9h30' is not a time"),
        (("--agent", "maker", "--end", "17:00"), "--end: 17:00:00 is outside"),
        (("--agent", "maker", "--inventory-limit", "10"), "--inventory-limit: must be >= size"),
        (("--agent", "twap", "--quantity", "99999999999999999999999"), "--quantity: must be 1.."),
        (("--agent", "twap", "--interval", "nan"), "--interval: must be >= 1 seconds"),
    ],
)
def test_the_command_refuses_bad_input_in_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    data = write_zip(build_day(ASK_SEED, [A_300], depth=10), tmp_path)
    done = tradecore("--data", str(data), *args, folder=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr


def test_the_command_refuses_a_file_that_is_not_a_lobster_day(tmp_path: Path) -> None:
    bogus = tmp_path / "day.zip"
    bogus.write_bytes(b"not a zip")
    for data in (bogus, tmp_path / "missing.zip"):
        done = tradecore("--data", str(data), "--agent", "twap", folder=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.startswith("refused: --data:"), done.stderr
