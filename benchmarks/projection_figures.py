# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Projection throughput figures: the bulk rebuild against the row-by-row one, and live
projection workers, on the same log in the same run.

- ``row_by_row``: ``Projector.rebuild()`` (batch after batch, as a live projector
  writes: upserts, indexes kept up to date row by row) into a fresh TimescaleDB schema;
- ``rebuild``: ``tradecore projections rebuild``'s path
  (:func:`streams.projection_rebuild.rebuild_in_processes`, ``--processes``) into
  another fresh schema: ``rebuild_events_per_s``; also in one process
  (``rebuild_one_process``) and into SQLite (``sqlite_rebuild``);
- ``workers``: ``tradecore worker projections`` runnables following the log from its
  start, in processes of their own: one worker of every projection, then one worker per
  group (``orders`` | the rest) at once: ``projection_events_per_s`` is the events of
  the log over the seconds until every worker has reached its head.

Events per second are the log's notifications (all of them, the venue reports no
projection reads included) over wall seconds. Every run is checked: the bulk rebuild's
tables must equal the row-by-row rebuild's, row for row (an md5 of each table's sorted
rows, computed by PostgreSQL), and each run's row counts and invariants must match the
log's (``benchmarks/projections.py``'s ``verify``); a mismatch is listed under
``failures`` and exits 1. The machine is shared: ``load_avg_*`` say how busy it was.

    python benchmarks/projection_figures.py                 # 200,000 events
    python benchmarks/projection_figures.py --events 1000000
    python benchmarks/projection_figures.py --quick         # 30,000 events, smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from benchmarks.projections import (
    Backend,
    ensure_log,
    log_path,
    opened_log,
    read_only,
    verify,
)
from benchmarks.support import commit, load_avg
from infra.settings import Settings
from projections.projectors import Projector, RecorderLog, all_projections, select
from projections.rebuild import rebuild
from projections.store import ReadStore
from streams.projection_rebuild import groups_for, rebuild_in_processes
from streams.projection_worker import ProjectionWorker, open_event_log

TARGET_REBUILD_EVENTS_PER_S = 50_000
WORKER_GROUPS = (["orders"], ["balances", "halts", "positions"])


def table_digests(store: ReadStore) -> dict[str, str]:
    """An md5 of each projection table's rows in a fixed order (PostgreSQL computes it)."""
    out = {}
    for table in (t for p in all_projections() for t in p.tables):
        row = store.fetchone(f"SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, "
                             f"'|' ORDER BY r::text)), '') FROM {table} r")
        out[table] = str(row[0]) if row else ""
    tracked = store.fetchall("SELECT name, position FROM projection_tracking ORDER BY name")
    out["projection_tracking"] = repr([tuple(r) for r in tracked])
    return out


def timed(run: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def cpu_per_event(backend: Backend, run: Any, events: int) -> tuple[Any, float, dict[str, Any]]:
    """``run`` timed, with the CPU this process and its PostgreSQL backend spent on it
    per event (one connection, one process: the 1-process runs)."""
    server, client = backend.server_cpu_s(), time.process_time()
    result, seconds = timed(run)
    cpu = {"client_cpu_us_per_event": round((time.process_time() - client) * 1e6 / events, 1)}
    after = backend.server_cpu_s()
    if server is not None and after is not None:
        cpu["server_cpu_us_per_event"] = round((after - server) * 1e6 / events, 1)
    return result, seconds, cpu


def figures(events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"events": events, "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds), **extra}


# -- live workers, each in a process of its own --------------------------------------------
def _follow(log_file: str, url: str, schema: str, names: list[str], head: int,
            results: Any) -> None:
    """A projection worker over the benchmark's log until it has projected ``head``."""
    import threading

    settings = Settings(persistence="sqlite", sqlite_path=Path(log_file))
    worker = ProjectionWorker(settings, names,
                              open_store=lambda: ReadStore.postgres(url, schema),
                              open_log=lambda: open_event_log(settings))
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    started = time.time()
    runner.start()
    while worker.position != head and runner.is_alive():
        time.sleep(0.005)
    done = time.time()
    stop.set()
    runner.join()
    results.put((names, started, done, worker.position))


def follow(log_file: Path, url: str, schema: str, groups: list[list[str]], head: int
           ) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    processes = [spawn.Process(target=_follow, args=(str(log_file), url, schema, names,
                                                     head, results)) for names in groups]
    for process in processes:
        process.start()
    reports = [results.get(timeout=900) for _ in processes]
    for process in processes:
        process.join(60)
    started = min(r[1] for r in reports)
    seconds = max(r[2] for r in reports) - started
    return figures(head, seconds, workers={"+".join(r[0]): {
        "seconds": round(r[2] - r[1], 2), "reached": r[3]} for r in reports},
        complete=all(r[3] == head for r in reports))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000,
                        help="notifications in the log (generated once, then cached)")
    parser.add_argument("--quick", action="store_true", help="30,000 events, smoke run")
    parser.add_argument("--processes", type=int, default=2,
                        help="processes of the bulk rebuild (tradecore projections "
                             "rebuild --processes)")
    parser.add_argument("--batch", type=int, default=2000,
                        help="batch size of the row-by-row rebuild and the workers")
    args = parser.parse_args()
    events = 30_000 if args.quick else args.events

    out: dict[str, Any] = {"commit": commit(), "cpus": os.cpu_count(),
                           "load_avg_start": load_avg()}
    out["log"] = ensure_log(events)
    from infra.services import ensure_timescaledb

    url = ensure_timescaledb()
    failures: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-figures-"))
    log_settings = Settings(persistence="sqlite", sqlite_path=log_path(events))
    with opened_log(events) as log:
        head = log.head()
        out["events"] = head
        _, counts = read_only(log, head)

        def checked(name: str, store: ReadStore) -> None:
            position = Projector(store, log).position()
            failures.extend(f"{name}: {p}" for p in verify(store, counts, position, head))

        reference = Backend("postgres", url, folder, "rowbyrow")
        bulk = Backend("postgres", url, folder, "bulk")
        try:
            # the reference: row by row
            out["load_avg_row_by_row"] = load_avg()
            _, seconds, cpu = cpu_per_event(reference, lambda: Projector(
                reference.store, log, batch_size=args.batch).rebuild(), head)
            out["row_by_row"] = figures(head, seconds, batch_size=args.batch, **cpu)
            checked("row_by_row", reference.store)
            want = table_digests(reference.store)

            # the bulk path, over the same tables projected once already (as an operator
            # rebuilds a live database), in processes and in one
            Projector(bulk.store, RecorderLog(log.recorder, log.mapper),
                      batch_size=5000).catch_up()
            out["load_avg_rebuild"] = load_avg()
            reached, seconds = timed(lambda: rebuild_in_processes(
                log_settings, bulk.store, processes=args.processes))
            out["rebuild"] = figures(head, seconds, processes=args.processes,
                                     reached=reached)
            checked("rebuild", bulk.store)
            got = table_digests(bulk.store)
            failures.extend(f"rebuild: {t} differs from the row-by-row rebuild"
                            for t in want if got[t] != want[t])
            out["rebuild_equals_row_by_row"] = got == want

            reached, seconds, cpu = cpu_per_event(bulk, lambda: rebuild(bulk.store, log),
                                                  head)
            out["rebuild_one_process"] = figures(head, seconds, reached=reached, **cpu)
            checked("rebuild_one_process", bulk.store)
            if table_digests(bulk.store) != want:
                failures.append("rebuild_one_process differs from the row-by-row rebuild")

            # each process's share of the work: a group's CPU seconds when rebuilt alone
            # (what two processes could reach with a core each, the server aside)
            groups = {}
            for group in groups_for([p.name for p in all_projections()], args.processes):
                cpu = time.process_time()
                rebuild(bulk.store, log, select(all_projections(), group))
                groups["+".join(group)] = round(time.process_time() - cpu, 2)
            out["rebuild_group_client_cpu_s"] = groups
            out["rebuild_events_per_s_if_a_core_each"] = round(head / max(groups.values()))

            # live workers following the log from its start
            out["load_avg_workers"] = load_avg()
            one = Backend("postgres", url, folder, "oneworker")
            try:
                out["one_worker"] = follow(log_path(events), url, one.schema,
                                           [[p.name for p in all_projections()]], head)
                checked("one_worker", one.store)
            finally:
                one.close()
            split = Backend("postgres", url, folder, "workers")
            try:
                out["workers"] = follow(log_path(events), url, split.schema,
                                        [list(g) for g in WORKER_GROUPS], head)
                checked("workers", split.store)
                if table_digests(split.store) != want:
                    failures.append("workers differ from the row-by-row rebuild")
            finally:
                split.close()
        finally:
            reference.close()
            bulk.close()

        lite = Backend("sqlite", None, folder, "bulk")
        try:
            out["load_avg_sqlite"] = load_avg()
            reached, seconds = timed(lambda: rebuild(lite.store, log))
            out["sqlite_rebuild"] = figures(head, seconds, reached=reached)
            checked("sqlite_rebuild", lite.store)
        finally:
            lite.close()
    shutil.rmtree(folder, ignore_errors=True)

    out["rebuild_events_per_s"] = out["rebuild"]["events_per_s"]
    out["row_by_row_events_per_s"] = out["row_by_row"]["events_per_s"]
    out["rebuild_speedup"] = round(out["rebuild_events_per_s"]
                                   / out["row_by_row_events_per_s"], 2)
    out["projection_events_per_s"] = out["workers"]["events_per_s"]
    out["projection_events_per_s_one_worker"] = out["one_worker"]["events_per_s"]
    out["target_rebuild_events_per_s"] = TARGET_REBUILD_EVENTS_PER_S
    out["load_avg_end"] = load_avg()
    out["failures"] = failures
    print(json.dumps(out, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
