"""Every bad order: a domain error naming the field and the rule; nothing stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aggregates.errors import DomainError, RuleViolation
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

    at = datetime(2024, 3, 1, 6, 30, tzinfo=UTC)  # 15:30 in Tokyo
    market = Market.create(Meta.command("ops", at=at))
    for bad in ("2024-13-45", "0000-00-00", "day1", ""):
        with pytest.raises(RuleViolation) as refused:
            market.close_session(bad, Meta.command("ops", at=at))
        assert refused.value.field == "session_date"
    market.close_session("2024-02-29", Meta.command("ops", at=at))
    assert market.closed_sessions == ["2024-02-29"]


@pytest.mark.parametrize("session_date", ["9999-12-31", "2024-03-02", "2024-02-22",
                                          "1970-01-01"])
def test_a_session_far_from_today_cannot_close(session_date: str) -> None:
    """9999-12-31 once closed and expired every resting DAY order: the session must be
    today's in Tokyo (by the command's clock) or one of the 7 days before."""
    from aggregates.base import Meta
    from aggregates.errors import RuleViolation
    from aggregates.market import Market

    at = datetime(2024, 3, 1, 6, 30, tzinfo=UTC)  # 2024-03-01 15:30 in Tokyo
    market = Market.create(Meta.command("ops", at=at))
    with pytest.raises(RuleViolation) as refused:
        market.close_session(session_date, Meta.command("ops", at=at))
    assert refused.value.field == "session_date"
    assert refused.value.rule == "today's session in Tokyo or one of the 7 days before it"
    assert "from 2024-02-23 to 2024-03-01" in refused.value.message
    assert market.closed_sessions == []
    market.close_session("2024-02-23", Meta.command("ops", at=at))  # the window's edges
    market.close_session("2024-03-01", Meta.command("ops", at=at))


def test_the_session_date_is_tokyos() -> None:
    from aggregates.base import Meta
    from aggregates.market import Market

    at = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)  # already 2024-03-02 in Tokyo
    market = Market.create(Meta.command("ops", at=at))
    market.close_session("2024-03-02", Meta.command("ops", at=at))
    assert market.closed_sessions == ["2024-03-02"]


@pytest.mark.parametrize("text", ["news\x00pending", "ok\x1b[2K", "a\u2028b", "\u202egnp",
                                  "tab\there", "x\x7f", "c1\x85"])
def test_free_text_holds_no_control_characters(text: str) -> None:
    """A NUL or an escape sequence was stored in a halt reason, to be replayed into every
    terminal that shows the audit trail: refused, naming the field."""
    from aggregates.account import Account
    from aggregates.base import Meta
    from aggregates.errors import RuleViolation
    from aggregates.ids import account_id
    from aggregates.market import Market

    ops = Meta.command("ops")
    market = Market.create(ops)
    account = Account.open(account_id("alice"), name="alice", owner="alice",
                           allow_short=False, meta=ops)
    refusals = {
        "reason": [lambda: market.halt("7203", text, ops), lambda: account.halt(text, ops)],
        "name": [lambda: Account.open(account_id("x"), name=text, owner="o",
                                      allow_short=False, meta=ops)],
        "owner": [lambda: Account.open(account_id("y"), name="y", owner=text,
                                       allow_short=False, meta=ops)],
    }
    for field, commands in refusals.items():
        for command in commands:
            with pytest.raises(RuleViolation) as refused:
                command()
            assert (refused.value.field, refused.value.rule) == (field,
                                                                 "no control characters")
    assert not market.halted_symbols and not account.halted
    market.halt("7203", "news pending: 決算発表", ops)  # printable text of any script
    assert market.halted_symbols == {"7203"}


def test_a_client_order_id_with_a_control_character_is_refused_before_reserving(
        store_env: dict[str, str], universe: Universe) -> None:
    app = make_app(store_env, universe)
    account = funded(app, "ctl")
    before = app.head()
    symbol = universe.symbols[0]
    with pytest.raises(RuleViolation) as refused:
        app.place_order(account, client_order_id="a\x1b[2Kb", symbol=symbol, side="buy",
                        quantity=100, price=universe.get(symbol).base_price, meta=meta())
    assert refused.value.field == "client_order_id"
    assert app.head() == before and app.get_account(account).reserved == 0
    app.close()
