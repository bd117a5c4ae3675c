"""The intraday agents' simulation model in plain Python: the reference for the kernel.

:mod:`kernels.intraday` states the model and runs it in Numba over the replayed book.
This module runs the same rules written for reading, over the *file's* orderbook rows
(row ``i`` is the book after message ``i``) instead of the replayed book: the replay
equals those rows within the view after every message, so the two must produce the same
fills, fill for fill. A disagreement is a bug in one of them (or a replay that left the
file), which is what the equivalence tests are for.

It takes and returns the kernel's integer layouts (``params``, ``schedule``, fill rows
with the ``F_*`` columns, the agent counters) so tests compare them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernels.intraday import (
    AGENT_COUNTER_NAMES,
    AGENT_ID_BASE,
    MODE_MAKER,
    MODE_TWAP,
    P_END_NS,
    P_HALF_SPREAD,
    P_INVENTORY_LIMIT,
    P_LIMIT_TICKS,
    P_MODE,
    P_SIDE,
    P_SIZE,
    P_TICK,
    RULE_CROSSED,
    RULE_QUEUE,
    RULE_TAKE,
    RULE_THROUGH,
)


class View:
    """One orderbook row as the agents see it: (price, quantity) levels, best first."""

    def __init__(self, row: list[int]) -> None:
        depth = len(row) // 4
        self.asks = [(row[4 * k], row[4 * k + 1]) for k in range(depth) if row[4 * k + 1] > 0]
        self.bids = [(row[4 * k + 2], row[4 * k + 3]) for k in range(depth) if row[4 * k + 3] > 0]

    def side(self, side: int) -> list[tuple[int, int]]:
        return self.bids if side == 1 else self.asks

    def quantity(self, side: int, price: int) -> int:
        return next((q for p, q in self.side(side) if p == price), 0)

    def mid(self) -> int:
        if not self.bids or not self.asks:
            return 0
        return (self.bids[0][0] + self.asks[0][0]) // 2


@dataclass
class Quote:
    order_id: int
    side: int
    price: int
    open: int
    ahead: int
    join_message: int
    join_ns: int
    arrival: int


@dataclass
class Agent:
    params: list[int]
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGENT_COUNTER_NAMES, 0))
    fills: list[tuple[int, ...]] = field(default_factory=list)
    quotes: dict[int, Quote] = field(default_factory=dict)  # side -> live quote
    taken: dict[int, int] = field(default_factory=dict)  # price -> shares taken by children

    def next_id(self) -> int:
        self.counters["next_id"] += 1
        return AGENT_ID_BASE + self.counters["next_id"] - 1

    def fill(self, t_ns: int, message: int, order_id: int, side: int, price: int, qty: int,
             rule: int, queue_ns: int, arrival: int) -> None:  # fmt: skip
        self.counters["inventory"] += side * qty
        self.counters["cash"] -= side * price * qty
        self.counters["fills"] += 1
        self.fills.append((t_ns, message, order_id, side, price, qty, rule, queue_ns, arrival,
                           self.counters["inventory"]))  # fmt: skip

    def fill_quote(self, quote: Quote, t_ns: int, message: int, qty: int, rule: int) -> None:
        take = min(qty, quote.open)
        if take <= 0:
            return
        self.fill(t_ns, message, quote.order_id, quote.side, quote.price, take, rule,
                  t_ns - quote.join_ns, quote.arrival)  # fmt: skip
        quote.open -= take
        if quote.open == 0:
            del self.quotes[quote.side]

    def cancel(self, side: int) -> None:
        if self.quotes.pop(side, None) is not None:
            self.counters["quotes_cancelled"] += 1

    # ------------------------------------------------------------------ the maker
    def requote(self, view: View, t_ns: int, message: int) -> None:
        p = self.params
        if t_ns >= p[P_END_NS]:
            self.cancel(1)
            self.cancel(-1)
            return
        mid = view.mid()
        if mid == 0:
            self.cancel(1)
            self.cancel(-1)
            self.counters["no_book"] += 1
            return
        tick, half = p[P_TICK], p[P_HALF_SPREAD]
        bid = ((mid - half) // tick) * tick  # round away from the mid, onto the grid
        ask = -((-(mid + half)) // tick) * tick
        bid = max(min(bid, view.bids[0][0]), view.bids[-1][0])  # not inside, not beyond view
        ask = min(max(ask, view.asks[0][0]), view.asks[-1][0])
        inventory, limit = self.counters["inventory"], p[P_INVENTORY_LIMIT]
        self.place(view, 1, bid, min(p[P_SIZE], limit - inventory), message, t_ns, mid)
        self.place(view, -1, ask, min(p[P_SIZE], limit + inventory), message, t_ns, mid)

    def place(self, view: View, side: int, price: int, size: int, message: int, t_ns: int,
              mid: int) -> None:  # fmt: skip
        live = self.quotes.get(side)
        if size <= 0:
            self.cancel(side)
            return
        if live is not None and live.price == price:
            return  # same price: keep the place in the queue
        self.cancel(side)
        self.quotes[side] = Quote(self.next_id(), side, price, size,
                                  view.quantity(side, price), message, t_ns, mid)  # fmt: skip
        self.counters["quotes_placed"] += 1

    def on_message(self, message: list[int], i: int, t_ns: int, before: View,
                   after: View, submitted: dict[int, int]) -> None:  # fmt: skip
        kind, order_id, size, price, side = message
        live = self.quotes.get(side)
        if kind == 4 and live is not None:
            if price == live.price:  # rule 1: the queue ahead first, then us
                used = min(size, live.ahead)
                live.ahead -= used
                if size > used:
                    self.fill_quote(live, t_ns, i, size - used, RULE_QUEUE)
            elif (price - live.price) * side < 0:  # rule 2: swept through our price
                live.ahead = 0
                self.fill_quote(live, t_ns, i, size, RULE_THROUGH)
        elif kind == 1:  # rule 3: a resting remainder that reaches our price on the other side
            other = self.quotes.get(-side)
            if other is not None and (price - other.price) * side >= 0:
                self.fill_quote(other, t_ns, i, size, RULE_CROSSED)
        elif kind in (2, 3) and live is not None and live.price == price:  # rule 4
            stamp = submitted.get(order_id)
            if stamp is not None:
                if stamp <= live.join_message:  # it was there when we joined: ahead of us
                    live.ahead -= min(size, live.ahead)
            else:  # unknown age: cancel from behind first
                behind = max(0, before.quantity(side, price) - live.ahead)
                live.ahead -= min(max(0, size - behind), live.ahead)
        for quote in self.quotes.values():  # rule 5
            quote.ahead = min(quote.ahead, after.quantity(quote.side, quote.price))

    # ------------------------------------------------------------------ the TWAP
    def child(self, view: View, t_ns: int, message: int, quantity: int) -> None:
        p = self.params
        side = p[P_SIDE]
        remaining = quantity + self.counters["carry"]
        self.counters["children"] += 1
        mid = view.mid()  # the child's arrival price; the parent's is its first child's
        if self.counters["arrival"] == 0:
            self.counters["arrival"] = mid
        levels = view.side(-side)
        if not levels:
            self.counters["no_book"] += 1
            self.counters["carry"] = remaining
            return
        limit = levels[0][0] + side * p[P_LIMIT_TICKS] * p[P_TICK]
        order_id = self.next_id()
        for price, qty in levels:
            if remaining == 0 or (price - limit) * side > 0:
                break
            take = min(qty - self.taken.get(price, 0), remaining)
            if take <= 0:
                continue
            self.taken[price] = self.taken.get(price, 0) + take
            remaining -= take
            self.fill(t_ns, message, order_id, side, price, take, RULE_TAKE, 0, mid)
        self.counters["carry"] = remaining

    def after_message(self, message: list[int], after: View) -> None:
        kind, _order_id, size, price, side = message
        other = -self.params[P_SIDE]
        if kind == 4 and side == other and price in self.taken:
            self.taken[price] = max(0, self.taken[price] - size)
        for level in list(self.taken):
            self.taken[level] = min(self.taken[level], after.quantity(other, level))
            if self.taken[level] == 0:
                del self.taken[level]


def run_reference(
    messages: np.ndarray,
    times_ns: np.ndarray,
    orderbook: np.ndarray,
    params: np.ndarray,
    schedule: np.ndarray,
) -> tuple[list[tuple[int, ...]], dict[str, int]]:
    """Fill rows and agent counters for the day, as :func:`kernels.intraday.intraday_kernel`."""
    rows = orderbook.tolist()
    msgs = messages.tolist()
    times = times_ns.tolist()
    plan = schedule.tolist()
    agent = Agent(params.tolist())
    mode = agent.params[P_MODE]
    submitted: dict[int, int] = {}
    k = 0

    def act(view: View, message: int) -> None:
        nonlocal k
        t_ns, quantity = plan[k]
        agent.counters["actions"] += 1
        if mode == MODE_TWAP:
            agent.child(view, t_ns, message, quantity)
        elif mode == MODE_MAKER:
            agent.requote(view, t_ns, message)
            if t_ns >= agent.params[P_END_NS] and agent.counters["mark"] == 0:
                agent.counters["mark"] = view.mid()
        k += 1

    view = View(rows[0])
    for i in range(1, len(msgs)):
        while k < len(plan) and plan[k][0] < times[i]:
            act(view, i - 1)
        after = View(rows[i])
        if msgs[i][0] == 1:
            submitted.setdefault(msgs[i][1], i)
        if mode == MODE_MAKER:
            agent.on_message(msgs[i], i, times[i], view, after, submitted)
        elif mode == MODE_TWAP:
            agent.after_message(msgs[i], after)
        view = after
    while k < len(plan):
        act(view, len(msgs) - 1)
    if mode == MODE_MAKER and agent.counters["mark"] == 0:
        agent.counters["mark"] = view.mid()
    agent.counters["taken_levels"] = len(agent.taken)  # prices still held as taken
    return agent.fills, agent.counters
