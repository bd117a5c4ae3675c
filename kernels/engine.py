"""``KernelEngine``: the Numba kernels behind the matching ``Engine`` contract.

A thin facade: it keeps one :class:`kernels.book.BookArrays` per symbol, turns commands
into int64 rows, runs :func:`kernels.matching.run_batch`, grows whatever the kernel
reports full (outside the hot loop), and turns event rows back into ``Event`` objects.
Its events equal :class:`kernels.reference.ReferenceEngine`'s for the same input, and its
snapshots are byte-for-byte the reference's, so either engine can restore the other's.

For throughput, :meth:`KernelEngine.submit_arrays` takes and returns the int64 rows
directly (``COMMAND_FIELDS`` / ``EVENT_FIELDS`` columns, see ``kernels.matching``), which
skips building a Python object per command and per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernels.book import (
    S_EVENTS,
    S_LEVELS,
    S_RESTING,
    S_SEQ,
    BookArrays,
    BookCapacityError,
    kernel,
    rest_order,
    resting_orders,
    top_levels,
)
from kernels.contract import (
    Command,
    Depth,
    Event,
    EventKind,
    Level,
    Reason,
    Side,
    TickBand,
)
from kernels.matching import (
    COMMAND_FIELDS,
    DONE,
    EVENT_FIELDS,
    NEED_EVENTS,
    NEED_LEVELS,
    NEED_ORDERS,
    book_tuple,
    run_batch,
)
from kernels.snapshot import BookImage, RestingOrder, decode, encode, validate_grid

_EVENT_KINDS = tuple(EventKind)  # values 0..6, so the value is the index
_SIDES = {1: Side.BUY, -1: Side.SELL}
_REASONS = {int(r): r for r in Reason}
_NOT_TIMED = np.zeros(0, dtype=np.int64)
_EVENT_BUFFER_CAP = 1 << 18  # rows (22 MiB): a long batch drains every 262,144 events


class _SymbolBook:
    """A symbol's arrays, its grid as given (for snapshots) and its event buffer."""

    def __init__(
        self, arrays: BookArrays, bands: tuple[TickBand, ...], min_price: int, max_price: int
    ) -> None:
        self.arrays = arrays
        self.bands = bands
        self.min_price = min_price
        self.max_price = max_price
        self.events = np.zeros((max(64, arrays.orders.shape[0]), EVENT_FIELDS), dtype=np.int64)


@kernel
def _rest_all(book: tuple, rows: np.ndarray) -> None:
    for r in range(rows.shape[0]):
        rest_order(
            book[0],
            book[1],
            book[2],
            book[3],
            book[4],
            book[5],
            rows[r, 0],
            rows[r, 1],
            rows[r, 2],
            rows[r, 3],
            rows[r, 4],
            rows[r, 5],
        )


def commands_to_rows(commands: Sequence[Command]) -> np.ndarray:
    """``Command`` objects as ``int64[n, COMMAND_FIELDS]`` rows for the kernels."""
    try:
        return np.array(
            [
                (c.kind, c.order_id, c.side, c.order_type, c.tif, c.price, c.quantity, c.owner)
                for c in commands
            ],
            dtype=np.int64,
        ).reshape(-1, COMMAND_FIELDS)
    except OverflowError as exc:
        raise ValueError(f"command: every field must fit in int64 ({exc})") from exc


def rows_to_events(rows: np.ndarray) -> list[Event]:
    """Event rows from the kernels as contract ``Event`` objects."""
    kinds, sides, reasons = _EVENT_KINDS, _SIDES, _REASONS
    return [
        Event(kinds[k], seq, oid, mk, sides[sd], px, qty, rem, mrem, fi, reasons[rs])
        for k, seq, oid, mk, sd, px, qty, rem, mrem, fi, rs in rows.tolist()
    ]


class KernelEngine:
    """Per-symbol Numba books implementing :class:`kernels.contract.Engine`."""

    def __init__(self, self_trade_prevention: bool = False, initial_capacity: int = 1024) -> None:
        if initial_capacity <= 0:
            raise ValueError(f"initial_capacity: must be positive, got {initial_capacity}")
        self.self_trade_prevention = self_trade_prevention
        self.initial_capacity = initial_capacity
        self._books: dict[str, _SymbolBook] = {}

    # ----------------------------------------------------------------- administration
    def add_symbol(
        self, symbol: str, bands: Sequence[TickBand], min_price: int, max_price: int
    ) -> None:
        if symbol in self._books:
            raise ValueError(f"symbol: {symbol!r} has a book already")
        grid = tuple(bands)
        validate_grid(grid, min_price, max_price)
        arrays = BookArrays.allocate(
            grid, min_price, max_price, self.self_trade_prevention, self.initial_capacity
        )
        self._books[symbol] = _SymbolBook(arrays, grid, min_price, max_price)

    def regrid(self, symbol: str, min_price: int, max_price: int) -> None:
        """A new session's price limits for an empty book: the grid moves with the base
        price (the previous close) while the input sequence carries on, so execution ids
        stay unique. Refused (``ValueError``) while orders rest: they would fall off it."""
        book = self._book(symbol)
        if int(book.arrays.state[S_RESTING]):
            raise ValueError(f"symbol: {symbol!r} has resting orders; regrid needs an empty book")
        validate_grid(book.bands, min_price, max_price)
        arrays = BookArrays.allocate(
            book.bands, min_price, max_price, self.self_trade_prevention, self.initial_capacity
        )
        arrays.state[S_SEQ] = book.arrays.state[S_SEQ]
        self._books[symbol] = _SymbolBook(arrays, book.bands, min_price, max_price)

    def _book(self, symbol: str) -> _SymbolBook:
        try:
            return self._books[symbol]
        except KeyError:
            raise KeyError(f"symbol: no book for {symbol!r}; call add_symbol first") from None

    def sequence(self, symbol: str) -> int:
        return int(self._book(symbol).arrays.state[S_SEQ])

    def resting(self, symbol: str) -> int:
        """Number of orders resting on the symbol's book."""
        return int(self._book(symbol).arrays.state[S_RESTING])

    def depth(self, symbol: str, levels: int = 10) -> Depth:
        bids, asks = self.depth_rows(symbol, levels)
        return Depth(bids=tuple(Level(p, q, n) for p, q, n in bids),
                     asks=tuple(Level(p, q, n) for p, q, n in asks))

    def depth_rows(self, symbol: str, levels: int = 10) -> tuple[list[list[int]], list[list[int]]]:
        """:meth:`depth` as plain ``[price, quantity, orders]`` rows (bids, asks), best
        first: what a publisher serialises, without a ``Level`` object per row (a sixth
        of the cost; the matching stage publishes depth with every batch)."""
        if levels < 0:
            raise ValueError(f"levels: must be >= 0, got {levels}")
        arrays = self._book(symbol).arrays
        out = np.zeros((2, levels, 3), dtype=np.int64)
        top_levels(arrays.levels, arrays.ladder, arrays.state, out)
        bids, asks = out.tolist()
        state = arrays.state
        return bids[: int(state[S_LEVELS])], asks[: int(state[S_LEVELS + 1])]

    # ----------------------------------------------------------------- commands
    def submit(self, symbol: str, command: Command) -> list[Event]:
        return rows_to_events(self.submit_arrays(symbol, commands_to_rows((command,))))

    def submit_batch(self, symbol: str, commands: Sequence[Command]) -> list[Event]:
        return rows_to_events(self.submit_arrays(symbol, commands_to_rows(commands)))

    def submit_arrays(
        self, symbol: str, commands: np.ndarray, cycles: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply ``int64[n, COMMAND_FIELDS]`` command rows; return ``int64[m, EVENT_FIELDS]``.

        The array-level batch path: the same events as :meth:`submit_batch`, as rows. When
        ``cycles`` (``int64[n]``) is given, each command's CPU cycle count is written to it
        (for latency benchmarks).
        """
        if commands.ndim != 2 or commands.shape[1] != COMMAND_FIELDS:
            raise ValueError(
                f"commands: expected shape (n, {COMMAND_FIELDS}), got {commands.shape}"
            )
        rows = np.ascontiguousarray(commands, dtype=np.int64)
        timing = _NOT_TIMED if cycles is None else cycles
        if cycles is not None and cycles.shape != (rows.shape[0],):
            raise ValueError(f"cycles: expected shape ({rows.shape[0]},), got {cycles.shape}")
        book = self._book(symbol)
        arrays = book.arrays
        arrays.state[S_EVENTS] = 0
        drained: list[np.ndarray] = []
        start = 0
        while True:
            start, status = run_batch(book_tuple(arrays), rows, start, book.events, timing)
            if status == DONE:
                break
            try:
                if status == NEED_ORDERS:
                    arrays.grow_orders()
                elif status == NEED_LEVELS:
                    arrays.grow_levels()
            except BookCapacityError as exc:
                raise BookCapacityError(
                    f"{symbol}: {exc}; commands [0, {start}) of this batch were applied, "
                    f"[{start}, {rows.shape[0]}) were not"
                ) from None
            if status == NEED_EVENTS:
                # keep what was written, then give the rest of the batch a bigger buffer
                # (up to a cap) so long batches return to Python rarely
                written = int(arrays.state[S_EVENTS])
                if written:
                    drained.append(book.events[:written].copy())
                    arrays.state[S_EVENTS] = 0
                needed = int(arrays.state[S_RESTING]) + 4
                size = max(min(2 * book.events.shape[0], _EVENT_BUFFER_CAP), needed)
                if size > book.events.shape[0]:
                    book.events = np.zeros((size, EVENT_FIELDS), dtype=np.int64)
        written = int(arrays.state[S_EVENTS])
        if not drained:
            return book.events[:written].copy()
        drained.append(book.events[:written])
        return np.concatenate(drained)

    # ----------------------------------------------------------------- snapshots
    def snapshot(self) -> bytes:
        images = []
        for symbol, book in self._books.items():
            a = book.arrays
            rows = resting_orders(a.orders, a.levels, a.ladder, a.state)
            images.append(
                BookImage(
                    symbol,
                    book.bands,
                    book.min_price,
                    book.max_price,
                    int(a.state[S_SEQ]),
                    tuple(RestingOrder(*row) for row in rows.tolist()),
                )
            )
        return encode(images)

    def restore(self, data: bytes) -> None:
        """Replace every book with the snapshot's; a bad snapshot leaves the engine as it was."""
        books: dict[str, _SymbolBook] = {}
        for image in decode(data):
            validate_grid(image.bands, image.min_price, image.max_price)
            capacity = max(self.initial_capacity, 2 * len(image.orders))
            arrays = BookArrays.allocate(
                image.bands, image.min_price, image.max_price, self.self_trade_prevention, capacity
            )
            rows = np.array(
                [(o.order_id, o.side, o.price, o.quantity, o.owner, o.tif) for o in image.orders],
                dtype=np.int64,
            ).reshape(-1, 6)
            _rest_all(book_tuple(arrays), rows)
            arrays.state[S_SEQ] = image.sequence
            books[image.symbol] = _SymbolBook(arrays, image.bands, image.min_price, image.max_price)
        self._books = books
