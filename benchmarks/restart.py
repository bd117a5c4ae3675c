# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Start-up time against history: an empty store vs one with 100,000 orders.

Issue 9 asks that start-up not grow with history (target: the loaded store starts
within 2x the empty one). Measured on two embedded stores (SQLite event store and read
models):

- ``empty``: one funded account, no orders;
- ``loaded``: ``--orders`` (100,000) orders through the whole flow (command side in
  baskets of 256 -> saga -> matching -> saga -> projections, every stage stepped with
  ``Stages.settle()``), from 20 funded accounts on 10 symbols, mostly crossing, with a
  session close every 10,000 orders (resting DAY orders expire, as each day would).
  Generated once and cached under ``.local/bench/`` (ignored), keyed by the order count
  and the git tree of the code that writes stored data (aggregates, infra, projections,
  streams): a change there makes a new store. Generation takes minutes; progress goes to
  stderr. Each measurement runs on a fresh copy, so the cache is never changed.

Figures, per store (each the median of ``--repeats``, all values listed):

- ``startup_s_*``: from spawning ``tradecore serve`` to ``/readyz`` answering 200 with
  every stage running and nothing behind, and every projection at the head (imports,
  app, stage rebuilds, HTTP);
- ``http_up_s``: to the first ``/readyz`` 200 (the server answering at all);
- ``inprocess``: ``api.wiring.trading_stages(settings, projector=True)`` built and each
  stage opened (fence taken, memory rebuilt to its tracked position) in this process,
  timed per stage, so the part that grows with history is named;
- ``cli_account_show_s``: ``tradecore account show <account>`` as a user runs it.

Checks (exit 1 when one fails): the loaded store holds the orders asked for; each
server became ready with nothing behind; each CLI call exited 0 and showed the account.

    python benchmarks/restart.py                    # first run generates (minutes)
    python benchmarks/restart.py --quick            # 1,000 orders, one repeat (smoke)
    python benchmarks/restart.py --orders 20000 --repeats 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from aggregates.application import OrderRequest
from aggregates.base import Meta
from aggregates.instruments import round_to_tick
from api.wiring import event_log, trading_stages
from benchmarks.support import ROOT, calibration, commit, load_avg
from infra.settings import Settings

STORE_FILES = ("events.sqlite", "readmodels.sqlite")
ACCOUNT = "restart-0"
PLACED_TOPIC = "aggregates.order:Order.Placed"
TARGET_RATIO = 2.0
BASKET = 256
SESSION_EVERY = 10_000


def settings_for(folder: Path) -> Settings:
    return Settings(persistence="sqlite", sqlite_path=folder / "events.sqlite",
                    readmodel_sqlite_path=folder / "readmodels.sqlite",
                    jwt_keys_path=folder / "jwt-keys.json")


def server_env(settings: Settings) -> dict[str, str]:
    return {
        "PYTHONPATH": str(ROOT),  # this checkout's code
        "TRADECORE_PERSISTENCE": "sqlite",
        "TRADECORE_SQLITE_PATH": str(settings.sqlite_path),
        "TRADECORE_READMODEL_SQLITE_PATH": str(settings.readmodel_sqlite_path),
        "TRADECORE_JWT_KEYS_PATH": str(settings.jwt_keys_path),
        "TRADECORE_DATA_DIR": str(settings.data_dir),
    }


def fingerprint() -> str:
    """The git trees of the code that decides what a store holds (plus uncommitted
    changes there), so a cached store always comes from the code measured."""
    trees = subprocess.run(["git", "rev-parse", "HEAD:aggregates", "HEAD:infra",
                            "HEAD:projections", "HEAD:streams"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout
    dirty = subprocess.run(["git", "diff", "HEAD", "--", "aggregates", "infra", "projections",
                            "streams"], cwd=ROOT, capture_output=True, text=True,
                           check=False).stdout
    return hashlib.sha256((trees + dirty).encode()).hexdigest()[:12]


def progress(message: str) -> None:
    print(f"[restart] {message}", file=sys.stderr, flush=True)


# -- the stores ---------------------------------------------------------------------------
def generate(folder: Path, orders: int) -> dict[str, Any]:
    """A store with ``orders`` orders through every stage (and one named account)."""
    import random

    folder.mkdir(parents=True, exist_ok=True)
    settings = settings_for(folder)
    stages, store = trading_stages(settings, projector=True)
    app = stages.app
    app.after_command = None
    started = time.perf_counter()
    try:
        ops = Meta.command("bench")
        accounts = []
        for i in range(20 if orders else 1):
            account = app.open_account(f"restart-{i}", owner="bench", meta=ops,
                                       allow_short=True)
            app.deposit(account, 100_000_000_000, ops)
            accounts.append(account)
        stages.settle()
        symbols = list(app.universe.instruments)[:10]
        rng = random.Random(7)
        day = date(2026, 1, 5)
        done = 0
        while done < orders:
            basket = []
            for n in range(done, min(done + BASKET, orders)):
                inst = rng.choice(symbols)
                tick = inst.tick_size(inst.base_price)
                side = rng.choice(["buy", "sell"])
                offset = rng.randint(-2, 2) * tick * (1 if side == "buy" else -1)
                basket.append(OrderRequest(
                    rng.choice(accounts), f"g{n}", inst.symbol, side,
                    inst.lot_size * rng.randint(1, 5), Meta.command("bench"),
                    price=round_to_tick(inst.base_price + offset, inst.tick_table, "down")))
            refused = [o for o in app.place_orders(basket) if isinstance(o, Exception)]
            if refused:
                raise RuntimeError(f"generation: order refused: {refused[0]}")
            done += len(basket)
            if done % SESSION_EVERY < BASKET:
                app.close_session(day.isoformat(), ops)
                day += timedelta(days=1)
            stages.settle()
            if done % (BASKET * 40) < BASKET or done == orders:
                rate = done / (time.perf_counter() - started)
                progress(f"generated {done:,}/{orders:,} orders ({rate:,.0f}/s, "
                         f"{app.head():,} events)")
        events = app.head()
    finally:
        stages.stop()
        stages.release()
        app.close()
        if store is not None:
            store.close()
    return {"orders": orders, "events": events,
            "generation_s": round(time.perf_counter() - started, 1)}


def cached_store(cache: Path, orders: int, regenerate: bool) -> tuple[Path, dict[str, Any]]:
    folder = cache / f"restart-{orders}-{fingerprint()}"
    meta = folder / "meta.json"
    if regenerate and folder.exists():
        shutil.rmtree(folder)
    if not meta.exists():
        progress(f"generating a store of {orders:,} orders in {folder} (cached after)")
        shutil.rmtree(folder, ignore_errors=True)
        building = folder.with_name(folder.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        info = generate(building, orders)
        (building / "meta.json").write_text(json.dumps(info))
        building.rename(folder)
    info = json.loads(meta.read_text())
    info.update({"cached_at": str(folder), "cache_key": folder.name})
    return folder, info


def working_copy(source: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    for name in STORE_FILES:
        for path in source.glob(f"{name}*"):  # with -wal/-shm when present
            shutil.copy2(path, folder / path.name)
    return folder


def placed_orders(settings: Settings) -> int:
    """Orders in the store (its ``Order.Placed`` notifications), read-only."""
    log, close = event_log(settings)
    try:
        count, start = 0, 1
        while batch := log.recorder.select_notifications(start=start, limit=10_000,
                                                         topics=[PLACED_TOPIC]):
            count += len(batch)
            start = batch[-1].id + 1
        return count
    finally:
        close()


# -- the measurements ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readyz(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


def serve_startup(folder: Path, timeout_s: float) -> dict[str, Any]:
    """Spawn ``tradecore serve`` on ``folder``'s store; seconds to ready and caught up."""
    settings = settings_for(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    tradecore = Path(sys.executable).with_name("tradecore")
    log = (folder / "server.log").open("w")
    started = time.perf_counter()
    process = subprocess.Popen(
        ["env", *(f"{k}={v}" for k, v in server_env(settings).items()), str(tradecore),
         "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    out: dict[str, Any] = {"http_up_s": None, "ready_s": None}
    health: Any = None
    try:
        while time.perf_counter() - started < timeout_s:
            if process.poll() is not None:
                out["error"] = f"serve exited with {process.returncode}"
                break
            status, health = readyz(url)
            now = round(time.perf_counter() - started, 3)
            if status == 200 and out["http_up_s"] is None:
                out["http_up_s"] = now
            if status == 200 and health and all(
                    s["running"] and s["behind"] == 0 for s in health["stages"]) and all(
                    p["behind"] == 0 for p in health["projections"]):
                out["ready_s"] = now
                break
            time.sleep(0.05)
        else:
            out["error"] = f"not ready after {timeout_s} s: {health}"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
    if "error" in out:
        out["log_tail"] = (folder / "server.log").read_text(errors="replace")[-1500:]
    return out


def inprocess_startup(folder: Path) -> dict[str, Any]:
    """Build the stages over the store and open each: seconds per stage."""
    settings = settings_for(folder)
    started = time.perf_counter()
    stages, store = trading_stages(settings, projector=True)
    built = time.perf_counter() - started
    opened: dict[str, float] = {}
    try:
        for processor in stages.processors:
            t0 = time.perf_counter()
            processor.open()
            opened[processor.name] = round(time.perf_counter() - t0, 3)
        lags = stages.lags()
        total = time.perf_counter() - started
    finally:
        stages.release()
        stages.app.close()
        if store is not None:
            store.close()
    return {"total_s": round(total, 3), "build_s": round(built, 3), "stage_open_s": opened,
            "behind_after_open": {lag.name: lag.behind for lag in lags}}


def cli_call(folder: Path) -> dict[str, Any]:
    settings = settings_for(folder)
    tradecore = Path(sys.executable).with_name("tradecore")
    started = time.perf_counter()
    done = subprocess.run(
        ["env", *(f"{k}={v}" for k, v in server_env(settings).items()), str(tradecore),
         "account", "show", ACCOUNT], capture_output=True, text=True, timeout=600,
        check=False)
    seconds = round(time.perf_counter() - started, 3)
    ok = done.returncode == 0 and ACCOUNT in done.stdout
    return {"s": seconds, "ok": ok,
            **({} if ok else {"output": (done.stdout + done.stderr)[-800:]})}


def measure(source: Path, repeats: int, timeout_s: float) -> dict[str, Any]:
    serve: list[dict[str, Any]] = []
    inproc: list[dict[str, Any]] = []
    cli: list[dict[str, Any]] = []
    for _ in range(repeats):  # each on a fresh copy of the store
        for into, runner in ((serve, lambda f: serve_startup(f, timeout_s)),
                             (inproc, inprocess_startup), (cli, cli_call)):
            folder = working_copy(source)
            try:
                into.append(runner(folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    ready = [s["ready_s"] for s in serve if s.get("ready_s") is not None]
    up = [s["http_up_s"] for s in serve if s.get("http_up_s") is not None]
    calls = [c["s"] for c in cli]
    return {
        "startup_s": round(statistics.median(ready), 3) if ready else None,
        "startup_s_all": ready,
        "http_up_s": round(statistics.median(up), 3) if up else None,
        "inprocess": min(inproc, key=lambda r: r["total_s"]),
        "inprocess_total_s_all": [r["total_s"] for r in inproc],
        "cli_account_show_s": round(statistics.median(calls), 3),
        "cli_account_show_s_all": calls,
        "errors": [s for s in serve if "error" in s] + [c for c in cli if not c["ok"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".local" / "bench")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached store")
    parser.add_argument("--timeout-s", type=float, default=600,
                        help="longest a server may take to become ready")
    parser.add_argument("--quick", action="store_true", help="1,000 orders, one repeat (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.repeats = min(args.orders, 1000), 1
    out: dict[str, Any] = {"benchmark": "restart", "commit": commit(),
                           "load_avg_start": load_avg(), "calibration": calibration(),
                           "args": {k: str(v) if isinstance(v, Path) else v
                                    for k, v in vars(args).items()}}
    empty_source = Path(tempfile.mkdtemp(prefix="bench-restart-empty-"))
    failed = False
    try:
        generate(empty_source, 0)
        loaded_source, info = cached_store(args.cache_dir, args.orders, args.regenerate)
        out["store"] = info
        stored = placed_orders(settings_for(loaded_source))
        out["check"] = {"orders_in_store": stored, "orders_expected": args.orders}
        progress("measuring the empty store")
        out["empty"] = measure(empty_source, args.repeats, args.timeout_s)
        progress("measuring the loaded store")
        out["loaded"] = measure(loaded_source, args.repeats, args.timeout_s)
    finally:
        shutil.rmtree(empty_source, ignore_errors=True)
    empty, loaded = out["empty"], out["loaded"]
    out["startup_s_empty"] = empty["startup_s"]
    out["startup_s_loaded"] = loaded["startup_s"]
    out["startup_s_100k_orders"] = loaded["startup_s"] if args.orders == 100_000 else None
    out["loaded_orders"] = args.orders
    out["ratio_loaded_vs_empty"] = (round(loaded["startup_s"] / empty["startup_s"], 2)
                                    if empty["startup_s"] and loaded["startup_s"] else None)
    out["cli_account_show_s_empty"] = empty["cli_account_show_s"]
    out["cli_account_show_s_loaded"] = loaded["cli_account_show_s"]
    out["target"] = {"ratio_loaded_vs_empty_at_most": TARGET_RATIO,
                     "met": out["ratio_loaded_vs_empty"] is not None
                     and out["ratio_loaded_vs_empty"] <= TARGET_RATIO}
    out["check"]["ok"] = (out["check"]["orders_in_store"] == args.orders
                          and not empty["errors"] and not loaded["errors"]
                          and empty["startup_s"] is not None
                          and loaded["startup_s"] is not None)
    failed = not out["check"]["ok"]
    out["load_avg_end"] = load_avg()
    print(json.dumps(out, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
