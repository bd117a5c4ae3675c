"""The market-data loop end to end: ingest -> window -> predictions -> a strategy's
orders through the command handlers, on real data and a real SQLite write model.

The data is the small J-Quants folder of tests/streams/test_backtest.py (12 liquid
stocks over 2015, one of them missing three sessions in November); the model is the tiny
ATFT-GAT-FAN checkpoint of tests/streams/test_backtest_model.py, trained on the same
folder up to October. The API source polls the local fake J-Quants server of
tests/inference/test_data_client.py over real sockets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import polars as pl
import pytest

from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.instruments import PRICE_SCALE, Universe, symbol_of
from aggregates.order import Order
from aggregates.risk import RiskLimits, notional_yen
from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from streams.ingest import ApiSource, FileSource, backfill_messages, day_messages, partition_of
from streams.loop import DayResult, Loop, StrategyDesk, run_embedded
from streams.market_data import Bars, DayClose
from streams.signals import (
    Prediction,
    PredictionsDone,
    TopQuantile,
    client_order_id,
    decide_orders,
    decode_prediction,
    encode_prediction,
    predict_day,
    predictions_frame,
    submit_orders,
)
from streams.strategies.base import OrderIntent
from tests.inference.test_data_client import ApiState, _client, _quote, api  # noqa: F401
from tests.streams.test_backtest import GAP_CODE, GAP_DAYS, data, shared  # noqa: F401
from tests.streams.test_backtest_model import checkpoint  # noqa: F401

START, END = date(2015, 11, 2), date(2015, 11, 24)
#: The trading days from START to END (Nov 3 and Nov 23 are holidays).
DAYS = [date(2015, 11, d) for d in (2, 4, 5, 6, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 24)]
PRINCIPAL = "strategy-desk"
CASH = 100_000_000
#: Orders rest unfilled here (no matching stage), so the cash they reserve is spent: a
#: strategy investing a fifth of what is left still has orders to place every day.
SPENDING = TopQuantile(invested=0.2)


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quotes(data: Path) -> pl.DataFrame:  # noqa: F811
    from inference.data import load_daily_quotes

    return load_daily_quotes(data)


@pytest.fixture(scope="module")
def listed(data: Path) -> pl.DataFrame:  # noqa: F811
    from inference.data import load_listed_info

    return load_listed_info(data)


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Any:  # noqa: F811
    from inference.serving import Predictor

    return Predictor(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def online(data: Path, predictor: Any, listed: pl.DataFrame  # noqa: F811
           ) -> tuple[Loop, int, list[DayResult]]:
    """The embedded loop over the files from START to END (its warm-up as a backfill)."""
    loop = Loop({}, predictor, listed)
    source = FileSource(data, START, END, warmup=loop.sessions)
    results: list[DayResult] = []
    closed = run_embedded(source, loop, None, on_day=lambda r, _: results.append(r))
    return loop, closed, results


class Desk:
    """A SQLite write model with one funded account, as the strategy desk trades it."""

    def __init__(self, folder: Path, as_of: date, *, cash: int = CASH,
                 limits: RiskLimits | None = None) -> None:
        from inference.data import read_listings

        universe = Universe.from_listings(read_listings(folder, as_of), source=str(folder))
        settings = Settings(persistence="sqlite", sqlite_path=folder.parent / "events.sqlite")
        self.app = TradingApplication(eventsourcing_env(settings), universe=universe,
                                      limits=limits or RiskLimits())
        self.account: UUID = self.app.open_account(
            "loop", owner=PRINCIPAL, meta=Meta.command(PRINCIPAL, "open"))
        self.app.deposit(self.account, cash, Meta.command(PRINCIPAL, "deposit"))

    def orders(self) -> list[Order]:
        return [self.app.repository.get(i) for i in self.app.ids_of(Order)]

    def available(self) -> int:
        with self.app.deciding():
            return int(self.app.current(self.account).available)

    def desk(self, decisions: dict[bytes, bytes], strategy: TopQuantile | None = None
             ) -> StrategyDesk:
        return StrategyDesk(self.app, self.account, PRINCIPAL, strategy or TopQuantile(),
                            decisions)


@pytest.fixture
def folder(data: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The data folder seen from a fresh directory (the write model's file goes beside)."""
    link = tmp_path / "jquants"
    link.symlink_to(data)
    return link


def _closes(quotes: pl.DataFrame, day: date) -> dict[str, float]:
    rows = quotes.filter(pl.col("Date") == day)
    return dict(zip(rows["Code"].to_list(), rows["Close"].to_list(), strict=True))


def _predictions(quotes: pl.DataFrame, day: date) -> list[Prediction]:
    """A forecast per stock traded on ``day``: the higher its code, the higher its q50
    (the ranking is the test's to know)."""
    out = []
    for code, close in sorted(_closes(quotes, day).items()):
        mid = int(code) / 1e6
        out.append(Prediction(day, code, [1, 5], [0.1, 0.5, 0.9],
                              [[mid - 0.01, mid, mid + 0.01], [mid - 0.02, mid, mid + 0.02]],
                              close=close))
    return out


def _cost(app: TradingApplication, intents: list[OrderIntent]) -> int:
    notional = [notional_yen(i.price, i.quantity) for i in intents if i.side == "buy"]
    return sum(n + app.schedule.commission(n) for n in notional)


# -- online equals offline -----------------------------------------------------------------
@pytest.mark.slow
def test_online_predictions_equal_offline_predictions_from_the_files_every_day(
        online: tuple[Loop, int, list[DayResult]], predictor: Any, quotes: pl.DataFrame,
        listed: pl.DataFrame) -> None:
    loop, closed, results = online
    live = [r for r in results if r.reason != "warm-up"]
    assert [r.day for r in live] == DAYS
    assert closed == len(results) == len(DAYS) + loop.sessions  # the warm-up was backfilled
    for result in live:
        offline = predict_day(predictor, quotes, listed, result.day)
        assert offline.height >= 44, result.day  # 11 or 12 stocks x 4 horizons
        assert result.predictions.equals(offline), result.day
        assert result.reason == "complete"
    # the stock missing three sessions is reported on the first, and not predicted then
    assert {r.day: r.missing for r in live if r.missing} == {GAP_DAYS[0]: [GAP_CODE]}
    gap = next(r for r in live if r.day == GAP_DAYS[0])
    assert GAP_CODE not in gap.predictions["code"].to_list()
    # only the trailing sessions are held: the backfill was pruned as days were published
    assert len(loop.window.dates()) == loop.sessions
    assert loop.window.counts["accepted"] == quotes.filter(
        pl.col("Date") <= END).filter(pl.col("Date") >= min(
            r.day for r in results)).height


@pytest.mark.slow
def test_prediction_messages_round_trip_to_the_same_frame(
        online: tuple[Loop, int, list[DayResult]], quotes: pl.DataFrame) -> None:
    loop, _, results = online
    result = next(r for r in results if r.day == DAYS[-1])
    messages = loop.messages(result)
    assert len(messages) == 12 and {m.code for m in messages} == set(
        result.predictions["code"].to_list())
    wire = [decode_prediction(encode_prediction(m)) for m in messages]
    assert wire == messages
    assert predictions_frame(wire).equals(result.predictions)  # type: ignore[arg-type]
    # each carries the stock's close that day, yen as traded
    assert {m.code: m.close for m in messages} == _closes(quotes, DAYS[-1])
    done = PredictionsDone(DAYS[-1], len(messages), "deadline", ["99840"])
    assert decode_prediction(encode_prediction(done)) == done
    assert loop.messages(next(r for r in results if r.reason == "warm-up")) == []


@pytest.mark.slow
def test_a_day_a_symbol_never_came_for_closes_on_its_deadline_with_the_others_predicted(
        predictor: Any, quotes: pl.DataFrame, listed: pl.DataFrame) -> None:
    """One partition's ingest went quiet mid-day: no marker, one stock's bar never came.
    The day closes when its deadline passes, and its predictions are the files' without
    that stock's row; the stock is reported missing."""
    now = [0.0]
    loop = Loop({}, predictor, listed, deadline_s=30.0, clock=lambda: now[0])
    day, lost = DAYS[3], "72030"
    before = quotes.filter(pl.col("Date") < day)
    warm = before.get_column("Date").unique().sort().to_list()[-loop.sessions:]
    for routed in backfill_messages(before.filter(pl.col("Date") >= warm[0]), warm, 1):
        loop.on_message(routed.message)
    for warm_day, reason in loop.ready():
        loop.publish(loop.compute(warm_day, reason))
    assert loop.window.last_published == warm[-1]
    today = quotes.filter(pl.col("Date") == day, pl.col("Code") != lost)
    for routed in day_messages(day, today, 1, rebase_splits=False):
        if isinstance(routed.message, Bars):
            loop.on_message(routed.message)
    now[0] += 29.0
    assert loop.ready() == []
    now[0] += 1.0
    assert loop.ready() == [(day, "deadline")]
    result = loop.compute(day, "deadline")
    assert result.missing == [lost] and result.reason == "deadline"
    offline = predict_day(predictor, quotes.filter(
        ~((pl.col("Date") == day) & (pl.col("Code") == lost))), listed, day)
    assert result.predictions.equals(offline) and offline.height == 11 * 4
    assert lost not in result.closes and len(result.closes) == 11
    loop.publish(result, len(loop.messages(result)))
    assert loop.window.published(day) == [lost] and loop.ready() == []


@pytest.mark.slow
def test_a_loop_killed_between_its_orders_and_publishing_resumes_without_a_second_order(
        data: Path, predictor: Any, listed: pl.DataFrame, tmp_path: Path,  # noqa: F811
        online: tuple[Loop, int, list[DayResult]]) -> None:
    """The worker's crash: the day's orders went out, the day was not marked published.
    A new loop over the same store (a Faust table's recovery) and a new desk over the
    same decisions resume from the source's last published day and end where a run
    without the crash ends, each order placed once."""
    sessions = online[0].sessions
    (tmp_path / "straight").mkdir()
    (tmp_path / "crashed").mkdir()
    straight = Desk(_linked(data, tmp_path / "straight"), START)
    decided: dict[bytes, bytes] = {}
    run_embedded(FileSource(data, START, END, warmup=sessions),
                 Loop({}, predictor, listed), straight.desk(decided, SPENDING))
    # it dies on a day with orders to place, in the middle of the run
    crash_day = next(d for d in DAYS[6:-1] if _intents(decided, d))

    crashed = Desk(_linked(data, tmp_path / "crashed"), START)
    store: dict[bytes, bytes] = {}
    decisions: dict[bytes, bytes] = {}

    class Killed(Exception):
        pass

    class DyingDesk(StrategyDesk):
        def trade(self, day: date, predictions: list[Prediction]) -> Any:
            result = super().trade(day, predictions)
            if day == crash_day:
                raise Killed(day)
            return result

    first = Loop(store, predictor, listed)
    dying = DyingDesk(crashed.app, crashed.account, PRINCIPAL, SPENDING, decisions)
    with pytest.raises(Killed):
        run_embedded(FileSource(data, START, END, warmup=sessions), first, dying)
    placed_before = len(crashed.orders())
    assert placed_before > 0
    assert first.window.last_published == DAYS[DAYS.index(crash_day) - 1]

    loop = Loop(dict(store), predictor, listed)
    desk = crashed.desk(dict(decisions), SPENDING)
    after = loop.window.last_published
    run_embedded(FileSource(data, START, END, warmup=sessions, after=after), loop, desk)
    assert desk.totals["already_placed"] == len(_intents(decisions, crash_day)) > 0
    assert loop.window.last_published == END

    def book(desk: Desk) -> list[tuple[str, str, int, int]]:
        return sorted((o.client_order_id, o.symbol, o.quantity, o.price)
                      for o in desk.orders())

    assert book(crashed) == book(straight)
    ids = [o.client_order_id for o in crashed.orders()]
    assert len(ids) == len(set(ids)) > placed_before


def _linked(data: Path, folder: Path) -> Path:  # noqa: F811
    link = folder / "jquants"
    link.symlink_to(data)
    return link


def _intents(decisions: dict[bytes, bytes], day: date) -> list[OrderIntent]:
    return msgspec.json.decode(decisions[f"d|{day.isoformat()}".encode()],
                               type=list[OrderIntent])


# -- the strategy desk on a real write model ----------------------------------------------
def test_the_desk_places_whole_lots_on_the_tick_grid_within_cash_under_its_keys(
        folder: Path, quotes: pl.DataFrame) -> None:
    day = DAYS[3]  # every stock traded
    market = Desk(folder, day, cash=20_000_000)
    desk = market.desk({}, TopQuantile(fraction=0.5, invested=1.0))
    predictions = _predictions(quotes, day)
    result = desk.trade(day, predictions)
    ranked = sorted(p.code for p in predictions)[-6:]  # the top half by q50
    assert sorted(i.symbol for i in result.intents) == sorted(symbol_of(c) for c in ranked)
    assert result.outcomes == {"placed": len(result.intents)} and not result.reasons
    orders = market.orders()
    assert sorted(o.client_order_id for o in orders) == sorted(
        f"top-decile:{day.isoformat()}:{symbol_of(c)}" for c in ranked)
    closes = _closes(quotes, day)
    universe = market.app.universe
    for order in orders:
        instrument = universe.get(order.symbol)
        assert order.quantity > 0 and order.quantity % instrument.lot_size == 0
        assert order.price % instrument.tick_size(order.price) == 0
        close = closes[instrument.jquants_code] * PRICE_SCALE
        assert close <= order.price <= close + instrument.tick_size(order.price)  # one tick
    # every yen of the buys, with commission, was there, and is reserved
    cost = _cost(market.app, result.intents)
    assert cost <= 20_000_000 and market.available() == 20_000_000 - cost


def test_a_resubmitted_day_is_already_placed_never_a_second_order(
        folder: Path, quotes: pl.DataFrame) -> None:
    day = DAYS[3]  # every stock traded
    market = Desk(folder, day)
    decisions: dict[bytes, bytes] = {}
    first = market.desk(decisions).trade(day, _predictions(quotes, day))
    assert first.outcomes["placed"] == len(first.intents) == 1  # the top decile of 12
    available = market.available()
    # a restarted desk holds the day's decision: it re-places the same intents, even if
    # the predictions it is handed now differ, and the account is not charged twice
    again = market.desk(dict(decisions)).trade(day, list(reversed(_predictions(quotes, day))
                                                         )[:3])
    assert again.intents == first.intents
    assert again.outcomes == {"already_placed": 1}
    assert len(market.orders()) == 1 and market.available() == available
    # the same through submit_orders directly: the key is (strategy, date, symbol)
    direct = submit_orders(market.app, market.account, "top-decile", day, first.intents,
                           principal=PRINCIPAL)
    assert direct.outcomes == {"already_placed": 1}
    small = [OrderIntent(first.intents[0].symbol, "buy", 100, first.intents[0].price)]
    other = submit_orders(market.app, market.account, "momentum", day, small,
                          principal=PRINCIPAL)
    assert other.outcomes == {"placed": 1} and len(market.orders()) == 2


def test_refused_orders_are_counted_with_the_field_and_the_rule(
        folder: Path, quotes: pl.DataFrame) -> None:
    day = DAYS[3]  # every stock traded
    market = Desk(folder, day, limits=RiskLimits(max_order_notional_yen=5_000_000))
    result = market.desk({}, TopQuantile(fraction=0.5)).trade(day, _predictions(quotes, day))
    assert result.outcomes == {"refused": 6}
    assert result.reasons == {"quantity: max order notional": 6}
    assert market.orders() == [] and market.available() == CASH  # nothing was stored
    base = market.app.universe.get("7203").base_price
    bad = [OrderIntent("7203", "buy", 150, base), OrderIntent("7203", "buy", 100, base + 1)]
    odd = submit_orders(market.app, market.account, "manual", day, bad, principal=PRINCIPAL)
    assert odd.reasons == {"quantity: lot_size": 1, "price: tick": 1}


def test_decisions_fit_the_cash_the_account_has_left(folder: Path, quotes: pl.DataFrame
                                                     ) -> None:
    day = DAYS[3]  # every stock traded
    market = Desk(folder, day, cash=5_000_000)
    strategy = TopQuantile(fraction=1.0, invested=1.0)
    intents, skipped = decide_orders(market.app, market.account, strategy,
                                     predictions_frame(_predictions(quotes, day)),
                                     _closes(quotes, day))
    assert skipped == [] and intents and all(i.side == "buy" for i in intents)
    assert _cost(market.app, intents) <= 5_000_000
    # a stock whose code the universe does not trade is not targeted
    foreign = Prediction(day, "13010", [1, 5], [0.1, 0.5, 0.9], [[1.0] * 3] * 2, close=100.0)
    frame = predictions_frame([*_predictions(quotes, day), foreign])
    assert "1301" not in TopQuantile(fraction=1.0).targets(
        frame, {c: symbol_of(c) for c in _closes(quotes, day)})


def test_top_quantile_targets_the_best_median_forecasts_at_the_shortest_horizon() -> None:
    day = DAYS[0]
    messages = [Prediction(day, code, [5, 1], [0.5], [[h5], [h1]])
                for code, h5, h1 in (("10000", 0.9, 0.01), ("20000", 0.0, 0.03),
                                     ("30000", 0.0, 0.02), ("40000", 0.0, 0.02),
                                     ("50000", 0.0, -0.1))]
    frame = predictions_frame(messages)
    symbols = {c: symbol_of(c) for c in ("10000", "20000", "30000", "40000", "50000")}
    assert TopQuantile(fraction=0.4).targets(frame, symbols) == {"2000": 0.475, "3000": 0.475}
    assert TopQuantile(fraction=0.2, horizon=5).targets(frame, symbols) == {"1000": 0.95}
    assert TopQuantile(fraction=0.01).targets(frame, symbols) == {"2000": 0.95}  # one at least
    assert TopQuantile().targets(frame.clear(), symbols) == {}
    with pytest.raises(ValueError, match=r"fraction=0 breaks rule 'in \(0, 1\]'"):
        TopQuantile(fraction=0)
    with pytest.raises(ValueError, match=r"invested=1.5 breaks rule"):
        TopQuantile(invested=1.5)


def test_client_order_ids_are_strategy_date_symbol() -> None:
    assert client_order_id("top-decile", date(2015, 11, 2), "7203") == \
        "top-decile:2015-11-02:7203"


# -- ingest ---------------------------------------------------------------------------------
def test_the_file_source_backfills_the_warm_up_then_sends_day_by_day(
        data: Path, quotes: pl.DataFrame) -> None:  # noqa: F811
    slept: list[float] = []
    source = FileSource(data, START, date(2015, 11, 6), warmup=5, speed=1000.0,
                        sleep=slept.append)
    steps = list(source.messages(2))
    warm = quotes.filter(pl.col("Date") < START).get_column("Date").unique().sort()[-5:]
    assert [(d, p) for d, p, _ in steps] == [(warm[-1], False)] + [
        (d, True) for d in DAYS[:4]]
    backfill = steps[0][2]
    bars = [r.message for r in backfill if isinstance(r.message, Bars)]
    assert sum(len(m.bars) for m in bars) == quotes.filter(
        pl.col("Date").is_between(warm[0], warm[-1])).height
    markers = [r.message for r in backfill if isinstance(r.message, DayClose)]
    # one marker per partition closes the whole warm-up, without predicting it
    assert [(m.first, m.day, m.partition, m.predict) for m in markers] == [
        (warm[0], warm[-1], p, False) for p in (0, 1)]
    assert sum(m.bars for m in markers) == sum(len(m.bars) for m in bars)
    assert len(slept) == 4 and all(0 <= s <= 0.001 for s in slept)  # 1000 days a second

    resumed = FileSource(data, START, date(2015, 11, 6), warmup=5, after=DAYS[1])
    assert [(d, p) for d, p, _ in resumed.messages(1)] == [(DAYS[2], True), (DAYS[3], True)]
    with pytest.raises(ValueError, match="--from 2016-01-04: no session on or after it"):
        FileSource(data, date(2016, 1, 4), None, warmup=5)


def test_day_messages_key_bars_by_code_and_count_each_partition(quotes: pl.DataFrame
                                                                ) -> None:
    rows = quotes.filter(pl.col("Date") == DAYS[0])
    routed = list(day_messages(DAYS[0], rows, 3, rebase_splits=True))
    bars = [r for r in routed if isinstance(r.message, Bars)]
    assert [r.key for r in bars] == sorted(rows["Code"].to_list())
    assert all(r.message.rebase_splits and r.message.bars[0].Code == r.key for r in bars
               if isinstance(r.message, Bars))
    markers = [r for r in routed if isinstance(r.message, DayClose)]
    assert [(r.partition, r.key) for r in markers] == [(p, f"close:{DAYS[0]}")
                                                        for p in range(3)]
    for r in markers:
        assert isinstance(r.message, DayClose) and r.message.predict
        assert r.message.bars == sum(partition_of(b.key, 3) == r.partition for b in bars)
    assert sum(r.message.bars for r in markers if isinstance(r.message, DayClose)) == 12
    assert len({partition_of(b.key, 3) for b in bars}) > 1  # the partitions are used

    history = quotes.filter(pl.col("Code").is_in(["72030", "67580"]),
                            pl.col("Date").is_between(DAYS[0], END))
    chunked = list(backfill_messages(history, DAYS, 1, chunk=4))
    sizes = [len(r.message.bars) for r in chunked if isinstance(r.message, Bars)]
    assert sizes == [4, 4, 4, 3, 4, 4, 4, 3]  # 15 sessions of each, in chunks of 4
    assert [(r.message.first, r.message.day, r.message.bars) for r in chunked
            if isinstance(r.message, DayClose)] == [(DAYS[0], DAYS[14], 30)]


@pytest.fixture
def served(api: tuple[str, ApiState]) -> Iterator[tuple[Any, ApiState]]:  # noqa: F811
    url, state = api
    with _client(url) as client:
        yield client, state


def test_the_api_source_polls_until_today_is_published_and_skips_past_holidays(
        served: tuple[Any, ApiState]) -> None:
    client, state = served
    # Mon 2023-03-06 and Tue 03-07 are published; Wed 03-08 is a holiday; Thu 03-09 is
    # today, published only after the source has asked once
    state.quotes = [_quote(day, code, close) for day in ("2023-03-06", "2023-03-07")
                    for code, close in (("86970", 2000.0), ("72030", 2500.0))]
    today = [_quote("2023-03-09", "86970", 2010.0)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        state.quotes.extend(today)  # the day's quotes come out while the source waits

    source = ApiSource(client, date(2023, 3, 4), after=date(2023, 3, 6), interval_s=30.0,
                       today=lambda: date(2023, 3, 9), sleep=sleep)
    steps = list(itertools.islice(source.messages(1), 2))
    assert [(d, p) for d, p, _ in steps] == [(date(2023, 3, 7), True), (date(2023, 3, 9), True)]
    asked = [q["date"][0] for _, path, q in state.requests
             if path == "/v1/prices/daily_quotes"]
    assert asked == ["2023-03-07", "2023-03-08", "2023-03-09", "2023-03-09"]
    assert slept == [30.0]
    (bars, marker) = (r.message for r in steps[1][2])
    assert isinstance(bars, Bars) and bars.rebase_splits  # a live source re-bases splits
    assert bars.bars[0].AdjustmentClose == 2010.0
    assert marker == DayClose(date(2023, 3, 9), 0, 1)
