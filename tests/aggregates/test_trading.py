"""The write model end to end through the saga, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from aggregates.errors import Conflict, DomainError, IllegalTransition, NotFound, RiskRejection
from aggregates.fees import get_schedule
from aggregates.instruments import Universe
from aggregates.invariants import check_invariants
from aggregates.market import today_in_tokyo
from aggregates.order import OrderStatus
from tests.aggregates.helpers import funded, give_shares, make_app, meta, place, stored

FEES = get_schedule("tiered_online")


@pytest.fixture
def app(store_env, universe):  # type: ignore[no-untyped-def]
    application = make_app(store_env, universe)
    yield application
    broken = [c for c in check_invariants(application) if not c.ok]
    application.close()
    assert not broken


@pytest.fixture
def sym(universe: Universe) -> str:
    return "7203" if "7203" in universe else universe.symbols[0]


def test_cross_fills_settles_cash_positions_and_fees(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    seller = funded(app, "seller")
    buyer = funded(app, "buyer", 10_000_000)
    give_shares(app, seller, sym, 300, price)
    sell = place(app, seller, sym, "sell", 300, price)
    buy = place(app, buyer, sym, "buy", 200, price)

    notional = price * 200 // 10
    fee = FEES.commission(notional)
    b = app.get_account(buyer)
    assert app.get_order(buy.order_id).status is OrderStatus.FILLED
    assert app.get_order(sell.order_id).status is OrderStatus.PARTIALLY_FILLED
    assert b.cash == 10_000_000 - notional - fee
    assert b.reserved == 0
    assert app.get_position(buyer, sym).quantity == 200  # type: ignore[union-attr]
    pos = app.get_position(seller, sym)
    assert pos is not None and pos.quantity == 100 and pos.reserved == 100
    assert pos.realised_pnl == 0  # bought and sold at the same price
    checks = check_invariants(app)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_realised_pnl_on_a_round_trip_is_exact(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    tick = universe.get(sym).tick_size(price)
    trader = funded(app, "trader")
    give_shares(app, trader, sym, 300, price)
    buyer = funded(app, "buyer2")
    place(app, trader, sym, "sell", 300, price + 5 * tick)
    place(app, buyer, sym, "buy", 300, price + 5 * tick)
    pos = app.get_position(trader, sym)
    assert pos is not None and pos.quantity == 0 and pos.cost == 0
    assert pos.realised_pnl == 5 * tick * 300 // 10


def test_price_time_priority_and_amend_rules(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    tick = universe.get(sym).tick_size(price)
    a, b, c = funded(app, "a"), funded(app, "b"), funded(app, "c")
    first = place(app, a, sym, "buy", 300, price)
    second = place(app, b, sym, "buy", 200, price)
    # quantity down keeps priority
    app.amend_order(first.order_id, quantity=200, price=price, meta=meta())
    order = app.get_order(first.order_id)
    assert order.quantity == 200 and order.status is OrderStatus.WORKING
    amended = [e for e in app.history(first.order_id) if type(e).__name__ == "Amended"]
    assert amended[-1].priority_kept
    give_shares(app, c, sym, 200, price + tick)  # trades at price+tick, leaves bids alone
    place(app, c, sym, "sell", 200, price)
    assert app.get_order(first.order_id).status is OrderStatus.FILLED
    assert app.get_order(second.order_id).filled_quantity == 0
    # a price change loses priority: second re-prices away and back, goes behind third
    third = place(app, a, sym, "buy", 100, price)
    app.amend_order(second.order_id, quantity=200, price=price - tick, meta=meta())
    app.amend_order(second.order_id, quantity=200, price=price, meta=meta())
    give_shares(app, c, sym, 100, price + tick)
    place(app, c, sym, "sell", 100, price)
    assert app.get_order(third.order_id).status is OrderStatus.FILLED
    assert app.get_order(second.order_id).filled_quantity == 0


def test_cancel_releases_reservation_and_late_cancel_is_refused(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    buyer = funded(app, "buyer", 10_000_000)
    order = place(app, buyer, sym, "buy", 100, price)
    assert app.get_account(buyer).reserved > 0
    app.cancel_order(order.order_id, meta())
    assert app.get_order(order.order_id).status is OrderStatus.CANCELLED
    assert app.get_account(buyer).reserved == 0
    before = stored(app)
    with pytest.raises(IllegalTransition):
        app.cancel_order(order.order_id, meta())
    with pytest.raises(IllegalTransition):
        app.amend_order(order.order_id, quantity=200, price=price, meta=meta())
    assert stored(app) == before


def test_ioc_fok_market_and_day_expiry(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    seller, buyer = funded(app, "seller"), funded(app, "buyer", 100_000_000)
    give_shares(app, seller, sym, 500, price)
    place(app, seller, sym, "sell", 200, price)
    fok = place(app, buyer, sym, "buy", 300, price, tif="fok")
    assert app.get_order(fok.order_id).status is OrderStatus.CANCELLED
    assert app.get_order(fok.order_id).filled_quantity == 0
    ioc = place(app, buyer, sym, "buy", 300, price, tif="ioc")
    ioc_order = app.get_order(ioc.order_id)
    assert (ioc_order.status, ioc_order.filled_quantity) == (OrderStatus.CANCELLED, 200)
    mkt = place(app, buyer, sym, "buy", 100, 0, order_type="market", tif="ioc")
    assert app.get_order(mkt.order_id).cancel_reason == "no_liquidity"
    day = place(app, seller, sym, "sell", 100, price)
    gtc = place(app, seller, sym, "sell", 100, price + universe.get(sym).tick_size(price),
                tif="gtc")
    app.close_session(today_in_tokyo(None).isoformat(), meta("ops"))
    assert app.get_order(day.order_id).status is OrderStatus.EXPIRED
    assert app.get_order(gtc.order_id).status is OrderStatus.WORKING
    assert app.get_account(buyer).reserved == 0
    pos = app.get_position(seller, sym)
    assert pos is not None and pos.reserved == 100  # only the GTC order still holds shares


def test_identical_resubmission_is_idempotent(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    buyer = funded(app, "buyer")
    first = app.place_order(buyer, client_order_id="abc", symbol=sym, side="buy", quantity=100,
                            price=price, meta=meta())
    before = stored(app)
    again = app.place_order(buyer, client_order_id="abc", symbol=sym, side="buy", quantity=100,
                            price=price, meta=meta())
    assert (again.order_id, again.created) == (first.order_id, False)
    assert stored(app) == before
    with pytest.raises(Conflict) as err:
        app.place_order(buyer, client_order_id="abc", symbol=sym, side="buy", quantity=200,
                        price=price, meta=meta())
    assert err.value.field == "client_order_id"
    assert stored(app) == before


def test_halts_block_new_orders(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    buyer = funded(app, "buyer")
    app.halt_symbol(sym, "news pending", meta("risk"))
    before = stored(app)
    with pytest.raises(RiskRejection) as err:
        place(app, buyer, sym, "buy", 100, price)
    assert err.value.field == "symbol"
    assert stored(app) == before
    app.resume_symbol(sym, meta("risk"))
    app.halt_account(buyer, "limit breach", meta("risk"))
    with pytest.raises(RiskRejection) as err:
        place(app, buyer, sym, "buy", 100, price)
    assert err.value.field == "account_id"
    app.resume_account(buyer, meta("risk"))
    assert place(app, buyer, sym, "buy", 100, price).created


def test_every_event_carries_metadata(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    price = universe.get(sym).base_price
    buyer = funded(app, "buyer")
    command = meta("alice")
    placed = app.place_order(buyer, client_order_id="m1", symbol=sym, side="buy", quantity=100,
                             price=price, meta=command)
    history = app.history(placed.order_id)
    assert history[0].principal == "alice"
    assert history[0].command_id == command.command_id
    for event in history[1:]:  # saga steps: same correlation, caused by the previous fact
        assert event.correlation_id == command.correlation_id
        assert event.principal == "saga:orders"
        assert event.causation_id


def test_unknown_account_and_order(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    import uuid

    before = stored(app)
    with pytest.raises(NotFound) as err:
        place(app, uuid.uuid4(), sym, "buy", 100, universe.get(sym).base_price)
    assert err.value.field == "account_id"
    with pytest.raises(NotFound) as err2:
        app.cancel_order(uuid.uuid4(), meta())
    assert err2.value.field == "order_id"
    assert stored(app) == before
    assert issubclass(NotFound, DomainError)


def test_basket_refuses_bad_orders_alone_and_stores_the_rest(app, universe, sym) -> None:  # type: ignore[no-untyped-def]
    from aggregates.application import OrderRequest

    price = universe.get(sym).base_price
    buyer = funded(app, "basket")
    first = app.place_order(buyer, client_order_id="old", symbol=sym, side="buy", quantity=100,
                            price=price, meta=meta())
    before = stored(app)
    basket = [
        OrderRequest(buyer, "k1", sym, "buy", 100, meta(), price=price),
        OrderRequest(buyer, "k2", sym, "buy", 150, meta(), price=price),  # not a lot multiple
        OrderRequest(buyer, "k1", sym, "buy", 100, meta(), price=price),  # same order again
        OrderRequest(buyer, "old", sym, "buy", 300, meta(), price=price),  # reused id, new terms
        OrderRequest(buyer, "k3", sym, "sell", 100, meta(), price=price),  # no shares
    ]
    outcomes = app.place_orders(basket)
    assert outcomes[0].order_id == outcomes[2].order_id  # type: ignore[union-attr]
    assert outcomes[0].created and not outcomes[2].created  # type: ignore[union-attr]
    assert isinstance(outcomes[1], DomainError) and outcomes[1].field == "quantity"
    assert isinstance(outcomes[3], Conflict) and outcomes[3].field == "client_order_id"
    assert isinstance(outcomes[4], RiskRejection)
    placed = [n for n in app.recorder.select_notifications(start=before + 1, limit=100)
              if n.topic.endswith("Order.Placed")]
    assert len(placed) == 1
    assert app.get_order(first.order_id).quantity == 100


def test_a_cold_start_from_snapshots_sees_the_same_state(store_env, universe, sym) -> None:  # type: ignore[no-untyped-def]
    from aggregates.account import Account
    from aggregates.position import Position

    warm = make_app(store_env, universe, snapshot_interval=3)
    price = universe.get(sym).base_price
    seller, buyer = funded(warm, "s"), funded(warm, "b")
    give_shares(warm, seller, sym, 1000, price)
    for _ in range(5):
        place(warm, seller, sym, "sell", 100, price)
        place(warm, buyer, sym, "buy", 100, price)
    assert warm.snapshots is not None
    assert list(warm.snapshots.get(seller)), "no snapshot was taken"
    cold = make_app(store_env, universe, snapshot_interval=3)
    for kind in (Account, Position):
        for aggregate_id in warm.ids_of(kind):
            assert vars(cold.repository.get(aggregate_id)) == vars(
                warm.repository.get(aggregate_id))
    warm.close()
    cold.close()


def test_resubmission_from_another_process_is_idempotent(store_env, universe, sym) -> None:  # type: ignore[no-untyped-def]
    first = make_app(store_env, universe)
    price = universe.get(sym).base_price
    notional = price * 100 // 10
    # just enough for one order: a resubmission must not be refused for buying power
    buyer = funded(first, "again", cash=notional + FEES.commission(notional) + 1)
    placed = first.place_order(buyer, client_order_id="x1", symbol=sym, side="buy",
                               quantity=100, price=price, meta=meta())
    first.close()
    second = make_app(store_env, universe)  # a new process: nothing cached
    before = stored(second)
    again = second.place_order(buyer, client_order_id="x1", symbol=sym, side="buy",
                               quantity=100, price=price, meta=meta())
    assert (again.order_id, again.created) == (placed.order_id, False)
    assert second.get_order(placed.order_id).status is OrderStatus.WORKING
    third = make_app(store_env, universe)
    with pytest.raises(Conflict):
        third.place_order(buyer, client_order_id="x1", symbol=sym, side="buy", quantity=200,
                          price=price, meta=meta())
    assert stored(third) == before
    second.close()
    third.close()


def test_an_account_name_is_taken_once(app) -> None:  # type: ignore[no-untyped-def]
    funded(app, "taken")
    before = stored(app)
    with pytest.raises(Conflict) as err:
        app.open_account("taken", owner="someone-else", meta=meta())
    assert err.value.field == "name"
    assert stored(app) == before
