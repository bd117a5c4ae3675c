"""The clock drives the whole flow: every event a command sets off carries the simulated
time, and with session rules enforced an order outside the TSE session is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.clock import SimulatedClock
from aggregates.errors import RiskRejection
from aggregates.instruments import Universe
from streams.embedded import in_process


def app_at(tmp_path: Path, universe: Universe, clock: SimulatedClock) -> TradingApplication:
    app = TradingApplication({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                              "SQLITE_DBNAME": str(tmp_path / "e.sqlite")},
                             universe=universe, clock=clock, session_rules="enforce")
    in_process(app)
    return app


def test_every_event_of_a_trade_carries_the_simulated_time(
        tmp_path: Path, universe: Universe) -> None:
    clock = SimulatedClock(datetime(2015, 6, 3, 1, 0, tzinfo=UTC))  # 10:00 JST, Wednesday
    app = app_at(tmp_path, universe, clock)
    symbol = universe.symbols[0]
    price = universe.get(symbol).base_price
    buyer = app.open_account("b", owner="b", meta=Meta.command("ops"))
    seller = app.open_account("s", owner="s", meta=Meta.command("ops"), allow_short=True)
    for account in (buyer, seller):
        app.deposit(account, 10**9, Meta.command("ops"))
    clock.advance(60)
    app.place_order(seller, client_order_id="s1", symbol=symbol, side="sell", quantity=100,
                    price=price, meta=Meta.command("s"))
    clock.advance(60)
    placed = app.place_order(buyer, client_order_id="b1", symbol=symbol, side="buy",
                             quantity=100, price=price, meta=Meta.command("b"))
    assert app.get_order(placed.order_id).status.value == "filled"
    stamps = {e.timestamp for e in app.history(placed.order_id)}
    assert stamps == {datetime(2015, 6, 3, 1, 2, tzinfo=UTC)}  # command, saga and venue
    app.close()


@pytest.mark.parametrize("moment", [
    datetime(2015, 6, 6, 1, 0, tzinfo=UTC),  # Saturday
    datetime(2015, 6, 3, 3, 0, tzinfo=UTC),  # 12:00 JST, the lunch break
    datetime(2015, 6, 3, 7, 0, tzinfo=UTC),  # 16:00 JST, after the close
])
def test_outside_the_session_an_order_is_refused_naming_it(
        tmp_path: Path, universe: Universe, moment: datetime) -> None:
    clock = SimulatedClock(moment)
    app = app_at(tmp_path, universe, clock)
    account = app.open_account("a", owner="a", meta=Meta.command("ops"))
    app.deposit(account, 10**9, Meta.command("ops"))
    stored = app.head()
    symbol = universe.symbols[0]
    with pytest.raises(RiskRejection) as refused:
        app.place_order(account, client_order_id="x", symbol=symbol, side="buy", quantity=100,
                        price=universe.get(symbol).base_price, meta=Meta.command("a"))
    assert refused.value.field == "session" and "TSE trading session" in refused.value.rule
    assert app.head() == stored
    app.close()
