# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Daily backtest throughput: a 50-stock, daily-rebalanced 20-day momentum strategy over
the shared J-Quants data, through the live order flow (``tradecore backtest``).

Prints one JSON object:

- ``days_per_s``: sessions simulated per second of the run (data loading, the order
  flow, the read models and the report all included: what a user waits for);
- ``orders_per_s``: orders placed per second of the same run;
- ``eight_year_seconds``: wall seconds of the 2008-2015 run (target < 60 s on the
  2-core dev machine); ``null`` with ``--quick`` or a shorter range, where
  ``eight_year_seconds_estimate`` scales the measured rate to the 8 years' sessions;
- ``run``: sessions, orders, events, final equity, ``phases_seconds`` (data loading,
  the order flow, projecting the read models, the report) and the run's own checks
  (``ok``: every order accepted by the venue reached a final state, cash never
  negative); ``commit``, ``load_avg_*`` and ``calibration`` (the machine is shared);
- ``verify_events_per_s`` (hash-chain verification of a 200,000-event store; target
  >= 200,000) and ``as_of_ms`` (an account with 10,000 events as of a time; target
  < 50 ms), from ``benchmarks/audit_figures.py`` in the same run (``audit``: its details);
- with ``--profile``: where the time goes (cProfile, shares of the run).

    .venv/bin/python benchmarks/backtest.py [--quick] [--from D --to D] [--top N]
        [--no-readmodels] [--profile] [--data-dir PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from benchmarks.audit_figures import measure as audit_measure
from benchmarks.support import calibration, commit, load_avg, profile_summary
from infra.settings import get_settings
from streams.backtest import BacktestSpec, run_backtest
from streams.strategies.momentum import Momentum

EIGHT_YEARS = (date(2008, 1, 4), date(2015, 12, 30))
EIGHT_YEAR_SESSIONS = 1959  # sessions in the shared data from 2008-01-04 to 2015-12-30
QUICK = (date(2015, 11, 2), date(2015, 12, 30))


def audit_figures(quick: bool) -> dict[str, Any]:
    """Issue 13's audit figures (``verify_events_per_s``, ``as_of_ms``), measured by
    ``benchmarks/audit_figures.py`` in this run, so one JSON holds the issue's five."""
    sizes = (dict(events=5_000, accounts=5, account_events=1_000, repeats=2) if quick
             else dict(events=200_000, accounts=20, account_events=10_000, repeats=3))
    figures = audit_measure(**sizes)
    return {"verify_events_per_s": figures["verify_events_per_s"],
            "as_of_ms": figures["as_of_ms"], "audit": figures}


def measure(start: date, end: date, top: int, data: Path, *, readmodels: bool,
            profile: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    profiler = cProfile.Profile() if profile else None
    try:
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = run_backtest(Momentum(top=top), BacktestSpec(
            data, start, end, readmodels=readmodels), folder / "run")
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    days = result.days
    placed = result.orders["placed"]
    full = (start, end) == EIGHT_YEARS
    out: dict[str, Any] = {
        "days_per_s": round(len(days) / seconds, 2),
        "orders_per_s": round(placed / seconds, 1),
        "eight_year_seconds": round(seconds, 1) if full else None,
        "eight_year_seconds_estimate": round(EIGHT_YEAR_SESSIONS * seconds / len(days), 1),
        "target_eight_year_seconds": 60,
        "run": {
            "from": str(start), "to": str(end), "top": top, "readmodels": readmodels,
            "sessions": len(days), "seconds": round(seconds, 2),
            "orders": dict(sorted(result.orders.items())), "events": result.events,
            "phases_seconds": {k: round(v, 2) for k, v in result.phases.items()},
            "events_per_s": round(result.events / seconds),
            "final_equity_yen": days[-1].equity if days else None,
            "ok": bool(days) and placed > 0 and all(d.cash >= 0 for d in days)
            and placed == sum(result.orders[k] for k in (
                "filled", "partially_filled", "expired", "cancelled")),
        },
    }
    if profiler is not None:
        out["profile"] = profile_summary(pstats.Stats(profiler))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run ({QUICK[0]}..{QUICK[1]}, top 10): a smoke test")
    parser.add_argument("--from", dest="start", type=date.fromisoformat, default=None)
    parser.add_argument("--to", dest="end", type=date.fromisoformat, default=None)
    parser.add_argument("--top", type=int, default=None, help="stocks held (default 50)")
    parser.add_argument("--no-readmodels", action="store_true")
    parser.add_argument("--profile", action="store_true", help="add a cProfile summary")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="J-Quants folder (default: TRADECORE_DATA_DIR/jquants)")
    args = parser.parse_args()
    start, end = QUICK if args.quick else EIGHT_YEARS
    start, end = args.start or start, args.end or end
    top = args.top or (10 if args.quick else 50)
    data = args.data_dir or get_settings().data_dir / "jquants"
    out: dict[str, Any] = {"benchmark": "backtest", "commit": commit(),
                           "load_avg_start": load_avg(), "calibration": calibration()}
    out.update(measure(start, end, top, data, readmodels=not args.no_readmodels,
                       profile=args.profile))
    out.update(audit_figures(args.quick))
    out["load_avg_end"] = load_avg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
