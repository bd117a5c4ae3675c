"""The matching stage on its own: venue commands in, ``Venue.Reported`` out; prints JSON.

What is timed (storage excluded, as the issue asks):

* ``objects``: ``MatchingStage.apply`` over batches of stored-form domain events (what
  ``EventLogSource`` hands a stage): decode the venue commands, run the engine, build
  the ``Venue.Reported`` events with their reports and depth.
* ``json``: the same from the events' JSON bytes and back: each input is decoded from
  msgspec JSON into its domain event the way a mapper does (state dict, UUID and
  datetime fields converted, ``object.__new__`` + ``__dict__``), the stage applies the
  batch, and every report event is encoded to JSON bytes. (``infra/codec.py`` does not
  exist on this branch yet; this stands in for it, and is skipped without msgspec.)
* ``baseline``: today's path, ``aggregates.matching.MatchingDesk`` with the same kernel
  engine called per command from the domain events (what ``OrderSaga.to_venue`` does),
  reports as its Python objects (no events built): the "object path" of the facade.

Workload: ``COMMANDS`` venue commands over every symbol of the bundled universe, in
batches of ``BATCH`` (the tracked processor's default): 60% DAY/GTC limit orders within
5 ticks of the base price (a third of them marketable), 8% IOC limits, 2% market orders,
18% cancels and 12% amends (price +-1 tick, size +-1 lot) of orders routed earlier
(some already filled: the venue refuses those). Same seed, same commands every run.

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/matching_stage.py [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aggregates.instruments import Universe, load_universe, tick_size
from aggregates.matching import MatchingDesk
from aggregates.matching import make_engine as desk_engine
from infra.snapshots import MemorySnapshots
from streams.matching import MatchingStage, make_engine
from tests.streams.venue_flow import Flow

COMMANDS = 200_000
BATCH = 256
SEED = 20240603
NOW = datetime(2024, 6, 3, 0, 0, tzinfo=UTC)


def workload(universe: Universe, n: int, seed: int = SEED) -> list[Any]:
    rng = random.Random(seed)
    flow = Flow()
    symbols = list(universe.symbols)
    grid = {}
    for s in symbols:
        ins = universe.get(s)
        grid[s] = (ins.base_price, tick_size(ins.base_price, ins.tick_table))
    live: list[tuple[int, str, int, int]] = []  # key, symbol, quantity, price
    events: list[Any] = []
    key = 0
    while len(events) < n:
        r = rng.random()
        if r < 0.70 or len(live) < 50:
            s = rng.choice(symbols)
            mid, tick = grid[s]
            side = rng.choice(("buy", "sell"))
            sign = 1 if side == "buy" else -1
            # a third marketable (through the mid), the rest passive
            steps = rng.randint(0, 2) if rng.random() < 1 / 3 else -rng.randint(1, 5)
            price = mid + sign * steps * tick
            qty = 100 * rng.randint(1, 5)
            key += 1
            if r < 0.60 or len(live) < 50:
                tif = rng.choice(("day", "day", "gtc"))
                events.append(flow.routed(key, s, side, qty, price, tif=tif))
                live.append((key, s, qty, price))
            elif r < 0.68:
                events.append(flow.routed(key, s, side, qty, price, tif="ioc"))
            else:
                events.append(flow.routed(key, s, side, qty, 0, order_type="market",
                                          tif="ioc"))
        elif r < 0.88:
            k, *_ = live.pop(rng.randrange(len(live)))
            events.append(flow.cancel(k))
        else:
            i = rng.randrange(len(live))
            k, s, qty, price = live[i]
            tick = grid[s][1]
            qty = max(100, qty + 100 * rng.choice((-1, 0, 1)))
            price += tick * rng.choice((-1, 1))
            live[i] = (k, s, qty, price)
            events.append(flow.amend(k, qty, price))
    return events


def batches(events: list[Any], size: int) -> list[list[tuple[int, Any]]]:
    items = list(enumerate(events, 1))
    return [items[i:i + size] for i in range(0, len(items), size)]


def time_stage(universe: Universe, events: list[Any], size: int,
               profiler: cProfile.Profile | None = None) -> tuple[float, int]:
    stage = MatchingStage(make_engine("kernel"), universe.get, MemorySnapshots(),
                          clock=lambda: NOW)
    work = batches(events, size)
    stage.apply(work[0])  # load the kernels outside the timing
    stage.start(0, _Empty())
    reports = 0
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    for batch in work:
        reports += len(stage.apply(batch))
    elapsed = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
    return elapsed, reports


class _Empty:
    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        return []


# --- the JSON stand-in for the codec ------------------------------------------------------
def json_codec() -> tuple[Callable[[Any], tuple[str, bytes]], Callable[[str, bytes], Any]]:
    import msgspec

    from aggregates.market import Market
    from aggregates.order import Order
    from aggregates.venue import Venue

    classes = {f"{c.__module__}:{c.__qualname__}": c for c in (
        Order.Routed, Order.CancelRouted, Order.AmendRouted, Order.ExpiryRouted,
        Market.SessionClosed, Venue.Reported)}
    uuid_fields = {"originator_id", "account_id", "order_id"}
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(dict)

    def encode(event: Any) -> tuple[str, bytes]:
        cls = type(event)
        return f"{cls.__module__}:{cls.__qualname__}", encoder.encode(event.__dict__)

    def decode(topic: str, data: bytes) -> Any:
        state = decoder.decode(data)
        for name in uuid_fields.intersection(state):
            if state[name] is not None:
                state[name] = UUID(state[name])
        state["timestamp"] = datetime.fromisoformat(state["timestamp"])
        event = object.__new__(classes[topic])
        object.__setattr__(event, "__dict__", state)
        return event

    return encode, decode


def time_stage_json(universe: Universe, events: list[Any], size: int) -> float:
    encode, decode = json_codec()
    stored = [encode(e) for e in events]
    assert decode(*stored[0]).__dict__ == events[0].__dict__
    stage = MatchingStage(make_engine("kernel"), universe.get, MemorySnapshots(),
                          clock=lambda: NOW)
    work = batches(stored, size)
    stage.apply([(p, decode(*s)) for p, s in work[0]])
    stage.start(0, _Empty())
    t0 = time.perf_counter()
    for batch in work:
        out = stage.apply([(p, decode(*s)) for p, s in batch])
        for reported in out:
            encode(reported)
    return time.perf_counter() - t0


def time_desk(universe: Universe, events: list[Any]) -> float:
    desk = MatchingDesk(desk_engine("kernel"), universe.get)

    def to_venue(e: Any) -> Any:  # OrderSaga.to_venue, today's caller
        kind = type(e).__qualname__
        if kind == "Order.Routed":
            return desk.new(
                order_id=e.originator_id, account_id=e.account_id, symbol=e.symbol,
                side=e.side, order_type=e.order_type, tif=e.tif, quantity=e.quantity,
                price=e.price, engine_order_id=e.engine_order_id, owner=e.owner,
            )
        if kind == "Order.CancelRouted":
            return desk.cancel(e.engine_order_id)
        if kind == "Order.AmendRouted":
            return desk.amend(e.engine_order_id, e.quantity, e.price)
        return []

    to_venue(events[0])
    desk = MatchingDesk(desk_engine("kernel"), universe.get)
    t0 = time.perf_counter()
    for e in events:
        to_venue(e)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=COMMANDS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the objects run; top functions on stderr")
    args = parser.parse_args()
    universe = load_universe(None)
    events = workload(universe, args.commands)
    # The fixture (every input event, built up front) would otherwise be traversed by
    # each full garbage collection during the timed loop; a running stage holds only
    # its batch. The stage's own objects are collected as usual.
    gc.collect()
    gc.freeze()
    if args.profile:
        profiler = cProfile.Profile()
        time_stage(universe, events, args.batch, profiler)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return
    results: dict[str, Any] = {
        "commands": len(events), "batch": args.batch, "symbols": len(universe.symbols),
        "engine_path": "KernelEngine.submit_arrays, one call per run of commands per symbol",
    }
    elapsed, reports = min((time_stage(universe, events, args.batch) for _ in range(3)),
                           key=lambda r: r[0])
    results["commands_per_s"] = round(len(events) / elapsed)
    results["us_per_command"] = round(elapsed / len(events) * 1e6, 3)
    results["reports"] = reports
    try:
        json_elapsed = min(time_stage_json(universe, events, args.batch) for _ in range(3))
    except ImportError:
        results["json"] = None
    else:
        results["json"] = {
            "commands_per_s": round(len(events) / json_elapsed),
            "us_per_command": round(json_elapsed / len(events) * 1e6, 3),
            "codec": "msgspec JSON stand-in (decode inputs, encode reports)",
        }
    desk_elapsed = min(time_desk(universe, events) for _ in range(3))
    results["baseline"] = {
        "path": "aggregates.matching.MatchingDesk + KernelEngine.submit (object path), "
                "per command, no events built",
        "commands_per_s": round(len(events) / desk_elapsed),
        "us_per_command": round(desk_elapsed / len(events) * 1e6, 3),
    }
    results["ratio"] = round(results["commands_per_s"] / results["baseline"]["commands_per_s"],
                             2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
