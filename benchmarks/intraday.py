# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Intraday backtest speed on the GOOG LOBSTER day; prints one JSON object on stdout.

What it measures, all in this one run so the ratios do not depend on how busy the
shared machine was at some other time (runs are interleaved, best of ``--repeats``):

Wall figures time the kernel call (and, for agents, the per-day stamp preparation);
``*_cpu_*`` figures time the whole call in thread CPU time (allocation included), which a
descheduled run does not inflate.

* ``plain``: the replay alone (:func:`streams.replay.lobster.replay`), messages/s;
* ``twap`` / ``maker`` / ``maker_fast``: the same day through
  :func:`streams.replay.intraday.run` with an agent acting (the maker requoting every
  second, and every 0.1 s), messages/s and ``ratio_to_plain`` (agent / plain: 1.0 means
  the agent costs nothing);
* ``reference``: the plain-Python reference of the model (:mod:`kernels.intraday_reference`)
  on the maker configuration, once, and the kernel's speedup over it.

Each agent's fills are checked equal to the reference's (``reference.fills_equal``).
Run: ``.venv/bin/python benchmarks/intraday.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from benchmarks.support import calibration, commit, load_avg
from infra.settings import get_settings
from kernels.intraday_reference import run_reference
from streams.replay.intraday import (
    AgentConfig,
    MakerConfig,
    TwapConfig,
    params_for,
    run,
    schedule_for,
    times_ns,
)
from streams.replay.lobster import load, replay

GOOG = "lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"
AGENTS: dict[str, AgentConfig] = {
    "twap": TwapConfig(quantity=20_000, interval_s=300.0, limit_ticks=5),
    "maker": MakerConfig(half_spread_ticks=1, size=100, inventory_limit=1_000, requote_s=1.0),
    "maker_fast": MakerConfig(half_spread_ticks=1, size=100, inventory_limit=1_000, requote_s=0.1),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="one repeat (smoke run)")
    args = parser.parse_args()
    repeats = 1 if args.quick else max(1, args.repeats)
    path = get_settings().data_dir / GOOG
    if not path.exists():
        print(json.dumps({"error": f"{path} is absent (see the shared data README)"}))
        return 1
    figures: dict[str, object] = {"commit": commit(), "load_avg_start": load_avg(),
                                  "calibration": calibration()}  # fmt: skip
    day = load(path)
    messages = int(day.messages.shape[0]) - 1  # message 0 is folded into the seed
    replay(day)  # compile, or load the Numba cache
    for config in AGENTS.values():
        run(day, config)
    seconds: dict[str, list[float]] = {name: [] for name in ("plain", *AGENTS)}
    cpu: dict[str, list[float]] = {name: [] for name in ("plain", *AGENTS)}
    fills: dict[str, int] = {}
    for _ in range(repeats):
        started = time.thread_time()
        seconds["plain"].append(replay(day).seconds)
        cpu["plain"].append(time.thread_time() - started)
        for name, config in AGENTS.items():
            started = time.thread_time()
            result = run(day, config)
            cpu[name].append(time.thread_time() - started)
            seconds[name].append(result.seconds)
            fills[name] = int(result.fills.shape[0])
    best = {name: min(values) for name, values in seconds.items()}
    best_cpu = {name: min(values) for name, values in cpu.items()}
    figures["messages"] = messages
    figures["repeats"] = repeats
    figures["plain"] = {
        "msgs_per_s": round(messages / best["plain"]),
        "median_msgs_per_s": round(messages / statistics.median(seconds["plain"])),
        "msgs_per_cpu_s": round(messages / best_cpu["plain"]),
    }
    for name, config in AGENTS.items():
        figures[name] = {
            "msgs_per_s": round(messages / best[name]),
            "median_msgs_per_s": round(messages / statistics.median(seconds[name])),
            "ratio_to_plain": round(best["plain"] / best[name], 3),
            "msgs_per_cpu_s": round(messages / best_cpu[name]),
            "cpu_ratio_to_plain": round(best_cpu["plain"] / best_cpu[name], 3),
            "actions": int(schedule_for(config).shape[0]),
            "fills": fills[name],
        }
    reference: dict[str, object] = {}
    for name, config in AGENTS.items():
        started = time.perf_counter()
        ref_fills, _counters = run_reference(day.messages, times_ns(day), day.orderbook,
                                             params_for(config), schedule_for(config))  # fmt: skip
        elapsed = time.perf_counter() - started
        kernel_fills = [tuple(row) for row in run(day, config).fills.tolist()]
        reference[name] = {
            "msgs_per_s": round(messages / elapsed),
            "kernel_speedup": round(elapsed / best[name], 1),
            "fills_equal": kernel_fills == ref_fills,
        }
    figures["reference"] = reference
    figures["load_avg_end"] = load_avg()
    figures["ok"] = all(r["fills_equal"] for r in reference.values())  # type: ignore[index]
    print(json.dumps(figures, indent=2))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
