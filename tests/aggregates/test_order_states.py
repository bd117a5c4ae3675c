"""The Order state machine: every action in every status is legal or an IllegalTransition."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from aggregates.base import Meta
from aggregates.errors import Conflict, IllegalTransition
from aggregates.order import Order, OrderStatus, OrderType, Side, TimeInForce

M = Meta.command("tester")


def new_order() -> Order:
    return Order.place(uuid.uuid4(), account_id=uuid.uuid4(), client_order_id="c",
                       symbol="7203", side=Side.BUY, order_type=OrderType.LIMIT,
                       tif=TimeInForce.DAY, quantity=300, price=25000, meta=M)


def in_status(status: OrderStatus) -> Order:
    order = new_order()
    if status is OrderStatus.PLACED:
        return order
    if status is OrderStatus.REJECTED:
        order.reject("quantity", "buying power", "no money", M)
        return order
    order.accept(100, 0, M)
    if status is OrderStatus.ACCEPTED:
        return order
    order.route(1, 2, M)
    if status is OrderStatus.WORKING:
        return order
    if status is OrderStatus.CANCELLED:
        order.cancel(300, "requested", M)
    elif status is OrderStatus.EXPIRED:
        order.expire(300, M)
    else:
        order.fill("x:1:0", 25000, 100, 250000, 0, "maker", M)
        if status is OrderStatus.FILLED:
            order.fill("x:2:0", 25000, 200, 500000, 0, "maker", M)
    assert order.status is status
    return order


ACTIONS: dict[str, Callable[[Order], Any]] = {
    "accept": lambda o: o.accept(0, 0, M),
    "reject": lambda o: o.reject("f", "r", "why", M),
    "route": lambda o: o.route(1, 2, M),
    "fill": lambda o: o.fill("y:9:0", 25000, 100, 250000, 0, "taker", M),
    "request_cancel": lambda o: o.request_cancel(M),
    "cancel": lambda o: o.cancel(100, "requested", M),
    "expire": lambda o: o.expire(100, M),
    "request_amend": lambda o: o.request_amend(200, 25000, M),
}
S = OrderStatus
LEGAL = {
    "accept": {S.PLACED},
    "reject": {S.PLACED},
    "route": {S.ACCEPTED},
    "fill": {S.WORKING, S.PARTIALLY_FILLED},
    "request_cancel": {S.PLACED, S.ACCEPTED, S.WORKING, S.PARTIALLY_FILLED},
    "cancel": {S.ACCEPTED, S.WORKING, S.PARTIALLY_FILLED},
    "expire": {S.WORKING, S.PARTIALLY_FILLED},
    "request_amend": {S.PLACED, S.ACCEPTED, S.WORKING, S.PARTIALLY_FILLED},
}


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_action_in_every_status(status: OrderStatus, action: str) -> None:
    order = in_status(status)
    version = order.version
    if status in LEGAL[action]:
        ACTIONS[action](order)
        assert order.version > version
    else:
        with pytest.raises(IllegalTransition) as err:
            ACTIONS[action](order)
        assert err.value.field == "status" and err.value.value == status.value
        assert order.version == version  # nothing recorded


def test_fill_rules() -> None:
    order = in_status(OrderStatus.PARTIALLY_FILLED)
    version = order.version
    assert order.fill("x:1:0", 25000, 100, 250000, 0, "maker", M) is False  # same execution
    with pytest.raises(Conflict):
        order.fill("x:5:0", 25000, 300, 750000, 0, "maker", M)  # more than is open
    assert order.version == version
    order.request_cancel(M)
    with pytest.raises(Conflict):
        order.request_cancel(M)  # one cancel at a time
    with pytest.raises(Conflict):
        order.request_amend(100, 25000, M)  # no amend while a cancel is pending
