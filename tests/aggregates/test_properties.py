"""Hypothesis: random command sequences never break an invariant."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.errors import DomainError
from aggregates.instruments import Universe, load_universe
from aggregates.invariants import check_invariants
from aggregates.market import today_in_tokyo
from aggregates.order import Order
from tests.aggregates.helpers import funded, give_shares, make_app, meta, stored
from tests.conftest import postgres_env

TODAY = today_in_tokyo(None)  # sessions close only near today (aggregates.market)

UNIVERSE: Universe = load_universe(None)
SYMBOLS = list(UNIVERSE.symbols[:2])

command = st.one_of(
    st.tuples(st.just("place"), st.integers(0, 2), st.sampled_from(SYMBOLS),
              st.sampled_from(["buy", "sell"]), st.integers(-3, 3), st.integers(1, 5),
              st.sampled_from(["day", "gtc", "ioc", "fok", "market"])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("amend"), st.integers(0, 50), st.integers(-2, 2), st.integers(-1, 2)),
    st.tuples(st.just("close")),
    st.tuples(st.sampled_from(["halt", "resume"]), st.sampled_from(["symbol", "account"]),
              st.integers(0, 2)),
)


def run(commands: list[tuple[Any, ...]], env: dict[str, str] | None = None) -> Any:
    app = make_app(env or {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                           "SQLITE_DBNAME": ":memory:"}, UNIVERSE)
    traders = [funded(app, f"t{i}", 30_000_000) for i in range(3)]
    for i, trader in enumerate(traders):
        for sym in SYMBOLS:
            give_shares(app, trader, sym, 500 + 100 * i, UNIVERSE.get(sym).base_price)
    orders = []
    for n, cmd in enumerate(commands):
        before = stored(app)
        try:
            if cmd[0] == "place":
                _, who, sym, side, ticks, lots, tif = cmd
                inst = UNIVERSE.get(sym)
                price = inst.base_price + ticks * inst.tick_size(inst.base_price)
                market = tif == "market"
                orders.append(app.place_order(
                    traders[who], client_order_id=f"p{n}", symbol=sym, side=side,
                    quantity=100 * lots, price=0 if market else price,
                    order_type="market" if market else "limit", tif="ioc" if market else tif,
                    meta=meta()).order_id)
            elif cmd[0] == "cancel" and orders:
                app.cancel_order(orders[cmd[1] % len(orders)], meta())
            elif cmd[0] == "amend" and orders:
                order = app.get_order(orders[cmd[1] % len(orders)])
                inst = UNIVERSE.get(order.symbol)
                app.amend_order(order.id, quantity=order.quantity + 100 * cmd[3],
                                price=order.price + cmd[2] * inst.tick_size(order.price),
                                meta=meta())
            elif cmd[0] in ("halt", "resume") and cmd[1] == "symbol":
                sym = SYMBOLS[cmd[2] % len(SYMBOLS)]
                if cmd[0] == "halt":
                    app.halt_symbol(sym, f"news pending n{n}", meta("risk"))
                else:
                    app.resume_symbol(sym, meta("risk"))
            elif cmd[0] in ("halt", "resume"):
                if cmd[0] == "halt":
                    app.halt_account(traders[cmd[2]], f"limit breach n{n}", meta("risk"))
                else:
                    app.resume_account(traders[cmd[2]], meta("risk"))
            elif cmd[0] == "close":
                app.close_session((TODAY - timedelta(days=n % 8)).isoformat(), meta("ops"))
        except DomainError:
            assert stored(app) == before, f"{cmd} was refused but stored events"
    return app


def assert_invariants(app: Any) -> None:
    broken = [c for c in check_invariants(app) if not c.ok]
    assert not broken, broken
    for order_id in app.ids_of(Order):
        order = app.get_order(order_id)
        assert 0 <= order.filled_quantity <= order.quantity


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command, min_size=1, max_size=40))
def test_random_commands_keep_every_invariant(commands: list[tuple[Any, ...]]) -> None:
    assert_invariants(run(commands))


@pytest.mark.postgres
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command, min_size=1, max_size=30))
def test_random_commands_keep_every_invariant_on_postgres(commands: list[tuple[Any, ...]]
                                                         ) -> None:
    app = run(commands, postgres_env())
    assert_invariants(app)
    app.close()
