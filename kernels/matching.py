"""Matching kernels: commands in, events out, over the book arrays of ``kernels.book``.

These are the Numba twins of ``kernels.reference.ReferenceEngine`` and follow its rules
line for line (see that module's docstring for the validation order and the time-in-force
and self-trade rules); property tests hold the two to identical event streams.

A book travels as one tuple ``(orders, levels, ladder, ladder_keys, id_map,
state, bands)`` (see :func:`book_tuple`). Commands are ``int64[n, COMMAND_FIELDS]`` rows
and events ``int64[m, EVENT_FIELDS]`` rows laid out like ``kernels.contract.Command`` and
``Event``. :func:`run_batch` walks a command array without returning to Python; before
each command it checks that the worst case fits (a free order slot, a free level slot,
event rows for a sweep of every resting order) and otherwise stops and says what to grow.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

from kernels.book import (
    L_HEAD,
    L_PRICE,
    L_QTY,
    L_SIDE,
    NIL,
    O_ID,
    O_LEVEL,
    O_NEXT,
    O_OWNER,
    O_PRICE,
    O_QTY,
    O_TIF,
    S_EVENTS,
    S_FREE_LEVEL,
    S_FREE_ORDER,
    S_LEVELS,
    S_RESTING,
    S_SEQ,
    S_STP,
    BookArrays,
    grid_reason,
    hash_find,
    inlined_kernel,
    kernel,
    link_order,
    release_slot,
    remove_order,
    rest_order,
    side_index,
    unlink_order,
)

# --- command rows (kernels.contract.Command) ------------------------------------------
C_KIND, C_ORDER, C_SIDE, C_TYPE, C_TIF, C_PRICE, C_QTY, C_OWNER = range(8)
COMMAND_FIELDS = 8
# --- event rows (kernels.contract.Event) ----------------------------------------------
(
    E_KIND,
    E_SEQ,
    E_ORDER,
    E_MAKER,
    E_SIDE,
    E_PRICE,
    E_QTY,
    E_REMAINING,
    E_MAKER_REMAINING,
    E_FILL_INDEX,
    E_REASON,
) = range(11)
EVENT_FIELDS = 11

# contract enums as plain ints (Numba compiles these as constants)
NEW, CANCEL, REDUCE, AMEND = 0, 1, 2, 3
LIMIT, MARKET = 0, 1
DAY, GTC, IOC, FOK = 0, 1, 2, 3
EV_ACCEPTED, EV_FILL, EV_RESTED, EV_CANCELLED, EV_REDUCED, EV_AMENDED, EV_REJECTED = range(7)
R_NONE, R_REQUESTED, R_IOC_REMAINDER, R_FOK_UNFILLABLE, R_NO_LIQUIDITY, R_SELF_TRADE = range(6)
R_UNKNOWN_ORDER, R_BAD_QUANTITY, R_OFF_TICK, R_OUT_OF_RANGE, R_DUPLICATE_ID = 10, 11, 12, 13, 14
R_BAD_COMMAND = 15

# run_batch status: why the batch stopped before the end
DONE, NEED_ORDERS, NEED_LEVELS, NEED_EVENTS = 0, 1, 2, 3


def book_tuple(book: BookArrays) -> tuple[np.ndarray, ...]:
    """The arrays in the order every kernel unpacks them."""
    return (
        book.orders,
        book.levels,
        book.ladder,
        book.ladder_keys,
        book.id_map,
        book.state,
        book.bands,
    )


@intrinsic
def cycle_counter(typingctx):  # type: ignore[no-untyped-def]
    """The CPU's cycle counter (x86 TSC): per-op timing inside a batch for ~20 cycles."""
    sig = types.int64()

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=fnty)
        return builder.call(fn, [])

    return sig, codegen


@inlined_kernel
def _emit(
    ev: np.ndarray,
    state: np.ndarray,
    kind: int,
    order_id: int,
    maker_id: int,
    side: int,
    price: int,
    quantity: int,
    remaining: int,
    maker_remaining: int,
    fill_index: int,
    reason: int,
) -> None:
    r = state[S_EVENTS]
    ev[r, E_KIND] = kind
    ev[r, E_SEQ] = state[S_SEQ]
    ev[r, E_ORDER] = order_id
    ev[r, E_MAKER] = maker_id
    ev[r, E_SIDE] = side
    ev[r, E_PRICE] = price
    ev[r, E_QTY] = quantity
    ev[r, E_REMAINING] = remaining
    ev[r, E_MAKER_REMAINING] = maker_remaining
    ev[r, E_FILL_INDEX] = fill_index
    ev[r, E_REASON] = reason
    state[S_EVENTS] = r + 1


@inlined_kernel
def _reject(
    ev: np.ndarray, state: np.ndarray, order_id: int, side: int, price: int, qty: int, reason: int
) -> None:
    shown_side = side if side == 1 or side == -1 else 1
    _emit(ev, state, EV_REJECTED, order_id, 0, shown_side, price, qty, 0, 0, 0, reason)


@inlined_kernel
def _crosses(side: int, is_market: bool, limit: int, level_price: int) -> bool:
    if is_market:
        return True
    if side == 1:
        return level_price <= limit
    return level_price >= limit


@inlined_kernel
def _fillable(
    book: tuple, side: int, is_market: bool, limit: int, quantity: int, owner: int
) -> bool:
    """FOK pre-check: walk the other side in priority order exactly as matching would."""
    orders, levels, ladder, _lk, _im, state, _b = book
    other = 1 - side_index(side)
    stp = state[S_STP] == 1 and owner != 0
    needed = quantity
    for i in range(state[S_LEVELS + other] - 1, -1, -1):
        lv = ladder[other, i]
        if not _crosses(side, is_market, limit, levels[lv, L_PRICE]):
            return False
        if not stp:
            needed -= levels[lv, L_QTY]
            if needed <= 0:
                return True
            continue
        slot = levels[lv, L_HEAD]
        while slot != NIL:
            if orders[slot, O_OWNER] == owner:
                return False
            needed -= orders[slot, O_QTY]
            if needed <= 0:
                return True
            slot = orders[slot, O_NEXT]
    return False


@inlined_kernel
def _enter(
    book: tuple,
    ev: np.ndarray,
    order_id: int,
    side: int,
    is_market: bool,
    price: int,
    quantity: int,
    owner: int,
    tif: int,
    slot: int,
) -> None:
    """An aggressor: match, then rest or cancel the remainder.

    ``slot`` is NIL for a new order, or the unlinked slot of an order amended to a new
    price: it keeps its slot and id-map entry and is relinked (or released) at the end.
    """
    orders, levels, ladder, ladder_keys, id_map, state, _b = book
    other = 1 - side_index(side)
    if is_market and state[S_LEVELS + other] == 0:
        _emit(ev, state, EV_CANCELLED, order_id, 0, side, price, quantity, 0, 0, 0, R_NO_LIQUIDITY)
        return
    if tif == FOK and not _fillable(book, side, is_market, price, quantity, owner):
        _emit(
            ev, state, EV_CANCELLED, order_id, 0, side, price, quantity, 0, 0, 0, R_FOK_UNFILLABLE
        )
        return
    stp = state[S_STP] == 1 and owner != 0
    remaining = quantity
    fill_index = 0
    while remaining > 0:
        n = state[S_LEVELS + other]
        if n == 0:
            break
        lv = ladder[other, n - 1]
        level_price = levels[lv, L_PRICE]
        if not _crosses(side, is_market, price, level_price):
            break
        maker = levels[lv, L_HEAD]
        if stp and orders[maker, O_OWNER] == owner:
            _emit(
                ev, state, EV_CANCELLED, order_id, 0, side, price, remaining, 0, 0, 0, R_SELF_TRADE
            )
            if slot != NIL:
                release_slot(orders, id_map, state, slot)
            return
        maker_qty = orders[maker, O_QTY]
        traded = remaining if remaining < maker_qty else maker_qty
        remaining -= traded
        maker_qty -= traded
        _emit(
            ev,
            state,
            EV_FILL,
            order_id,
            orders[maker, O_ID],
            side,
            level_price,
            traded,
            remaining,
            maker_qty,
            fill_index,
            R_NONE,
        )
        fill_index += 1
        if maker_qty == 0:
            remove_order(
                orders, levels, ladder, ladder_keys, id_map, state, maker
            )  # takes the maker's pre-trade quantity (= traded) off its level
        else:
            orders[maker, O_QTY] = maker_qty
            levels[lv, L_QTY] -= traded
    if remaining == 0:
        if slot != NIL:
            release_slot(orders, id_map, state, slot)
        return
    if is_market or tif in (IOC, FOK):  # only new orders: amended ones are DAY/GTC
        _emit(
            ev, state, EV_CANCELLED, order_id, 0, side, price, remaining, 0, 0, 0, R_IOC_REMAINDER
        )
        return
    if slot == NIL:
        rest_order(
            orders,
            levels,
            ladder,
            ladder_keys,
            id_map,
            state,
            order_id,
            side,
            price,
            remaining,
            owner,
            tif,
        )
    else:
        orders[slot, O_PRICE] = price
        orders[slot, O_QTY] = remaining
        link_order(orders, levels, ladder, ladder_keys, state, slot, side)
    _emit(ev, state, EV_RESTED, order_id, 0, side, price, remaining, remaining, 0, 0, R_NONE)


@inlined_kernel
def apply_command(
    book: tuple,
    ev: np.ndarray,
    kind: int,
    order_id: int,
    side: int,
    order_type: int,
    tif: int,
    price: int,
    quantity: int,
    owner: int,
) -> None:
    """Apply one command: the symbol's next sequence number, then its events."""
    orders, levels, ladder, ladder_keys, id_map, state, bands = book
    state[S_SEQ] += 1
    if kind < NEW or kind > AMEND or order_id <= 0:
        _reject(ev, state, order_id, side, price, quantity, R_BAD_COMMAND)
        return
    if kind == NEW:
        if (
            (side != 1 and side != -1)
            or order_type < LIMIT
            or order_type > MARKET
            or tif < DAY
            or tif > FOK
        ):
            _reject(ev, state, order_id, side, price, quantity, R_BAD_COMMAND)
            return
        if quantity <= 0:
            _reject(ev, state, order_id, side, price, quantity, R_BAD_QUANTITY)
            return
        is_market = order_type == MARKET
        if not is_market:
            reason = grid_reason(bands, state, price)
            if reason != 0:
                _reject(ev, state, order_id, side, price, quantity, reason)
                return
        if hash_find(id_map, order_id) != NIL:
            _reject(ev, state, order_id, side, price, quantity, R_DUPLICATE_ID)
            return
        limit = 0 if is_market else price
        _emit(ev, state, EV_ACCEPTED, order_id, 0, side, limit, quantity, quantity, 0, 0, R_NONE)
        _enter(book, ev, order_id, side, is_market, limit, quantity, owner, tif, NIL)
        return
    if kind == CANCEL:
        slot = hash_find(id_map, order_id)
        if slot == NIL:
            _reject(ev, state, order_id, side, price, quantity, R_UNKNOWN_ORDER)
            return
        open_qty = orders[slot, O_QTY]
        resting_side = levels[orders[slot, O_LEVEL], L_SIDE]
        resting_price = orders[slot, O_PRICE]
        remove_order(orders, levels, ladder, ladder_keys, id_map, state, slot)
        _emit(
            ev,
            state,
            EV_CANCELLED,
            order_id,
            0,
            resting_side,
            resting_price,
            open_qty,
            0,
            0,
            0,
            R_REQUESTED,
        )
        return
    if quantity <= 0:
        _reject(ev, state, order_id, side, price, quantity, R_BAD_QUANTITY)
        return
    if kind == REDUCE:
        slot = hash_find(id_map, order_id)
        if slot == NIL:
            _reject(ev, state, order_id, side, price, quantity, R_UNKNOWN_ORDER)
            return
        open_qty = orders[slot, O_QTY]
        if quantity > open_qty:
            _reject(ev, state, order_id, side, price, quantity, R_BAD_QUANTITY)
            return
        resting_side = levels[orders[slot, O_LEVEL], L_SIDE]
        resting_price = orders[slot, O_PRICE]
        if quantity == open_qty:
            remove_order(orders, levels, ladder, ladder_keys, id_map, state, slot)
        else:
            orders[slot, O_QTY] = open_qty - quantity
            levels[orders[slot, O_LEVEL], L_QTY] -= quantity
        _emit(
            ev,
            state,
            EV_REDUCED,
            order_id,
            0,
            resting_side,
            resting_price,
            quantity,
            open_qty - quantity,
            0,
            0,
            R_NONE,
        )
        return
    # AMEND
    reason = grid_reason(bands, state, price)
    if reason != 0:
        _reject(ev, state, order_id, side, price, quantity, reason)
        return
    slot = hash_find(id_map, order_id)
    if slot == NIL:
        _reject(ev, state, order_id, side, price, quantity, R_UNKNOWN_ORDER)
        return
    lv = orders[slot, O_LEVEL]
    resting_side = levels[lv, L_SIDE]
    open_qty = orders[slot, O_QTY]
    owner_of = orders[slot, O_OWNER]
    tif_of = orders[slot, O_TIF]
    _emit(ev, state, EV_AMENDED, order_id, 0, resting_side, price, quantity, quantity, 0, 0, 0)
    if price == orders[slot, O_PRICE] and quantity <= open_qty:
        # less (or the same) size keeps its place in the queue
        orders[slot, O_QTY] = quantity
        levels[lv, L_QTY] -= open_qty - quantity
        return
    unlink_order(orders, levels, ladder, ladder_keys, state, slot)
    if price == orders[slot, O_PRICE]:  # more size: to the back of the same level
        orders[slot, O_QTY] = quantity
        link_order(orders, levels, ladder, ladder_keys, state, slot, resting_side)
        return
    _enter(book, ev, order_id, resting_side, False, price, quantity, owner_of, tif_of, slot)


@kernel
def run_batch(
    book: tuple, commands: np.ndarray, start: int, ev: np.ndarray, cycles: np.ndarray
) -> tuple[int, int]:
    """Apply ``commands[start:]`` in order, appending events at ``state[S_EVENTS]``.

    Returns ``(next_index, status)``: ``status`` is DONE, or what must grow (outside this
    loop) before the batch resumes at ``next_index``. When ``cycles`` has one entry per
    command, each command's cycle count is recorded there (benchmarks only).
    """
    state = book[5]
    timed = cycles.shape[0] == commands.shape[0]
    for i in range(start, commands.shape[0]):
        if state[S_FREE_ORDER] == NIL:
            return i, NEED_ORDERS
        if state[S_FREE_LEVEL] == NIL:
            return i, NEED_LEVELS
        if ev.shape[0] - state[S_EVENTS] < state[S_RESTING] + 4:
            return i, NEED_EVENTS
        t0 = cycle_counter() if timed else 0  # type: ignore[call-arg]
        apply_command(
            book,
            ev,
            commands[i, C_KIND],
            commands[i, C_ORDER],
            commands[i, C_SIDE],
            commands[i, C_TYPE],
            commands[i, C_TIF],
            commands[i, C_PRICE],
            commands[i, C_QTY],
            commands[i, C_OWNER],
        )
        if timed:
            cycles[i] = cycle_counter() - t0  # type: ignore[call-arg]
    return commands.shape[0], DONE


@kernel
def execute_resting(book: tuple, ev: np.ndarray, order_id: int, quantity: int) -> int:
    """Trade ``quantity`` against one named resting order, as an exchange feed reports it.

    Replay-only entry (LOBSTER type 4 "execution of a visible order"): the feed names the
    maker, so the aggressor is implied and carries no id (0). Emits one FILL and returns
    the executed quantity: 0 when the order is not resting, at most its open quantity.
    """
    orders, levels, ladder, ladder_keys, id_map, state, _b = book
    slot = hash_find(id_map, order_id)
    if slot == NIL or quantity <= 0:
        return 0
    lv = orders[slot, O_LEVEL]
    maker_side = levels[lv, L_SIDE]
    open_qty = orders[slot, O_QTY]
    traded = quantity if quantity < open_qty else open_qty
    price = orders[slot, O_PRICE]
    if traded == open_qty:
        remove_order(orders, levels, ladder, ladder_keys, id_map, state, slot)
    else:
        orders[slot, O_QTY] = open_qty - traded
        levels[lv, L_QTY] -= traded
    _emit(ev, state, EV_FILL, 0, order_id, -maker_side, price, traded, 0, open_qty - traded, 0, 0)
    return traded
