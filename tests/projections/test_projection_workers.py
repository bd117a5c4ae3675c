"""Projection workers (`tradecore worker projections --projection NAME`): per-projection
workers in parallel write what one projector writes; a worker killed -9 in the middle
of its batches is replaced by its standby, with nothing lost or doubled; a rebuild while
workers run is waited for and carried on from.

Real processes on a real store: the embedded SQLite deployment, and PostgreSQL (event
store and read models in fresh schemas of the test cluster).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from projections.projectors import Projector, RecorderLog, all_projections
from projections.schema import upgrade
from projections.store import ReadStore
from streams.projection_worker import ProjectionFence, ProjectionWorker, projection_fence
from tests.api.server import free_port
from tests.conftest import postgres_env
from tests.processes import TRADECORE, env_for
from tests.projections.test_bulk_rebuild import everything, flow, trade_more
from tests.projections.test_read_models import assert_equals_write_model

REST = ["balances", "halts", "positions"]


class Deployment:
    """One store (event store + read models) and the env its processes read."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        if kind == "sqlite":
            self.settings = Settings(persistence="sqlite", sqlite_path=folder / "events.sqlite",
                                     readmodel_sqlite_path=folder / "readmodels.sqlite")
            self.app_env = eventsourcing_env(self.settings)
            self.env = env_for(folder)
        else:
            self.app_env = postgres_env()
            schema = self.app_env["POSTGRES_SCHEMA"]
            self.settings = Settings(persistence="postgres", postgres_schema=schema,
                                     readmodel_schema=f"{schema}_rm")
            self.env = env_for(folder, TRADECORE_PERSISTENCE="postgres",
                               TRADECORE_POSTGRES_SCHEMA=schema,
                               TRADECORE_READMODEL_SCHEMA=f"{schema}_rm")
        self.store = ReadStore.from_settings(self.settings)
        upgrade(self.store)
        self.workers: list[subprocess.Popen[str]] = []

    def worker(self, *names: str, batch: int = 2) -> tuple[subprocess.Popen[str], str]:
        """`tradecore worker projections --projection ...` with its /readyz URL."""
        port = free_port()
        args = [a for name in names for a in ("--projection", name)]
        process = subprocess.Popen(
            [*TRADECORE, "worker", "projections", *args], text=True,
            env={**self.env, "TRADECORE_WORKER_PORT": str(port),
                 "TRADECORE_PROJECTION_BATCH_SIZE": str(batch)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.workers.append(process)
        return process, f"http://127.0.0.1:{port}/readyz"

    def tracked(self) -> dict[str, int]:
        return {str(n): int(p) for n, p in self.store.fetchall(
            "SELECT name, position FROM projection_tracking")}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TRADECORE, *args], capture_output=True, text=True,
                              env=self.env, timeout=300, check=False)

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait(30)
            if process.stdout:
                process.stdout.close()
        if self.store.schema:
            self.store.execute(f'DROP SCHEMA "{self.store.schema}" CASCADE')
        self.store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    made = Deployment(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


def wait_for(what: Callable[[], Any], timeout: float = 120, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


def readyz(url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        answer = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None
    return answer.status_code, answer.json()


def replay(settings: Settings, log: RecorderLog, folder: Path) -> dict[str, Any]:
    """What one projector makes of the whole log, row by row (the reference)."""
    if settings.persistence == "sqlite":
        store = ReadStore.sqlite(folder / f"replay-{uuid.uuid4().hex[:6]}.sqlite")
    else:
        store = ReadStore.from_settings(settings, schema=f"{settings.readmodel_schema}_ref")
    try:
        upgrade(store)
        Projector(store, log, batch_size=64).rebuild()
        return everything(store)
    finally:
        if store.schema:
            store.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
        store.close()


def test_workers_per_projection_killed_and_rebuilt_under_equal_one_projector(
        deployment: Deployment) -> None:
    """Two workers split the projections (orders | the rest), two more race for orders
    (one runs, one waits as standby); the log is written while they follow it; the
    running orders worker is killed -9 while it has events in hand and the standby
    takes over; `projections rebuild` runs while they follow. At the end every table
    equals one projector's row-by-row replay, and the write model."""
    app = flow(deployment.app_env)  # a log to catch up on before the workers start
    for n in range(3):
        trade_more(app, f"b{n}")
    log = RecorderLog(app.recorder, app.mapper)
    first, first_url = deployment.worker("orders", batch=2)
    second, second_url = deployment.worker("orders", batch=5)
    rest, rest_url = deployment.worker(*REST, batch=3)
    wait_for(lambda: (r := readyz(rest_url)) and r[0] == 200)
    states = wait_for(lambda: (a := readyz(first_url)) and (b := readyz(second_url))
                      and sorted((a[1]["state"], b[1]["state"])) == ["running", "waiting"]
                      and (a, b))
    active, standby, standby_url = ((first, second, second_url)
                                    if states[0][0] == 200 else (second, first, first_url))
    assert {states[0][0], states[1][0]} == {200, 503}  # the standby is not ready

    writer = threading.Thread(target=lambda: [trade_more(app, f"w{n}") for n in range(8)])
    writer.start()
    try:
        def behind() -> int:
            position = deployment.tracked().get("orders", 0)
            return position if 0 < position < log.head() else 0

        wait_for(behind, every=0.01)  # it has events in hand: kill it now
        active.send_signal(signal.SIGKILL)
        active.wait(30)
        taken = wait_for(lambda: (r := readyz(standby_url)) and r[0] == 200 and r[1])
        assert taken["state"] == "running" and taken["projections"] == ["orders"]
    finally:
        writer.join(120)

    rebuilt = deployment.cli("projections", "rebuild")  # while the workers follow
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    trade_more(app, "after")
    head = log.head()
    wait_for(lambda: (t := deployment.tracked()) and len(t) == 4
             and set(t.values()) == {head})
    assert everything(deployment.store) == replay(deployment.settings, log, deployment.folder)
    assert_equals_write_model(deployment.store, app)

    metrics = httpx.get(standby_url.replace("/readyz", "/metrics"), timeout=5).text
    assert f'tradecore_projection_worker_position{{projection="orders"}} {float(head)}' \
        in metrics, metrics
    for process in (standby, rest):  # SIGTERM drains and exits 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stdout.read() if process.stdout else ""


def test_workers_in_parallel_threads_equal_one_projector(tmp_path: Path) -> None:
    """Per-projection workers following a log while it is written (in one process,
    threads: the same runnable `tradecore worker projections` runs)."""
    settings = Settings(persistence="sqlite", sqlite_path=tmp_path / "events.sqlite",
                        readmodel_sqlite_path=tmp_path / "readmodels.sqlite")
    app = flow(eventsourcing_env(settings))
    log = RecorderLog(app.recorder, app.mapper)
    shared = ReadStore.from_settings(settings)
    upgrade(shared)
    workers = [ProjectionWorker(settings, names, batch_size=size,
                                open_store=shared.reopen,
                                open_log=lambda: (RecorderLog(app.recorder, app.mapper),
                                                  lambda: None))
               for names, size in ((["orders"], 7), (["positions"], 3),
                                   (["balances", "halts"], 11))]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for thread in threads:
        thread.start()
    try:
        for round in range(3):  # written while they follow
            trade_more(app, f"m{round}")
        head = log.head()
        wait_for(lambda: all(w.position == head for w in workers))
        health = [w.health() for w in workers]
        assert all(h["ready"] and h["behind"] == 0 for h in health), health
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert everything(shared) == replay(settings, log, tmp_path)
    shared.close()


def test_the_fences_of_overlapping_workers_exclude_each_other(tmp_path: Path) -> None:
    """A worker of every projection and one of `orders` never run at once, and a worker
    of `balances` runs beside the `orders` one."""
    settings = Settings(persistence="sqlite", sqlite_path=tmp_path / "events.sqlite")
    orders = projection_fence(settings, ["orders"])
    every = projection_fence(settings)
    balances = projection_fence(settings, ["balances"])
    assert isinstance(every, ProjectionFence) and len(every.fences) == len(all_projections())
    assert orders.acquire(blocking=False)
    assert not every.acquire(blocking=True, timeout=0.3)
    assert not any(f.held for f in every.fences)  # all or none: it holds nothing meanwhile
    assert balances.acquire(blocking=False)
    orders.release()
    balances.release()
    assert every.acquire(blocking=False)
    assert not orders.acquire(blocking=False)
    every.release()


def test_a_worker_refuses_an_unknown_projection_in_one_line(tmp_path: Path) -> None:
    answer = subprocess.run([*TRADECORE, "worker", "projections", "--projection", "ordres"],
                            capture_output=True, text=True, env=env_for(tmp_path),
                            timeout=120, check=False)
    assert answer.returncode == 2
    assert answer.stderr.strip() == ("refused: projection: unknown ordres; one of orders, "
                                     "positions, balances, halts"), answer.stderr
    assert "Traceback" not in answer.stderr + answer.stdout
    other = subprocess.run([*TRADECORE, "worker", "saga", "--projection", "orders"],
                           capture_output=True, text=True, env=env_for(tmp_path),
                           timeout=120, check=False)
    assert other.returncode == 2 and "only for the projections stage" in other.stderr


@pytest.mark.postgres
def test_a_worker_whose_connection_is_cut_reconnects_and_resumes(tmp_path: Path) -> None:
    """The read-model server drops the worker's connection (a restart, a failover): the
    worker says so on /readyz or recovers at once, reconnects, and projects what was
    written meanwhile, once."""
    deployment = Deployment("postgres", tmp_path)
    try:
        app = flow(deployment.app_env)
        log = RecorderLog(app.recorder, app.mapper)
        worker, url = deployment.worker("orders", "balances", batch=50)
        head = log.head()
        wait_for(lambda: deployment.tracked().get("orders") == head)
        cut = deployment.store.fetchall(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = %s AND pid <> pg_backend_pid()",
            (f"tradecore-rm:{deployment.store.schema}"[:63],))
        assert cut == [(True,)]  # the worker's one read-model connection
        trade_more(app, "after-cut")
        head = log.head()
        wait_for(lambda: (t := deployment.tracked()) and t.get("orders") == head
                 and t.get("balances") == head)
        state = wait_for(lambda: (r := readyz(url)) and r[0] == 200 and r[1])
        assert state["position"] == head and state["behind"] == 0
        reference = replay(deployment.settings, log, tmp_path)
        got = everything(deployment.store)
        for table in ("orders", "order_events", "fills", "bars", "balances", "cash_ledger"):
            assert got[table] == reference[table], table
        assert worker.poll() is None
    finally:
        deployment.close()
