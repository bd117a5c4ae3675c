"""Replay a LOBSTER NASDAQ order-book day through the matching kernels and check every step.

The driver: it reads a LOBSTER day (its zip, or the message CSV with the orderbook CSV
beside it) into integer arrays, runs :func:`kernels.lobster.replay_kernel` over them in
one call, and summarises the counters (see :mod:`kernels.lobster` for what the replay
checks and how it handles what the data cannot tell).

``python -m streams.replay.lobster FILE.zip`` prints the summary as JSON; it imports
nothing outside numpy, numba, the kernels and the standard library.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.book import BookArrays
from kernels.lobster import COUNTER_NAMES, M_TYPE, new_book, replay_buffers, replay_kernel
from kernels.matching import book_tuple


@dataclass(frozen=True)
class LobsterDay:
    """One day's files as integer arrays (times kept apart: they are not needed to replay)."""

    name: str
    times: np.ndarray  # float64[n]: seconds after midnight
    messages: np.ndarray  # int64[n, 5]: type, order id, size, price, direction
    orderbook: np.ndarray  # int64[n, 4 * levels]: ask p, ask size, bid p, bid size, ...

    @property
    def levels(self) -> int:
        return int(self.orderbook.shape[1] // 4)


def _parse(text: bytes, columns: int, dtype: type, what: str) -> np.ndarray:
    flat: np.ndarray = np.fromstring(text.strip().replace(b"\n", b","), dtype=dtype, sep=",")
    if flat.size % columns:
        raise ValueError(f"{what}: {flat.size} values do not form rows of {columns} columns")
    return flat.reshape(-1, columns)


def load(path: str | Path) -> LobsterDay:
    """Read a LOBSTER day from its zip, or from its message CSV (orderbook CSV beside it)."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            message_name = next((n for n in names if "_message_" in n), None)
            book_name = next((n for n in names if "_orderbook_" in n), None)
            if message_name is None or book_name is None:
                raise ValueError(f"{path}: no *_message_*/*_orderbook_* CSV pair inside")
            message_text = archive.read(message_name)
            book_text = archive.read(book_name)
        name = message_name
    else:
        if "_message_" not in path.name:
            raise ValueError(f"{path}: expected a LOBSTER *_message_*.csv or .zip file")
        book_path = path.with_name(path.name.replace("_message_", "_orderbook_"))
        message_text = path.read_bytes()
        book_text = book_path.read_bytes()
        name = path.name
    raw = _parse(message_text, 6, np.float64, "message file")
    book = _parse(book_text, 4, np.int64, "orderbook file")
    book = book.reshape(raw.shape[0], -1)
    messages = np.ascontiguousarray(raw[:, 1:6]).astype(np.int64)
    return LobsterDay(name, raw[:, 0].copy(), messages, np.ascontiguousarray(book))


@dataclass(frozen=True)
class ReplayResult:
    counts: dict[str, int]
    flags: np.ndarray  # per message: 0 match, 1 window mismatch, 2 unexplained
    seconds: float
    book: BookArrays

    @property
    def messages_per_second(self) -> float:
        return self.counts["messages_compared"] / self.seconds if self.seconds else 0.0


def replay(day: LobsterDay) -> ReplayResult:
    """Replay the whole day in one kernel call; returns the counters and timing."""
    arrays = new_book(day.messages, day.levels)
    ev, counts, flags = replay_buffers(arrays, day.messages)
    started = time.perf_counter()
    replay_kernel(book_tuple(arrays), ev, day.messages, day.orderbook, counts, flags)
    seconds = time.perf_counter() - started
    return ReplayResult(
        {name: int(counts[i]) for i, name in enumerate(COUNTER_NAMES)}, flags, seconds, arrays
    )


def summary(day: LobsterDay, result: ReplayResult) -> dict[str, object]:
    types, kinds = np.unique(day.messages[:, M_TYPE], return_counts=True)
    return {
        "file": day.name,
        "messages": int(day.messages.shape[0]),
        "levels": day.levels,
        "message_types": {int(t): int(k) for t, k in zip(types, kinds, strict=True)},
        **result.counts,
        "replay_seconds": round(result.seconds, 4),
        "messages_per_second": round(result.messages_per_second),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        usage = "usage: python -m streams.replay.lobster FILE.zip|FILE_message_N.csv"
        print(usage, file=sys.stderr)
        return 2
    day = load(args[0])
    replay(day)  # first call compiles (or loads the cache); time the second
    print(json.dumps(summary(day, replay(day)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
