"""The market-data loop, whatever runs it: bars in -> a day's cross-section -> predictions
-> the strategy's orders through the command handlers.

:class:`Loop` holds the bar window and the predictor and closes days;
:class:`StrategyDesk` turns a day's predictions into orders. The Faust worker
(:mod:`streams.faust_app`) runs both on Kafka with their state in Faust tables; the
embedded deployment runs them in a thread of ``tradecore serve`` with
:func:`run_embedded`, their state in dicts. Same functions, same results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec
import polars as pl
from prometheus_client import Counter as Metric
from prometheus_client import Histogram

from infra.locks import wait_for
from streams.market_data import Bar, Bars, BarWindow, DayClose, Message
from streams.signals import (
    Prediction,
    Submitted,
    TopQuantile,
    decide_orders,
    predict_day,
    prediction_messages,
    predictions_frame,
    quotes_frame,
    submit_orders,
)
from streams.strategies.base import OrderIntent

log = logging.getLogger("tradecore.streams")

BARS = Metric("tradecore_streams_bars", "Bars by outcome (accepted, or the rule that "
              "dropped or flagged them).", ["outcome"])
DAYS = Metric("tradecore_streams_days", "Days closed, by why (complete, deadline, warm-up).",
              ["reason"])
MISSING = Metric("tradecore_streams_missing_symbols", "Symbols that traded the session "
                 "before but had no bar on a closed day.")
PREDICTIONS = Metric("tradecore_streams_predictions", "Per-stock predictions published.")
ORDERS = Metric("tradecore_streams_orders", "Strategy orders by outcome.", ["outcome"])
DAY_SECONDS = Histogram("tradecore_streams_day_seconds", "Seconds from a day's close to "
                        "its predictions and orders, by step.", ["step"],
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))


@dataclass
class DayResult:
    """A closed day: why it closed, its predictions (empty on a warm-up day or before
    enough history) and closes, and the symbols missing on it."""

    day: date
    reason: str
    predictions: pl.DataFrame
    closes: dict[str, float]
    missing: list[str]
    seconds: float = 0.0


class Loop:
    """Bars -> closed days -> predictions. ``store`` is the window's persistent mapping."""

    def __init__(self, store: MutableMapping[bytes, bytes], predictor: Any,
                 listed: pl.DataFrame, *, partitions: int = 1, deadline_s: float = 60.0,
                 sessions: int | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        from streams.signals import sessions_for

        self.predictor = predictor
        self.listed = listed
        self.sessions = sessions or sessions_for(predictor)
        self.window = BarWindow(store, sessions=self.sessions, partitions=partitions,
                                deadline_s=deadline_s, clock=clock)

    def on_message(self, message: Message) -> None:
        if isinstance(message, Bars):
            for outcome, n in self.window.accept(message).items():
                BARS.labels(outcome).inc(n)
        elif isinstance(message, DayClose):
            self.window.close(message)

    def ready(self) -> list[tuple[date, str]]:
        return self.window.ready()

    def compute(self, day: date, reason: str) -> DayResult:
        """The day's predictions (pure: nothing is stored; safe in a worker thread)."""
        started = time.perf_counter()
        if not self.window.predicts(day):
            return DayResult(day, "warm-up", pl.DataFrame(), {}, [])
        rows, missing = self.window.window(day)
        closes = _closes(rows, day)
        predictions = predict_day(self.predictor, quotes_frame(rows), self.listed, day,
                                  self.sessions)
        return DayResult(day, reason, predictions, closes, missing,
                         time.perf_counter() - started)

    def messages(self, result: DayResult) -> list[Prediction]:
        """The day's per-stock prediction messages (each with the stock's close)."""
        if result.predictions.is_empty():
            return []
        return prediction_messages(result.predictions,
                                   self.predictor.checkpoint.config.model.quantiles,
                                   result.closes)

    def publish(self, result: DayResult, sent: int = 0) -> None:
        """Mark the day done in the window, once its ``sent`` predictions are out: a crash
        before this closes the day again (the same predictions again, which everything
        downstream takes idempotently), never not at all."""
        self.window.publish(result.day, result.missing)
        DAYS.labels(result.reason).inc()
        MISSING.inc(len(result.missing))
        PREDICTIONS.inc(sent)
        if sent:
            DAY_SECONDS.labels("predictions").observe(result.seconds)
        if result.missing:
            log.warning("%s closed (%s) without %d symbols that traded the session before: %s",
                        result.day, result.reason, len(result.missing), result.missing[:10])


def _closes(rows: Iterable[Bar], day: date) -> dict[str, float]:
    """Each symbol's close on ``day`` in yen as traded (raw Close; the adjusted one if absent)."""
    out = {}
    for bar in rows:
        if bar.Date == day:
            price = bar.Close if bar.Close else bar.AdjustmentClose
            if price:
                out[bar.Code] = float(price)
    return out


_intents = msgspec.json.Decoder(list[OrderIntent]).decode


@dataclass
class StrategyDesk:
    """A strategy trading an account from the day's predictions.

    The day's orders are decided once and remembered in ``decisions`` (a Faust table or a
    dict) before any is placed; a restart places the remembered ones again under the same
    idempotency keys, so nothing is placed twice and nothing is decided twice.
    """

    app: Any  # aggregates.application.TradingApplication
    account: Any  # UUID
    principal: str
    strategy: TopQuantile
    decisions: MutableMapping[bytes, bytes]
    slippage_ticks: int = 1
    totals: Counter[str] = field(default_factory=Counter)

    def decide(self, day: date, predictions: list[Prediction]) -> list[OrderIntent]:
        """The day's orders: the remembered decision, or a new one from the predictions
        (it reads the account; it stores nothing)."""
        held = self.decisions.get(_decision_key(day))
        if held is not None:
            return _intents(held)
        closes = {p.code: p.close for p in predictions if p.close}
        intents, skipped = decide_orders(self.app, self.account, self.strategy,
                                         predictions_frame(predictions), closes,
                                         slippage_ticks=self.slippage_ticks)
        if skipped:
            ORDERS.labels("skipped").inc(len(skipped))
            self.totals["skipped"] += len(skipped)
            log.info("%s: %s skipped %d: %s", day, self.strategy.name, len(skipped),
                     dict(Counter(reason.split(":")[0] for _, reason in skipped)))
        return intents

    def remember(self, day: date, intents: list[OrderIntent]) -> None:
        """Keep the day's decision before any of it is placed."""
        key = _decision_key(day)
        if self.decisions.get(key) is None:
            self.decisions[key] = msgspec.json.encode(intents)

    def submit(self, day: date, intents: list[OrderIntent]) -> Submitted:
        """Place the decision through the command handlers under its idempotency keys."""
        started = time.perf_counter()
        result = submit_orders(self.app, self.account, self.strategy.name, day, intents,
                               principal=self.principal)
        for outcome, n in result.outcomes.items():
            ORDERS.labels(outcome).inc(n)
        self.totals.update(result.outcomes)
        DAY_SECONDS.labels("orders").observe(time.perf_counter() - started)
        if result.reasons:
            log.warning("%s: %s refused: %s", day, self.strategy.name, dict(result.reasons))
        return result

    def trade(self, day: date, predictions: list[Prediction]) -> Submitted:
        """Decide, remember, place: the whole step, in this thread (the embedded loop)."""
        intents = self.decide(day, predictions)
        self.remember(day, intents)
        return self.submit(day, intents)


def _decision_key(day: date) -> bytes:
    return f"d|{day.isoformat()}".encode()


def desk_for(app: Any, account_name: str, fraction: float,
             decisions: MutableMapping[bytes, bytes]) -> StrategyDesk:
    """The desk trading ``account_name`` (which must exist) as its owner."""
    from aggregates import ids

    account = ids.account_id(account_name)
    with app.deciding():
        state = app.current(account)
    if state is None:
        raise LookupError(f"TRADECORE_STRATEGY_ACCOUNT={account_name!r}: no such account; "
                          "open and fund it first (`tradecore account open`)")
    return StrategyDesk(app, account, state.owner, TopQuantile(fraction=fraction), decisions)


def run_embedded(source: Any, loop: Loop, desk: StrategyDesk | None, *,
                 stop: threading.Event | None = None,
                 on_day: Callable[[DayResult, Submitted | None], None] | None = None) -> int:
    """Drive ``loop`` (and ``desk``) in this thread from ``source``'s days until it ends or
    ``stop`` is set; the number of days closed."""
    closed = 0
    for _day, _predict, routed in source.messages(1):
        for item in routed:
            loop.on_message(item.message)
        for day, reason in loop.ready():
            result = loop.compute(day, reason)
            messages = loop.messages(result)
            submitted = desk.trade(day, messages) if desk is not None and messages else None
            loop.publish(result, len(messages))
            closed += 1
            if on_day is not None:
                on_day(result, submitted)
        if stop is not None and stop.is_set():
            break
    return closed


class EmbeddedLoop:
    """The loop in a thread of ``tradecore serve`` (the embedded deployment): no Faust, no
    Kafka, the same steps. Its window and decisions live in this process; at start the
    window is rebuilt from the source (a file replay sends the warm-up again), and a
    day decided again after a restart places nothing twice (the orders' keys). It runs
    behind the ``streams`` fence: one loop per store, whatever runs it (``serve --workers
    N``, a ``tradecore worker streams`` on the same store)."""

    def __init__(self, loop: Loop, desk: StrategyDesk | None, source: Any,
                 fence: Any = None) -> None:
        self.loop, self.desk, self.source, self.fence = loop, desk, source, fence
        self.days = 0
        self.last: DayResult | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="market-loop", daemon=True)

    def _run(self) -> None:
        def seen(result: DayResult, submitted: Submitted | None) -> None:
            self.days += 1
            self.last = result
            if result.reason != "warm-up":
                log.info("%s closed (%s): %d stocks predicted, orders %s", result.day,
                         result.reason, result.predictions["code"].n_unique(),
                         dict(submitted.outcomes) if submitted else "none (no account)")

        if self.fence is not None and not self.fence.acquire(blocking=False):
            log.info("market loop: another process runs it on this store; waiting")
            if not wait_for(self.fence, self._stop):
                return
        try:
            log.info("market loop: %s", _describe(self.source))
            run_embedded(self.source, self.loop, self.desk, stop=self._stop, on_day=seen)
            log.info("market loop: the source has no more days (%d closed)", self.days)
        except Exception:
            log.exception("market loop failed; the API serves on without it")
        finally:
            if self.fence is not None and self.fence.held:
                self.fence.release()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def _describe(source: Any) -> str:
    days = getattr(source, "days", None)
    if days:
        return (f"replaying {days[0]}..{days[-1]} ({len(days)} sessions, "
                f"{len(source.warmup_days)} of warm-up first)")
    return f"polling the J-Quants API from {getattr(source, 'start', '?')}"


def load_predictor(settings: Any) -> Any:
    """The loop's ``Predictor`` over ``TRADECORE_MODEL_CHECKPOINT``; a file that is missing
    or not a checkpoint is a ``ValueError`` naming the setting, not only the file."""
    from inference.serving import Predictor

    try:
        return Predictor(settings.model_checkpoint)
    except (OSError, ValueError) as err:
        raise ValueError(f"TRADECORE_MODEL_CHECKPOINT={settings.model_checkpoint}: {err}"
                         ) from None


def embedded_loop(settings: Any, app: Any) -> EmbeddedLoop:
    """The loop ``tradecore serve`` runs when a checkpoint and ``streams_ingest`` are set."""
    from inference.data import load_listed_info
    from infra.locks import stage_fence
    from streams.ingest import market_data_folder, source_for
    from streams.signals import sessions_for

    if not log.handlers:  # serve configures uvicorn's loggers only: say what the loop does
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    predictor = load_predictor(settings)
    listed = load_listed_info(market_data_folder(settings))
    loop = Loop({}, predictor, listed, deadline_s=settings.streams_deadline_s)
    desk = (desk_for(app, settings.strategy_account, settings.strategy_fraction, {})
            if settings.strategy_account else None)
    return EmbeddedLoop(loop, desk, source_for(settings, sessions_for(predictor)),
                        stage_fence(settings, "streams"))
