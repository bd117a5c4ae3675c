"""Matching engine throughput and latency; prints one JSON object on stdout.

Workloads:

* ``lobster``: the GOOG 2012-06-21 day (147,916 messages). ``kernel_msgs_per_s`` is the
  whole replay in one kernel call, *including* the top-10 comparison with the file after
  every message. ``facade_msgs_per_s`` pushes the same messages (types 1/2/3, and type 4
  as a REDUCE of the named order: the facade has no "execute this order" command) through
  ``KernelEngine.submit_arrays`` in batches; ``facade_objects_msgs_per_s`` through
  ``submit_batch`` with ``Command`` objects; ``reference_msgs_per_s`` the same objects
  through the pure-Python reference. Orders from before 09:30 are unknown to the facade
  and the reference (rejected), exactly alike for both.
* ``mix``: exchange-core's benchmark shape: about 1,000 resting orders, then 9% GTC
  limits, 3% IOC, 6% cancels and 82% amends that move the price (some also the size).
  ``kernel_ops_per_s`` is ``run_batch`` over the whole array; the percentiles come from a
  second run that reads the CPU cycle counter around every command inside the batch
  (cycles converted to time with a frequency calibrated against ``perf_counter_ns``).
  The reference runs the first ``reference_ops`` commands only (it is slow).
* ``compile``: Numba compile time of the kernels with an empty cache, and the load time
  with a warm cache, each in a fresh interpreter.

Run: ``.venv/bin/python benchmarks/matching.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

from infra.settings import get_settings
from kernels.book import S_EVENTS
from kernels.contract import Command, CommandKind, OrderType, Side, TickBand, TimeInForce
from kernels.engine import KernelEngine
from kernels.lobster import LOBSTER_TICK
from kernels.matching import (
    COMMAND_FIELDS,
    EVENT_FIELDS,
    NEED_EVENTS,
    book_tuple,
    cycle_counter,
    run_batch,
)
from kernels.reference import ReferenceEngine
from streams.replay.lobster import load, replay

GOOG = "lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"
MIX_OPS = 3_000_000
MIX_RESTING = 1_000
REFERENCE_MIX_OPS = 200_000
BATCH = 10_000
MID = 100_000


@njit(cache=True)
def _cycles() -> int:
    return cycle_counter()  # type: ignore[call-arg]


def cycles_per_ns() -> float:
    _cycles()
    c0, t0 = _cycles(), time.perf_counter_ns()
    while time.perf_counter_ns() - t0 < 200_000_000:
        pass
    return (_cycles() - c0) / (time.perf_counter_ns() - t0)


@njit(cache=True)
def generate_mix(seed: int, resting: int, ops: int) -> tuple[np.ndarray, np.ndarray]:
    """exchange-core style order flow over a pool of ``resting`` order slots.

    Draws 9% GTC, 3% IOC, 6% cancel, 82% move. The pool keeps the book near ``resting``
    orders: a GTC needs a free slot (one a cancel emptied) and becomes a move when there
    is none; a cancel or move that draws an empty slot places a GTC there instead. The
    mix actually emitted is returned as counts (GTC, IOC, cancel, move). GTC prices sit
    away from the touch, IOCs take small size at it, so the generator's belief of what
    rests is nearly always right; the engine rejects the rare command it got wrong.
    """
    np.random.seed(seed)
    out = np.zeros((resting + ops, 8), dtype=np.int64)
    pool = np.zeros(resting, dtype=np.int64)
    pool_side = np.zeros(resting, dtype=np.int64)
    free = np.zeros(resting, dtype=np.int64)
    n_free = 0
    emitted = np.zeros(4, dtype=np.int64)
    next_id = 1
    for r in range(resting + ops):
        roll = np.random.randint(0, 100) if r >= resting else 0
        k = np.random.randint(0, resting) if r >= resting else r
        if r >= resting and roll < 9:
            if n_free > 0:
                n_free -= 1
                k = free[n_free]
            else:
                roll = 50  # no free slot: a move instead
        if 9 <= roll < 12:  # IOC near the touch: small size
            side = 1 if np.random.randint(0, 2) == 0 else -1
            out[r, 0] = 0
            out[r, 1] = next_id
            out[r, 2] = side
            out[r, 4] = 2
            out[r, 5] = MID + side * (1 + np.random.randint(0, 3))
            out[r, 6] = 1 + np.random.randint(0, 50)
            next_id += 1
            emitted[1] += 1
            continue
        if roll >= 12 and pool[k] != 0:
            if roll < 18:  # cancel
                out[r, 0] = 1
                out[r, 1] = pool[k]
                pool[k] = 0
                free[n_free] = k
                n_free += 1
                emitted[2] += 1
            else:  # move: new price on the same side, new size
                side = pool_side[k]
                out[r, 0] = 3
                out[r, 1] = pool[k]
                out[r, 5] = MID - side * (1 + np.random.randint(0, 40))
                out[r, 6] = 100 + np.random.randint(0, 900)
                emitted[3] += 1
            continue
        if pool[k] == 0 and roll >= 12:  # empty slot drawn: fill it
            for j in range(n_free):
                if free[j] == k:
                    free[j] = free[n_free - 1]
                    n_free -= 1
                    break
        side = 1 if np.random.randint(0, 2) == 0 else -1
        out[r, 0] = 0
        out[r, 1] = next_id
        out[r, 2] = side
        out[r, 4] = 1
        out[r, 5] = MID - side * (1 + np.random.randint(0, 40))
        out[r, 6] = 100 + np.random.randint(0, 900)
        pool[k] = next_id
        pool_side[k] = side
        next_id += 1
        if r >= resting:
            emitted[0] += 1
    return out, emitted


def best_of(runs: int, fn: object) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


def lobster_commands(messages: np.ndarray) -> np.ndarray:
    """LOBSTER messages 1.. as facade command rows (type 4 as REDUCE of the named order)."""
    m = messages[1:]
    m = m[np.isin(m[:, 0], (1, 2, 3, 4))]
    rows = np.zeros((m.shape[0], COMMAND_FIELDS), dtype=np.int64)
    kind = np.select([m[:, 0] == 1, m[:, 0] == 3], [0, 1], default=2)
    rows[:, 0] = kind
    rows[:, 1] = m[:, 1]
    rows[:, 2] = m[:, 4]
    rows[:, 5] = m[:, 3]
    rows[:, 6] = m[:, 2]
    return rows


def lobster_figures() -> dict[str, float | int | str]:
    path = get_settings().data_dir / GOOG
    if not path.exists():
        return {"skipped": f"{path} is absent"}
    day = load(path)
    replay(day)
    kernel_s = min(replay(day).seconds for _ in range(3))
    result = replay(day)
    rows = lobster_commands(day.messages)
    commands = [
        Command(CommandKind(k), o, Side(s), OrderType(t), TimeInForce(f), p, q, w)
        for k, o, s, t, f, p, q, w in rows.tolist()
    ]
    bands = (TickBand(1 << 62, LOBSTER_TICK),)

    def facade_arrays() -> None:
        engine = KernelEngine(initial_capacity=1 << 16)
        engine.add_symbol("GOOG", bands, LOBSTER_TICK, 1 << 62)
        for i in range(0, rows.shape[0], BATCH):
            engine.submit_arrays("GOOG", rows[i : i + BATCH])

    def facade_objects() -> None:
        engine = KernelEngine(initial_capacity=1 << 16)
        engine.add_symbol("GOOG", bands, LOBSTER_TICK, 1 << 62)
        for i in range(0, len(commands), BATCH):
            engine.submit_batch("GOOG", commands[i : i + BATCH])

    def reference() -> None:
        engine = ReferenceEngine()
        engine.add_symbol("GOOG", bands, LOBSTER_TICK, 1 << 62)
        engine.submit_batch("GOOG", commands)

    facade_s = best_of(3, facade_arrays)
    objects_s = best_of(1, facade_objects)
    reference_s = best_of(1, reference)
    n = rows.shape[0]
    return {
        "messages": int(day.messages.shape[0]),
        "kernel_msgs_per_s": round(result.counts["messages_compared"] / kernel_s),
        "kernel_replay_unexplained_mismatches": result.counts["unexplained_mismatches"],
        "facade_msgs_per_s": round(n / facade_s),
        "facade_objects_msgs_per_s": round(n / objects_s),
        "reference_msgs_per_s": round(n / reference_s),
        "facade_batch": BATCH,
    }


def mix_figures() -> dict[str, float | int]:
    flow, emitted = generate_mix(7, MIX_RESTING, MIX_OPS)
    seed_rows, ops = flow[:MIX_RESTING], flow[MIX_RESTING:]
    bands = (TickBand(1 << 40, 1),)

    def fresh() -> KernelEngine:
        # slots for twice the book: the id map (2x slots) then stays cache-sized; an
        # oversized map (1 << 14 slots) costs ~30% here in cache misses
        engine = KernelEngine(initial_capacity=1 << 11)
        engine.add_symbol("MIX", bands, 1, 1 << 40)
        engine.submit_arrays("MIX", seed_rows)
        return engine

    def kernel_run(cycles: np.ndarray) -> tuple[float, float, dict[str, int], KernelEngine]:
        """The whole flow in ``run_batch`` itself, without the facade. The event buffer
        (64 Ki rows, touched before timing) is emptied whenever the kernel reports it
        full: one return to Python per ~30,000 commands."""
        engine = fresh()
        arrays = engine._books["MIX"].arrays
        ev = np.ones((1 << 16, EVENT_FIELDS), dtype=np.int64)
        tally = {"rejected": 0, "fills": 0}
        nxt, status = 0, -1
        elapsed = cpu = 0.0
        while status != 0:
            arrays.state[S_EVENTS] = 0
            t, c = time.perf_counter(), time.thread_time()
            nxt, status = run_batch(book_tuple(arrays), ops, nxt, ev, cycles)
            elapsed += time.perf_counter() - t
            cpu += time.thread_time() - c
            if status not in (0, NEED_EVENTS):
                raise RuntimeError(f"mix batch stopped at {nxt} with status {status}")
            kinds = ev[: arrays.state[S_EVENTS], 0]
            tally["rejected"] += int((kinds == 6).sum())
            tally["fills"] += int((kinds == 1).sum())
        return elapsed, cpu, tally, engine

    kernel_run(np.zeros(0, dtype=np.int64))
    runs = [kernel_run(np.zeros(0, dtype=np.int64))[:2] for _ in range(5)]
    kernel_s = min(wall for wall, _ in runs)
    kernel_cpu_s = min(cpu for _, cpu in runs)
    cycles = np.zeros(ops.shape[0], dtype=np.int64)
    _, _, tally, engine = kernel_run(cycles)
    ghz = cycles_per_ns()
    ns = cycles / ghz
    rejected, fills = tally["rejected"], tally["fills"]

    def facade_arrays() -> None:
        engine = fresh()
        for i in range(0, ops.shape[0], BATCH):
            engine.submit_arrays("MIX", ops[i : i + BATCH])

    facade_s = best_of(3, facade_arrays)
    subset = ops[:REFERENCE_MIX_OPS]
    commands = [
        Command(
            CommandKind(k), o, Side(s) if s else Side.BUY, OrderType(t), TimeInForce(f), p, q, w
        )
        for k, o, s, t, f, p, q, w in subset.tolist()
    ]
    seed_commands = [
        Command(CommandKind(k), o, Side(s), OrderType(t), TimeInForce(f), p, q, w)
        for k, o, s, t, f, p, q, w in seed_rows.tolist()
    ]

    def facade_objects() -> None:
        engine = fresh()
        for i in range(0, len(commands), BATCH):
            engine.submit_batch("MIX", commands[i : i + BATCH])

    def reference() -> None:
        engine = ReferenceEngine()
        engine.add_symbol("MIX", bands, 1, 1 << 40)
        engine.submit_batch("MIX", seed_commands)
        engine.submit_batch("MIX", commands)

    objects_s = best_of(1, facade_objects)
    reference_s = best_of(1, reference)
    kernel_ops = ops.shape[0] / kernel_s
    reference_ops = len(commands) / reference_s
    return {
        "ops": int(ops.shape[0]),
        "emitted_mix": dict(
            zip(
                ("gtc", "ioc", "cancel", "move"),
                (round(c / ops.shape[0], 4) for c in emitted),
                strict=True,
            )
        ),
        "resting_at_end": engine.resting("MIX"),
        "rejected_ops_fraction": round(rejected / ops.shape[0], 4),
        "fills": fills,
        "kernel_ops_per_s": round(kernel_ops),
        "kernel_ops_per_cpu_s": round(ops.shape[0] / kernel_cpu_s),
        "p50_us": round(float(np.percentile(ns, 50)) / 1000, 3),
        "p99_us": round(float(np.percentile(ns, 99)) / 1000, 3),
        "p999_us": round(float(np.percentile(ns, 99.9)) / 1000, 3),
        "max_us": round(float(ns.max()) / 1000, 3),
        "tsc_ghz": round(ghz, 3),
        "facade_ops_per_s": round(ops.shape[0] / facade_s),
        "facade_objects_ops_per_s": round(len(commands) / objects_s),
        "reference_ops": len(commands),
        "reference_ops_per_s": round(reference_ops),
        "speedup": round(kernel_ops / reference_ops, 1),
    }


def compile_figures() -> dict[str, float]:
    probe = (
        "import time; t = time.perf_counter()\n"
        "from kernels.engine import KernelEngine\n"
        "from kernels.contract import Command, CommandKind, TickBand\n"
        "import kernels.lobster\n"
        "e = KernelEngine(); e.add_symbol('X', (TickBand(100, 1),), 1, 100)\n"
        "e.submit('X', Command(CommandKind.NEW, 1, price=10, quantity=1))\n"
        "e.depth('X'); e.snapshot()\n"
        "print(time.perf_counter() - t)\n"
    )
    root = Path(__file__).resolve().parent.parent
    figures = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_compile_s", "cached_load_s"):
            out = subprocess.run(
                [sys.executable, "-c", probe],
                env=env,
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            )
            figures[label] = round(float(out.stdout.strip()), 2)
    return figures


def main() -> None:
    figures = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "compile": compile_figures(),
        "lobster": lobster_figures(),
        "mix": mix_figures(),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
