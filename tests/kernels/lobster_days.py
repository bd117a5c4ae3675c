"""Small LOBSTER days built in tests: messages plus the orderbook rows they imply.

A plain dict-of-FIFO book applies each message (submissions rest, partial cancels and
executions reduce the named order, deletions remove it) and writes the top levels
after every message, exactly as LOBSTER's orderbook file does. Message 0 is a hidden
execution, so row 0 is the seeded book (orders in it were "submitted before 09:30": the
replay knows their levels, not their ids).
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np

from streams.replay.lobster import LobsterDay

NAME = "TOY_2012-06-21_34200000_57600000_message_{depth}.csv"
EMPTY_ASK, EMPTY_BID = 9_999_999_999, -9_999_999_999
TICK = 100
Message = tuple[float, int, int, int, int, int]  # time, type, order id, size, price, side


class ToyBook:
    def __init__(self) -> None:
        self.sides: dict[int, dict[int, list[list[int]]]] = {1: {}, -1: {}}
        self.where: dict[int, tuple[int, int]] = {}  # order id -> (side, price)

    def add(self, oid: int, side: int, price: int, qty: int) -> None:
        self.sides[side].setdefault(price, []).append([oid, qty])
        self.where[oid] = (side, price)

    def take(self, oid: int, qty: int) -> None:
        side, price = self.where[oid]
        queue = self.sides[side][price]
        entry = next(e for e in queue if e[0] == oid)
        entry[1] -= qty
        if entry[1] <= 0:
            queue.remove(entry)
            del self.where[oid]
            if not queue:
                del self.sides[side][price]

    def apply(self, message: Message) -> None:
        _t, kind, oid, size, price, side = message
        if kind == 1:
            self.add(oid, side, price, size)
        elif kind in (2, 4):
            self.take(oid, size)
        elif kind == 3:
            self.take(oid, self.quantity_of(oid))

    def quantity_of(self, oid: int) -> int:
        side, price = self.where[oid]
        return next(e[1] for e in self.sides[side][price] if e[0] == oid)

    def best(self, side: int) -> int | None:
        prices = self.sides[side]
        if not prices:
            return None
        return max(prices) if side == 1 else min(prices)

    def row(self, depth: int) -> list[int]:
        asks = sorted(self.sides[-1])[:depth]
        bids = sorted(self.sides[1], reverse=True)[:depth]
        out: list[int] = []
        for k in range(depth):
            ask = (
                [asks[k], sum(e[1] for e in self.sides[-1][asks[k]])]
                if k < len(asks)
                else [EMPTY_ASK, 0]
            )
            bid = (
                [bids[k], sum(e[1] for e in self.sides[1][bids[k]])]
                if k < len(bids)
                else [EMPTY_BID, 0]
            )
            out += ask + bid
        return out


def build_day(seed: list[tuple[int, int, int, int]], messages: list[Message],
              depth: int = 5) -> LobsterDay:  # fmt: skip
    """``seed``: (order id, side, price, quantity) resting before the first message."""
    book = ToyBook()
    for oid, side, price, qty in seed:
        book.add(oid, side, price, qty)
    first: Message = (34_200.0, 5, 0, 1, 1_000_000, 1)
    rows = [book.row(depth)]
    for message in messages:
        book.apply(message)
        rows.append(book.row(depth))
    all_messages = [first, *messages]
    return LobsterDay(
        NAME.format(depth=depth),
        np.array([m[0] for m in all_messages], dtype=np.float64),
        np.array([m[1:] for m in all_messages], dtype=np.int64).reshape(-1, 5),
        np.array(rows, dtype=np.int64),
    )


def write_zip(day: LobsterDay, folder: Path) -> Path:
    """The day as LOBSTER ships it (a zip with the message and orderbook CSVs)."""
    stem = day.name.replace("_message_", "_{}_").replace(".csv", "")
    path = folder / (stem.format("files") + ".zip")
    messages = "\n".join(
        f"{t:.9f}," + ",".join(str(v) for v in row)
        for t, row in zip(day.times.tolist(), day.messages.tolist(), strict=True)
    )
    book = "\n".join(",".join(str(v) for v in row) for row in day.orderbook.tolist())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(stem.format("message") + ".csv", messages + "\n")
        archive.writestr(stem.format("orderbook") + ".csv", book + "\n")
    return path


def random_day(seed: int, messages: int = 300, depth: int = 5) -> LobsterDay:
    """A random but consistent day around $100: submissions that never cross, partial
    cancels, deletions, executions of the head of a best level, hidden executions, and
    runs of messages sharing one timestamp."""
    rng = random.Random(seed)
    mid = 1_000_000
    start: list[tuple[int, int, int, int]] = []
    oid = 1_000
    for k in range(1, 4):
        for side in (1, -1):
            for _ in range(rng.randint(1, 2)):
                oid += 1
                start.append((oid, side, mid - side * k * TICK, rng.choice((100, 200, 300))))
    book = ToyBook()
    for order in start:
        book.add(*order)
    out: list[Message] = []
    t = 34_200.0
    for _ in range(messages):
        t += rng.choice((0.0, 0.05, 0.05, 0.2))
        draw = rng.random()
        resting = sorted(book.where)
        if draw < 0.4 or not resting:
            side = rng.choice((1, -1))
            other = book.best(-side)
            anchor = other if other is not None else mid
            price = anchor - side * rng.randint(1, 6) * TICK
            oid += 1
            message: Message = (t, 1, oid, rng.choice((50, 100, 200, 300)), price, side)
        elif draw < 0.55:
            victim = rng.choice(resting)
            side, price = book.where[victim]
            qty = book.quantity_of(victim)
            if qty < 2:
                continue
            message = (t, 2, victim, rng.randint(1, qty - 1), price, side)
        elif draw < 0.72:
            victim = rng.choice(resting)
            side, price = book.where[victim]
            message = (t, 3, victim, book.quantity_of(victim), price, side)
        elif draw < 0.95:
            side = rng.choice((1, -1))
            best = book.best(side)
            if best is None:
                continue
            head = book.sides[side][best][0]
            message = (t, 4, head[0], rng.randint(1, head[1]), best, side)
        else:
            message = (t, 5, 0, rng.randint(1, 50), mid, rng.choice((1, -1)))
        book.apply(message)
        out.append(message)
    return build_day(start, out, depth)
