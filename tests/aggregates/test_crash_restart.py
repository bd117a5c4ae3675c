"""A crash between any two saga steps, then a restart, gives the same state as no crash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aggregates.account import Account
from aggregates.application import TradingApplication
from aggregates.market import today_in_tokyo
from aggregates.order import Order
from aggregates.position import Position
from streams.embedded import in_process
from tests.aggregates.helpers import meta
from tests.conftest import postgres_env

UNIVERSE_SYMBOL = "7203"


class Crash(Exception):
    pass


def steps(app: TradingApplication) -> list[Callable[[], Any]]:
    """One trading session as a list of user commands."""
    from aggregates import ids

    sym = UNIVERSE_SYMBOL if UNIVERSE_SYMBOL in app.universe else app.universe.symbols[0]
    p = app.universe.get(sym).base_price
    t = app.universe.get(sym).tick_size(p)
    a, b, mm = ids.account_id("a"), ids.account_id("b"), ids.account_id("mm")

    def order(who: Any, cid: str, side: str, qty: int, price: int, tif: str = "day"
              ) -> Callable[[], Any]:
        return lambda: app.place_order(who, client_order_id=cid, symbol=sym, side=side,
                                       quantity=qty, price=price, tif=tif, meta=meta())

    return [
        lambda: app.open_account("mm", owner="mm", meta=meta(), allow_short=True),
        lambda: app.open_account("a", owner="a", meta=meta()),
        lambda: app.open_account("b", owner="b", meta=meta()),
        lambda: app.deposit(mm, 1_000_000_000, meta()),
        lambda: app.deposit(a, 20_000_000, meta()),
        lambda: app.deposit(b, 20_000_000, meta()),
        order(mm, "1", "sell", 500, p + t),
        order(mm, "2", "buy", 400, p - t),
        order(a, "1", "buy", 300, p + t),
        order(b, "1", "buy", 300, p + t, "ioc"),
        order(a, "2", "sell", 200, p - t),
        order(b, "2", "buy", 200, p - t, "gtc"),
        lambda: app.amend_order(ids.order_id(b, "2"), quantity=100, price=p - t, meta=meta()),
        order(b, "3", "sell", 200, p - t),
        lambda: app.cancel_order(ids.order_id(b, "2"), meta()),
        order(a, "3", "sell", 100, p + 2 * t),
        lambda: app.close_session(today_in_tokyo(None).isoformat(), meta()),
    ]


def state(app: TradingApplication) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for account_id in app.ids_of(Account):
        acc = app.get_account(account_id)
        out[acc.name] = (acc.cash, acc.reserved, acc.fees, acc.bought, acc.sold)
    for order_id in app.ids_of(Order):
        o = app.get_order(order_id)
        out[str(order_id)] = (o.status, o.filled_quantity, o.fees, sorted(o.executions))
    for position_id in app.ids_of(Position):
        pos = app.repository.get(position_id)
        out[str(position_id)] = (pos.quantity, pos.cost, pos.realised_pnl, pos.reserved)
    return out


def open_app(env: dict[str, str], universe: Any, engine: str = "kernel") -> TradingApplication:
    """A process: the write model, its saga and matching stages one input per batch."""
    app = TradingApplication(env, universe=universe)
    in_process(app, engine=engine, saga_batch_size=1, matching_batch_size=1)
    return app


@pytest.fixture(scope="module")
def expected(universe: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = open_app({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                    "SQLITE_DBNAME": str(tmp_path_factory.mktemp("clean") / "e.sqlite")},
                   universe)
    for step in steps(app):
        step()
    result = state(app)
    assert any(v[1] > 0 for v in result.values() if isinstance(v, tuple) and len(v) == 4)
    return result


# The session below takes 32 stage steps (one input each, batch size 1): crash
# before every step commits, and after every fifth one commits.
# On PostgreSQL, every seventh step of each kind.
STEPS = 33  # one more than the stage steps of the session
CRASHES = [("sqlite", "before_commit", k) for k in range(1, STEPS)] + [
    ("sqlite", "after_commit", k) for k in range(1, STEPS, 5)] + [
    pytest.param("postgres", when, k, marks=pytest.mark.postgres)
    for when in ("before_commit", "after_commit") for k in range(1, STEPS, 4)]


@pytest.mark.parametrize(("backend", "when", "crash_at"), CRASHES)
def test_crash_and_restart_gives_the_same_state(
    universe: Any, tmp_path: Path, expected: dict[str, Any], crash_at: int, when: str,
    backend: str,
) -> None:
    env = (postgres_env() if backend == "postgres" else
           {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e")})
    app = open_app(env, universe)
    original = app.events.put
    calls = {"n": 0}

    def crashing_put(events: Any, **kwargs: Any) -> Any:
        if kwargs.get("tracking") is not None:  # a stage storing its effects
            calls["n"] += 1
            if calls["n"] == crash_at and when == "before_commit":
                raise Crash
            result = original(events, **kwargs)
            if calls["n"] == crash_at:
                raise Crash
            return result
        return original(events, **kwargs)

    app.events.put = crashing_put  # type: ignore[method-assign]
    done = 0
    for step in steps(app):
        done += 1
        try:
            step()
        except Crash:
            break
    else:
        pytest.fail(f"the session has fewer than {crash_at} stage steps: update STEPS")
    app.close()
    restarted = open_app(env, universe)  # a new process: the stages resume by themselves
    assert restarted.after_command is not None
    restarted.after_command()  # what a server's stage threads do at start-up
    for step in steps(restarted)[done:]:
        step()
    assert state(restarted) == expected
