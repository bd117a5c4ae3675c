# ruff: noqa: E402  (imports follow the sys.path fix)
"""The matching stage on its own: venue commands in, ``Venue.Reported`` out; prints JSON.

What is timed (storage excluded, as the issue asks), best of ``REPEATS`` runs:

* top level (``commands_per_s``): ``MatchingStage.apply`` over batches of domain events
  as ``EventLogSource`` hands them to a stage: decode the venue commands, run the
  engine (``KernelEngine.submit_arrays``, one call per run of commands of a symbol),
  build the ``Venue.Reported`` events with their reports and the depth.
* ``json``: the same from the stored JSON bytes and back: each input decoded from its
  bytes into its domain event, and every report event encoded to bytes, with the event
  codec (``infra/codec.py``) when the checkout has it, else a msgspec stand-in that
  decodes the same way (typed, in C).
* ``baseline``: the old path in the same run: d07d3ea's ``aggregates.matching.MatchingDesk``
  (loaded from git) over
  the same kernel engine, called per command from the domain events as
  ``OrderSaga.to_venue`` does (the facade's object path), reports as Python objects and
  no events built (its objects die at once, so the collector's settings hardly move
  it). ``ratio``: the stage over the baseline.

* ``gc_tuned``: the top-level figure with the collector's thresholds raised
  (``TUNED_GC``); the top level runs with Python's defaults. Both run with what was
  alive after the warm-up (fixtures, compiled kernels) frozen, as a server would freeze
  it once started.

``commands_per_cpu_s`` divides by the process's CPU time instead of wall time: on a
shared machine it shows what other processes' load took away. ``loadavg_*`` say how
shared it was.

The variants run in interleaved rounds, best of ``REPEATS`` each, so a shared machine's
load moves them alike.

Workload: ``COMMANDS`` venue commands over every symbol of the bundled universe, in
batches of ``BATCH`` (the tracked processor's default): 60% DAY/GTC limit orders within
5 ticks of the base price (a third of them marketable), 8% IOC limits, 2% market orders,
18% cancels and 12% amends (price +-1 tick, size +-1 lot) of orders routed earlier
(some already filled: the venue refuses those). Same seed, same commands every run.

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/matching_stage.py [--profile]``
(about two minutes on 2 cores); ``--profile`` prints cProfile's top functions instead.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import os
import pstats
import random
import sys
import time
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.utils import get_topic

_ROOT = Path(__file__).resolve().parent.parent  # its event factory lives with the tests
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from aggregates.instruments import Universe, load_universe, tick_size
from infra.snapshots import MemorySnapshots
from streams.matching import MatchingStage, make_engine
from tests.streams.venue_flow import Flow

COMMANDS = 200_000
BATCH = 256
REPEATS = 5
TUNED_GC = (50_000, 20, 100)
"""Collector thresholds for the ``gc_tuned`` figure. With the defaults (700, 10, 10) the
objects a batch keeps alive while it is applied (its report events) are promoted to the
oldest generation, and its full collections walk every long-lived object: the
kernels' compiled code (about 25 ms a collection unless frozen), the tickets, in a
server the aggregate caches too."""
SEED = 20240603
NOW = datetime(2024, 6, 3, 0, 0, 1, 250_000, tzinfo=UTC)  # a live clock's microseconds


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


def time_stage(universe: Universe, work: list[list[tuple[int, Any]]],
               profiler: cProfile.Profile | None = None, *, tuned_gc: bool = False
               ) -> tuple[float, float, int]:
    stage = MatchingStage(make_engine("kernel"), universe.get, MemorySnapshots(),
                          clock=lambda: NOW)
    stage.apply(work[0])  # load the kernels outside the timing
    stage.start(0, _Empty())
    thresholds = gc.get_threshold()
    if tuned_gc:
        gc.set_threshold(*TUNED_GC)
    reports = 0
    if profiler is not None:
        profiler.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in work:
        reports += len(stage.apply(batch))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        profiler.disable()
    gc.set_threshold(*thresholds)
    return elapsed, cpu, reports


class _Empty:
    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        return []


# --- the stored form -----------------------------------------------------------------------
def json_codec() -> tuple[Callable[[Any], tuple[str, bytes]], Callable[[str, bytes], Any], str]:
    """``(encode, decode, name)``: the event codec (``infra.codec``) when this checkout has
    it, else a msgspec stand-in that decodes the way it does (typed, in C: UUIDs and
    datetimes parsed by msgspec, the event materialised as the mapper does)."""
    try:
        from infra import codec  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        def encode_real(event: Any) -> tuple[str, bytes]:
            return get_topic(type(event)), codec.encode(event)

        return encode_real, codec.decode, "infra.codec (msgspec, typed, schema_version)"

    import msgspec

    from aggregates.market import Market
    from aggregates.order import Order
    from aggregates.venue import Venue

    encoder = msgspec.json.Encoder()
    structs: dict[str, tuple[type, msgspec.json.Decoder[Any]]] = {}
    for cls in (Order.Routed, Order.CancelRouted, Order.AmendRouted, Order.ExpiryRouted,
                Market.SessionClosed, Venue.Reported):
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        struct = msgspec.defstruct(cls.__qualname__.replace(".", "_"),
                                   [(n, hints[n]) for n in names])
        structs[get_topic(cls)] = (cls, msgspec.json.Decoder(struct))

    def encode(event: Any) -> tuple[str, bytes]:
        return get_topic(type(event)), encoder.encode(event.__dict__)

    def decode(topic: str, data: bytes) -> Any:
        cls, decoder = structs[topic]
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", msgspec.structs.asdict(decoder.decode(data)))
        return event

    return encode, decode, "msgspec stand-in (typed decode, plain encode)"


def stored_batches(work: list[list[tuple[int, Any]]]
                   ) -> list[list[tuple[int, tuple[str, bytes]]]]:
    encode, decode, _ = json_codec()
    stored = [[(p, encode(e)) for p, e in batch] for batch in work]
    assert decode(*stored[0][0][1]).__dict__ == work[0][0][1].__dict__
    return stored


def time_stage_json(universe: Universe, stored: list[list[tuple[int, tuple[str, bytes]]]]
                    ) -> tuple[float, float]:
    encode, decode, _ = json_codec()
    stage = MatchingStage(make_engine("kernel"), universe.get, MemorySnapshots(),
                          clock=lambda: NOW)
    stage.apply([(p, decode(*s)) for p, s in stored[0]])
    stage.start(0, _Empty())
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in stored:
        out = stage.apply([(p, decode(*s)) for p, s in batch])
        for reported in out:
            encode(reported)
    return time.perf_counter() - t0, time.process_time() - c0


BASELINE_COMMIT = "d07d3ea"


def baseline_desk_module() -> Any:
    """The matching port as commit d07d3ea had it (``aggregates/matching.py``, since
    removed: the venue is a stage now), loaded from git into a module of its own."""
    import subprocess
    import types

    source = subprocess.run(
        ["git", "show", f"{BASELINE_COMMIT}:aggregates/matching.py"], check=True,
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent).stdout
    module = types.ModuleType("baseline_matching")
    module.__file__ = f"{BASELINE_COMMIT}:aggregates/matching.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def time_desk(universe: Universe, events: list[Any]) -> tuple[float, float]:
    baseline = baseline_desk_module()
    MatchingDesk, desk_engine = baseline.MatchingDesk, baseline.make_engine
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
    t0, c0 = time.perf_counter(), time.process_time()
    for e in events:
        to_venue(e)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=COMMANDS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the objects run; top functions on stderr")
    args = parser.parse_args()
    universe = load_universe(None)
    events = workload(universe, args.commands)
    work = batches(events, args.batch)
    try:
        stored: list[Any] | None = stored_batches(work)
    except ImportError:
        stored = None
    # Load the kernels, then freeze what is alive (the fixtures: every input, built up
    # front; the compiled kernels) out of the collector's way, as a server would once
    # started. The stages' own objects are collected as usual.
    time_desk(universe, events[:1000])
    time_stage(universe, work[:2])
    gc.collect()
    gc.freeze()
    if args.profile:
        profiler = cProfile.Profile()
        time_stage(universe, work, profiler)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return
    n = len(events)
    results: dict[str, Any] = {
        "commands": n, "batch": args.batch, "symbols": len(universe.symbols),
        "engine_path": MatchingStage(make_engine("kernel"), universe.get).books.engine_path
        + ": one call per run of commands of a symbol (a run ends early only where a "
          "command needs the exact state between two others)",
        "repeats": REPEATS, "loadavg_before": list(os.getloadavg()),
    }

    def rates(wall: float, cpu: float) -> dict[str, Any]:
        return {"commands_per_s": round(n / wall), "us_per_command": round(wall / n * 1e6, 3),
                "commands_per_cpu_s": round(n / cpu)}

    # Interleaved rounds, best of each: a shared machine's load moves all alike.
    runs: dict[str, list[tuple[float, float]]] = {
        "stage": [], "gc_tuned": [], "json": [], "baseline": []}
    for _ in range(REPEATS):
        wall, cpu, results["reports"] = time_stage(universe, work)
        runs["stage"].append((wall, cpu))
        wall, cpu, _ = time_stage(universe, work, tuned_gc=True)
        runs["gc_tuned"].append((wall, cpu))
        if stored is not None:
            runs["json"].append(time_stage_json(universe, stored))
        runs["baseline"].append(time_desk(universe, events))

    def best(name: str) -> dict[str, Any]:
        return rates(min(r[0] for r in runs[name]), min(r[1] for r in runs[name]))

    results.update(best("stage"))
    results["gc_tuned"] = {**best("gc_tuned"), "gc": f"set_threshold{TUNED_GC}"}
    results["json"] = None if stored is None else {**best("json"), "codec": json_codec()[2]}
    results["baseline"] = {
        "path": "d07d3ea's aggregates.matching.MatchingDesk + KernelEngine.submit (object path), "
                "per command, no events built",
        **best("baseline"),
    }
    base = results["baseline"]["commands_per_s"]
    results["ratio"] = round(results["commands_per_s"] / base, 2)
    results["gc_tuned"]["ratio"] = round(results["gc_tuned"]["commands_per_s"] / base, 2)
    results["loadavg_after"] = list(os.getloadavg())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
