"""Kernels that replay a LOBSTER NASDAQ order-book day through the matching book.

LOBSTER ships two files per day: ``message`` rows (time, type, order id, size, price,
direction) and ``orderbook`` rows (the top N levels after each message). Replaying the
messages into our book and comparing its top N levels with the file after *every*
message is a strict end-to-end check of the kernels' book keeping against a real
exchange's order flow. This module holds only the kernels over those arrays; reading
the files, timing and the ``python -m`` entry live in :mod:`streams.replay.lobster`.

How messages map to the kernels:

* 1 (submission): a NEW limit DAY order through :func:`kernels.matching.apply_command`;
* 2 (partial cancel): REDUCE; 3 (deletion): CANCEL;
* 4 (visible execution): :func:`kernels.matching.execute_resting` against the named order;
* 5 (hidden execution) and 7 (halt): no change to the visible book, skipped.

Prices are dollars x 10,000 and NASDAQ quotes this stock in whole cents, so the grid is
one band with a tick of 100 units: every submission is checked on tick (hidden
executions, which are skipped, are the only off-cent prices in the sample).

What the data cannot tell us, and how it is handled (all counted in ``counts``):

* The book before the first message is not given: it is seeded from orderbook row 0 as
  one *placeholder* order per level, and the replay starts at message 1.
* Orders from before 09:30 (and orders placed outside the N-level window, whose messages
  a level-N file omits) are referenced by id without ever being submitted. Such a
  reference takes its size from the placeholder at its (side, price).
* When levels move into view from beyond the previous row's N-level window, their size
  is unknowable from the messages: the mismatch is counted as ``window`` and the book is
  aligned to the file for those levels only (placeholders added or reduced). Any other
  mismatch is counted as ``unexplained`` (and also aligned, so one error is not counted
  on every later message).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.book import (
    L_PRICE,
    L_QTY,
    L_TAIL,
    NIL,
    O_LEVEL,
    O_QTY,
    S_EVENTS,
    S_LEVELS,
    BookArrays,
    hash_find,
    kernel,
    ladder_key,
    remove_order,
    rest_order,
    side_index,
)
from kernels.contract import TickBand
from kernels.matching import CANCEL, DAY, LIMIT, NEW, REDUCE, apply_command, execute_resting

# message columns
M_TYPE, M_ORDER, M_SIZE, M_PRICE, M_DIRECTION = range(5)
LOBSTER_TICK = 100  # one cent in dollars x 10,000
PLACEHOLDER_BASE = 1 << 52  # placeholder ids: far above any LOBSTER order id

# summary counters (index into the kernel's ``counts`` array)
COUNTER_NAMES = (
    "messages_compared",
    "mismatched_messages",
    "window_mismatches",
    "unexplained_mismatches",
    "placeholder_references",
    "substituted_references",
    "unresolved_references",
    "hidden_executions_skipped",
    "halts_skipped",
    "window_quantity_added",
    "window_quantity_removed",
    "rejected_submissions",
    "resized_references",
)
(
    C_COMPARED,
    C_MISMATCHED,
    C_WINDOW,
    C_UNEXPLAINED,
    C_PLACEHOLDER_REFS,
    C_SUBSTITUTED_REFS,
    C_UNRESOLVED_REFS,
    C_HIDDEN,
    C_HALTS,
    C_ADDED,
    C_REMOVED,
    C_REJECTED,
    C_RESIZED,
) = range(len(COUNTER_NAMES))


@njit(cache=True, inline="always")
def placeholder_id(side: int, price: int) -> int:
    return PLACEHOLDER_BASE + 2 * price + (1 if side == 1 else 0)


@kernel
def _level_at(book: tuple, side: int, price: int) -> int:
    """Level slot at (side, price), or NIL."""
    ladder, ladder_keys, state = book[2], book[3], book[5]
    six = side_index(side)
    key = ladder_key(six, price)
    lo = 0
    hi = state[S_LEVELS + six]
    while lo < hi:
        mid = (lo + hi) >> 1
        if ladder_keys[six, mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < state[S_LEVELS + six] and ladder_keys[six, lo] == key:
        return ladder[six, lo]
    return NIL


@kernel
def _add_placeholder(book: tuple, side: int, price: int, quantity: int) -> None:
    orders, levels, ladder, ladder_keys, id_map, state, _b = book
    pid = placeholder_id(side, price)
    slot = hash_find(id_map, pid)
    if slot == NIL:
        rest_order(
            orders, levels, ladder, ladder_keys, id_map, state,
            pid, side, price, quantity, 0, DAY,
        )  # fmt: skip
    else:
        orders[slot, O_QTY] += quantity
        levels[orders[slot, O_LEVEL], L_QTY] += quantity


@kernel
def _take_quantity(book: tuple, slot: int, quantity: int) -> int:
    """Remove up to ``quantity`` from one resting order; returns what was removed."""
    orders, levels, ladder, ladder_keys, id_map, state, _b = book
    open_qty = orders[slot, O_QTY]
    if quantity >= open_qty:
        remove_order(orders, levels, ladder, ladder_keys, id_map, state, slot)
        return open_qty
    orders[slot, O_QTY] = open_qty - quantity
    levels[orders[slot, O_LEVEL], L_QTY] -= quantity
    return quantity


@kernel
def _unknown_reference(book: tuple, side: int, price: int, quantity: int) -> int:
    """Serve a delete/cancel/execution of an order we never saw.

    Returns 1 when the placeholder at (side, price) covered it (an order from before
    09:30, or one placed out of view whose size arrived with a level coming into view),
    2 when other orders at that level had to cover it (out of view, one order was
    cancelled and another placed at the same level total, so ids swapped unseen), and 0
    when the level does not hold that much at all.
    """
    levels, id_map = book[1], book[4]
    lv = _level_at(book, side, price)
    if lv == NIL or levels[lv, L_QTY] < quantity:
        return 0
    left = quantity
    slot = hash_find(id_map, placeholder_id(side, price))
    if slot != NIL:
        left -= _take_quantity(book, slot, left)
    if left == 0:
        return 1
    while left > 0:
        lv = _level_at(book, side, price)
        left -= _take_quantity(book, levels[lv, L_TAIL], left)
    return 2


@kernel
def _set_level(book: tuple, side: int, price: int, target: int, counts: np.ndarray) -> None:
    """Make the level at (side, price) hold ``target``: placeholders absorb the change
    first, then the newest real orders are trimmed (cancelled while out of view)."""
    levels = book[1]
    lv = _level_at(book, side, price)
    have = 0 if lv == NIL else levels[lv, L_QTY]
    if target > have:
        _add_placeholder(book, side, price, target - have)
        counts[C_ADDED] += target - have
        return
    excess = have - target
    counts[C_REMOVED] += excess
    pslot = hash_find(book[4], placeholder_id(side, price))
    if pslot != NIL:
        excess -= _take_quantity(book, pslot, excess)
    while excess > 0:
        lv = _level_at(book, side, price)
        slot = levels[lv, L_TAIL]
        excess -= _take_quantity(book, slot, excess)


@kernel
def _compare_side(book: tuple, row: np.ndarray, six: int, depth: int) -> bool:
    """Whether our top ``depth`` levels on one side equal the file's row."""
    levels, ladder, state = book[1], book[2], book[5]
    n = state[S_LEVELS + six]
    col = 0 if six == 1 else 2  # asks: columns 0/1, bids: 2/3
    for k in range(depth):
        file_qty = row[4 * k + col + 1]
        if k < n:
            lv = ladder[six, n - 1 - k]
            if file_qty == 0 or row[4 * k + col] != levels[lv, L_PRICE]:
                return False
            if levels[lv, L_QTY] != file_qty:
                return False
        elif file_qty != 0:
            return False
    return True


@kernel
def _align_side(
    book: tuple, prev: np.ndarray, row: np.ndarray, six: int, depth: int, counts: np.ndarray
) -> bool:
    """Align one side with the file; True when every difference lay beyond the previous
    row's window (levels whose messages a level-N file does not carry)."""
    levels, ladder, state = book[1], book[2], book[5]
    side = 1 if six == 0 else -1
    col = 0 if six == 1 else 2
    prev_full = prev[4 * (depth - 1) + col + 1] != 0
    edge = prev[4 * (depth - 1) + col]  # worst visible price in the previous row
    explained = True
    # our visible levels the file does not show: cancelled (or never known) out of view
    n = state[S_LEVELS + six]
    file_worst_known = row[4 * (depth - 1) + col + 1] != 0
    file_worst = row[4 * (depth - 1) + col]
    k = 0
    while k < min(depth, n):
        lv = ladder[six, n - 1 - k]
        price = levels[lv, L_PRICE]
        if file_worst_known and (price < file_worst if side == 1 else price > file_worst):
            break
        present = False
        for j in range(depth):
            if row[4 * j + col + 1] != 0 and row[4 * j + col] == price:
                present = True
                break
        if not present:
            beyond = prev_full and (price < edge if side == 1 else price > edge)
            explained = explained and beyond
            _set_level(book, side, price, 0, counts)
            n = state[S_LEVELS + six]
            continue
        k += 1
    for j in range(depth):
        file_qty = row[4 * j + col + 1]
        if file_qty == 0:
            break
        price = row[4 * j + col]
        lv = _level_at(book, side, price)
        have = 0 if lv == NIL else levels[lv, L_QTY]
        if have != file_qty:
            beyond = prev_full and (price < edge if side == 1 else price > edge)
            explained = explained and beyond
            _set_level(book, side, price, file_qty, counts)
    return explained


@kernel
def seed_book(book: tuple, orderbook: np.ndarray) -> None:
    """One placeholder order per level of orderbook row 0 (the book before message 1)."""
    depth = orderbook.shape[1] // 4
    row0 = orderbook[0]
    for k in range(depth):
        if row0[4 * k + 1] > 0:
            _add_placeholder(book, -1, row0[4 * k], row0[4 * k + 1])
        if row0[4 * k + 3] > 0:
            _add_placeholder(book, 1, row0[4 * k + 2], row0[4 * k + 3])


@kernel
def apply_message(
    book: tuple,
    ev: np.ndarray,
    messages: np.ndarray,
    orderbook: np.ndarray,
    i: int,
    counts: np.ndarray,
    flags: np.ndarray,
) -> None:
    """Apply message ``i`` to the book, then compare with (and align to) orderbook row ``i``.

    One step of :func:`replay_kernel`, apart so that drivers which act between messages
    (the intraday agents of :mod:`kernels.intraday`) replay the book exactly as it does.
    """
    orders, state = book[0], book[5]
    depth = orderbook.shape[1] // 4
    state[S_EVENTS] = 0
    kind = messages[i, M_TYPE]
    oid = messages[i, M_ORDER]
    size = messages[i, M_SIZE]
    price = messages[i, M_PRICE]
    side = messages[i, M_DIRECTION]
    if kind == 1:
        apply_command(book, ev, NEW, oid, side, LIMIT, DAY, price, size, 0)
        if ev[0, 0] == 6:
            counts[C_REJECTED] += 1
    elif kind == 2 or kind == 3 or kind == 4:
        # the message's size is what leaves the level; which order it came from is
        # best effort when out-of-view events blurred the ids (see module doc)
        slot = hash_find(book[4], oid)
        if slot == NIL:
            served = _unknown_reference(book, side, price, size)
            if served == 1:
                counts[C_PLACEHOLDER_REFS] += 1
            elif served == 2:
                counts[C_SUBSTITUTED_REFS] += 1
            else:
                counts[C_UNRESOLVED_REFS] += 1
        else:
            open_qty = orders[slot, O_QTY]
            taken = size if size < open_qty else open_qty
            if kind == 2:
                apply_command(book, ev, REDUCE, oid, side, LIMIT, DAY, price, taken, 0)
            elif kind == 3:
                apply_command(book, ev, CANCEL, oid, side, LIMIT, DAY, price, size, 0)
                if open_qty > size:  # ours held more: someone else's, unseen
                    _add_placeholder(book, side, price, open_qty - size)
            else:
                execute_resting(book, ev, oid, taken)
            if open_qty != size and (kind == 3 or size > open_qty):
                counts[C_RESIZED] += 1
                if size > open_qty and _unknown_reference(book, side, price, size - taken) == 0:
                    counts[C_UNRESOLVED_REFS] += 1
    elif kind == 5:
        counts[C_HIDDEN] += 1
    else:
        counts[C_HALTS] += 1
    counts[C_COMPARED] += 1
    row = orderbook[i]
    if _compare_side(book, row, 0, depth) and _compare_side(book, row, 1, depth):
        return
    counts[C_MISMATCHED] += 1
    prev = orderbook[i - 1]
    explained = _align_side(book, prev, row, 0, depth, counts)
    explained = _align_side(book, prev, row, 1, depth, counts) and explained
    if explained:
        counts[C_WINDOW] += 1
        flags[i] = 1
    else:
        counts[C_UNEXPLAINED] += 1
        flags[i] = 2


@kernel
def replay_kernel(
    book: tuple,
    ev: np.ndarray,
    messages: np.ndarray,
    orderbook: np.ndarray,
    counts: np.ndarray,
    flags: np.ndarray,
) -> None:
    """Seed from row 0, then apply messages 1.. and compare after each (see module doc).

    ``flags[i]``: 0 match, 1 window mismatch, 2 unexplained mismatch after message ``i``.
    """
    seed_book(book, orderbook)
    for i in range(1, messages.shape[0]):
        apply_message(book, ev, messages, orderbook, i, counts, flags)


def new_book(messages: np.ndarray, levels: int) -> BookArrays:
    """An empty book sized for the whole day (the replay loop never grows it)."""
    submissions = int((messages[:, M_TYPE] == 1).sum())
    capacity = submissions + 4 * levels * 2 + 64
    return BookArrays.allocate(
        (TickBand(upper=1 << 62, tick=LOBSTER_TICK),), LOBSTER_TICK, 1 << 62, False, capacity
    )


def replay_buffers(book: BookArrays, messages: np.ndarray) -> tuple[np.ndarray, ...]:
    """The scratch arrays :func:`replay_kernel` writes: events, ``counts`` and ``flags``."""
    ev = np.zeros((book.orders.shape[0] + 8, 11), dtype=np.int64)
    counts = np.zeros(len(COUNTER_NAMES), dtype=np.int64)
    flags = np.zeros(messages.shape[0], dtype=np.int8)
    return ev, counts, flags
