# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Audit figures: hash-chain verification throughput and an as-of query's latency; JSON.

- ``verify_events_per_s``: ``api.audit.verify`` over a whole SQLite store (every row read
  in notification order, each digest recomputed and linked to its predecessor), events
  per second, best of ``--repeats``. The store is written by the real write path
  (``TradingApplication`` commands: deposits and withdrawals on ``--accounts`` accounts
  in baskets), so every event is sealed as in production. ``check_only_events_per_s``
  is the check alone over rows already in memory: the rest is SQLite reading the rows.
- ``as_of_ms``: ``api.audit.state_at(account, as_of=T)`` on one account with
  ``--account-events`` events (default 10,000; one second apart on a simulated clock),
  T just before its newest snapshot (the worst case: the longest tail replayed after
  the snapshot before it; snapshots every 200 events), best of ``--repeats``
  (``as_of_ms_median`` beside it). It reads the
  account's rows to find the version at T, loads the newest snapshot at or before it
  and replays the tail. ``replay_ms`` is the same state folded from all the events
  without a snapshot, measured in the same run (the baseline snapshots beat);
  ``show_ms`` adds the full decoded history (what ``audit show`` prints).

Targets: verification >= 200,000 events/s; as-of < 50 ms.

    python benchmarks/audit_figures.py                  # 200,000 events (~1 minute)
    python benchmarks/audit_figures.py --quick          # smoke: small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from aggregates.account import Account
from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.clock import SimulatedClock
from aggregates.instruments import load_universe
from api import audit
from benchmarks.support import calibration, commit, load_avg
from infra.chain import verify_rows
from infra.eventstore import eventsourcing_env
from infra.settings import Settings

TARGETS = {"verify_events_per_s": 200_000, "as_of_ms": 50}
START = datetime(2026, 11, 20, tzinfo=UTC)
BASKET = 50  # events per transaction (a command stores a few; the saga a batch)
SNAPSHOT_EVERY = 200


def _best(run: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), times, result


def _write(app: TradingApplication, account_id: Any, events: int, clock: SimulatedClock
           ) -> None:
    """``events`` deposits/withdrawals on one account, stored ``BASKET`` per transaction
    through ``TradingApplication.store`` (sealed, snapshotted as configured)."""
    account: Account = app.get_account(account_id)
    for i in range(events):
        meta = Meta.command("bench", at=clock.advance(1))
        if i % 2:
            account.withdraw(1_000, meta)
        else:
            account.deposit(2_000, meta)
        if (i + 1) % BASKET == 0 or i + 1 == events:
            app.store(account)


def measure(*, events: int = 200_000, accounts: int = 20, account_events: int = 10_000,
            repeats: int = 3, folder: Path | None = None) -> dict[str, Any]:
    """Build the stores, measure, and return the figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        universe = load_universe(None)
        clock = SimulatedClock(START)

        def open_app(name: str) -> TradingApplication:
            env = eventsourcing_env(Settings(persistence="sqlite",
                                             sqlite_path=Path(tmp) / f"{name}.sqlite"))
            return TradingApplication(env, universe=universe,
                                      snapshot_interval=SNAPSHOT_EVERY, clock=clock)

        # -- verification over a whole store -------------------------------------------------
        app = open_app("verify")
        started = time.perf_counter()
        per_account = max(1, events // accounts)
        for n in range(accounts):
            account_id = app.open_account(f"bench-{n}", owner="bench",
                                          meta=Meta.command("bench", at=clock.now()))
            _write(app, account_id, per_account - 1, clock)
        write_s = time.perf_counter() - started
        stored = app.head()
        store = audit.TradingStore(dict(app.env))
        app.close()
        verify_s, verify_all, report = _best(lambda: audit.verify(store), repeats)
        in_memory = list(audit.stored_rows(store))
        check_s, _, _ = _best(lambda: verify_rows(in_memory), repeats)
        store.close()
        if not report.ok or report.events != stored:
            raise SystemExit(f"verify found problems or missed events: {report.as_dict()}")

        # -- as of a time on one account with many events -------------------------------------
        app = open_app("as_of")
        account_id = app.open_account("busy", owner="bench",
                                      meta=Meta.command("bench", at=clock.now()))
        _write(app, account_id, account_events - 1, clock)
        store = audit.TradingStore(dict(app.env))
        app.close()
        assert store.snapshots is not None
        snapshots = [s.originator_version for s in store.snapshots.get(account_id)]
        # just before the newest snapshot: the longest tail after the one before it
        target = snapshots[-1] - 1 if snapshots else account_events
        events_at = list(store.events.get(account_id, lte=target))
        as_of = events_at[-1].timestamp + timedelta(microseconds=500)
        as_of_s, as_of_all, found = _best(
            lambda: audit.state_at(store, account_id, as_of=as_of), max(repeats, 5))
        if found.version != target:
            raise SystemExit(f"as-of found version {found.version}, expected {target}")

        def replay() -> Any:
            aggregate: Any = None
            for event in store.events.get(account_id, lte=target):
                aggregate = event.mutate(aggregate)
            return aggregate

        replay_s, _, replayed = _best(replay, repeats)
        if vars(replayed) != vars(found.aggregate):
            raise SystemExit("as-of state differs from a full replay")
        show_s, _, _ = _best(lambda: audit.show(store, account_id, as_of=as_of), repeats)
        store.close()
    return {
        "verify_events_per_s": round(stored / verify_s),
        "as_of_ms": round(as_of_s * 1000, 2),
        "as_of_ms_median": round(statistics.median(as_of_all) * 1000, 2),
        "verify": {"events": stored, "aggregates": report.aggregates,
                   "check_only_events_per_s": round(stored / check_s),
                   "seconds_all": [round(t, 3) for t in verify_all],
                   "write_s": round(write_s, 2)},
        "as_of": {"account_events": account_events, "version": target,
                  "from_snapshot": found.from_snapshot, "tail": target - (found.from_snapshot
                                                                          or 0),
                  "replay_ms": round(replay_s * 1000, 2),
                  "ratio_replay_vs_as_of": round(replay_s / as_of_s, 1),
                  "show_ms": round(show_s * 1000, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=200_000,
                        help="events in the verified store")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--account-events", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    args = parser.parse_args()
    if args.quick:
        args.events, args.accounts, args.account_events, args.repeats = 5_000, 5, 1_000, 2
    out: dict[str, Any] = {"benchmark": "audit_figures", "commit": commit(),
                           "load_avg_start": load_avg(), "calibration": calibration(),
                           "args": vars(args), "targets": TARGETS}
    figures = measure(events=args.events, accounts=args.accounts,
                      account_events=args.account_events, repeats=args.repeats)
    out.update(figures)
    out["targets_met"] = {
        "verify_events_per_s": figures["verify_events_per_s"] >= TARGETS["verify_events_per_s"],
        "as_of_ms": figures["as_of_ms"] < TARGETS["as_of_ms"],
    }
    out["load_avg_end"] = load_avg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
