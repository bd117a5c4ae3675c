"""One snapshot format for both matching engines.

The reference engine and the kernel facade write the same bytes for the same books, so a
restart may restore a snapshot taken by either engine into either engine (the write model
can switch ``matching_engine`` between runs without losing resting orders). The format is
versioned JSON: readable in an incident, and small next to the event log it shortcuts.

Orders are listed in priority order per side (best price first, oldest first within a
level), bids before asks, so replaying them as resting orders rebuilds time priority.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kernels.contract import TickBand

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RestingOrder:
    order_id: int
    side: int
    price: int
    quantity: int
    owner: int
    tif: int


@dataclass(frozen=True, slots=True)
class BookImage:
    """Everything needed to rebuild one symbol's book exactly."""

    symbol: str
    bands: tuple[TickBand, ...]
    min_price: int
    max_price: int
    sequence: int
    orders: tuple[RestingOrder, ...]  # bids best-first FIFO, then asks best-first FIFO


def encode(books: list[BookImage]) -> bytes:
    """Serialise books in the order given (the engines use symbol registration order)."""
    payload = {
        "version": SNAPSHOT_VERSION,
        "symbols": [
            {
                "symbol": book.symbol,
                "bands": [[band.upper, band.tick] for band in book.bands],
                "min_price": book.min_price,
                "max_price": book.max_price,
                "sequence": book.sequence,
                "orders": [
                    [o.order_id, o.side, o.price, o.quantity, o.owner, o.tif] for o in book.orders
                ],
            }
            for book in books
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def decode(data: bytes) -> list[BookImage]:
    """Parse bytes from :func:`encode`; a wrong version is refused, not guessed at."""
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"snapshot: not a matching-engine snapshot ({exc})") from exc
    version = payload.get("version") if isinstance(payload, dict) else None
    if version != SNAPSHOT_VERSION:
        raise ValueError(f"snapshot.version: expected {SNAPSHOT_VERSION}, got {version!r}")
    books = []
    for entry in payload["symbols"]:
        books.append(
            BookImage(
                symbol=str(entry["symbol"]),
                bands=tuple(TickBand(int(u), int(t)) for u, t in entry["bands"]),
                min_price=int(entry["min_price"]),
                max_price=int(entry["max_price"]),
                sequence=int(entry["sequence"]),
                orders=tuple(RestingOrder(*(int(v) for v in row)) for row in entry["orders"]),
            )
        )
    return books


def validate_grid(
    bands: tuple[TickBand, ...] | list[TickBand], min_price: int, max_price: int
) -> None:
    """Refuse a tick grid that cannot be meant: the error names the field and the rule."""
    if not bands:
        raise ValueError("bands: at least one TickBand is required")
    previous = None
    for i, band in enumerate(bands):
        if band.tick <= 0:
            raise ValueError(f"bands[{i}].tick: must be positive, got {band.tick}")
        if previous is not None and band.upper <= previous:
            raise ValueError(f"bands[{i}].upper: must increase strictly, got {band.upper}")
        previous = band.upper
    if min_price <= 0:
        raise ValueError(f"min_price: must be positive, got {min_price}")
    if max_price < min_price:
        raise ValueError(f"max_price: must be >= min_price ({min_price}), got {max_price}")
