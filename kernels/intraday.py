"""Intraday agents trading against a replayed LOBSTER day: the Numba hot loop.

The LOBSTER messages drive the book exactly as :func:`kernels.lobster.replay_kernel`
does (the same :func:`kernels.lobster.apply_message` step, compared with and aligned to
the file after every message). Between messages, at the times of a schedule, an agent
acts on the book as it stood then: a TWAP buyer (or seller) sends marketable child
orders; a passive market maker places, keeps or moves one bid and one ask.

The simulation model (``docs/backtests.md``, "Intraday", says the same for users):

* **No market impact on the replay.** The day is history: the agents' orders never
  enter the replayed book, so every later message still finds the orders it names and
  the replay matches the file exactly as it does without agents. Agent orders are a
  tracked shadow of the book: a price, an open quantity and the queue ahead of them.
* **What agents see** is the file's depth (N levels per side): the replayed book's top
  N levels, which equal the file's row after each message. A price outside that view
  counts as an empty level.
* **Aggressive child orders** (TWAP) are marketable limit IOC orders: limit = the best
  opposite price +/- ``limit_ticks`` ticks; they take the visible levels best first up to
  that limit. What a child took is remembered per price (``taken``) and is not offered
  to a later child; history's executions at that price use it up (executions hit the
  front of the queue, which is where our take came from), and it never exceeds what the
  level shows. A child's arrival price is the mid when it is sent; the parent's is the
  mid at its first child. A child's unfilled part is carried into the next child; after the last
  child it is the parent's unfilled remainder.
* **Passive orders** (the maker's quotes) join the back of their level: the queue ahead
  is the level's visible quantity at that moment (0 at a price with no visible level).
  Then, message by message:

  1. an execution (type 4) at the quote's side and price of size q consumes the queue
     ahead first, then fills the quote with what is left of q;
  2. an execution on the quote's side at a worse price (an aggressor swept through the
     quote's price) fills the quote with q;
  3. a new order on the other side at a price reaching the quote (a sell at or below our
     bid) is the remainder of an aggressor that in our world would have traded with us:
     it fills the quote with its size;
  4. a cancellation or deletion (types 2, 3) at the quote's level reduces the queue ahead
     when the cancelled order was submitted (type 1) in the file at or before the
     message after which the quote joined, and does not when it was submitted later (it
     was behind us). An order the file never submitted (before 09:30, or placed out of
     view) cannot be placed in time: it is taken from behind the quote first
     (cancel-from-behind: the conservative choice, it never advances the quote on a
     guess); only what exceeds the quantity behind reduces the queue ahead;
  5. after every message the queue ahead is at most the level's visible quantity.

  Hidden executions (type 5) never fill an agent (conservative: their queue is unknown).
  Every fill is at the quote's own price, so an agent never trades at a price the book
  did not show (aggressive) or that it did not quote (passive).
* **Integers throughout**: prices in the file's units (dollars x 10,000), quantities in
  shares, times in nanoseconds after midnight; cash in price units x shares.

:mod:`kernels.intraday_reference` is the same model in plain Python over the file's
orderbook rows (not the replayed book); tests hold the two to identical fills.
"""

from __future__ import annotations

import numpy as np

from kernels.book import L_PRICE, L_QTY, NIL, S_LEVELS, kernel
from kernels.lobster import (
    M_DIRECTION,
    M_ORDER,
    M_PRICE,
    M_SIZE,
    M_TYPE,
    apply_message,
    seed_book,
)

# --- params (int64[PARAM_FIELDS]) -----------------------------------------------------
P_MODE, P_SIDE, P_LIMIT_TICKS, P_HALF_SPREAD, P_SIZE, P_INVENTORY_LIMIT, P_END_NS, P_TICK = range(8)
PARAM_FIELDS = 8
MODE_NONE, MODE_TWAP, MODE_MAKER = 0, 1, 2

# --- schedule rows: (time_ns, quantity); TWAP: child quantities, maker: 0 -------------
S_TIME, S_QTY = 0, 1

# --- quotes[six]: the maker's bid (0) and ask (1) -------------------------------------
Q_ACTIVE, Q_ID, Q_PRICE, Q_OPEN, Q_AHEAD, Q_JOIN_MESSAGE, Q_JOIN_NS, Q_ARRIVAL = range(8)
QUOTE_FIELDS = 8

# --- fills ----------------------------------------------------------------------------
(
    F_TIME_NS,
    F_MESSAGE,
    F_ORDER,
    F_SIDE,
    F_PRICE,
    F_QTY,
    F_RULE,
    F_QUEUE_NS,
    F_ARRIVAL,
    F_INVENTORY,
) = range(10)
FILL_FIELDS = 10
RULE_TAKE, RULE_QUEUE, RULE_THROUGH, RULE_CROSSED = 0, 1, 2, 3
RULE_NAMES = ("take", "queue", "through", "crossed")

# --- agent counters (int64[len(AGENT_COUNTER_NAMES)]) ---------------------------------
AGENT_COUNTER_NAMES = (
    "actions",
    "children",
    "carry",
    "no_book",
    "quotes_placed",
    "quotes_cancelled",
    "arrival",
    "fills",
    "inventory",
    "cash",
    "taken_levels",
    "taken_overflow",
    "next_id",
    "mark",
)
(
    A_ACTIONS,
    A_CHILDREN,
    A_CARRY,
    A_NO_BOOK,
    A_QUOTES_PLACED,
    A_QUOTES_CANCELLED,
    A_ARRIVAL,
    A_FILLS,
    A_INVENTORY,
    A_CASH,
    A_TAKEN_LEVELS,
    A_TAKEN_OVERFLOW,
    A_NEXT_ID,
    A_MARK,
) = range(len(AGENT_COUNTER_NAMES))
AGENT_ID_BASE = 1 << 56  # agent order ids: far from LOBSTER ids and replay placeholders


def submission_index(messages: np.ndarray) -> np.ndarray:
    """For each message, the index of the earlier message (1..i-1) that submitted its
    order id (type 1, first time the id appears), else NIL.

    Computed once per day with sorted arrays rather than with an id map in the hot loop:
    a day's ids spread over megabytes, so probing a map per message was most of the
    maker's cost; reading this array is sequential.
    """
    n = messages.shape[0]
    ids = messages[:, M_ORDER]
    submissions = np.flatnonzero(messages[:, M_TYPE] == 1)
    submissions = submissions[submissions >= 1]  # message 0 is folded into the seed
    if submissions.size == 0:
        return np.full(n, NIL, dtype=np.int64)
    order = np.argsort(ids[submissions], kind="stable")
    sorted_ids = ids[submissions][order]
    first = np.ones(sorted_ids.size, dtype=bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    known_ids, known_at = sorted_ids[first], submissions[order][first]
    pos = np.minimum(np.searchsorted(known_ids, ids), known_ids.size - 1)
    at = known_at[pos]
    found = (known_ids[pos] == ids) & (at < np.arange(n))
    return np.where(found, at, NIL).astype(np.int64)


@kernel
def view_level(book: tuple, six: int, k: int, depth: int) -> tuple[int, int]:
    """(price, quantity) of the ``k``-th best level of one side within the view, or (0, 0)."""
    levels, ladder, state = book[1], book[2], book[5]
    n = state[S_LEVELS + six]
    if k >= n or k >= depth:
        return 0, 0
    lv = ladder[six, n - 1 - k]
    return levels[lv, L_PRICE], levels[lv, L_QTY]


@kernel
def view_quantity(book: tuple, side: int, price: int, depth: int) -> int:
    """Visible quantity at (side, price) within the top ``depth`` levels (0 if none)."""
    six = 0 if side == 1 else 1
    for k in range(depth):
        p, q = view_level(book, six, k, depth)
        if q == 0:
            return 0
        if p == price:
            return q
        if (side == 1 and p < price) or (side == -1 and p > price):
            return 0
    return 0


@kernel
def _record_fill(
    fills: np.ndarray,
    agent: np.ndarray,
    t_ns: int,
    message: int,
    order_id: int,
    side: int,
    price: int,
    qty: int,
    rule: int,
    queue_ns: int,
    arrival: int,
) -> None:
    f = agent[A_FILLS]
    agent[A_INVENTORY] += side * qty
    agent[A_CASH] -= side * price * qty
    fills[f, F_TIME_NS] = t_ns
    fills[f, F_MESSAGE] = message
    fills[f, F_ORDER] = order_id
    fills[f, F_SIDE] = side
    fills[f, F_PRICE] = price
    fills[f, F_QTY] = qty
    fills[f, F_RULE] = rule
    fills[f, F_QUEUE_NS] = queue_ns
    fills[f, F_ARRIVAL] = arrival
    fills[f, F_INVENTORY] = agent[A_INVENTORY]
    agent[A_FILLS] = f + 1


@kernel
def _quote_fill(
    quotes: np.ndarray,
    six: int,
    fills: np.ndarray,
    agent: np.ndarray,
    t_ns: int,
    message: int,
    qty: int,
    rule: int,
) -> None:
    open_qty = quotes[six, Q_OPEN]
    take = qty if qty < open_qty else open_qty
    if take <= 0:
        return
    side = 1 if six == 0 else -1
    _record_fill(
        fills, agent, t_ns, message, quotes[six, Q_ID], side, quotes[six, Q_PRICE], take,
        rule, t_ns - quotes[six, Q_JOIN_NS], quotes[six, Q_ARRIVAL],
    )  # fmt: skip
    quotes[six, Q_OPEN] = open_qty - take
    if open_qty == take:
        quotes[six, Q_ACTIVE] = 0


@kernel
def _cancel_quote(quotes: np.ndarray, six: int, agent: np.ndarray) -> None:
    if quotes[six, Q_ACTIVE] == 1:
        quotes[six, Q_ACTIVE] = 0
        agent[A_QUOTES_CANCELLED] += 1


@kernel
def _place_quote(
    book: tuple,
    quotes: np.ndarray,
    six: int,
    price: int,
    size: int,
    message: int,
    t_ns: int,
    mid: int,
    agent: np.ndarray,
    depth: int,
) -> None:
    """Keep a live quote at the same price (its place in the queue); otherwise cancel
    it and join the back of the level at ``price``."""
    if size <= 0:
        _cancel_quote(quotes, six, agent)
        return
    if quotes[six, Q_ACTIVE] == 1 and quotes[six, Q_PRICE] == price:
        return
    _cancel_quote(quotes, six, agent)
    side = 1 if six == 0 else -1
    quotes[six, Q_ACTIVE] = 1
    quotes[six, Q_ID] = AGENT_ID_BASE + agent[A_NEXT_ID]
    agent[A_NEXT_ID] += 1
    quotes[six, Q_PRICE] = price
    quotes[six, Q_OPEN] = size
    quotes[six, Q_AHEAD] = view_quantity(book, side, price, depth)
    quotes[six, Q_JOIN_MESSAGE] = message
    quotes[six, Q_JOIN_NS] = t_ns
    quotes[six, Q_ARRIVAL] = mid
    agent[A_QUOTES_PLACED] += 1


@kernel
def _mid(book: tuple, depth: int) -> int:
    """Mid price (exact: both prices are on the tick grid of even units), or 0 when a
    side is empty."""
    bid, bid_qty = view_level(book, 0, 0, depth)
    ask, ask_qty = view_level(book, 1, 0, depth)
    if bid_qty == 0 or ask_qty == 0:
        return 0
    return (bid + ask) // 2


@kernel
def _maker_act(
    book: tuple,
    params: np.ndarray,
    t_ns: int,
    message: int,
    quotes: np.ndarray,
    agent: np.ndarray,
    depth: int,
) -> None:
    """Requote on the timer: bid/ask at mid -/+ half spread, never inside the touch nor
    beyond the view, sized so inventory stays within +/- the limit."""
    if t_ns >= params[P_END_NS]:
        _cancel_quote(quotes, 0, agent)
        _cancel_quote(quotes, 1, agent)
        return
    mid = _mid(book, depth)
    if mid == 0:
        _cancel_quote(quotes, 0, agent)
        _cancel_quote(quotes, 1, agent)
        agent[A_NO_BOOK] += 1
        return
    tick = params[P_TICK]
    half = params[P_HALF_SPREAD]
    best_bid = view_level(book, 0, 0, depth)[0]
    best_ask = view_level(book, 1, 0, depth)[0]
    bid = ((mid - half) // tick) * tick
    ask = -((-(mid + half)) // tick) * tick
    bid = min(bid, best_bid)
    ask = max(ask, best_ask)
    n_bid = min(depth, book[5][S_LEVELS + 0])
    n_ask = min(depth, book[5][S_LEVELS + 1])
    bid = max(bid, view_level(book, 0, n_bid - 1, depth)[0])
    ask = min(ask, view_level(book, 1, n_ask - 1, depth)[0])
    inventory = agent[A_INVENTORY]
    limit = params[P_INVENTORY_LIMIT]
    size = params[P_SIZE]
    _place_quote(book, quotes, 0, bid, min(size, limit - inventory), message, t_ns, mid,
                 agent, depth)  # fmt: skip
    _place_quote(book, quotes, 1, ask, min(size, limit + inventory), message, t_ns, mid,
                 agent, depth)  # fmt: skip


@kernel
def _taken_at(taken: np.ndarray, agent: np.ndarray, price: int) -> int:
    for e in range(agent[A_TAKEN_LEVELS]):
        if taken[e, 0] == price:
            return e
    return NIL


@kernel
def _twap_act(
    book: tuple,
    params: np.ndarray,
    t_ns: int,
    message: int,
    quantity: int,
    taken: np.ndarray,
    fills: np.ndarray,
    agent: np.ndarray,
    depth: int,
) -> None:
    """One child: a marketable limit IOC for this slice plus what earlier ones left."""
    side = params[P_SIDE]
    other = 1 if side == 1 else 0
    remaining = quantity + agent[A_CARRY]
    agent[A_CHILDREN] += 1
    mid = _mid(book, depth)  # the child's arrival price (0: a side is empty)
    if agent[A_ARRIVAL] == 0:
        agent[A_ARRIVAL] = mid  # the parent's: the mid at its first child
    best, best_qty = view_level(book, other, 0, depth)
    if best_qty == 0:
        agent[A_NO_BOOK] += 1
        agent[A_CARRY] = remaining
        return
    limit = best + side * params[P_LIMIT_TICKS] * params[P_TICK]
    order_id = AGENT_ID_BASE + agent[A_NEXT_ID]
    agent[A_NEXT_ID] += 1
    for k in range(depth):
        if remaining == 0:
            break
        price, qty = view_level(book, other, k, depth)
        if qty == 0 or (side == 1 and price > limit) or (side == -1 and price < limit):
            break
        e = _taken_at(taken, agent, price)
        used = 0 if e == NIL else taken[e, 1]
        take = min(qty - used, remaining)
        if take <= 0:
            continue
        if e == NIL:
            if agent[A_TAKEN_LEVELS] == taken.shape[0]:
                agent[A_TAKEN_OVERFLOW] += 1
                break
            e = agent[A_TAKEN_LEVELS]
            agent[A_TAKEN_LEVELS] = e + 1
            taken[e, 0] = price
            taken[e, 1] = 0
        taken[e, 1] += take
        remaining -= take
        _record_fill(fills, agent, t_ns, message, order_id, side, price, take, RULE_TAKE, 0,
                     mid)  # fmt: skip
    agent[A_CARRY] = remaining


@kernel
def _update_taken(
    book: tuple, params: np.ndarray, messages: np.ndarray, i: int, taken: np.ndarray,
    agent: np.ndarray, depth: int,
) -> None:  # fmt: skip
    """History's executions at a price use up what a child took there; what a child took
    never exceeds what the level shows; emptied entries leave the list."""
    other_side = -params[P_SIDE]
    if messages[i, M_TYPE] == 4 and messages[i, M_DIRECTION] == other_side:
        e = _taken_at(taken, agent, messages[i, M_PRICE])
        if e != NIL:
            taken[e, 1] = max(0, taken[e, 1] - messages[i, M_SIZE])
    e = 0
    while e < agent[A_TAKEN_LEVELS]:
        shown = view_quantity(book, other_side, taken[e, 0], depth)
        if taken[e, 1] > shown:
            taken[e, 1] = shown
        if taken[e, 1] == 0:
            last = agent[A_TAKEN_LEVELS] - 1
            taken[e, 0] = taken[last, 0]
            taken[e, 1] = taken[last, 1]
            agent[A_TAKEN_LEVELS] = last
            continue
        e += 1


@kernel
def _update_quotes(
    book: tuple,
    messages: np.ndarray,
    i: int,
    t_ns: int,
    before: int,
    stamp: int,
    quotes: np.ndarray,
    fills: np.ndarray,
    agent: np.ndarray,
    depth: int,
) -> None:
    """The queue rules 1-5 of the module doc, for message ``i`` (already applied)."""
    kind = messages[i, M_TYPE]
    size = messages[i, M_SIZE]
    price = messages[i, M_PRICE]
    side = messages[i, M_DIRECTION]
    six = 0 if side == 1 else 1
    if kind == 4 and quotes[six, Q_ACTIVE] == 1:
        quoted = quotes[six, Q_PRICE]
        if price == quoted:
            ahead = quotes[six, Q_AHEAD]
            used = min(size, ahead)
            quotes[six, Q_AHEAD] = ahead - used
            if size > used:
                _quote_fill(quotes, six, fills, agent, t_ns, i, size - used, RULE_QUEUE)
        elif (side == 1 and price < quoted) or (side == -1 and price > quoted):
            quotes[six, Q_AHEAD] = 0
            _quote_fill(quotes, six, fills, agent, t_ns, i, size, RULE_THROUGH)
    elif kind == 1:
        other = 1 - six
        if quotes[other, Q_ACTIVE] == 1:
            quoted = quotes[other, Q_PRICE]
            if (side == -1 and price <= quoted) or (side == 1 and price >= quoted):
                _quote_fill(quotes, other, fills, agent, t_ns, i, size, RULE_CROSSED)
    elif (kind == 2 or kind == 3) and quotes[six, Q_ACTIVE] == 1 and quotes[six, Q_PRICE] == price:
        ahead = quotes[six, Q_AHEAD]
        if stamp != NIL:
            if stamp <= quotes[six, Q_JOIN_MESSAGE]:
                ahead -= min(size, ahead)
        else:
            behind = max(0, before - ahead)
            if size > behind:
                ahead -= min(size - behind, ahead)
        quotes[six, Q_AHEAD] = ahead
    for q in range(2):
        if quotes[q, Q_ACTIVE] == 1:
            shown = view_quantity(book, 1 if q == 0 else -1, quotes[q, Q_PRICE], depth)
            if quotes[q, Q_AHEAD] > shown:
                quotes[q, Q_AHEAD] = shown


@kernel
def _act(
    book: tuple,
    params: np.ndarray,
    schedule: np.ndarray,
    k: int,
    message: int,
    quotes: np.ndarray,
    taken: np.ndarray,
    fills: np.ndarray,
    agent: np.ndarray,
    depth: int,
) -> None:
    agent[A_ACTIONS] += 1
    t_ns = schedule[k, S_TIME]
    if params[P_MODE] == MODE_TWAP:
        _twap_act(book, params, t_ns, message, schedule[k, S_QTY], taken, fills, agent, depth)
    elif params[P_MODE] == MODE_MAKER:
        _maker_act(book, params, t_ns, message, quotes, agent, depth)
        if t_ns >= params[P_END_NS] and agent[A_MARK] == 0:
            agent[A_MARK] = _mid(book, depth)


@kernel
def intraday_kernel(
    book: tuple,
    ev: np.ndarray,
    messages: np.ndarray,
    times_ns: np.ndarray,
    orderbook: np.ndarray,
    counts: np.ndarray,
    flags: np.ndarray,
    stamps: np.ndarray,
    params: np.ndarray,
    schedule: np.ndarray,
    quotes: np.ndarray,
    taken: np.ndarray,
    fills: np.ndarray,
    agent: np.ndarray,
) -> None:
    """Replay the day (as :func:`kernels.lobster.replay_kernel`) with one agent acting.

    Action ``k`` runs after every message timed at or before ``schedule[k, 0]`` and before
    the first one after it; actions timed after the last message run on the final book.
    ``stamps[i]`` is the index of the message that submitted message ``i``'s order, or
    NIL (see :func:`submission_index`): it decides rule 4 (ahead of or behind a quote).
    """
    depth = orderbook.shape[1] // 4
    mode = params[P_MODE]
    seed_book(book, orderbook)
    k = 0
    actions = schedule.shape[0]
    for i in range(1, messages.shape[0]):
        t_ns = times_ns[i]
        while k < actions and schedule[k, S_TIME] < t_ns:
            _act(book, params, schedule, k, i - 1, quotes, taken, fills, agent, depth)
            k += 1
        kind = messages[i, M_TYPE]
        before = 0
        stamp = NIL
        if mode == MODE_MAKER and (kind == 2 or kind == 3):
            six = 0 if messages[i, M_DIRECTION] == 1 else 1
            if quotes[six, Q_ACTIVE] == 1 and quotes[six, Q_PRICE] == messages[i, M_PRICE]:
                before = view_quantity(book, messages[i, M_DIRECTION], messages[i, M_PRICE],
                                       depth)  # fmt: skip
                stamp = stamps[i]
        apply_message(book, ev, messages, orderbook, i, counts, flags)
        if mode == MODE_MAKER:
            if quotes[0, Q_ACTIVE] == 1 or quotes[1, Q_ACTIVE] == 1:
                _update_quotes(book, messages, i, t_ns, before, stamp, quotes, fills, agent,
                               depth)  # fmt: skip
        elif mode == MODE_TWAP and agent[A_TAKEN_LEVELS] > 0:
            _update_taken(book, params, messages, i, taken, agent, depth)
    last_message = messages.shape[0] - 1
    while k < actions:
        _act(book, params, schedule, k, last_message, quotes, taken, fills, agent, depth)
        k += 1
    if mode == MODE_MAKER and agent[A_MARK] == 0:
        agent[A_MARK] = _mid(book, depth)
