"""The loop's steps, one implementation each: a day's bars -> features -> predictions
-> target positions -> orders through the command handlers.

Every runner calls these same functions: the Faust worker (:mod:`streams.faust_app`),
the embedded loop in ``tradecore serve`` (:mod:`streams.loop`), and the backtests' model
strategy (:mod:`streams.strategies.model`). Features for a day are always
:func:`inference.features.build_features` over the last ``sessions`` trading dates up
to it: the stream holds exactly those bars, and the offline side reads them from files,
so online equals offline by construction (and by test).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec
import polars as pl

from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.errors import DomainError
from aggregates.instruments import nearest_tick, symbol_of
from aggregates.risk import check_price_band
from streams.market_data import Bar
from streams.strategies.base import OrderIntent, Portfolio, orders_for_targets

#: Extra sessions beyond the model's own look-back (a margin for the slowest windows'
#: warm-up inside the trailing history).
MARGIN_SESSIONS = 40


def sessions_for(predictor: Any) -> int:
    """Trading dates of history a day's features are built from, for this checkpoint."""
    return int(predictor.history_days) + MARGIN_SESSIONS


def quotes_frame(bars: Sequence[Bar]) -> pl.DataFrame:
    """Bars as a J-Quants ``daily_quotes`` frame (the schema the file readers return)."""
    from inference.data import DAILY_QUOTE_COLUMNS, DAILY_QUOTES_SCHEMA

    if not bars:
        return pl.DataFrame(schema=DAILY_QUOTES_SCHEMA)
    columns = zip(*map(msgspec.structs.astuple, bars), strict=True)  # Bar's fields, in order
    return pl.DataFrame(dict(zip(DAILY_QUOTE_COLUMNS, columns, strict=True)),
                        schema=DAILY_QUOTES_SCHEMA)


def day_window(quotes: pl.DataFrame, day: date, sessions: int) -> pl.DataFrame:
    """The rows of the last ``sessions`` trading dates up to ``day`` (never later)."""
    dates = quotes.get_column("Date").filter(quotes.get_column("Date") <= day).unique().sort()
    if dates.is_empty():
        return quotes.clear()
    start = dates[max(0, len(dates) - sessions)]
    return quotes.filter(pl.col("Date").is_between(start, day))


def features_for_day(quotes: pl.DataFrame, listed: pl.DataFrame, day: date,
                     sessions: int) -> pl.DataFrame:
    """The offline feature pipeline over the day's trailing window (bad-input warnings,
    which the stream already counted, are not repeated)."""
    from inference.features import DataQualityWarning, build_features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        return build_features(day_window(quotes, day, sessions), listed, threads=1)


def predict_day(predictor: Any, quotes: pl.DataFrame, listed: pl.DataFrame, day: date,
                sessions: int | None = None) -> pl.DataFrame:
    """Quantiles per stock and horizon for ``day``'s cross-section (empty when nothing on
    the day is scorable: too little history yet, or no bar that day)."""
    from inference.serving import PredictionWarning

    sessions = sessions or sessions_for(predictor)
    features = features_for_day(quotes, listed, day, sessions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        try:
            frame = predictor.predict(features, day)
        except ValueError:
            return predictor.empty()
    return frame.filter(pl.col("date") == day)


# -- predictions on the wire ----------------------------------------------------------------
class Prediction(msgspec.Struct, tag="prediction", frozen=True):
    """One stock's quantiles for one day: ``quantiles[h][k]`` for ``horizons[h]`` and the
    checkpoint's ``levels[k]`` (excess return over the universe's average)."""

    day: date
    code: str
    horizons: list[int]
    levels: list[float]
    quantiles: list[list[float]]
    close: float | None = None  # the stock's close that day, yen as traded


class PredictionsDone(msgspec.Struct, tag="done", frozen=True):
    """Every prediction of ``day`` was sent (``count`` of them); why the day closed
    (complete or deadline) and the symbols missing on it."""

    day: date
    count: int
    reason: str
    missing: list[str]


PredictionMessage = Prediction | PredictionsDone
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(PredictionMessage).decode


def encode_prediction(message: PredictionMessage) -> bytes:
    return _encode(message)


def decode_prediction(raw: bytes) -> PredictionMessage:
    return _decode(raw)


def prediction_messages(frame: pl.DataFrame, levels: Sequence[float],
                        closes: Mapping[str, float] | None = None) -> list[Prediction]:
    """The predictor's frame (date, code, horizon, q..) as one message per stock, each
    with its close from ``closes`` (by code) when given."""
    from inference.serving import quantile_column

    columns = [quantile_column(q) for q in levels]
    out = []
    for (day, code), rows in frame.sort("code", "horizon").group_by(
            ["date", "code"], maintain_order=True):
        out.append(Prediction(day=day, code=code, horizons=rows["horizon"].to_list(),
                              levels=list(levels),
                              quantiles=[list(map(float, r)) for r in rows.select(columns)
                                         .iter_rows()],
                              close=(closes or {}).get(code)))
    return out


def predictions_frame(messages: Sequence[Prediction]) -> pl.DataFrame:
    """Messages back as the predictor's frame (date, code, horizon, q..)."""
    from inference.serving import quantile_column

    if not messages:
        return pl.DataFrame(schema={"date": pl.Date, "code": pl.Utf8, "horizon": pl.Int32})
    levels = messages[0].levels
    rows: dict[str, list[Any]] = {"date": [], "code": [], "horizon": []}
    rows.update({quantile_column(q): [] for q in levels})
    for m in messages:
        for h, values in zip(m.horizons, m.quantiles, strict=True):
            rows["date"].append(m.day)
            rows["code"].append(m.code)
            rows["horizon"].append(h)
            for q, v in zip(levels, values, strict=True):
                rows[quantile_column(q)].append(v)
    return pl.DataFrame(rows, schema_overrides={"date": pl.Date, "horizon": pl.Int32}).cast(
        {quantile_column(q): pl.Float32 for q in levels})


# -- the strategy -------------------------------------------------------------------------
@dataclass(frozen=True)
class TopQuantile:
    """Long the top ``fraction`` of the universe by median forecast at ``horizon``, equal
    weight, ``invested`` of equity (the rest covers commissions and slippage)."""

    name: str = "top-decile"
    fraction: float = 0.1
    horizon: int | None = None  # None: the shortest the checkpoint predicts
    invested: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction} breaks rule 'in (0, 1]'")
        if not 0 < self.invested <= 1:
            raise ValueError(f"invested={self.invested} breaks rule 'in (0, 1]'")

    def targets(self, predictions: pl.DataFrame, symbol_for_code: Mapping[str, str]
                ) -> dict[str, float]:
        """Target weights by symbol from one day's predictions (codes the universe does
        not trade are left out)."""
        if predictions.is_empty():
            return {}
        horizon = self.horizon or int(predictions["horizon"].min())  # type: ignore[arg-type]
        day = predictions.filter(pl.col("horizon") == horizon)
        tradable = day.filter(pl.col("code").is_in(list(symbol_for_code)))
        if tradable.is_empty():
            return {}
        top = max(1, int(len(tradable) * self.fraction))
        ranked = tradable.sort(["q50", "code"], descending=[True, False]).head(top)
        weight = self.invested / top
        return {symbol_for_code[c]: weight for c in ranked["code"].to_list()}


def portfolio_of(app: TradingApplication, account: Any, symbols: Iterable[str],
                 marks: Mapping[str, int]) -> Portfolio:
    """Free cash and the non-zero positions among ``symbols``, from the write model."""
    from aggregates import ids

    with app.deciding():
        state = app.current(account)
        if state is None:
            raise LookupError(f"account {account} does not exist")
        positions: dict[str, int] = {}
        for symbol in sorted(set(symbols)):
            position = app.current(ids.position_id(account, symbol))
            if position is not None and position.quantity:
                positions[symbol] = int(position.quantity)
        return Portfolio(int(state.available), positions,
                         {s: marks[s] for s in positions if s in marks})


def client_order_id(strategy: str, day: date, symbol: str) -> str:
    """The idempotency key of a strategy's order: one per (strategy, date, symbol)."""
    return f"{strategy}:{day.isoformat()}:{symbol}"[:64]


@dataclass
class Submitted:
    """What came of a day's orders: counts by outcome and the refusals' reasons."""

    day: date
    intents: list[OrderIntent] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def decide_orders(app: TradingApplication, account: Any, strategy: TopQuantile,
                  predictions: pl.DataFrame, closes: Mapping[str, float], *,
                  slippage_ticks: int = 1) -> tuple[list[OrderIntent], list[tuple[str, str]]]:
    """The orders that move the account to the strategy's targets at the day's closes:
    whole lots, prices on the tick grid within the next session's limits, sells first,
    buys fitted to the cash (:func:`streams.strategies.base.orders_for_targets`)."""
    codes = predictions["code"].unique().to_list() if not predictions.is_empty() else []
    symbol_for_code = {c: symbol_of(c) for c in codes if symbol_of(c) in app.universe}
    prices = {symbol_for_code[c]: nearest_tick(y, app.universe.get(symbol_for_code[c]).tick_table)
              for c, y in closes.items() if c in symbol_for_code}
    targets = strategy.targets(predictions, symbol_for_code)
    portfolio = portfolio_of(app, account, set(prices) | set(targets), prices)
    intents, skipped = orders_for_targets(targets, portfolio, prices, app.universe.get,
                                          app.schedule, slippage_ticks=slippage_ticks)
    kept = []
    for intent in intents:
        why = outside_limits(app, intent)
        if why:
            skipped.append((intent.symbol, why))
        else:
            kept.append(intent)
    return kept, skipped


def outside_limits(app: TradingApplication, intent: OrderIntent) -> str | None:
    """Why the venue would refuse ``intent``'s price today, by the domain's own checks
    (the instrument's tick grid and daily limit band, and the risk check's band around
    the reference price), as ``rule: message``; None when it would not. Such an order is
    skipped with the reason, never sent to be refused."""
    rules = app.universe.get(intent.symbol)
    try:
        rules.check_price(intent.price)
        check_price_band(intent.price, rules.base_price, app.limits)
    except DomainError as err:
        return f"{err.rule}: {err.message}"
    return None


def submit_orders(app: TradingApplication, account: Any, strategy: str, day: date,
                  intents: Sequence[OrderIntent], *, principal: str,
                  at: Any = None) -> Submitted:
    """Place the day's orders through the command handlers, each under its idempotency
    key: a second submission of the same day (a restart) places nothing twice."""
    result = Submitted(day, list(intents))
    requests = []
    for intent in intents:
        key = client_order_id(strategy, day, intent.symbol)
        requests.append(OrderRequest(
            account_id=account, client_order_id=key, symbol=intent.symbol, side=intent.side,
            quantity=intent.quantity, price=intent.price, order_type=intent.order_type,
            meta=Meta.command(principal, key, at=at)))
    for outcome in app.place_orders(requests) if requests else []:
        if isinstance(outcome, DomainError):
            result.outcomes["refused"] += 1
            result.reasons[f"{outcome.field}: {outcome.rule}"] += 1
        elif not outcome.created:
            result.outcomes["already_placed"] += 1
        else:
            result.outcomes["placed"] += 1
    return result
