"""Orders/s and per-order latency through the whole saga, on SQLite and PostgreSQL.

Each order goes place -> risk -> reserve -> route -> match -> fill -> settle. Orders
arrive in waves of ``--wave`` (a desk's burst), submitted as one basket (group commit:
each order validated alone, the accepted ones stored in one transaction); after each
wave the saga catches up in batches of ``--batch`` notifications per transaction. An
order's latency runs from the arrival of its wave to the commit that completed its
flow. ``single`` repeats the run with one order per command and the saga run after
each (the slowest, lowest-latency way). Printed as JSON:
``{"sqlite": {...}, "postgres": {...}}``.

    python benchmarks/write_path.py [--orders 5000] [--wave 64] [--batch 512] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.instruments import load_universe, round_to_tick
from infra.eventstore import eventsourcing_env
from infra.settings import Settings


def run(env: dict[str, str], orders: int, wave: int, batch: int) -> dict[str, Any]:
    universe = load_universe(None)
    app = TradingApplication(env, universe=universe, auto_process=False, batch_size=batch)
    symbols = list(universe.instruments)[:10]
    ops = Meta.command("bench")
    accounts = []
    for i in range(20):
        account = app.open_account(f"acct-{i}", owner="bench", meta=ops, allow_short=True)
        app.deposit(account, 100_000_000_000, ops)
        accounts.append(account)
    app.process()
    rng = random.Random(1)
    latencies: list[float] = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    for first in range(0, orders, wave):
        arrived = time.perf_counter()
        basket = []
        for n in range(first, min(first + wave, orders)):
            inst = rng.choice(symbols)
            tick = inst.tick_size(inst.base_price)
            side = rng.choice(["buy", "sell"])
            offset = rng.randint(-2, 2) * tick * (1 if side == "buy" else -1)
            basket.append(OrderRequest(
                rng.choice(accounts), f"b{n}", inst.symbol, side, 100 * rng.randint(1, 5),
                Meta.command("bench"),
                price=round_to_tick(inst.base_price + offset, inst.tick_table, "down")))
        if wave == 1:
            app.place_order(basket[0].account_id, **{
                k: getattr(basket[0], k) for k in ("client_order_id", "symbol", "side",
                                                     "quantity", "price", "meta")})
        else:
            app.place_orders(basket)
        app.process()
        done = time.perf_counter()
        latencies.extend(done - arrived for _ in basket)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    fills = sum(1 for _ in app.recorder.select_notifications(
        start=1, limit=10**9, topics=["aggregates.position:Position.FillApplied"]))
    events = app.recorder.max_notification_id() or 0
    app.close()
    latencies.sort()
    return {
        "orders": orders,
        "orders_per_s": round(orders / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "events": events,
        "fills": fills,
        "seconds": round(elapsed, 2),
        # CPU seconds of this process: robust when other jobs share the machine
        "cpu_s": round(cpu, 2),
        "orders_per_cpu_s": round(orders / cpu, 1),
        "wave": wave,
        "batch": batch,
    }


def postgres_env() -> dict[str, str] | None:
    try:
        import psycopg

        from infra.services import ensure_postgres

        url = ensure_postgres()
        schema = f"bench_{int(time.time())}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return eventsourcing_env(Settings(persistence="postgres"), schema=schema)
    except Exception as err:
        print(json.dumps({"postgres_unavailable": str(err)[:300]}), flush=True)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--wave", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--profile", action="store_true", help="print where SQLite time goes")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.only in (None, "sqlite"):
        path = Path(tempfile.mkdtemp()) / "bench.sqlite"
        env = eventsourcing_env(Settings(persistence="sqlite", sqlite_path=path))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        out["sqlite"] = run(env, args.orders, args.wave, args.batch)
        single = eventsourcing_env(Settings(persistence="sqlite", sqlite_path=path.with_name(
            "single.sqlite")))
        out["sqlite"]["single"] = run(single, args.orders // 3, 1, args.batch)
        if args.profile:
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            out["sqlite_profile_top"] = text.getvalue().splitlines()[:45]
    if args.only in (None, "postgres"):
        env_pg = postgres_env()
        out["postgres"] = run(env_pg, args.orders, args.wave, args.batch) if env_pg else None
        env_single = postgres_env() if env_pg else None
        if out["postgres"] and env_single:
            out["postgres"]["single"] = run(env_single, args.orders // 3, 1, args.batch)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
