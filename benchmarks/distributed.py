# ruff: noqa: E402  (imports follow the sys.path fix below)
"""The distributed deployment end to end, with and without kill -9: figures and proof.

Everything runs as a user would run it: PostgreSQL (+TimescaleDB) from
``infra/postgres.sh``, the Kafka-protocol broker from ``infra/kafka.sh`` (or Apache Kafka
given ``TRADECORE_KAFKA_BOOTSTRAP``), ``tradecore kafka init``, and one OS process per
worker: ``tradecore worker relay|matching|saga|projections`` with ``TRADECORE_BUS=kafka``.
This process is a command writer (what ``tradecore serve --distributed`` does per
request: ``TradingApplication.place_orders`` over the PostgreSQL store) and a reader of
the read models.

Three phases (``--phases``), each run in a fresh PostgreSQL schema and fresh topics:

- ``throughput`` (no kills): ``--orders`` limit orders in baskets of ``--basket``, at most
  ``--window`` orders not yet visible, then until all are. Every order is one side of a
  crossing pair (same symbol, price and quantity), so every order ends ``filled``; an
  order's latency runs from its command's return to the moment its ``orders`` row in the
  read model says ``filled`` (polled every 5 ms). ``orders_per_s`` = orders / seconds
  from the first command to the last order visible (``p50_ms``/``p99_ms`` there are
  mostly queueing: ``--window`` orders wait their turn); then ``--light-orders`` more with
  at most ``--light-window`` in flight (``light_load``: the pipeline's own latency at a
  desk's pace). ``cpu_ms_per_order`` says where the
  time goes: CPU of each worker, the broker, PostgreSQL and this process per order. The
  baseline measured in the same run (``baseline_log``, ``ratio_vs_log``): the same load
  and the same workers over the PostgreSQL log (``TRADECORE_BUS=log``), no Kafka.
- ``chaos``: the same kind of load in waves (one pair per symbol per wave, the next wave
  once the read model shows the last one filled, so the outcome does not depend on how
  the workers interleave), run twice with the same input: once crash-free, once while a
  chaos thread kill -9s a random worker of a random kind at random moments and restarts
  it (``--kills`` in all). Then both runs must end equal: balances, positions, orders and
  fills in the read models (economic columns: execution ids and log positions differ
  between runs by design), the write model's invariants hold, every read-model table
  equals a fresh replay of the run's own log, and no fill is lost or doubled
  (``lost``/``duplicated`` count orders whose fills in the event store fall short of / go
  beyond their quantity, and an order with the same execution id twice). On the dev
  broker the chaos run also kill -9s the broker itself ``--broker-restarts`` times (a
  broker of the run's own): Tansu comes back empty, the relay publishes the log again,
  the consumers drop what they applied; what each worker's ``/readyz`` said while the
  broker was away is reported (``broker_outages``).

- ``figures``: ``benchmarks/relay_figures.py`` (``relay_events_per_s``) and
  ``benchmarks/projection_figures.py`` (``projection_events_per_s`` of live workers,
  ``rebuild_events_per_s`` of the bulk rebuild) run as they are, their JSON merged.

Prints one JSON object; exit 1 when a check fails (never because of a timing).

    python benchmarks/distributed.py                 # 5,000 orders each phase, 100 kills
    python benchmarks/distributed.py --quick         # smoke: 600 orders, 10 kills
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
import psycopg

from aggregates.application import OrderRequest, Placement, TradingApplication
from aggregates.base import Meta
from aggregates.instruments import Instrument, round_to_tick
from aggregates.invariants import check_invariants
from api.wiring import load_instruments, trading_app
from benchmarks.support import commit, fresh_schema, load_avg
from benchmarks.support import postgres_url as dev_cluster_url
from infra.eventstore import postgres_url
from infra.kafka import ensure_topics
from infra.services import ensure_kafka
from infra.settings import Settings, as_environment

KINDS = ("relay", "matching", "saga", "projections")
ENV_FIELDS = ("persistence", "postgres_host", "postgres_port", "postgres_user",
              "postgres_password", "postgres_db", "postgres_schema", "readmodel_schema",
              "kafka_bootstrap", "kafka_dev_broker", "kafka_topic_prefix",
              "kafka_event_partitions", "kafka_matching_partitions", "kafka_fetch_wait_ms",
              "kafka_session_timeout_ms", "bus", "data_dir", "cache_dir",
              "venue_snapshot_every")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_settings(args: argparse.Namespace, tag: str,
                   bus: Literal["log", "kafka"] = "kafka", bootstrap: str | None = None
                   ) -> Settings:
    """A fresh PostgreSQL schema (events and read models) and fresh topics (on the
    broker at ``bootstrap``, else ``TRADECORE_KAFKA_BOOTSTRAP``, else the dev broker)."""
    dev = bootstrap is not None or "TRADECORE_KAFKA_BOOTSTRAP" not in os.environ
    bootstrap = bootstrap or os.environ.get("TRADECORE_KAFKA_BOOTSTRAP") or ensure_kafka()
    name = fresh_schema(dev_cluster_url(), f"d{tag}")
    settings = Settings(persistence="postgres", postgres_schema=name,
                        readmodel_schema=f"{name}_rm", bus=bus,
                        kafka_bootstrap=bootstrap, kafka_dev_broker=dev,
                        kafka_topic_prefix=name, kafka_event_partitions=args.partitions,
                        kafka_matching_partitions=args.matching_partitions,
                        kafka_fetch_wait_ms=args.fetch_wait_ms,
                        kafka_session_timeout_ms=args.session_timeout_ms,
                        venue_snapshot_every=args.snapshot_every)
    ensure_topics(settings)
    return settings


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECORE_")}
    env.update(as_environment(settings, ENV_FIELDS))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


# -- the workers ---------------------------------------------------------------------------
class Broker:
    """A dev broker of this run's own (``infra/kafka.sh`` on a free port), to kill -9.

    Tansu keeps everything in memory: killed, it comes back with no topics and no
    committed offsets. The relay notices (its marker record is gone), makes the topics
    again and publishes the log from the start; every consumer drops what it applied."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "TRADECORE_KAFKA_PORT": str(self.port),
                    "TRADECORE_KAFKA_DIR": str(folder / "kafka"),
                    "TRADECORE_PYTHON": sys.executable}
        self.pidfile = folder / "kafka" / f"tansu-{self.port}.pid"
        self.script = ROOT / "infra" / "kafka.sh"
        self.restarts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        subprocess.run(["bash", str(self.script), "start"], env=self.env, check=True,
                       capture_output=True, timeout=60)

    def kill9(self) -> None:
        os.kill(int(self.pidfile.read_text()), signal.SIGKILL)
        time.sleep(0.2)

    def stop(self) -> None:
        subprocess.run(["bash", str(self.script), "stop"], env=self.env, check=False,
                       capture_output=True, timeout=60)



@dataclass
class Worker:
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    started: float


@dataclass
class Cluster:
    """One OS process per worker kind, restartable; logs under ``folder``."""

    settings: Settings
    folder: Path
    workers: dict[str, Worker] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    restarts: int = 0

    def start(self, kind: str) -> None:
        port = free_port()
        env = {**env_of(self.settings), "TRADECORE_WORKER_PORT": str(port)}
        log = open(self.folder / f"{kind}.log", "ab")  # noqa: SIM115 (the child owns it)
        process = subprocess.Popen([sys.executable, "-m", "api.cli", "worker", kind],
                                   env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.workers[kind] = Worker(kind, process, port, time.monotonic())

    def start_all(self) -> None:
        # over the log (the baseline) the stages follow PostgreSQL itself: no relay
        for kind in KINDS if self.settings.bus == "kafka" else KINDS[1:]:
            self.start(kind)

    def kill9(self, kind: str) -> None:
        worker = self.workers[kind]
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        self.kills[kind] += 1

    def restart(self, kind: str) -> None:
        self.start(kind)
        self.restarts += 1

    def died(self) -> list[str]:
        """Workers that exited without being killed by us (a crash to report)."""
        return [f"{k} exited {w.process.returncode}" for k, w in self.workers.items()
                if w.process.poll() is not None]

    def stop_all(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every worker (a clean drain), their exit codes."""
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for kind, worker in self.workers.items():
            try:
                codes[kind] = worker.process.wait(timeout)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes[kind] = None
        return codes


class Chaos(threading.Thread):
    """kill -9 a worker at random moments (every kind once per round, in random order)
    and restart it at once."""

    def __init__(self, cluster: Cluster, kills: int, seconds: float, seed: int = 11,
                 broker: Broker | None = None, broker_restarts: int = 0) -> None:
        super().__init__(name="chaos", daemon=True)
        self.cluster = cluster
        self.kills = kills
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done = 0
        self.broker = broker
        # the broker is killed at evenly spread kill numbers, away from the ends
        self.broker_at = {round((i + 1) * kills / (broker_restarts + 1))
                          for i in range(broker_restarts)} if broker else set()
        self.outages: list[dict[str, Any]] = []

    def broker_outage(self) -> None:
        """kill -9 the broker; while it is away, what each worker's /readyz says."""
        assert self.broker is not None
        self.broker.kill9()
        said: dict[str, Any] = {}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for kind, worker in self.cluster.workers.items():
                try:
                    r = httpx.get(f"http://127.0.0.1:{worker.port}/readyz", timeout=0.5)
                except httpx.HTTPError:
                    continue
                if r.status_code == 503 and kind not in said:
                    said[kind] = r.json()
            time.sleep(0.2)
        self.broker.start()
        self.broker.restarts += 1
        self.outages.append({"not_ready": sorted(said), "said": {
            k: {x: v for x, v in d.items() if x in ("reason", "error", "state")}
            for k, d in said.items()}})

    def run(self) -> None:
        mean_gap = self.seconds / max(self.kills, 1)
        order: list[str] = []
        while self.done < self.kills and not self.stop.is_set():
            if self.stop.wait(self.rng.uniform(0.2 * mean_gap, 1.8 * mean_gap)):
                break
            if not order:  # every kind once per round, in a random order
                order = self.rng.sample(KINDS, len(KINDS))
            kind = order.pop()
            self.cluster.kill9(kind)
            self.cluster.restart(kind)
            self.done += 1
            if self.done in self.broker_at:
                self.broker_outage()


# -- the load ------------------------------------------------------------------------------
@dataclass
class Desk:
    app: TradingApplication
    buyers: list[Any]
    sellers: list[Any]
    symbols: list[Instrument]

    def pair(self, inst: Instrument, n: int, tag: str) -> list[OrderRequest]:
        """A buy and a sell that cross each other exactly: one fill each."""
        price = round_to_tick(inst.base_price, inst.tick_table, "down")
        quantity = 100 * (1 + n % 5)
        meta = Meta.command("bench")
        return [OrderRequest(self.buyers[n % len(self.buyers)], f"{tag}-b", inst.symbol,
                             "buy", quantity, meta, price=price),
                OrderRequest(self.sellers[(n // 3) % len(self.sellers)], f"{tag}-s",
                             inst.symbol, "sell", quantity, meta, price=price)]


def open_desk(app: TradingApplication, symbols: int) -> Desk:
    ops = Meta.command("bench")
    buyers, sellers = [], []
    for i in range(10):
        buyer = app.open_account(f"buyer-{i}", owner="bench", meta=ops)
        app.deposit(buyer, 1_000_000_000_000, ops)
        buyers.append(buyer)
        seller = app.open_account(f"seller-{i}", owner="bench", meta=ops, allow_short=True)
        app.deposit(seller, 1_000_000_000_000, ops)  # a short sale is covered by cash
        sellers.append(seller)
    return Desk(app, buyers, sellers, list(app.universe.instruments)[:symbols])


class ReadModel:
    """The read models as a desk sees them (SQL on the read-model schema)."""

    def __init__(self, settings: Settings) -> None:
        self.conn = psycopg.connect(postgres_url(settings), autocommit=True)
        self.schema = settings.readmodel_schema

    def ready(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM information_schema.tables WHERE "
                                "table_schema = %s AND table_name = 'orders'",
                                (self.schema,)).fetchone()
        return row is not None

    def filled(self, order_ids: list[str]) -> set[str]:
        if not self.ready():
            return set()
        rows = self.conn.execute(
            f'SELECT order_id FROM "{self.schema}".orders WHERE status = %s '
            "AND order_id = ANY(%s)", ("filled", order_ids)).fetchall()
        return {r[0] for r in rows}

    def rows(self, table: str, columns: str, schema: str | None = None) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in self.conn.execute(
            f'SELECT {columns} FROM "{schema or self.schema}".{table}').fetchall())

    def tracked(self) -> dict[str, int]:
        if not self.ready():
            return {}
        return dict(self.conn.execute(
            f'SELECT name, position FROM "{self.schema}".projection_tracking').fetchall())


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far of each worker, the broker, PostgreSQL and this process."""
    import psutil

    def cpu(p: Any) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    out = {kind: cpu(psutil.Process(w.process.pid)) for kind, w in cluster.workers.items()
           if w.process.poll() is None}
    out["commands+reads (this process)"] = cpu(psutil.Process())
    out["broker"] = sum(cpu(p) for p in psutil.process_iter(["name"])
                        if p.info["name"] == "tansu")
    out["postgresql"] = sum(cpu(p) for p in psutil.process_iter(["name"])
                            if p.info["name"] in ("postgres", "postmaster"))
    return out


def wait_visible(reads: ReadModel, pending: dict[str, float], seen: dict[str, float],
                 until: int, timeout: float, cluster: Cluster | None = None) -> None:
    """Poll the read model until at most ``until`` orders of ``pending`` are not filled."""
    deadline = time.monotonic() + timeout
    while len(pending) > until:
        for order_id in reads.filled(list(pending)):
            seen[order_id] = time.perf_counter() - pending.pop(order_id)
        if len(pending) <= until:
            break
        if time.monotonic() > deadline:
            died = cluster.died() if cluster else []
            raise TimeoutError(f"{len(pending)} orders not visible after {timeout:.0f} s "
                               f"(workers: {died or 'all running'})")
        time.sleep(0.005)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


# -- phases --------------------------------------------------------------------------------
def throughput(args: argparse.Namespace, folder: Path,
               bus: Literal["log", "kafka"] = "kafka") -> dict[str, Any]:
    settings = fresh_settings(args, "t", bus)
    cluster = Cluster(settings, folder / f"throughput-{bus}")
    cluster.folder.mkdir(parents=True)
    app = trading_app(settings, universe=load_instruments(settings))
    reads = ReadModel(settings)
    try:
        desk = open_desk(app, args.symbols)
        cluster.start_all()
        # warm-up: every worker up, kernels compiled, groups joined (not measured)
        warm: dict[str, float] = {}
        for i, inst in enumerate(desk.symbols[:4]):
            for p in app.place_orders(desk.pair(inst, i, f"warm{i}")):
                assert isinstance(p, Placement), p
                warm[str(p.order_id)] = time.perf_counter()
        wait_visible(reads, warm, {}, 0, args.start_timeout, cluster)
        loaded = load(app, desk, reads, cluster, args, args.orders, args.window, "o")
        # the same flow at a desk's pace (few orders in flight): the pipeline's own latency
        light = load(app, desk, reads, cluster, args, args.light_orders, args.light_window,
                     "l")
        codes = cluster.stop_all()
        return {**loaded, "light_load": light, "events": app.head(), "exit_codes": codes}
    finally:
        cluster.stop_all(5)
        reads.conn.close()
        app.close()


def load(app: TradingApplication, desk: Desk, reads: ReadModel, cluster: Cluster,
         args: argparse.Namespace, orders: int, window: int, tag: str) -> dict[str, Any]:
    """``orders`` in crossing pairs, at most ``window`` not yet visible; the figures."""
    requests = [r for n in range(orders // 2)
                for r in desk.pair(desk.symbols[n % len(desk.symbols)], n, f"{tag}{n}")]
    basket = min(args.basket, window)
    pending: dict[str, float] = {}
    latency: dict[str, float] = {}
    refused = 0
    cpu0 = cpu_seconds(cluster)
    t0 = time.perf_counter()
    for first in range(0, len(requests), basket):
        wait_visible(reads, pending, latency, max(0, window - basket), args.timeout, cluster)
        for outcome in app.place_orders(requests[first:first + basket]):
            if isinstance(outcome, Placement):
                pending[str(outcome.order_id)] = time.perf_counter()
            else:
                refused += 1
    wait_visible(reads, pending, latency, 0, args.timeout, cluster)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(cluster)
    cpu_ms = {k: round(1000 * (cpu1[k] - cpu0.get(k, 0.0)) / max(len(latency), 1), 3)
              for k in cpu1}
    return {"orders": len(latency), "window": window, "refused": refused,
            "seconds": round(elapsed, 2), "orders_per_s": round(len(latency) / elapsed, 1),
            "p50_ms": pct(list(latency.values()), 0.50),
            "p99_ms": pct(list(latency.values()), 0.99),
            "cpu_ms_per_order": dict(sorted(cpu_ms.items(), key=lambda kv: -kv[1])),
            "cpu_ms_per_order_total": round(sum(cpu_ms.values()), 2)}


def waves_run(args: argparse.Namespace, folder: Path, kills: int) -> dict[str, Any]:
    """The wave load; with ``kills`` > 0 under the chaos thread."""
    run_folder = folder / ("chaos" if kills else "reference")
    run_folder.mkdir(parents=True)
    broker = Broker(run_folder) if kills and args.broker_restarts else None
    if broker:
        broker.start()
    settings = fresh_settings(args, "c" if kills else "r",
                              bootstrap=broker.bootstrap if broker else None)
    cluster = Cluster(settings, run_folder)
    app = trading_app(settings, universe=load_instruments(settings))
    reads = ReadModel(settings)
    try:
        desk = open_desk(app, args.symbols)
        cluster.start_all()
        per_wave = 2 * len(desk.symbols)
        waves = max(1, args.chaos_orders // per_wave)
        chaos = Chaos(cluster, kills, seconds=args.chaos_seconds, broker=broker,
                      broker_restarts=args.broker_restarts) if kills else None
        t0 = time.perf_counter()
        if chaos:
            chaos.start()
        placed = 0
        for w in range(waves):
            pending: dict[str, float] = {}
            requests = [r for i, inst in enumerate(desk.symbols)
                        for r in desk.pair(inst, w + i, f"w{w}-{i}")]
            for first in range(0, len(requests), args.basket):
                for outcome in app.place_orders(requests[first:first + args.basket]):
                    assert isinstance(outcome, Placement), outcome
                    pending[str(outcome.order_id)] = time.perf_counter()
            placed += len(pending)
            wait_visible(reads, pending, {}, 0, args.timeout, cluster)
        if chaos:  # the rest of the kills, on a quiet system (restarts and catch-up)
            while chaos.done < kills and chaos.is_alive():
                time.sleep(0.1)
            chaos.stop.set()
            chaos.join()
        settle(app, reads, args.timeout)
        elapsed = time.perf_counter() - t0
        codes = cluster.stop_all()
        return {"settings": settings, "orders": placed, "waves": waves,
                "seconds": round(elapsed, 1), "kills": dict(cluster.kills),
                "broker_outages": chaos.outages if chaos else [],
                "exit_codes": codes, "outcome": outcome_of(app, reads, settings)}
    finally:
        cluster.stop_all(5)
        reads.conn.close()
        app.close()
        if broker:
            broker.stop()


def settle(app: TradingApplication, reads: ReadModel, timeout: float) -> None:
    """Until the log stops growing and every projection has reached its head."""
    deadline = time.monotonic() + timeout
    stable_since, last = time.monotonic(), -1
    while time.monotonic() < deadline:
        head = app.head()
        tracked = reads.tracked()
        if head != last:
            stable_since, last = time.monotonic(), head
        elif tracked and min(tracked.values()) >= head and time.monotonic() - stable_since > 2:
            return
        time.sleep(0.1)
    raise TimeoutError(f"not settled after {timeout:.0f} s (head {last}, tracked "
                       f"{reads.tracked()})")


FILL_TOPIC = "aggregates.order:Order.Filled"
PARTIAL_TOPIC = "aggregates.order:Order.PartiallyFilled"


def outcome_of(app: TradingApplication, reads: ReadModel, settings: Settings
               ) -> dict[str, Any]:
    """What a desk would compare: read models (economic columns), invariants, losses."""
    names = dict(reads.rows("balances", "account_id, name"))
    orders = {r[0]: r for r in reads.rows(
        "orders", "order_id, account_id, client_order_id, symbol, side, quantity, price, "
        "status, filled_quantity, filled_notional, fees")}

    def named(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted((names.get(r[0], r[0]), *r[1:]) for r in rows)

    # fills in the event store, per order (the write model is the truth)
    filled: Counter[str] = Counter()
    executions: Counter[str] = Counter()
    for n in app.recorder.select_notifications(start=1, limit=10**9,
                                               topics=[FILL_TOPIC, PARTIAL_TOPIC]):
        event: Any = app.mapper.to_domain_event(n)
        filled[str(event.originator_id)] += event.quantity
        executions[f"{event.execution_id}/{event.originator_id}"] += 1  # one per side
    lost = sum(1 for oid, r in orders.items() if filled[oid] < r[5])
    doubled = (sum(1 for oid, r in orders.items() if filled[oid] > r[5])
               + sum(1 for c in executions.values() if c > 1))
    return {
        "balances": named(reads.rows(
            "balances", "account_id, cash, reserved, deposited, withdrawn, bought, sold, "
            "fees, version")),
        "positions": named(reads.rows(
            "positions", "account_id, symbol, quantity, cost, realised_pnl, reserved, "
            "version")),
        "orders": named([(r[1], *r[2:]) for r in orders.values()]),
        "fills": named(reads.rows(
            "fills", "account_id, symbol, side, price, quantity, notional, fee")),
        "invariants": [(c.name, c.ok, c.detail) for c in check_invariants(app)],
        "lost": lost, "duplicated": doubled,
        "replay_equal": replay_equal(app, reads, settings),
    }


def replay_equal(app: TradingApplication, reads: ReadModel, settings: Settings
                 ) -> dict[str, bool]:
    """Every read-model table against a fresh replay of the same log into another schema."""
    from projections.projectors import Projector, RecorderLog
    from projections.store import ReadStore

    schema = f"{settings.readmodel_schema}_replay"
    store = ReadStore.postgres(postgres_url(settings), schema)
    from projections.schema import upgrade

    upgrade(store)
    projector = Projector(store, RecorderLog(app.recorder, app.mapper), batch_size=5000)
    projector.catch_up()
    store.close()
    tables = [r[0] for r in reads.conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND table_name NOT LIKE '\\_%%' ESCAPE '\\'", (settings.readmodel_schema,)
    ).fetchall()]
    out = {}
    for table in sorted(tables):
        cols = [r[0] for r in reads.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position",
            (settings.readmodel_schema, table)).fetchall()
            if r[0] not in ("updated_at",)]
        if table in ("projection_tracking", "schema_migrations") or not cols:
            continue
        select = ", ".join(f'"{c}"::text' for c in cols)
        out[table] = reads.rows(table, select) == reads.rows(table, select, schema)
    return out


def figures(script: str, *args: str) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` (its own fresh schema and topics); its JSON."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return {"failures": [f"{script} exited {done.returncode}: {done.stderr[-500:]}"]}
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def compare(reference: dict[str, Any], chaos: dict[str, Any]) -> dict[str, bool]:
    keys = ("balances", "positions", "orders", "fills")
    return {k: reference["outcome"][k] == chaos["outcome"][k] for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--chaos-orders", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--chaos-seconds", type=float, default=120.0,
                        help="the kills are spread over about this long")
    parser.add_argument("--broker-restarts", type=int, default=2,
                        help="kill -9 the (dev, own) broker this many times in the chaos run")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--basket", type=int, default=50)
    parser.add_argument("--window", type=int, default=400,
                        help="orders in flight in the throughput run")
    parser.add_argument("--light-orders", type=int, default=400)
    parser.add_argument("--light-window", type=int, default=10,
                        help="orders in flight in the light-load latency run")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--matching-partitions", type=int, default=2)
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--snapshot-every", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--phases", default="throughput,chaos,figures")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the same load over the PostgreSQL log (bus=log)")
    parser.add_argument("--relay-events", type=int, default=100_000)
    parser.add_argument("--projection-events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true",
                        help="600 orders a phase, 10 kills over 20 s (the test suite's size)")
    parser.add_argument("--keep", type=Path, default=None, help="keep worker logs here")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.chaos_orders, args.kills, args.chaos_seconds = 600, 600, 10, 20.0
        args.light_orders = 100
        args.symbols, args.relay_events, args.projection_events = 50, 20_000, 30_000
    if "TRADECORE_KAFKA_BOOTSTRAP" in os.environ:
        args.broker_restarts = 0  # somebody else's broker (Apache Kafka): not ours to kill
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tradecore-distributed-"))
    folder.mkdir(parents=True, exist_ok=True)
    phases = set(args.phases.split(","))
    result: dict[str, Any] = {"commit": commit(), "load_avg_start": load_avg(),
                              "logs": str(folder)}
    ok = True
    if "throughput" in phases:
        t = throughput(args, folder)
        result.update({k: t[k] for k in ("orders_per_s", "p50_ms", "p99_ms")})
        result["light_load_p50_ms"] = t["light_load"]["p50_ms"]
        result["light_load_p99_ms"] = t["light_load"]["p99_ms"]
        result["throughput"] = t
        ok &= all(c == 0 for c in t["exit_codes"].values())
        if not args.no_baseline:  # the same workers over the PostgreSQL log, no Kafka
            b = throughput(args, folder, "log")
            result["baseline_log"] = b
            result["ratio_vs_log"] = round(t["orders_per_s"] / b["orders_per_s"], 3)
            ok &= all(c == 0 for c in b["exit_codes"].values())
    if "figures" in phases:  # the relay's and the projections' own benchmarks, merged
        relay = figures("relay_figures.py", "--events", str(args.relay_events))
        projection = figures("projection_figures.py", "--events",
                             str(args.projection_events))
        result["relay_events_per_s"] = relay.get("relay_events_per_s")
        result["projection_events_per_s"] = projection.get("projection_events_per_s")
        result["rebuild_events_per_s"] = projection.get("rebuild_events_per_s")
        result["figures"] = {"relay": relay, "projections": projection}
        ok &= relay.get("check") == "ok" and not projection.get("failures")
    if "chaos" in phases:
        reference = waves_run(args, folder, 0)
        chaos = waves_run(args, folder, args.kills)
        equal = compare(reference, chaos)
        co = chaos["outcome"]
        result.update({
            "kills": sum(chaos["kills"].values()), "kills_by_worker": chaos["kills"],
            "lost": co["lost"] + reference["outcome"]["lost"],
            "duplicated": co["duplicated"] + reference["outcome"]["duplicated"],
            "equal_to_crash_free": equal,
            "invariants_hold": all(ok_ for _, ok_, _ in co["invariants"]),
            "read_models_equal_replay": all(co["replay_equal"].values()),
            "broker_restarts": len(chaos["broker_outages"]),
            "broker_outages": chaos["broker_outages"],
            "chaos": {k: chaos[k] for k in ("orders", "waves", "seconds", "exit_codes")},
            "reference": {k: reference[k] for k in ("orders", "waves", "seconds")},
        })
        ok &= (all(equal.values()) and result["invariants_hold"] and result["lost"] == 0
               and result["duplicated"] == 0 and result["read_models_equal_replay"]
               and all(c == 0 for c in chaos["exit_codes"].values()))
        if not result["read_models_equal_replay"]:
            result["replay_mismatch"] = [t for t, same in co["replay_equal"].items()
                                         if not same]
        if not result["invariants_hold"]:
            result["invariant_failures"] = [c for c in co["invariants"] if not c[1]]
    result["load_avg_end"] = load_avg()
    result["ok"] = bool(ok)
    print(json.dumps(result, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
