"""The limit order book as struct-of-arrays, and the primitives every kernel shares.

Why arrays: the matching loop must run without touching a Python object, so the book is
a handful of preallocated int64 arrays that Numba compiles against:

* ``orders[slot, O_*]``: one 64-byte row per order slot (id, price, open quantity, owner,
  time in force, intrusive ``next``/``prev`` links of its level's FIFO, its level slot).
  Free slots are chained through ``O_NEXT``.
* ``levels[slot, L_*]``: one row per price level (price, total quantity, order count, FIFO
  head and tail, side). Free level slots are chained through ``L_HEAD``.
* ``ladder[side, i]`` / ``ladder_keys[side, i]``: each side's level slots sorted by a key
  that grows towards the best price (bid: price, ask: -price), so the best level is the
  last one: matching and most inserts touch the end of the array and shift little.
* ``id_map[i] = (order id, slot)``: an open-addressing (linear probing, backward-shift
  delete) map from order id to order slot, for cancel/reduce/amend in O(1); key and
  slot share a cache line.
* ``state``: the book's scalars (sequence, counts, free-list heads, grid range, flags).

Capacity is checked by the batch kernel before each command and grown here, outside the
hot loop (:class:`BookArrays`), so a kernel never writes past an array and never drops a
command: it stops and reports what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numba import njit

from kernels.contract import TickBand

# --- order rows -----------------------------------------------------------------------
O_ID, O_PRICE, O_QTY, O_OWNER, O_NEXT, O_PREV, O_LEVEL, O_TIF = range(8)
ORDER_FIELDS = 8
# --- level rows -----------------------------------------------------------------------
L_PRICE, L_QTY, L_COUNT, L_HEAD, L_TAIL, L_SIDE = range(6)
LEVEL_FIELDS = 8
# --- book scalars ---------------------------------------------------------------------
S_SEQ = 0  # input sequence number of the last command applied
S_RESTING = 1  # resting orders
S_FREE_ORDER = 2  # head of the free order-slot chain (-1: full)
S_FREE_LEVEL = 3  # head of the free level-slot chain (-1: full)
S_LEVELS = 4  # S_LEVELS + 0: bid levels, S_LEVELS + 1: ask levels
S_MIN_PRICE = 6
S_MAX_PRICE = 7
S_STP = 8  # 1: self-trade prevention on
S_EVENTS = 9  # rows written to the event buffer
STATE_FIELDS = 16

BID, ASK = 0, 1  # side index into ladder arrays (Side.BUY -> BID, Side.SELL -> ASK)
NIL = -1

# Multiplicative hashing constant (2**64 / golden ratio, odd): spreads sequential ids.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def kernel(fn: _Fn) -> _Fn:
    """``@njit(cache=True)`` without the runtime's reference counting.

    Kernels that only read and write arrays they are given never allocate, so they need
    no NRT: without it, every call between kernels skips the atomic incref/decref of
    each array argument, which was most of the cost of a small command (3-4x).
    """
    return njit(cache=True, _nrt=False)(fn)  # type: ignore[call-overload, no-any-return]


def inlined_kernel(fn: _Fn) -> _Fn:
    """:func:`kernel`, marked for LLVM to inline into its callers: small helpers on the
    hot path, where passing a book's arrays through a call costs more than the work."""
    return njit(cache=True, _nrt=False, forceinline=True)(fn)  # type: ignore[call-overload, no-any-return]


class BookCapacityError(OverflowError):
    """A book would need more slots than :data:`MAX_SLOTS`: refused, never silently dropped."""


MAX_SLOTS = 1 << 28


def _free_chain(rows: np.ndarray, link: int, start: int) -> None:
    """Chain rows[start:] into a free list through column ``link`` (last one: NIL)."""
    n = rows.shape[0]
    if start >= n:
        return
    rows[start:, link] = np.arange(start + 1, n + 1, dtype=np.int64)
    rows[n - 1, link] = NIL


@dataclass
class BookArrays:
    """One symbol's book: the arrays the kernels take, and their growth outside the loop."""

    orders: np.ndarray
    levels: np.ndarray
    ladder: np.ndarray
    ladder_keys: np.ndarray
    id_map: np.ndarray  # int64[H, 2]: (order id or 0, slot); H a power of two
    state: np.ndarray
    bands: np.ndarray  # int64[B, 2]: (upper, tick), uppers increasing

    @classmethod
    def allocate(
        cls,
        bands: tuple[TickBand, ...] | list[TickBand],
        min_price: int,
        max_price: int,
        self_trade_prevention: bool,
        capacity: int = 1024,
    ) -> BookArrays:
        capacity = max(8, int(capacity))
        orders = np.zeros((capacity, ORDER_FIELDS), dtype=np.int64)
        _free_chain(orders, O_NEXT, 0)
        levels = np.zeros((capacity, LEVEL_FIELDS), dtype=np.int64)
        _free_chain(levels, L_HEAD, 0)
        hash_size = 1 << max(4, (2 * capacity - 1).bit_length())
        state = np.zeros(STATE_FIELDS, dtype=np.int64)
        state[S_FREE_ORDER] = 0
        state[S_FREE_LEVEL] = 0
        state[S_MIN_PRICE] = min_price
        state[S_MAX_PRICE] = max_price
        state[S_STP] = 1 if self_trade_prevention else 0
        return cls(
            orders=orders,
            levels=levels,
            ladder=np.zeros((2, capacity), dtype=np.int64),
            ladder_keys=np.zeros((2, capacity), dtype=np.int64),
            id_map=np.zeros((hash_size, 2), dtype=np.int64),
            state=state,
            bands=np.array([[b.upper, b.tick] for b in bands], dtype=np.int64).reshape(-1, 2),
        )

    def grow_orders(self) -> None:
        """Double the order slots and rehash; called when the free chain is empty."""
        old = self.orders.shape[0]
        new = _grown(old)
        orders = np.zeros((new, ORDER_FIELDS), dtype=np.int64)
        orders[:old] = self.orders
        _free_chain(orders, O_NEXT, old)
        # old free chain is empty (that is why we grow): the new rows become the chain
        self.state[S_FREE_ORDER] = old
        self.orders = orders
        self._grow_hash(new)

    def grow_levels(self) -> None:
        """Double the level slots and the ladders that index them."""
        old = self.levels.shape[0]
        new = _grown(old)
        levels = np.zeros((new, LEVEL_FIELDS), dtype=np.int64)
        levels[:old] = self.levels
        _free_chain(levels, L_HEAD, old)
        self.state[S_FREE_LEVEL] = old
        self.levels = levels
        for name in ("ladder", "ladder_keys"):
            arr = getattr(self, name)
            grown = np.zeros((2, new), dtype=np.int64)
            grown[:, :old] = arr
            setattr(self, name, grown)

    def _grow_hash(self, order_capacity: int) -> None:
        size = 1 << max(4, (2 * order_capacity - 1).bit_length())
        if size <= self.id_map.shape[0]:
            return
        id_map = np.zeros((size, 2), dtype=np.int64)
        rehash(self.id_map, id_map)
        self.id_map = id_map


def _grown(old: int) -> int:
    new = old * 2
    if new > MAX_SLOTS:
        raise BookCapacityError(
            f"book capacity: {new} slots would exceed the limit of {MAX_SLOTS} orders/levels"
        )
    return new


# ======================================================================================
# id -> slot map
# ======================================================================================
@njit(cache=True, inline="always")
def _home(order_id: int, mask: int) -> int:
    return int((np.uint64(order_id) * _GOLDEN) >> np.uint64(32)) & mask


@inlined_kernel
def hash_find(id_map: np.ndarray, order_id: int) -> int:
    """Order slot of ``order_id``, or NIL when it is not resting."""
    mask = id_map.shape[0] - 1
    i = _home(order_id, mask)
    while True:
        k = id_map[i, 0]
        if k == order_id:
            return id_map[i, 1]
        if k == 0:
            return NIL
        i = (i + 1) & mask


@inlined_kernel
def hash_insert(id_map: np.ndarray, order_id: int, slot: int) -> None:
    mask = id_map.shape[0] - 1
    i = _home(order_id, mask)
    while id_map[i, 0] != 0:
        i = (i + 1) & mask
    id_map[i, 0] = order_id
    id_map[i, 1] = slot


@inlined_kernel
def hash_delete(id_map: np.ndarray, order_id: int) -> None:
    """Remove ``order_id``, shifting later probes back so no tombstones accumulate."""
    mask = id_map.shape[0] - 1
    i = _home(order_id, mask)
    while id_map[i, 0] != order_id:
        if id_map[i, 0] == 0:
            return
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        k = id_map[j, 0]
        if k == 0:
            break
        home = _home(k, mask)
        # keep k where it is if its home lies cyclically in (i, j]
        if i <= j:
            if i < home <= j:
                continue
        elif home > i or home <= j:
            continue
        id_map[i, 0] = k
        id_map[i, 1] = id_map[j, 1]
        i = j
    id_map[i, 0] = 0
    id_map[i, 1] = 0


@kernel
def rehash(old_map: np.ndarray, id_map: np.ndarray) -> None:
    for i in range(old_map.shape[0]):
        if old_map[i, 0] != 0:
            hash_insert(id_map, old_map[i, 0], old_map[i, 1])


@njit(cache=True, inline="always")
def side_index(side: int) -> int:
    return BID if side == 1 else ASK


@njit(cache=True, inline="always")
def ladder_key(side_ix: int, price: int) -> int:
    return price if side_ix == BID else -price


@inlined_kernel
def _lower_bound(keys: np.ndarray, side_ix: int, n: int, key: int) -> int:
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[side_ix, mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@inlined_kernel
def link_order(
    orders: np.ndarray,
    levels: np.ndarray,
    ladder: np.ndarray,
    ladder_keys: np.ndarray,
    state: np.ndarray,
    slot: int,
    side: int,
) -> None:
    """Put an order slot (price and quantity set) at the back of its level's queue,
    creating the level; the caller guarantees a free level slot."""
    price = orders[slot, O_PRICE]
    six = side_index(side)
    key = ladder_key(six, price)
    n = state[S_LEVELS + six]
    # most orders join at or near the best level, which is the end of the ladder
    if n > 0 and ladder_keys[six, n - 1] == key:
        lv = ladder[six, n - 1]
    else:
        pos = _lower_bound(ladder_keys, six, n, key)
        if pos < n and ladder_keys[six, pos] == key:
            lv = ladder[six, pos]
        else:
            lv = state[S_FREE_LEVEL]
            state[S_FREE_LEVEL] = levels[lv, L_HEAD]
            levels[lv, L_PRICE] = price
            levels[lv, L_QTY] = 0
            levels[lv, L_COUNT] = 0
            levels[lv, L_HEAD] = NIL
            levels[lv, L_TAIL] = NIL
            levels[lv, L_SIDE] = side
            for i in range(n, pos, -1):
                ladder[six, i] = ladder[six, i - 1]
                ladder_keys[six, i] = ladder_keys[six, i - 1]
            ladder[six, pos] = lv
            ladder_keys[six, pos] = key
            state[S_LEVELS + six] = n + 1
    orders[slot, O_LEVEL] = lv
    orders[slot, O_NEXT] = NIL
    tail = levels[lv, L_TAIL]
    orders[slot, O_PREV] = tail
    if tail == NIL:
        levels[lv, L_HEAD] = slot
    else:
        orders[tail, O_NEXT] = slot
    levels[lv, L_TAIL] = slot
    levels[lv, L_QTY] += orders[slot, O_QTY]
    levels[lv, L_COUNT] += 1


@inlined_kernel
def unlink_order(
    orders: np.ndarray,
    levels: np.ndarray,
    ladder: np.ndarray,
    ladder_keys: np.ndarray,
    state: np.ndarray,
    slot: int,
) -> None:
    """Take an order out of its level's queue (dropping an emptied level). The slot and
    its id stay allocated: an amend relinks it elsewhere without touching the id map.

    The level loses the order's *current* open quantity, so callers that trade or reduce
    an order first adjust both, or neither.
    """
    lv = orders[slot, O_LEVEL]
    prev = orders[slot, O_PREV]
    nxt = orders[slot, O_NEXT]
    if prev == NIL:
        levels[lv, L_HEAD] = nxt
    else:
        orders[prev, O_NEXT] = nxt
    if nxt == NIL:
        levels[lv, L_TAIL] = prev
    else:
        orders[nxt, O_PREV] = prev
    levels[lv, L_QTY] -= orders[slot, O_QTY]
    levels[lv, L_COUNT] -= 1
    if levels[lv, L_COUNT] == 0:
        six = side_index(levels[lv, L_SIDE])
        n = state[S_LEVELS + six]
        key = ladder_key(six, levels[lv, L_PRICE])
        pos = n - 1 if ladder_keys[six, n - 1] == key else _lower_bound(ladder_keys, six, n, key)
        for i in range(pos, n - 1):
            ladder[six, i] = ladder[six, i + 1]
            ladder_keys[six, i] = ladder_keys[six, i + 1]
        state[S_LEVELS + six] = n - 1
        levels[lv, L_HEAD] = state[S_FREE_LEVEL]
        state[S_FREE_LEVEL] = lv


@inlined_kernel
def release_slot(orders: np.ndarray, id_map: np.ndarray, state: np.ndarray, slot: int) -> None:
    """Forget an unlinked order: its id leaves the map, its slot joins the free chain."""
    hash_delete(id_map, orders[slot, O_ID])
    orders[slot, O_ID] = 0
    orders[slot, O_NEXT] = state[S_FREE_ORDER]
    state[S_FREE_ORDER] = slot
    state[S_RESTING] -= 1


@inlined_kernel
def rest_order(
    orders: np.ndarray,
    levels: np.ndarray,
    ladder: np.ndarray,
    ladder_keys: np.ndarray,
    id_map: np.ndarray,
    state: np.ndarray,
    order_id: int,
    side: int,
    price: int,
    quantity: int,
    owner: int,
    tif: int,
) -> int:
    """Append a new order at the back of its level; returns its slot.

    The caller guarantees a free order slot, a free level slot and hash room.
    """
    slot = state[S_FREE_ORDER]
    state[S_FREE_ORDER] = orders[slot, O_NEXT]
    orders[slot, O_ID] = order_id
    orders[slot, O_PRICE] = price
    orders[slot, O_QTY] = quantity
    orders[slot, O_OWNER] = owner
    orders[slot, O_TIF] = tif
    link_order(orders, levels, ladder, ladder_keys, state, slot, side)
    hash_insert(id_map, order_id, slot)
    state[S_RESTING] += 1
    return slot


@inlined_kernel
def remove_order(
    orders: np.ndarray,
    levels: np.ndarray,
    ladder: np.ndarray,
    ladder_keys: np.ndarray,
    id_map: np.ndarray,
    state: np.ndarray,
    slot: int,
) -> None:
    """Take an order off the book for good (see :func:`unlink_order` on quantities)."""
    unlink_order(orders, levels, ladder, ladder_keys, state, slot)
    release_slot(orders, id_map, state, slot)


@inlined_kernel
def grid_reason(bands: np.ndarray, state: np.ndarray, price: int) -> int:
    """0 when ``price`` is on the grid, else Reason.OUT_OF_RANGE (13) or OFF_TICK (12)."""
    if price < state[S_MIN_PRICE] or price > state[S_MAX_PRICE]:
        return 13
    for b in range(bands.shape[0]):
        if price <= bands[b, 0]:
            return 0 if price % bands[b, 1] == 0 else 12
    return 13


@kernel
def top_levels(levels: np.ndarray, ladder: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out[side, i, (price, quantity, orders)]`` best first; unused rows get zeros."""
    depth = out.shape[1]
    out[:] = 0
    for six in range(2):
        n = state[S_LEVELS + six]
        for i in range(min(depth, n)):
            lv = ladder[six, n - 1 - i]
            out[six, i, 0] = levels[lv, L_PRICE]
            out[six, i, 1] = levels[lv, L_QTY]
            out[six, i, 2] = levels[lv, L_COUNT]


@njit(cache=True)
def resting_orders(
    orders: np.ndarray, levels: np.ndarray, ladder: np.ndarray, state: np.ndarray
) -> np.ndarray:
    """Every resting order in priority order (bids then asks, best first, FIFO).

    Rows: (order_id, side, price, quantity, owner, tif): the snapshot's order list.
    """
    out = np.empty((state[S_RESTING], 6), dtype=np.int64)
    r = 0
    for six in range(2):
        n = state[S_LEVELS + six]
        for i in range(n - 1, -1, -1):
            lv = ladder[six, i]
            slot = levels[lv, L_HEAD]
            while slot != NIL:
                out[r, 0] = orders[slot, O_ID]
                out[r, 1] = levels[lv, L_SIDE]
                out[r, 2] = orders[slot, O_PRICE]
                out[r, 3] = orders[slot, O_QTY]
                out[r, 4] = orders[slot, O_OWNER]
                out[r, 5] = orders[slot, O_TIF]
                r += 1
                slot = orders[slot, O_NEXT]
    return out
