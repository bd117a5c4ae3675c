"""What every benchmark prints beside its figures, and the services it provisions.

- ``commit()``, ``load_avg()``, ``calibration()``: which code was measured and how busy
  and how fast the machine was (the machine is shared; a figure without these cannot be
  compared with another run);
- ``postgres_url()``: the dev cluster, found running first (a worktree's own
  ``infra/postgres.sh start`` would try to create a second cluster on the same port),
  started with ``infra/postgres.sh`` otherwise; ``fresh_schema`` / ``drop_schema``;
- ``profile_summary()``: a cProfile run as shares of time by function and by area.

Import it after the ``sys.path`` fix the scripts start with (``benchmarks/`` first on
``sys.path`` would shadow the ``projections`` package with ``benchmarks/projections.py``).
"""

from __future__ import annotations

import os
import pstats
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str | None:
    """The checkout measured (``git describe``; ``-dirty`` when files are changed)."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def calibration() -> dict[str, Any]:
    """A fixed pure-Python workload (best of 3): how fast this interpreter ran on this
    machine right now. Figures from two runs compare only as well as these do."""
    def work() -> int:
        total = 0
        table: dict[int, int] = {}
        for i in range(300_000):
            table[i & 1023] = total
            total += (i * 7) % 13
        return total

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return {"py_loop_ms": round(best * 1000, 1), "cpus": os.cpu_count(),
            "note": "best of 3 runs of a fixed pure-Python loop; lower is faster"}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and its threads (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and its living descendants (uvicorn's worker processes)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    total = own
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += tree_cpu_seconds(int(child)) or 0.0
    return total


# -- PostgreSQL ----------------------------------------------------------------------------
def main_worktree() -> Path | None:
    """The repository's main checkout (the folder holding the shared ``.git``)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--path-format=absolute",
                               "--git-common-dir"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
    except OSError:
        return None
    common = done.stdout.strip()
    return Path(common).parent if done.returncode == 0 and common else None


def postgres_url() -> str:
    """The dev cluster's URL: the one already answering on the configured port, else
    started by ``infra/postgres.sh`` (in the main checkout's ``.local/postgres`` when
    there is one, so worktrees share a single cluster). Raises when neither works."""
    import psycopg

    from infra.eventstore import postgres_url as url_of
    from infra.services import ensure_postgres
    from infra.settings import Settings

    url = url_of(Settings())
    try:
        with psycopg.connect(url, connect_timeout=3):
            return url
    except psycopg.OperationalError:
        pass
    main = main_worktree()
    cluster = main / ".local" / "postgres" if main else None
    return ensure_postgres(directory=cluster if cluster and cluster.exists() else None)


def fresh_schema(url: str, prefix: str = "bench") -> str:
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- profiles ------------------------------------------------------------------------------
AREAS: list[tuple[str, re.Pattern[str]]] = [
    (area, re.compile(pattern)) for area, pattern in [
        ("sqlite (driver, in C)", r"sqlite3|method '(execute|executemany|commit|fetch)"),
        ("postgres (psycopg, network)", r"psycopg|/socket|select\.|method 'poll'|wait_c"),
        ("event codec (json, transcoder)", r"json|transcod|msgspec|orjson"),
        ("eventsourcing mapper/recorder", r"eventsourcing/(persistence|mapper|sqlite|postgres)"),
        ("eventsourcing domain/application", r"eventsourcing/"),
        ("copy.deepcopy (aggregate cache)", r"copy\.py|deepcopy"),
        ("typing Protocol isinstance checks", r"typing\.py"),
        ("uuid", r"uuid"),
        ("datetime/zoneinfo", r"datetime|zoneinfo"),
        ("threading/locks", r"threading|lock|acquire"),
        ("tenacity (retries)", r"tenacity"),
        ("numba/kernels", r"numba|kernels/"),
        ("aggregates (domain)", r"aggregates/"),
        ("streams (stages)", r"streams/"),
        ("api/infra/projections", r"(api|infra|projections)/"),
    ]
]


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":  # a builtin: "{method 'execute' of 'sqlite3.Cursor' objects}"
        return name
    parts = Path(filename).parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1:]
            break
    else:
        try:
            parts = Path(filename).resolve().relative_to(ROOT).parts
        except ValueError:
            parts = parts[-2:]
    return f"{'/'.join(parts)}:{line}({name})"


HOT_PATHS: list[tuple[str, re.Pattern[str]]] = [
    (label, re.compile(pattern)) for label, pattern in [
        ("command side: place_orders (decide + store a basket)",
         r"^aggregates/application\.py:\d+\(place_orders\)"),
        ("saga stage: apply (load aggregates, decide)", r"^streams/saga\.py:\d+\(apply\)"),
        ("matching stage: apply (engine, reports)", r"^streams/matching\.py:\d+\(apply\)"),
        ("stage reads: EventLogSource.read (select + decode)",
         r"^streams/bus\.py:\d+\(read\)"),
        ("stage writes: events.put with tracking (encode + insert + commit)",
         r"^eventsourcing/persistence\.py:\d+\(put\)"),
        ("repository.get (cache, fast-forward query, deepcopy)",
         r"^eventsourcing/application\.py:\d+\(get\)"),
        ("  of which copy.deepcopy (DEEPCOPY_FROM_AGGREGATE_CACHE)",
         r"^python3\.\d+/copy\.py:\d+\(deepcopy\)"),
        ("  of which project_aggregate (events applied)",
         r"^eventsourcing/application\.py:\d+\(project_aggregate\)"),
        ("isinstance against a runtime Protocol (typing __instancecheck__)",
         r"^python3\.\d+/typing\.py:\d+\(__instancecheck__\)"),
        ("mapper.to_domain_event (decode)", r"\(to_domain_event\)$"),
        ("mapper.to_stored_event (encode)", r"\(to_stored_event\)$"),
        ("aggregates.save (command side store)", r"^eventsourcing/application\.py:\d+\(save\)"),
        ("snapshots taken", r"\(take_snapshot|_take_snapshots\)"),
    ]
]


def profile_summary(stats: pstats.Stats, top: int = 10) -> dict[str, Any]:
    """Where a profiled run spent its time, as shares of the profiled total: own time by
    function (``top``, with each one's heaviest callers), own time by area, inclusive
    time of the named hot paths, and the project's functions by inclusive time."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _cc, _nc, own, _cum, _callers in raw.values()) or 1.0
    rows = sorted(((own, cum, calls, _where(func), func) for func, (_cc, calls, own, cum, _c)
                   in raw.items()), reverse=True)
    areas: Counter[str] = Counter()
    for own, _cum, _calls, where, _func in rows:
        area = next((name for name, pattern in AREAS if pattern.search(where)), "other")
        areas[area] += own
    hot = {}
    for label, pattern in HOT_PATHS:
        cums = [cum for _own, cum, _calls, where, _f in rows if pattern.search(where)]
        if cums:
            hot[label] = round(max(cums) / total, 3)
    project = sorted(((cum, where) for _own, cum, _calls, where, _f in rows
                      if re.match(r"(aggregates|streams|api|infra|projections|kernels)/", where)
                      and not re.search(r"<(genexpr|listcomp|lambda)>", where)), reverse=True)

    def callers(func: Any) -> list[str]:
        by = raw[func][4]
        heaviest = sorted(by.items(), key=lambda item: item[1][3], reverse=True)[:2]
        return [f"{_where(caller)} ({round(figures[3] / total, 3)})"
                for caller, figures in heaviest]

    return {
        "profiled_s": round(total, 2),
        "top_own_time": [{"function": where, "share": round(own / total, 3),
                          "own_s": round(own, 3), "calls": calls, "called_by": callers(func)}
                         for own, _cum, calls, where, func in rows[:top]],
        "by_area": {name: round(share / total, 3) for name, share in areas.most_common()},
        "hot_paths_inclusive": hot,
        "project_inclusive": [{"function": where, "share": round(cum / total, 3)}
                              for cum, where in project[:top]],
    }
