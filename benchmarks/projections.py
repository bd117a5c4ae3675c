# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Read-model projection throughput: events/s into TimescaleDB and SQLite, and a rebuild.

Why this shape: a projector's cost is (read the log) + (decode events) + (turn them into
rows) + (write rows). The benchmark times each layer on the same log so the ratios say
where time goes:

- ``read_only``: ``recorder.select_notifications`` over the whole log (SQLite reads, no
  decoding);
- ``decode_only``: ``RecorderLog.select`` over the whole log (read + decode into domain
  events, which is what every projector batch starts with) - the ceiling for any
  projector that decodes through the eventsourcing mapper;
- ``timescaledb_full``: the whole log into a fresh PostgreSQL schema with the TimescaleDB
  hypertables, batch after batch as ``Projector.catch_up()`` runs them;
- ``rebuild``: then ``Projector.rebuild()`` of the same schema (tables emptied, the log
  projected again), scaled to ``rebuild_1m_s`` (seconds per million events);
- ``timescaledb_prefix``: batch sizes compared on the first ``--prefix`` notifications;
- ``sqlite_prefix``: the same prefix into an embedded SQLite read-model file;
- ``profile``: one prefix run under cProfile, its top functions by own time.

Client CPU (this process) and server CPU (the PostgreSQL backend, read from /proc) are
reported per event: their sum against the wall time shows how much of the work overlaps.
A run still going after ``--max-run-s`` stops after its batch and is reported with
``complete: false`` (its rows are still checked, up to where it stopped), so a slow
projector cannot push the whole benchmark past ten minutes.

The event log is produced once by the real write model (SQLite event store, the saga
and in-process matching): funded accounts send baskets of crossing limit orders on
several symbols, a few resting orders are cancelled after every basket and the session
is closed now and then (DAY orders expire), until the log holds ``--events``
notifications. It is cached under ``.local/bench/`` keyed by size, so reruns only
project (the first 1,000,000-event log takes about 3 minutes). Every projection run is
checked against the write model's own counts (orders, order events, fills, positions,
position history, balances, ledger and PnL rows, tracked positions) and invariants
(orders' filled quantity and fees equal their fills'; cash equals deposits - fees -
bought + sold), so a projector cannot look fast by dropping rows: a mismatch exits 1.

    python benchmarks/projections.py                  # 1,000,000 events, <= 10 minutes
    python benchmarks/projections.py --quick          # 30,000 events, smoke (< 1 min)
    python benchmarks/projections.py --events 200000 --batch 5000 --no-profile

Prints one JSON object; ``events_per_s`` is the best TimescaleDB run (any batch size).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

# `python benchmarks/projections.py` puts benchmarks/ first on sys.path, where this very
# file would shadow the `projections` package: drop that entry (the project root stays
# importable through the editable install).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

import psycopg

from aggregates.account import Account
from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.errors import DomainError
from aggregates.instruments import load_universe, round_to_tick
from aggregates.market import today_in_tokyo
from aggregates.order import OPEN_STATUSES, Order
from aggregates.position import Position
from api.wiring import event_log
from benchmarks.support import commit, load_avg
from infra.eventstore import eventsourcing_env
from infra.settings import PROJECT_ROOT, Settings
from projections.projectors import (
    EventLog,
    Projector,
    RecorderLog,
    all_projections,
    until_position,
)
from projections.schema import upgrade
from projections.store import ReadStore
from streams.embedded import in_process

CACHE_DIR = PROJECT_ROOT / ".local" / "bench"
TARGET_EVENTS_PER_S = 50_000
BASKET = 256  # what the serve runtime's order desk coalesces at most (api.runtime)
SESSION_EVERY = 20_000  # orders between session closes (resting DAY orders expire)


def topic(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"


ORDER_TOPICS = {topic(getattr(Order, name)) for name in dir(Order)
                if isinstance(getattr(Order, name), type)
                and issubclass(getattr(Order, name), Order.Event)}


# -- the event log ---------------------------------------------------------------------
def log_path(events: int) -> Path:
    return CACHE_DIR / f"events-{events}.sqlite"


def generate_log(events: int, *, accounts: int = 200, symbols: int = 20, seed: int = 7
                 ) -> dict[str, Any]:
    """Drive the real write model until its log holds ``events`` notifications.

    Written to a temporary name and renamed when complete, so an interrupted run never
    leaves a short log behind under the cached name.
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    final = log_path(events)
    partial = final.with_name(final.name + ".partial")
    for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        stale.unlink(missing_ok=True)
    universe = load_universe(None)
    env = eventsourcing_env(Settings(persistence="sqlite", sqlite_path=partial,
                                     sqlite_synchronous="NORMAL"))
    app = TradingApplication(env, universe=universe)
    stages = in_process(app, saga_batch_size=512)
    app.after_command = None  # this script settles the stages after each basket
    instruments = list(universe.instruments)[:symbols]
    ops = Meta.command("bench")
    owners = []
    for i in range(accounts):
        account = app.open_account(f"bench-{i}", owner=f"trader-{i % 17}", meta=ops,
                                   allow_short=True)
        app.deposit(account, 50_000_000_000, Meta.command("bench"))
        owners.append(account)
    stages.settle()
    rng = random.Random(seed)
    placed = cancels = closes = 0
    today = today_in_tokyo(None)  # sessions close only near today (aggregates.market)
    started = time.perf_counter()
    while (app.recorder.max_notification_id() or 0) < events:
        basket = []
        for _ in range(BASKET):
            inst = rng.choice(instruments)
            tick = inst.tick_size(inst.base_price)
            side = "buy" if placed % 2 == 0 else "sell"
            offset = rng.randint(-2, 2) * tick * (1 if side == "buy" else -1)
            basket.append(OrderRequest(
                rng.choice(owners), f"p{placed}", inst.symbol, side,
                inst.lot_size * rng.randint(1, 5), Meta.command(f"trader-{placed % 17}"),
                price=round_to_tick(inst.base_price + offset, inst.tick_table, "down")))
            placed += 1
        outcomes = app.place_orders(basket)
        stages.settle()
        # a trader pulls a few of this basket's orders that are still resting
        resting = [o.order_id for o in outcomes if not isinstance(o, DomainError)
                   and app.get_order(o.order_id).status in OPEN_STATUSES]
        for order_id in rng.sample(resting, min(4, len(resting))):
            app.cancel_order(order_id, Meta.command("bench"))
            cancels += 1
        if placed % SESSION_EVERY < BASKET:
            app.close_session((today - timedelta(days=closes % 8)).isoformat(),
                              Meta.command("bench"))
            closes += 1
        stages.settle()
    seconds = time.perf_counter() - started
    notifications = int(app.recorder.max_notification_id() or 0)
    stages.release()
    app.close()
    with sqlite3.connect(partial) as conn:  # fold the WAL in: one self-contained file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    partial.rename(final)
    made = {"orders_placed": placed, "cancels": cancels, "session_closes": closes,
            "notifications": notifications, "seconds": round(seconds, 1),
            "orders_per_s": round(placed / seconds, 1)}
    final.with_suffix(".json").write_text(json.dumps(made, indent=2))
    return made


def ensure_log(events: int) -> dict[str, Any]:
    path = log_path(events)
    if path.exists() and path.with_suffix(".json").exists():
        made = json.loads(path.with_suffix(".json").read_text())
        made["cached"] = True
        return dict(made)
    made = generate_log(events)
    made["cached"] = False
    return made


@contextmanager
def opened_log(events: int) -> Iterator[RecorderLog]:
    """The cached log opened the way ``tradecore`` opens it for projectors."""
    log, close = event_log(Settings(persistence="sqlite", sqlite_path=log_path(events)))
    try:
        yield log
    finally:
        close()


# -- baselines -------------------------------------------------------------------------
CHECKPOINT = 500  # every batch size compared is a multiple: a batch ends on a checkpoint


class TopicCounts:
    """Events per topic up to every ``CHECKPOINT``-th notification: what a projection that
    stopped at any batch boundary must hold."""

    def __init__(self) -> None:
        self.at: dict[int, Counter[str]] = {0: Counter()}

    def upto(self, position: int) -> Counter[str]:
        return self.at[position]


def read_only(log: RecorderLog, head: int, batch: int = 5000
              ) -> tuple[dict[str, Any], TopicCounts]:
    """Notifications read from the store without decoding; counts events per topic."""
    counts = TopicCounts()
    running: Counter[str] = Counter()
    started = time.perf_counter()
    start = 1
    while start <= head:
        notifications = log.recorder.select_notifications(start=start, limit=batch)
        if not notifications:
            break
        for n in notifications:
            running[n.topic] += 1
            if n.id % CHECKPOINT == 0 or n.id == head:
                counts.at[n.id] = running.copy()
        start = notifications[-1].id + 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "events_per_s": round(head / seconds),
            "us_per_event": round(seconds * 1e6 / head, 1)}, counts


def decode_only(log: EventLog, head: int, batch: int = 5000) -> dict[str, Any]:
    """``EventLog.select`` over the whole log: read and decode, no read-model writes."""
    started = time.perf_counter()
    cpu = time.process_time()
    start = 1
    while start <= head:
        events = log.select(start, batch)
        if not events:
            break
        start = events[-1][0] + 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "events_per_s": round(head / seconds),
            "us_per_event": round(seconds * 1e6 / head, 1),
            "cpu_s": round(time.process_time() - cpu, 2)}


def python_speed() -> float:
    """CPU seconds for a fixed pure-Python loop: compares this machine with others
    (a 2023 desktop core takes about 0.15 s)."""
    started = time.process_time()
    total = 0
    for i in range(3_000_000):
        total += i
    return round(time.process_time() - started, 3)


# -- the read-model databases ------------------------------------------------------------
class Backend:
    """A fresh read-model database for one run, and the CPU its server spent."""

    def __init__(self, kind: str, url: str | None, folder: Path, tag: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.store = ReadStore.sqlite(folder / f"readmodels-{tag}.sqlite")
            self._server_pid: int | None = None
        else:
            assert url is not None
            self.schema = f"bench_proj_{os.getpid()}_{tag}"
            self.url = url
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            self.store = ReadStore.postgres(url, self.schema)
            row = self.store.fetchone("SELECT pg_backend_pid()")
            self._server_pid = int(row[0]) if row else None
        upgrade(self.store)

    def server_cpu_s(self) -> float | None:
        """CPU seconds of the PostgreSQL backend serving this connection (Linux /proc)."""
        if self._server_pid is None:
            return None
        try:
            fields = Path(f"/proc/{self._server_pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            return None
        utime, stime = (int(v) for v in fields.split()[11:13])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.store.close()
        if self.kind == "postgres":
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def expected_rows(topics: Counter[str]) -> dict[str, int]:
    """Rows each read-model table must hold after projecting the whole log."""
    fill_events = topics[topic(Order.PartiallyFilled)] + topics[topic(Order.Filled)]
    settled = topics[topic(Account.BuySettled)] + topics[topic(Account.SellSettled)]
    return {
        "orders": topics[topic(Order.Placed)],
        "order_events": sum(n for t, n in topics.items() if t in ORDER_TOPICS),
        "fills": fill_events,
        "positions": topics[topic(Position.Opened)],
        "position_history": topics[topic(Position.FillApplied)],
        "balances": topics[topic(Account.Opened)],
        "cash_ledger": (topics[topic(Account.Deposited)] + topics[topic(Account.Withdrawn)]
                        + settled),
        "pnl": topics[topic(Position.FillApplied)] + settled,
    }


def verify(store: ReadStore, counts: TopicCounts, position: int, head: int) -> list[str]:
    """What differs between the read models and the write model's log up to ``position``
    (empty: all equal)."""
    problems = []
    for table, rows in expected_rows(counts.upto(position)).items():
        found = store.fetchone(f"SELECT count(*) FROM {table}")
        if found is None or int(found[0]) != rows:
            problems.append(f"{table}: {found[0] if found else None} rows, log says {rows}")
    tracked = store.fetchall("SELECT name, position FROM projection_tracking")
    if sorted(int(p) for _, p in tracked) != [position] * len(all_projections()):
        problems.append(f"projection_tracking {tracked} != {position}")
    filled = store.fetchone("SELECT sum(filled_quantity), sum(fees) FROM orders")
    fills = store.fetchone("SELECT sum(quantity), sum(fee) FROM fills")
    if filled != fills:
        problems.append(f"orders filled/fees {filled} != sum of fills {fills}")
    cash = store.fetchone(
        "SELECT sum(cash), sum(deposited) - sum(withdrawn) - sum(fees) - sum(bought) "
        "+ sum(sold), sum(bought) - sum(sold) FROM balances")
    if cash is None or int(cash[0]) != int(cash[1]):
        problems.append(f"cash != deposits - withdrawals - fees - bought + sold: {cash}")
    elif position == head and int(cash[2]) != 0:  # every trade has both sides by the end
        problems.append(f"bought - sold = {cash[2]} at the head of the log")
    return problems


def project(log: EventLog, backend: Backend, batch_size: int, *, upto: int,
            deadline_s: float, rebuild: bool = False,
            profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """Project notifications 1..``upto`` (``rebuild``: empty the tables first), batch by
    batch as ``Projector.catch_up`` does; stop early after ``deadline_s`` seconds."""
    projector = Projector(backend.store, log, batch_size=batch_size)
    stop = until_position(upto)
    server0 = backend.server_cpu_s()
    cpu0 = time.process_time()
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    if rebuild:
        projector.rebuild(lambda seq, event: True)  # empties the tables, projects nothing
    done = 0
    while n := projector.run_once(stop):
        done += n
        if time.perf_counter() - started > deadline_s:
            break
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    server1 = backend.server_cpu_s()
    client = time.process_time() - cpu0
    out: dict[str, Any] = {
        "batch_size": batch_size, "events": done, "complete": projector.position() >= upto,
        "seconds": round(seconds, 2), "events_per_s": round(done / seconds),
        "client_cpu_us_per_event": round(client * 1e6 / max(done, 1), 1)}
    if server0 is not None and server1 is not None:
        out["server_cpu_us_per_event"] = round((server1 - server0) * 1e6 / max(done, 1), 1)
    return out


def profile_top(profiler: cProfile.Profile, lines: int) -> list[str]:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(lines)
    rows = [line.rstrip() for line in text.getvalue().splitlines()]
    start = next((i for i, line in enumerate(rows) if line.lstrip().startswith("ncalls")), 0)
    return [line.replace(str(PROJECT_ROOT) + "/", "")
            .replace(sys.prefix + "/lib/python3.11/site-packages/", "") for line in
            rows[start:start + lines + 1] if line.strip()]


# -- main ----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="notifications in the log (generated once, then cached)")
    parser.add_argument("--quick", action="store_true", help="30,000 events, smoke run")
    parser.add_argument("--batch", type=int, default=2000,
                        help="batch size of the full TimescaleDB projection and rebuild")
    parser.add_argument("--sweep", default="500,2000,5000",
                        help="batch sizes compared on a prefix of the log (TimescaleDB)")
    parser.add_argument("--prefix", type=int, default=100_000,
                        help="notifications the batch-size sweep, SQLite and the profile "
                             "project (keeps the whole run under 10 minutes)")
    parser.add_argument("--max-run-s", type=float, default=170.0,
                        help="a run still going after this stops after its batch and is "
                             "reported incomplete (rebuild_1m_s then extrapolates)")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    events = 30_000 if args.quick else args.events
    sweep = [int(b) for b in args.sweep.split(",") if b]
    if any(b % CHECKPOINT for b in [*sweep, args.batch]):
        parser.error(f"batch sizes must be multiples of {CHECKPOINT}")

    out: dict[str, Any] = {"commit": commit(), "cpus": os.cpu_count(),
                           "load_avg_start": load_avg(), "python_loop_cpu_s": python_speed()}
    out["log"] = ensure_log(events)
    from infra.services import ensure_timescaledb

    url = ensure_timescaledb()
    failures: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-proj-"))

    def checked(name: str, backend: Backend, run: dict[str, Any], head: int) -> None:
        position = Projector(backend.store, log).position()
        problems = verify(backend.store, counts, position, head)
        run["verified_rows_at"] = position
        failures.extend(f"{name}: {p}" for p in problems)

    with opened_log(events) as log:
        head = log.head()
        prefix = min(args.prefix - args.prefix % CHECKPOINT or CHECKPOINT, head)
        out["events"] = head
        out["read_only"], counts = read_only(log, head)
        out["decode_only"] = decode_only(log, head)
        out["expected_rows"] = expected_rows(counts.upto(head))

        # the whole log into TimescaleDB, then Projector.rebuild() of it
        out["load_avg_timescaledb"] = load_avg()
        full = Backend("postgres", url, folder, "full")
        try:
            if not full.store.timescale:
                failures.append("timescaledb extension missing: the figures are plain "
                                "PostgreSQL")
            out["timescaledb_full"] = project(log, full, args.batch, upto=head,
                                              deadline_s=args.max_run_s)
            checked("timescaledb catch_up", full, out["timescaledb_full"], head)
            out["rebuild"] = project(log, full, args.batch, upto=head,
                                     deadline_s=args.max_run_s, rebuild=True)
            checked("timescaledb rebuild", full, out["rebuild"], head)
        finally:
            full.close()

        # batch sizes, SQLite and the profile on the same prefix of the log
        out["load_avg_prefix_runs"] = load_avg()
        runs = []
        for size in sweep:
            backend = Backend("postgres", url, folder, f"b{size}")
            try:
                run = project(log, backend, size, upto=prefix, deadline_s=args.max_run_s)
                checked(f"timescaledb batch {size}", backend, run, head)
                runs.append(run)
            finally:
                backend.close()
        out["timescaledb_prefix"] = {"prefix": prefix, "runs": runs}
        lite = Backend("sqlite", None, folder, "prefix")
        try:
            out["sqlite_prefix"] = project(log, lite, args.batch, upto=prefix,
                                           deadline_s=args.max_run_s)
            checked("sqlite", lite, out["sqlite_prefix"], head)
        finally:
            lite.close()
        if not args.no_profile:
            profiler = cProfile.Profile()
            backend = Backend("postgres", url, folder, "profile")
            try:
                run = project(log, backend, args.batch, upto=prefix,
                              deadline_s=args.max_run_s, profiler=profiler)
            finally:
                backend.close()
            out["profile"] = {"note": "TimescaleDB, under cProfile (slower than unprofiled)",
                              "run": run, "top_tottime": profile_top(profiler, 25)}
    shutil.rmtree(folder, ignore_errors=True)

    best = max([out["timescaledb_full"], *runs], key=lambda r: r["events_per_s"])
    out["events_per_s"] = best["events_per_s"]
    out["events_per_s_batch"] = best["batch_size"]
    out["sqlite_events_per_s"] = out["sqlite_prefix"]["events_per_s"]
    rebuilt = out["rebuild"]
    out["rebuild_1m_s"] = round(rebuilt["seconds"] * 1_000_000 / max(rebuilt["events"], 1), 1)
    out["rebuild_1m_extrapolated"] = not rebuilt["complete"] or head < 1_000_000
    out["target_events_per_s"] = TARGET_EVENTS_PER_S
    out["decode_share_of_projection"] = round(
        out["decode_only"]["us_per_event"] * out["timescaledb_full"]["events_per_s"] / 1e6, 2)
    out["load_avg_end"] = load_avg()
    out["failures"] = failures
    print(json.dumps(out, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
