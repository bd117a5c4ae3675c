"""The backtest fill model at the venue: a session's bar becomes liquidity from outside
the system (open +/- slippage ticks, a participation cap of the bar's volume), fills
against it settle only our side, the close takes it away, and the next bar moves the
day's price limits. Real stages over a real SQLite store; no data files needed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregates import ids
from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.clock import SimulatedClock
from aggregates.errors import RuleViolation
from aggregates.instruments import bundled_universe, round_to_tick
from aggregates.venue import Venue
from kernels.contract import Command, CommandKind, OrderType, Side, TickBand, TimeInForce
from kernels.engine import KernelEngine
from kernels.reference import ReferenceEngine
from streams.embedded import in_process


def _app(tmp_path: Path, engine: str = "kernel") -> tuple[TradingApplication, SimulatedClock]:
    clock = SimulatedClock(datetime(2015, 6, 3, 0, 0, tzinfo=UTC))  # 09:00 JST
    app = TradingApplication({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                              "SQLITE_DBNAME": str(tmp_path / "e.sqlite")},
                             universe=bundled_universe(), clock=clock)
    in_process(app, engine=engine)
    return app, clock


def _bar(symbol: str, open_: int, volume: int, base: int) -> dict[str, Any]:
    return {"symbol": symbol, "open": open_, "high": open_, "low": open_, "close": open_,
            "volume": volume, "base": base}


def _reports(app: TradingApplication, symbol: str) -> list[Venue.Reported]:
    return list(app.events.get(ids.venue_id(symbol)))


@pytest.mark.parametrize("engine", ["kernel", "reference"])
def test_a_buy_fills_against_the_outside_ask_up_to_the_participation_cap(
        tmp_path: Path, engine: str) -> None:
    app, clock = _app(tmp_path, engine)
    symbol = app.universe.symbols[0]
    instrument = app.universe.get(symbol)
    base = instrument.base_price
    table = instrument.tick_table
    ask = round_to_tick(round_to_tick(base + 1, table, "up") + 1, table, "up")  # 2 ticks
    account = app.open_account("bt", owner="bt", meta=Meta.command("ops", "open"))
    app.deposit(account, 10**10, Meta.command("ops", "deposit"))
    # 10% of 24,999 shares = 2,499, rounded down to the 100-share lot: 2,400
    app.open_bars("2015-06-03", [_bar(symbol, base, 24_999, base)],
                  Meta.command("bt", "bars-1"), participation_bp=1000, slippage_ticks=2)
    opened = _reports(app, symbol)[-1]
    assert opened.command == "open" and opened.last_price == base
    assert opened.reports[0]["ask"] == [ask, 2400] and opened.reports[0]["kind"] == "external"
    placed = app.place_order(account, client_order_id="b1", symbol=symbol, side="buy",
                             quantity=3000, price=ask, meta=Meta.command("bt", "b1"))
    order = app.get_order(placed.order_id)
    assert order.filled_quantity == 2400 and order.status.value == "partially_filled"
    fill = _reports(app, symbol)[-1].reports[0]
    assert fill["kind"] == "fill" and fill["external"] is True
    assert fill["maker"] is None and fill["taker"] == str(placed.order_id)
    position = app.get_position(account, symbol)
    assert position is not None and position.quantity == 2400
    account_state = app.get_account(account)
    assert account_state.bought == ask * 2400 // 10 and account_state.fees > 0
    # the close expires our remainder and takes the outside liquidity away unreported
    clock.set(datetime(2015, 6, 3, 6, 0, tzinfo=UTC))
    app.close_session("2015-06-03", Meta.command("bt", "close-1"))
    order = app.get_order(placed.order_id)
    assert order.status.value == "expired" and order.filled_quantity == 2400
    assert app.get_account(account).reserved_for(placed.order_id) == 0
    book, _ = app.book(symbol, 5)
    assert book == {"bids": [], "asks": []}
    app.close()


def test_the_next_bar_moves_the_limits_and_replaces_the_liquidity(tmp_path: Path) -> None:
    app, clock = _app(tmp_path)
    symbol = app.universe.symbols[0]
    base = app.universe.get(symbol).base_price
    account = app.open_account("bt", owner="bt", meta=Meta.command("ops", "open"))
    app.deposit(account, 10**10, Meta.command("ops", "deposit"))
    app.open_bars("2015-06-03", [_bar(symbol, base, 10_000, base)],
                  Meta.command("bt", "bars-1"), participation_bp=1000, slippage_ticks=1)
    clock.set(datetime(2015, 6, 3, 6, 0, tzinfo=UTC))
    app.close_session("2015-06-03", Meta.command("bt", "close-1"))
    # a stock that doubled over a few sessions: far outside the first day's limits
    far = round_to_tick(base * 2, app.universe.get(symbol).tick_table, "down")
    clock.set(datetime(2015, 6, 4, 0, 0, tzinfo=UTC))
    app.open_bars("2015-06-04", [_bar(symbol, far, 10_000, far)],
                  Meta.command("bt", "bars-2"), participation_bp=1000, slippage_ticks=1)
    assert app.universe.get(symbol).base_price == far
    book, last = app.book(symbol, 5)
    assert last == far and len(book["asks"]) == 1 and book["asks"][0][1] == 1000
    placed = app.place_order(account, client_order_id="b2", symbol=symbol, side="buy",
                             quantity=500, price=book["asks"][0][0],
                             meta=Meta.command("bt", "b2"))
    assert app.get_order(placed.order_id).status.value == "filled"
    app.close()


def test_bad_bars_are_refused_naming_the_field_and_store_nothing(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    symbol = app.universe.symbols[0]
    base = app.universe.get(symbol).base_price
    head = app.head()
    for bar, terms, field in [
        (_bar(symbol, base, 100, base), {"participation_bp": 0, "slippage_ticks": 1},
         "participation_bp"),
        (_bar(symbol, base, 100, base), {"participation_bp": 100, "slippage_ticks": 0},
         "slippage_ticks"),
        (_bar(symbol, -5, 100, base), {"participation_bp": 100, "slippage_ticks": 1},
         "bars.open"),
    ]:
        with pytest.raises(RuleViolation) as refused:
            app.open_bars("2015-06-03", [bar], Meta.command("bt"), **terms)
        assert refused.value.field == field
    with pytest.raises(RuleViolation) as unknown:
        app.open_bars("2015-06-03", [_bar("0000", base, 100, base)], Meta.command("bt"),
                      participation_bp=100, slippage_ticks=1)
    assert unknown.value.field == "symbol"
    assert app.head() == head
    app.close()


@pytest.mark.parametrize("engine", [KernelEngine, ReferenceEngine])
def test_regrid_moves_an_empty_book_and_keeps_its_sequence(engine: Any) -> None:
    venue = engine()
    venue.add_symbol("X", (TickBand(10**9, 10),), 900, 1100)
    rest = Command(CommandKind.NEW, 1, Side.BUY, OrderType.LIMIT, TimeInForce.DAY, 1000, 100, 7)
    venue.submit("X", rest)
    with pytest.raises(ValueError, match="resting orders"):
        venue.regrid("X", 1900, 2100)
    venue.submit("X", Command(CommandKind.CANCEL, 1, Side.BUY, OrderType.LIMIT,
                              TimeInForce.DAY, 0, 0, 0))
    venue.regrid("X", 1900, 2100)
    assert venue.sequence("X") == 2
    events = venue.submit("X", Command(CommandKind.NEW, 2, Side.SELL, OrderType.LIMIT,
                                       TimeInForce.DAY, 2000, 100, 7))
    assert events[-1].kind.name == "RESTED" and events[-1].sequence == 3
    events = venue.submit("X", Command(CommandKind.NEW, 3, Side.SELL, OrderType.LIMIT,
                                       TimeInForce.DAY, 1000, 100, 7))
    assert events[-1].reason.name == "OUT_OF_RANGE"
