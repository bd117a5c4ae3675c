"""Every bad order: a domain error naming the field and the rule; nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

from aggregates.errors import DomainError
from aggregates.instruments import Universe
from tests.aggregates.helpers import funded, give_shares, make_app, meta, stored
from tests.conftest import postgres_env


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def desk(request: pytest.FixtureRequest, universe: Universe,
         tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = postgres_env() if request.param == "postgres" else {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp_path_factory.mktemp("rej") / "e.sqlite")}
    app = make_app(env, universe)
    sym = "7203" if "7203" in universe else universe.symbols[0]
    inst = universe.get(sym)
    rich = funded(app, "rich", 2_000_000_000)
    poor = funded(app, "poor", 10_000)
    give_shares(app, rich, sym, 100, inst.base_price)
    return app, sym, inst, rich, poor


def _cases(inst: Any) -> list[tuple[str, dict[str, Any], str]]:
    p = inst.base_price
    tick = inst.tick_size(p)
    return [
        ("lot", {"quantity": 150}, "quantity"),
        ("zero quantity", {"quantity": 0}, "quantity"),
        ("negative quantity", {"quantity": -100}, "quantity"),
        ("off tick", {"price": p + 1 if tick > 1 else p}, "price"),
        ("zero price", {"price": 0}, "price"),
        ("negative price", {"price": -p}, "price"),
        ("above daily limit", {"price": inst.limits.upper + tick * 10}, "price"),
        ("below daily limit", {"price": max(inst.limits.lower - tick * 10, tick)}, "price"),
        ("fat finger", {"price": p + 3 * p // 10 // tick * tick}, "price"),
        ("unknown symbol", {"symbol": "0000"}, "symbol"),
        ("bad side", {"side": "short"}, "side"),
        ("bad tif", {"tif": "forever"}, "tif"),
        ("market with price", {"order_type": "market", "price": p}, "price"),
        ("market gtc", {"order_type": "market", "price": 0, "tif": "gtc"}, "tif"),
        ("empty client order id", {"client_order_id": ""}, "client_order_id"),
        ("max notional", {"quantity": 100 * (1_000_000_000 // (p * 10) + 1)}, "quantity"),
        ("no shares to sell", {"side": "sell", "quantity": 200}, "quantity"),
        ("insufficient funds", {"account": "poor"}, "quantity"),
    ]


@pytest.mark.parametrize("case", range(18))
def test_bad_order_is_refused_and_stores_nothing(desk: Any, case: int) -> None:
    app, sym, inst, rich, poor = desk
    name, change, field = _cases(inst)[case]
    if name == "off tick" and inst.tick_size(inst.base_price) == 1:
        pytest.skip("every price unit is on the tick for this instrument")
    order: dict[str, Any] = {"client_order_id": f"bad-{case}", "symbol": sym, "side": "buy",
                             "quantity": 100, "price": inst.base_price}
    account = poor if change.pop("account", None) == "poor" else rich
    order.update(change)
    before = stored(app)
    with pytest.raises(DomainError) as err:
        app.place_order(account, meta=meta(), **order)
    assert err.value.field == field, (name, err.value)
    assert err.value.rule and str(err.value)
    assert stored(app) == before, f"{name}: an event was stored"


def test_deposit_and_withdraw_rules(desk: Any) -> None:
    app, _sym, _inst, _rich, poor = desk
    before = stored(app)
    for bad in (0, -5, 1.5, True):
        with pytest.raises(DomainError) as err:
            app.deposit(poor, bad, meta())
        assert err.value.field == "amount"
    with pytest.raises(DomainError) as err:
        app.withdraw(poor, 10_001, meta())
    assert "available" in err.value.rule
    assert stored(app) == before


def test_closing_a_session_needs_a_real_date() -> None:
    from aggregates.base import Meta
    from aggregates.errors import RuleViolation
    from aggregates.market import Market

    market = Market.create(Meta.command("ops"))
    for bad in ("2024-13-45", "0000-00-00", "day1", ""):
        with pytest.raises(RuleViolation) as refused:
            market.close_session(bad, Meta.command("ops"))
        assert refused.value.field == "session_date"
    market.close_session("2024-02-29", Meta.command("ops"))
    assert market.closed_sessions == ["2024-02-29"]
