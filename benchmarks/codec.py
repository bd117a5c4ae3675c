"""Event codec cost: the library's default mapper vs ``infra.codec``; prints JSON.

The mix is what one buy order that fills costs the store (the flow of issue 9):
``Order.Placed``, ``Account.FundsReserved``, ``Order.Accepted``, ``Order.Routed``,
``Venue.Reported`` (one fill report), ``Order.Filled``, ``Account.BuySettled``,
``Position.FillApplied`` and ``Account.FundsReleased``; every fourth order is a sell
(``Position.SharesReserved`` instead of the funds). Events are made by the aggregates'
own commands, so their values are what the write path stores.

For each mapper: ``encode_us`` (domain event -> ``StoredEvent``, what ``save`` pays),
``decode_us`` (``StoredEvent`` -> domain event, what every load, saga step and
projection pays) and their sum, per event over the whole mix (each chunk of 256 events
timed ``--repeat`` times, its fastest run kept: other processes on a shared machine
only ever add time); ``library`` is eventsourcing's ``Mapper`` with its ``JSONTranscoder`` and the
transcodings ``Application`` registers (the form commit d07d3ea stored); ``codec`` is
``infra.codec.CodecMapper``, as ``infra.eventstore`` configures it (encode checks the
field types; ``codec_unchecked`` shows the encode without that check). ``ratio`` is
library / codec. ``by_type`` splits the decode per event type.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/codec.py [--orders 2000] [--repeat 15]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)

from aggregates import ids
from aggregates.account import Account
from aggregates.base import Meta
from aggregates.order import Order, OrderType, Side, TimeInForce
from aggregates.position import Position
from aggregates.venue import Venue
from infra.codec import CodecMapper, EventCodec

CHUNK = 256


def mix(orders: int) -> list[Any]:
    """The events ``orders`` orders store, in the order the flow stores them."""
    ops = Meta.command("ops")
    account = Account.open(uuid5(NAMESPACE_URL, "acct"), name="trader-1", owner="trader-1",
                           allow_short=False, meta=ops)
    account.deposit(10**12, ops)
    position = Position.open(ids.position_id(account.id, "7203"), account_id=account.id,
                             symbol="7203", meta=ops)
    position.apply_fill(uuid5(NAMESPACE_URL, "seed"), "seed", "buy", 25_000, 10**6,
                        25_000 * 10**6 // 10, ops)
    venue_id = ids.venue_id("7203")
    reported: Any = Venue.Reported
    events: list[Any] = [*account.collect_events(), *position.collect_events()]
    for n in range(orders):
        side = Side.SELL if n % 4 == 3 else Side.BUY
        meta = Meta.command("trader-1")
        order = Order.place(uuid5(NAMESPACE_URL, f"o-{n}"), account_id=account.id,
                            client_order_id=f"c-{n}", symbol="7203", side=side,
                            order_type=OrderType.LIMIT, tif=TimeInForce.DAY,
                            quantity=100, price=25_000, meta=meta)
        events.append(order.collect_events()[0])
        saga = Meta.caused_by(events[-1], "risk")
        funds = 0 if side is Side.SELL else 250_000 + 300
        if funds:
            account.reserve(order.id, funds, saga)
        else:
            position.reserve(order.id, 100, saga)
        order.accept(funds, 0 if funds else 100, saga)
        order.route(n + 1, 1, saga)
        events += [*account.collect_events(), *position.collect_events(),
                   *order.collect_events()]
        execution = f"7203:{n + 1}:0"
        events.append(reported(
            originator_id=venue_id, originator_version=n + 1, timestamp=datetime.now(UTC),
            principal="venue:7203", command_id=f"match:{order.id}:3",
            correlation_id=meta.correlation_id, causation_id=f"{order.id}:3", symbol="7203",
            sequence=n + 1, command="new", order_id=order.id,
            reports=[{"kind": "fill", "execution_id": execution, "price": 25_000,
                      "quantity": 100, "taker": str(order.id),
                      "maker": str(uuid5(NAMESPACE_URL, f"m-{n}"))}],
            last_price=25_000, depth=None,
        ))
        fill = Meta.caused_by(events[-1], "fill")
        order.fill(execution, 25_000, 100, 250_000, 125, "taker", fill)
        if side is Side.BUY:
            account.settle_buy(order.id, execution, 250_000, 125, fill)
            account.release(order.id, funds, fill)
        else:
            account.settle_sell(order.id, execution, 250_000, 125, fill)
        position.apply_fill(order.id, execution, side.value, 25_000, 100, 250_000, fill)
        events += [*order.collect_events(), *account.collect_events(),
                   *position.collect_events()]
    return events


def library_mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder)


def per_item_us(items: list[Any], fn: Callable[[Any], object], repeat: int) -> float:
    """Microseconds per item: the sum over chunks of 256 items of each chunk's fastest
    of ``repeat`` runs (other processes on a shared machine disturb long runs)."""
    total = 0.0
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        fastest = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for item in chunk:
                fn(item)
            fastest = min(fastest, time.perf_counter() - started)
        total += fastest
    return total / len(items) * 1e6


def measure(mapper: Mapper[UUID], events: list[Any], repeat: int) -> dict[str, Any]:
    to_stored, to_event = mapper.to_stored_event, mapper.to_domain_event
    stored: list[StoredEvent] = [to_stored(e) for e in events]
    for e, s in zip(events, stored, strict=True):  # what goes in comes out
        back = dict(vars(to_event(s)))
        back.pop("_chain", None)  # the digest the store's chain gave it (ours only)
        assert back == vars(e), type(e)
    encode = per_item_us(events, to_stored, repeat)
    decode = per_item_us(stored, to_event, repeat)
    by_kind: dict[str, list[StoredEvent]] = defaultdict(list)
    for s in stored:
        by_kind[s.topic.rpartition(":")[2]].append(s)
    return {
        "encode_us": round(encode, 2),
        "decode_us": round(decode, 2),
        "encode_decode_us": round(encode + decode, 2),
        "bytes_per_event": round(sum(len(s.state) for s in stored) / len(stored), 1),
        "decode_us_by_type": {kind: round(per_item_us(rows, to_event, repeat), 2)
                              for kind, rows in sorted(by_kind.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    events = mix(args.orders)
    library = measure(library_mapper(), events, args.repeat)
    ours = CodecMapper(JSONTranscoder())
    codec = measure(ours, events, args.repeat)
    ours.codec = EventCodec(validate=False)
    unchecked = measure(ours, events, args.repeat)
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        counts[type(e).__qualname__] += 1
    print(json.dumps({
        "benchmark": "codec",
        "events": len(events),
        "orders": args.orders,
        "mix": dict(sorted(counts.items())),
        "library": library,
        "codec": codec,
        "codec_unchecked": {k: unchecked[k] for k in ("encode_us", "encode_decode_us")},
        "ratio": {
            "encode": round(library["encode_us"] / codec["encode_us"], 2),
            "decode": round(library["decode_us"] / codec["decode_us"], 2),
            "encode_decode": round(library["encode_decode_us"] / codec["encode_decode_us"], 2),
        },
        "versions": {"python": platform.python_version(), "msgspec": msgspec.__version__,
                     "eventsourcing": metadata.version("eventsourcing")},
    }, indent=2))


if __name__ == "__main__":
    main()
