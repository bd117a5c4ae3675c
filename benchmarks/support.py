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


def profile_summary(stats: pstats.Stats, top: int = 10) -> dict[str, Any]:
    """Own time by function (``top``), own time by area, and the project's functions by
    inclusive time: where a run spent its time, as shares of the profiled total."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _cc, _nc, own, _cum, _callers in raw.values()) or 1.0
    rows = sorted(((own, cum, calls, _where(func)) for func, (_cc, calls, own, cum, _c)
                   in raw.items()), reverse=True)
    areas: Counter[str] = Counter()
    for own, _cum, _calls, where in rows:
        area = next((name for name, pattern in AREAS if pattern.search(where)), "other")
        areas[area] += own
    project = sorted(((cum, where) for own, cum, calls, where in rows
                      if re.match(r"(aggregates|streams|api|infra|projections|kernels)/",
                                  where)), reverse=True)
    return {
        "profiled_s": round(total, 2),
        "top_own_time": [{"function": where, "share": round(own / total, 3),
                          "own_s": round(own, 3), "calls": calls}
                         for own, _cum, calls, where in rows[:top]],
        "by_area": {name: round(share / total, 3) for name, share in areas.most_common()},
        "project_inclusive": [{"function": where, "share": round(cum / total, 3)}
                              for cum, where in project[:top]],
    }
