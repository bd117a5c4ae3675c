# ruff: noqa: E402  (imports follow the sys.path fix below)
"""The order flow on Kafka, each stage its own process, against the same flow embedded;
prints JSON.

Workload: ``--pairs`` crossing pairs (a sell, then a buy at the same price, 100 shares)
over ``--symbols`` symbols, placed by one writer in baskets of ``--basket`` orders
(``TradingApplication.place_orders``, as the HTTP intake does).

- ``kafka``: ``tradecore worker relay``, ``matching`` and ``saga`` (``--sagas`` of them)
  as processes on a fresh PostgreSQL schema and fresh topics of the dev broker, started
  and ready before the clock starts. Timed: from the first basket to the last buy
  filled (the relay publishes the placements, the saga reserves and routes, the relay
  routes to matching.in, the venue reports, the relay to matching.out, the saga fills
  and settles). ``orders_per_s`` = orders / that time. ``p50_ms``/``p99_ms``: per
  order, its basket's store to its fill as the store's timestamps say (placement time
  of the buy -> time of its ``Order.Filled``).
- ``embedded``: the same orders on another fresh schema, the stages in the writer's
  process (``streams.embedded.in_process``, stepped after each basket): the baseline
  measured in the same run. ``ratio`` = kafka / embedded orders/s.

What bounds the Kafka figure on this machine (2 shared cores): five Python processes
(writer, relay, saga, matching, the broker) on two cores, each hop a produce, a fetch
(``fetch.wait.max.ms`` 20 here) and a PostgreSQL transaction; the dev broker scans its
batch list on every fetch (``../shared/KAFKA.md`` fault 3), which grows with the run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/kafka_stages.py             # 2,000 orders
    PYTHONPATH=$PWD .venv/bin/python benchmarks/kafka_stages.py --pairs 100  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.instruments import round_to_tick
from api.wiring import trading_app
from benchmarks.support import (
    calibration,
    commit,
    drop_schema,
    fresh_schema,
    load_avg,
    postgres_url,
)
from infra.kafka import ensure_topics
from infra.services import ensure_kafka
from infra.settings import Settings

ROOT = _HERE.parent
FILLED = "aggregates.order:Order.Filled"
PLACED = "aggregates.order:Order.Placed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(schema: str, prefix: str, bootstrap: str) -> Settings:
    return Settings(persistence="postgres", postgres_schema=schema,
                    readmodel_schema=f"{schema}_rm", kafka_bootstrap=bootstrap,
                    kafka_dev_broker=True, kafka_topic_prefix=prefix,
                    kafka_event_partitions=3, kafka_matching_partitions=2,
                    kafka_fetch_wait_ms=20, kafka_session_timeout_ms=3000)


def env_for(settings: Settings) -> dict[str, str]:
    names = ("persistence", "postgres_host", "postgres_port", "postgres_user",
             "postgres_password", "postgres_db", "postgres_schema", "readmodel_schema",
             "kafka_bootstrap", "kafka_topic_prefix", "kafka_event_partitions",
             "kafka_matching_partitions", "kafka_fetch_wait_ms", "kafka_session_timeout_ms")
    env = {f"TRADECORE_{n.upper()}": str(getattr(settings, n)) for n in names}
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **env, "PYTHONPATH": path, "TRADECORE_BUS": "kafka",
            "TRADECORE_KAFKA_DEV_BROKER": "true"}


def requests(app: TradingApplication, pairs: int, symbols: int
             ) -> tuple[list[OrderRequest], Any, Any]:
    meta = Meta.command("bench")
    buyer = app.open_account("buyer", owner="buyer", meta=meta)
    seller = app.open_account("seller", owner="seller", meta=meta, allow_short=True)
    for account in (buyer, seller):
        app.deposit(account, 10**13, meta)
    chosen = app.universe.symbols[:symbols]
    out = []
    for i in range(pairs):
        symbol = chosen[i % len(chosen)]
        instrument = app.universe.get(symbol)
        price = round_to_tick((instrument.limits.lower + instrument.limits.upper) // 2,
                              instrument.tick_table, "down")
        for account, side in ((seller, "sell"), (buyer, "buy")):
            out.append(OrderRequest(account_id=account, client_order_id=f"{side}{i}",
                                    symbol=symbol, side=side, quantity=100, price=price,
                                    meta=Meta.command("bench")))
    return out, buyer, seller


def count(url: str, schema: str, topic: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".trading_events WHERE topic = %s',
                           (topic,)).fetchone()
        return int(row[0]) if row else 0


def latencies(app: TradingApplication) -> list[float]:
    """Per filled order: its Placed event's time to its Filled event's time (ms)."""
    placed: dict[Any, Any] = {}
    filled: dict[Any, Any] = {}
    start = 1
    while True:
        batch = app.recorder.select_notifications(start=start, limit=5000,
                                                  topics=[PLACED, FILLED])
        if not batch:
            break
        for n in batch:
            event = app.mapper.to_domain_event(n)
            (placed if n.topic == PLACED else filled)[n.originator_id] = event.timestamp
        start = batch[-1].id + 1
    return sorted((filled[o] - placed[o]).total_seconds() * 1000 for o in filled if o in placed)


def place_all(app: TradingApplication, orders: list[OrderRequest], basket: int) -> None:
    for i in range(0, len(orders), basket):
        app.place_orders(orders[i:i + basket])


def run_kafka(url: str, bootstrap: str, pairs: int, symbols: int, basket: int, sagas: int,
              timeout: float) -> dict[str, Any]:
    import httpx

    schema = fresh_schema(url, "kbench")
    settings = settings_for(schema, f"kb{uuid.uuid4().hex[:8]}", bootstrap)
    ensure_topics(settings)
    app = trading_app(settings)
    orders, _, _ = requests(app, pairs, symbols)
    env = env_for(settings)
    folder = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    workers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name in ["relay", "matching"] + [f"saga{i}" for i in range(sagas)]:
            port = free_port()
            log = (folder / f"{name}.log").open("wb")
            workers[name] = (subprocess.Popen(
                [sys.executable, "-m", "api.cli", "worker", name.rstrip("0123456789")],
                env={**env, "TRADECORE_WORKER_PORT": str(port)}, stdout=log,
                stderr=subprocess.STDOUT), port)
        deadline = time.monotonic() + 120
        for name, (process, port) in workers.items():
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(folder / f'{name}.log').read_text()}")
                try:
                    body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
                    if body.get("ready") and (name == "relay" or body.get("partitions")):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready")
                time.sleep(0.2)
        started = time.perf_counter()
        place_all(app, orders, basket)
        placed_s = time.perf_counter() - started
        deadline = time.monotonic() + timeout
        while count(url, schema, FILLED) < len(orders) and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        done = count(url, schema, FILLED)
        lat = latencies(app)
        health = {}
        for name, (_, port) in workers.items():
            if name != "relay":
                body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
                health[name] = {k: body[k] for k in ("applied", "dropped_duplicate",
                                                      "dead_lettered")}
        exits = {}
        for name, (process, _) in workers.items():
            process.send_signal(signal.SIGTERM)
            exits[name] = process.wait(60)
        return {"orders": len(orders), "filled": done, "seconds": round(elapsed, 2),
                "placing_s": round(placed_s, 2),
                "orders_per_s": round(done / elapsed, 1),
                "p50_ms": round(statistics.median(lat), 1) if lat else None,
                "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1) if lat else None,
                "workers": health, "exit_codes": exits, "sagas": sagas}
    finally:
        for process, _ in workers.values():
            if process.poll() is None:
                process.kill()
        app.close()
        drop_schema(url, schema)


def run_embedded(url: str, pairs: int, symbols: int, basket: int) -> dict[str, Any]:
    from streams.embedded import in_process

    schema = fresh_schema(url, "ebench")
    settings = Settings(persistence="postgres", postgres_schema=schema)
    app = trading_app(settings)
    try:
        orders, _, _ = requests(app, pairs, symbols)
        in_process(app)
        started = time.perf_counter()
        place_all(app, orders, basket)
        elapsed = time.perf_counter() - started
        done = count(url, schema, FILLED)
        lat = latencies(app)
        return {"orders": len(orders), "filled": done, "seconds": round(elapsed, 2),
                "orders_per_s": round(done / elapsed, 1),
                "p50_ms": round(statistics.median(lat), 1) if lat else None,
                "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1) if lat else None}
    finally:
        app.close()
        drop_schema(url, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--basket", type=int, default=100)
    parser.add_argument("--sagas", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    url = postgres_url()
    bootstrap = ensure_kafka()
    embedded = run_embedded(url, args.pairs, args.symbols, args.basket)
    kafka = run_kafka(url, bootstrap, args.pairs, args.symbols, args.basket, args.sagas,
                      args.timeout)
    print(json.dumps({
        "benchmark": "kafka_stages", "commit": commit(), "load_avg": load_avg(),
        "calibration": calibration(), "pairs": args.pairs, "symbols": args.symbols,
        "basket": args.basket, "kafka": kafka, "embedded": embedded,
        "orders_per_s": kafka["orders_per_s"], "p50_ms": kafka["p50_ms"],
        "p99_ms": kafka["p99_ms"],
        "ratio": round(kafka["orders_per_s"] / embedded["orders_per_s"], 3),
        "lost": kafka["orders"] - kafka["filled"]}, indent=2))


if __name__ == "__main__":
    main()
