# ruff: noqa: E402  (imports follow the sys.path fix below)
"""The market-data loop's figures: bars ingested per second, and the latency from a
day's last bar to all its predictions and all the strategy's orders, for the full
universe, on the dev broker through ``tradecore worker streams``; the same day closes
in-process (the embedded deployment) for comparison; and the model's serving path.

Prints one JSON object:

* ``bars_per_s``: bars the worker took into its window per second from a backlog of
  backfill messages (64 bars of one symbol each: how history and catch-up travel);
  ``live_form_bars_per_s``: the same for one bar per message (how a live day travels);
* ``day_close_to_predictions_ms`` / ``day_close_to_orders_ms``: median (and max) over
  the live days, from the moment the day's last bar and markers were delivered to the
  broker to the day's done marker read back from ``<prefix>.predictions`` / the worker
  reporting the day traded (its orders placed through the command handlers);
  ``day_close_to_orders_ms_by_day`` lists every live day's;
* ``embedded_day_close_ms``: the same day closes (predictions and orders) run in-process
  by :func:`streams.loop.run_embedded`, the embedded deployment's path;
* ``serving``: ``Predictor.predict`` for one full-universe cross-section with the CPU
  config and the full-size default config (freshly initialised weights: speed does not
  depend on them), on CPU; ``gpu_ms``: the default config on the GPU in bf16, or null
  without one.

Run: ``.venv/bin/python benchmarks/streams.py [--data DIR] [--live-days N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from datetime import date
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

import httpx
import polars as pl

from benchmarks.support import ROOT, calibration, commit, load_avg

CHECKPOINT_STEPS = 3  # the latency does not depend on how well the network learned


def _train_checkpoint(quotes: pl.DataFrame, listed: pl.DataFrame, until: date,
                      out: Path) -> Path:
    """A CPU-config checkpoint on the whole universe, trained a few steps."""
    import torch

    from inference.config import ExperimentConfig, load_config
    from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features
    from inference.model.checkpoint import save_checkpoint
    from inference.model.panel import FeaturePanel
    from inference.splits import training_split
    from inference.training import bundle_to_checkpoint, train_fold

    raw = load_config("cpu").model_dump()
    raw["training"].update(epochs=1, steps_per_epoch=CHECKPOINT_STEPS,
                           train_baselines=False, validation_days=30, validation_stride=10)
    cfg = ExperimentConfig.model_validate(raw)
    frame = build_features(quotes.filter(pl.col("Date") <= until), listed)
    panel = FeaturePanel.from_frame(frame, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
    fold = training_split(len(panel.dates), 30, 20)
    bundle = train_fold(frame, panel, fold, cfg, device=torch.device("cpu"))
    return save_checkpoint(bundle_to_checkpoint(bundle), out)


def _env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECORE_")}
    env.update(settings)
    return env


def _produce(bootstrap: str, topic: str, routed: list[Any]) -> float:
    """Send the messages (keyed ones by the partitioner, markers to their partition);
    the time all were acknowledged."""
    from confluent_kafka import Producer

    from streams.market_data import encode

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "enable.idempotence": True, "acks": "all",
                         "partitioner": "murmur2_random"})
    for r in routed:
        kwargs = {"partition": r.partition} if r.partition is not None else {}
        while True:
            try:
                producer.produce(topic, key=r.key.encode(), value=encode(r.message), **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return time.perf_counter()


def _health(port: int) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return {}


def _wait(port: int, ok: Any, timeout_s: float, poll_s: float = 0.01
          ) -> tuple[float, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = _health(port)
        if health and ok(health):
            return time.perf_counter(), health
        time.sleep(poll_s)
    raise TimeoutError(f"worker on :{port} did not get there in {timeout_s} s: {_health(port)}")


def _serving(checkpoint: Path, quotes: pl.DataFrame, listed: pl.DataFrame, day: date,
             repeats: int) -> dict[str, Any]:
    """Predictor.predict on one full-universe cross-section: CPU config, default config."""
    import torch

    from inference.config import load_config
    from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS
    from inference.model.panel import FeaturePanel
    from inference.serving import Predictor
    from streams.signals import features_for_day

    spec = importlib.util.spec_from_file_location("bench_inference", _HERE / "inference.py")
    assert spec is not None and spec.loader is not None
    bench_inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_inference)

    def timed(predictor: Any, frame: pl.DataFrame) -> float:
        times = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(repeats + 1):
                started = time.perf_counter()
                predictor.predict(frame, day)
                times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times[1:]), 1)

    cpu_predictor = Predictor(checkpoint, device="cpu")
    frame = features_for_day(quotes, listed, day, cpu_predictor.history_days + 40)
    out: dict[str, Any] = {"stocks": frame.filter(pl.col("date") == day).height,
                           "cpu_config_cpu_ms": timed(cpu_predictor, frame)}
    full = load_config("default")
    full_frame = features_for_day(quotes, listed, day,
                                  max(full.training.min_history, full.model.lookback,
                                      full.training.graph_window) + 45)
    panel = FeaturePanel.from_frame(full_frame, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
    full_checkpoint = bench_inference._checkpoint(full, panel)
    out["default_parameters"] = sum(
        p.numel() for p in full_checkpoint.build_model().parameters())
    out["default_config_cpu_ms"] = timed(Predictor(full_checkpoint, device="cpu"), full_frame)
    out["gpu_ms"] = None
    if torch.cuda.is_available():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out["gpu_ms"] = timed(Predictor(full_checkpoint, device="cuda"), full_frame)
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--bulk-days", type=int, default=700,
                        help="Sessions sent as a backlog of backfill messages.")
    parser.add_argument("--live-form-days", type=int, default=20,
                        help="Warm-up sessions sent one bar per message.")
    parser.add_argument("--live-days", type=int, default=10, help="Days predicted and traded.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from inference.data import load_daily_quotes, load_listed_info
    from infra.services import ensure_kafka
    from infra.settings import Settings, get_settings
    from streams.ingest import backfill_messages, day_messages

    data = args.data or get_settings().data_dir / "jquants"
    started_at = load_avg()
    quotes = load_daily_quotes(data)
    listed = load_listed_info(data)
    days = quotes.get_column("Date").unique().sort().to_list()
    live = days[-args.live_days:]
    form = days[-args.live_days - args.live_form_days:-args.live_days]
    bulk = days[-args.live_days - args.live_form_days - args.bulk_days:
                -args.live_days - args.live_form_days]
    bootstrap = ensure_kafka()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="tradecore-streams-bench-"))
    checkpoint = _train_checkpoint(quotes, listed, bulk[-1], folder / "cpu.safetensors")
    settings = Settings(kafka_bootstrap=bootstrap, kafka_dev_broker=True,
                        kafka_topic_prefix=prefix)
    from infra.kafka import ensure_topics, partition_count, topics

    ensure_topics(settings)
    names = topics(settings)
    partitions = partition_count(settings, names.bars)
    port = 9190
    env = _env({
        "TRADECORE_KAFKA_BOOTSTRAP": bootstrap, "TRADECORE_KAFKA_DEV_BROKER": "true",
        "TRADECORE_KAFKA_TOPIC_PREFIX": prefix, "TRADECORE_MODEL_CHECKPOINT": str(checkpoint),
        "TRADECORE_SQLITE_PATH": str(folder / "events.sqlite"),
        "TRADECORE_READMODEL_SQLITE_PATH": str(folder / "readmodels.sqlite"),
        "TRADECORE_STREAMS_DATA": str(data), "TRADECORE_WORKER_PORT": str(port),
        "TRADECORE_STRATEGY_ACCOUNT": "bench", "TRADECORE_STRATEGY_FRACTION": "0.1"})
    tradecore = str(ROOT / ".venv" / "bin" / "tradecore")
    for argv in (["account", "open", "bench"], ["account", "deposit", "bench", "1000000000"]):
        subprocess.run([tradecore, *argv], env=env, check=True, capture_output=True)

    # the backlog: bulk history in backfill messages, then days one bar per message
    bulk_rows = quotes.filter(pl.col("Date").is_between(bulk[0], bulk[-1]))
    bulk_messages = list(backfill_messages(bulk_rows, bulk, partitions))
    _produce(bootstrap, names.bars, bulk_messages)
    bulk_bars = bulk_rows.height
    log = open(folder / "worker.log", "w")  # noqa: SIM115 - the worker's whole life
    worker = subprocess.Popen([tradecore, "worker", "streams"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        first, _ = _wait(port, lambda h: h.get("bars", {}).get("accepted", 0) > 0, 120, 0.005)
        done, _ = _wait(port, lambda h: h.get("bars", {}).get("accepted", 0) >= bulk_bars
                        and h.get("last_published") == str(bulk[-1]), 300)
        bars_per_s = bulk_bars / (done - first)
        form_rows = quotes.filter(pl.col("Date").is_between(form[0], form[-1]))
        form_messages = [m for day, rows in form_rows.partition_by(
            "Date", as_dict=True, maintain_order=True).items()
            for m in day_messages(day[0], rows, partitions, rebase_splits=False,
                                  predict=False)]
        sent = _produce(bootstrap, names.bars, form_messages)
        form_done, _ = _wait(port, lambda h: h.get("last_published") == str(form[-1]), 300)
        live_form_bars_per_s = form_rows.height / (form_done - sent)

        to_predictions, to_orders = [], []
        for day in live:
            rows = quotes.filter(pl.col("Date") == day)
            closed = _produce(bootstrap, names.bars,
                              list(day_messages(day, rows, partitions, rebase_splits=False)))
            predicted, _ = _wait(port, lambda h, d=day: h.get("last_published") == str(d), 60,
                                 0.005)
            traded, _ = _wait(port, lambda h, d=day: h.get("last_traded") == str(d), 60, 0.005)
            to_predictions.append((predicted - closed) * 1000)
            to_orders.append((traded - closed) * 1000)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
        log.close()
    orders = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("tradecore_streams_orders_total{")}

    # the embedded deployment: the same days closed in this process
    embedded_ms = _embedded(checkpoint, quotes, listed, live, bulk + form, folder)
    result = {
        "commit": commit(), "load_avg_start": started_at, "load_avg_end": load_avg(),
        "calibration": calibration(),
        "bars_per_s": round(bars_per_s),
        "bulk_bars": bulk_bars, "bulk_messages": len(bulk_messages),
        "live_form_bars_per_s": round(live_form_bars_per_s),
        "day_close_to_predictions_ms": round(statistics.median(to_predictions), 1),
        "day_close_to_predictions_ms_max": round(max(to_predictions), 1),
        "day_close_to_orders_ms": round(statistics.median(to_orders), 1),
        "day_close_to_orders_ms_max": round(max(to_orders), 1),
        # per live day, in order: the first pays for the process's first forecast
        "day_close_to_orders_ms_by_day": [round(x) for x in to_orders],
        "live_days": [str(d) for d in live],
        "stocks": quotes.filter(pl.col("Date") == live[-1]).height,
        "orders": orders, "worker_exit_code": exit_code,
        "embedded_day_close_ms": round(statistics.median(embedded_ms), 1),
        "serving": _serving(checkpoint, quotes, listed, live[-1], args.repeats),
    }
    result["gpu_ms"] = result["serving"]["gpu_ms"]
    print(json.dumps(result, indent=1))


def _embedded(checkpoint: Path, quotes: pl.DataFrame, listed: pl.DataFrame,
              live: list[date], warm: list[date], folder: Path) -> list[float]:
    """Day closes of the embedded deployment (run_embedded: predictions and orders) over
    the same live days, on an account of its own."""
    from aggregates.base import Meta
    from api.wiring import trading_app
    from inference.serving import Predictor
    from infra.settings import Settings
    from streams.ingest import Routed, backfill_messages, day_messages
    from streams.loop import Loop, desk_for, run_embedded

    settings = Settings(sqlite_path=folder / "embedded.sqlite")
    app = trading_app(settings)
    account = app.open_account("embedded", owner="bench", meta=Meta.command("bench"))
    app.deposit(account, 1_000_000_000, Meta.command("bench"))
    predictor = Predictor(checkpoint, device="cpu")
    loop = Loop({}, predictor, listed)
    desk = desk_for(app, "embedded", 0.1, {})
    warm_rows = quotes.filter(pl.col("Date").is_between(warm[-loop.sessions], warm[-1]))
    steps: list[tuple[date, bool, list[Routed]]] = [
        (warm[-1], False, list(backfill_messages(warm_rows, warm[-loop.sessions:], 1)))]
    for day in live:
        steps.append((day, True, list(day_messages(day, quotes.filter(pl.col("Date") == day),
                                                   1, rebase_splits=False))))

    class Timed:
        def __init__(self) -> None:
            self.times: list[float] = []

        def messages(self, _partitions: int) -> Any:
            for step in steps:
                self.mark = time.perf_counter()
                yield step

    source = Timed()

    def seen(result: Any, _submitted: Any) -> None:
        if result.reason != "warm-up":
            source.times.append((time.perf_counter() - source.mark) * 1000)

    run_embedded(source, loop, desk, on_day=seen)
    app.close()
    return source.times


if __name__ == "__main__":
    main()
