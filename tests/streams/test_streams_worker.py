"""`tradecore worker streams` as an operator runs it, on the dev broker (issue 12).

One replay of the last 60 trading days of 2015 (the full universe, its warm-up before)
through a real worker process, killed with SIGKILL in the middle and started again with
the same settings, then stopped with SIGTERM. The module's tests read what that run left:
the ``<prefix>.predictions`` topic (every day's predictions equal the offline
:func:`streams.signals.predict_day` for the same checkpoint), the restarted worker's
recovery (its tables, not a fresh warm-up), the event store (no order placed twice, every
predicted day traded once), its exit code and health endpoints. One run serves them all
because a 60-day replay costs about a minute on this machine's two shared cores.

Trading days are the last ones of 2015: the live write model's price limits come from
the universe's reference prices (the data's last close), so days far from them get most
orders refused as out of the limits.

Then the bars agent driven through Faust's own test harness (``agent.test_context()``),
and the worker's refusals of bad settings (exit 2, one line naming the setting).

Broker tests are marked ``slow`` only (they need the dev broker, which the
``kafka_bootstrap`` fixture starts; no PostgreSQL: the event store is SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from infra.settings import Settings
from streams.signals import (
    Prediction,
    PredictionsDone,
    decode_prediction,
    predict_day,
    predictions_frame,
)
from tests.api.server import free_port
from tests.processes import TRADECORE, env_for, tc

DAYS = 60
ACCOUNT = "quant1"
STRATEGY = "top-decile"
KILL_AFTER = 25  # predicted days published before the kill


# -- the checkpoint and the data -----------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(all_quotes: pl.DataFrame, listed_info: pl.DataFrame,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ATFT-GAT-FAN trained on the whole universe in 2014 (seconds on a CPU): the
    test is about the loop, not the model's skill, but its features are the real ones."""
    import torch

    from inference.config import ExperimentConfig
    from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features
    from inference.model.checkpoint import save_checkpoint
    from inference.model.panel import FeaturePanel
    from inference.splits import training_split
    from inference.training import bundle_to_checkpoint, train_fold
    from tests.inference.test_serving import TINY

    history = all_quotes.filter(pl.col("Date").is_between(date(2014, 1, 1), date(2014, 12, 30)))
    features = build_features(history, listed_info)
    config = ExperimentConfig.model_validate(TINY)
    panel = FeaturePanel.from_frame(features, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
    fold = training_split(len(panel.dates), 30, 20)
    threads = torch.get_num_threads()
    try:
        bundle = train_fold(features, panel, fold, config, device=torch.device("cpu"))
    finally:
        # training sets torch's process-wide thread count (TINY: 1), and a forward pass
        # with another thread count differs in the last float32 bit: the offline side
        # predicts with the default count, as the worker process does
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("streams-ckpt") / "tiny.safetensors"
    return Path(save_checkpoint(bundle_to_checkpoint(bundle), path))


@pytest.fixture(scope="module")
def trading_days(all_quotes: pl.DataFrame) -> list[date]:
    """The last 60 sessions of the data (end of 2015)."""
    days: list[date] = all_quotes.get_column("Date").unique().sort().to_list()
    return days[-DAYS:]


# -- the worker process --------------------------------------------------------------------
@dataclass
class StreamsRun:
    """What a replay through real worker processes left behind."""

    folder: Path
    settings: Settings
    env: dict[str, str]
    port: int
    logs: list[Path] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    killed_at: str | None = None  # /readyz last_published just before the kill
    readyz: dict[str, Any] = field(default_factory=dict)
    metrics: str = ""
    messages: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, value)

    def start(self) -> subprocess.Popen[str]:
        log = self.folder / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        return subprocess.Popen([*TRADECORE, "worker", "streams"], text=True, env=self.env,
                                stdout=log.open("w"), stderr=subprocess.STDOUT)

    def log(self, n: int) -> str:
        return self.logs[n].read_text()

    def health(self, process: subprocess.Popen[str], timeout: float = 120
               ) -> dict[str, Any]:
        """/readyz once it answers 200 (the worker recovered its tables and runs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, self.log(-1)[-5000:]
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                if answer.status_code == 200:
                    return answer.json()  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"streams worker not ready in {timeout} s:\n"
                             f"{self.log(-1)[-5000:]}")

    def wait_for(self, process: subprocess.Popen[str], what: str, day: date,
                 timeout: float = 240) -> dict[str, Any]:
        """/readyz once its ``what`` (last_published, last_traded) is ``day`` or later."""
        deadline = time.monotonic() + timeout
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert process.poll() is None, self.log(-1)[-5000:]
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).json()
                if ready.get(what) and date.fromisoformat(ready[what]) >= day:
                    return ready
            time.sleep(0.1)
        raise AssertionError(f"{what} not {day} in {timeout} s: {ready}\n"
                             f"{self.log(-1)[-5000:]}")


def read_predictions(settings: Settings, until: date, timeout: float = 60
                     ) -> list[tuple[int, bytes]]:
    """Every record of ``<prefix>.predictions`` (one partition) up to ``until``'s done
    marker, read with confluent-kafka as any consumer of the topic would."""
    from confluent_kafka import Consumer, TopicPartition

    from infra.kafka import consumer_config, topics

    consumer = Consumer(consumer_config(settings, f"read-{uuid.uuid4().hex[:8]}"))
    consumer.assign([TopicPartition(topics(settings).predictions, 0, 0)])
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None or record.error():
                continue
            value, offset = record.value(), record.offset()
            assert value is not None and offset is not None
            out.append((offset, value))
            message = decode_prediction(value)
            if isinstance(message, PredictionsDone) and message.day == until:
                return out
    finally:
        consumer.close()
    raise AssertionError(f"no done marker for {until} in {timeout} s ({len(out)} records)")


def offline_predictions(checkpoint: Path, folder: Path, days: list[date]
                        ) -> dict[date, pl.DataFrame]:
    """``predict_day`` of each of ``days`` from the files (in a process of its own)."""
    from inference.data import load_daily_quotes, load_listed_info
    from inference.serving import Predictor
    from streams.signals import sessions_for

    predictor = Predictor(checkpoint, device="cpu")
    quotes, listed = load_daily_quotes(folder), load_listed_info(folder)
    # the files from the first day's trailing window on (predict_day reads no further
    # back than ``sessions`` dates, so this only saves filtering eight years each day)
    dates = quotes.get_column("Date").unique().sort().to_list()
    start = dates[max(0, dates.index(days[0]) - sessions_for(predictor))]
    recent = quotes.filter(pl.col("Date") >= start)
    return {day: predict_day(predictor, recent, listed, day) for day in days}


@pytest.fixture(scope="module")
def offline(checkpoint: Path, jquants_dir: Path, trading_days: list[date]
            ) -> Iterator[list[Future[dict[date, pl.DataFrame]]]]:
    """The offline predictions of the 60 days (the first three first), computed while the
    worker runs, in a fresh process at a lower CPU priority so the worker is not slowed
    (torch's default thread count there, as in the worker: see the first test)."""
    import multiprocessing
    import os

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=os.nice, initargs=(10,)) as pool:
        yield [pool.submit(offline_predictions, checkpoint, jquants_dir, trading_days[:3]),
               pool.submit(offline_predictions, checkpoint, jquants_dir, trading_days[3:])]


def offline_days(offline: list[Future[dict[date, pl.DataFrame]]], count: int
                 ) -> dict[date, pl.DataFrame]:
    out: dict[date, pl.DataFrame] = {}
    for part in offline:
        out.update(part.result(timeout=600))
        if len(out) >= count:
            break
    return out


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Path]]:
    """A folder whose event store holds the strategy's account, open and funded by the
    CLI as an operator does it (in a thread: the checkpoint trains meanwhile)."""
    folder = tmp_path_factory.mktemp("streams-run")

    def open_and_fund() -> Path:
        for args in (("account", "open", ACCOUNT),
                     ("account", "deposit", ACCOUNT, "100000000")):
            done = tc(folder, *args)
            assert done.returncode == 0, done.stdout + done.stderr
        return folder

    with ThreadPoolExecutor(1, thread_name_prefix="account") as pool:
        yield pool.submit(open_and_fund)


@pytest.fixture(scope="module")
def run(account: Future[Path], checkpoint: Path, jquants_dir: Path, trading_days: list[date],
        kafka_bootstrap: str, offline: list[Future[dict[date, pl.DataFrame]]]
        ) -> Iterator[StreamsRun]:
    """Open and fund the strategy's account; replay the 60 days through a worker; kill -9
    it once 25 days are published; start it again with the same settings; when the last
    day is traded, read the topic, /readyz and /metrics, and SIGTERM it."""
    folder = account.result(timeout=300)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, kafka_dev_broker=True,
                        kafka_topic_prefix=prefix)
    port = free_port()
    env = env_for(folder, TRADECORE_KAFKA_BOOTSTRAP=kafka_bootstrap,
                  TRADECORE_KAFKA_DEV_BROKER="true", TRADECORE_KAFKA_TOPIC_PREFIX=prefix,
                  TRADECORE_MODEL_CHECKPOINT=str(checkpoint),
                  TRADECORE_STREAMS_INGEST="true", TRADECORE_STREAMS_DATA=str(jquants_dir),
                  TRADECORE_STREAMS_FROM=trading_days[0].isoformat(),
                  TRADECORE_STREAMS_TO=trading_days[-1].isoformat(),
                  TRADECORE_WORKER_PORT=str(port), TRADECORE_STRATEGY_ACCOUNT=ACCOUNT)
    streams = StreamsRun(folder, settings, env, port)
    first = streams.start()
    try:
        streams.health(first)
        before = streams.wait_for(first, "last_published", trading_days[KILL_AFTER - 1])
        streams.killed_at = before["last_published"]
        first.send_signal(signal.SIGKILL)
        streams.exits.append(first.wait(30))
        second = streams.start()
        try:
            streams.health(second)
            streams.wait_for(second, "last_traded", trading_days[-1])
            streams.messages = read_predictions(settings, trading_days[-1])
            streams.readyz = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
            streams.metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            second.send_signal(signal.SIGTERM)
            streams.exits.append(second.wait(60))
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    yield streams


def final_predictions(run: StreamsRun) -> tuple[dict[date, list[Prediction]],
                                                dict[date, list[PredictionsDone]]]:
    """Each day's predictions as the topic holds them (a repeat after the restart must be
    identical to the first), and every done marker per day."""
    per_day: dict[date, dict[str, Prediction]] = {}
    done: dict[date, list[PredictionsDone]] = {}
    for offset, value in run.messages:
        message = decode_prediction(value)
        if isinstance(message, PredictionsDone):
            done.setdefault(message.day, []).append(message)
            continue
        held = per_day.setdefault(message.day, {})
        if message.code in held:
            assert held[message.code] == message, (
                f"{message.day} {message.code} sent twice with different values "
                f"(offset {offset})")
        held[message.code] = message
    return {d: list(m.values()) for d, m in per_day.items()}, done


# -- the tests ----------------------------------------------------------------------------
pytestmark = [pytest.mark.slow]


def test_every_day_of_the_replay_predicts_what_the_offline_pipeline_predicts(
        run: StreamsRun, offline: list[Future[dict[date, pl.DataFrame]]],
        trading_days: list[date]) -> None:
    """For each of the 60 days the worker's predictions (read back from the topic) are
    exactly the offline ``predict_day`` of the same checkpoint over the files: both build
    the same features from the same trailing window, and the wire carries float32 values
    as JSON doubles, which round-trip exactly; so no tolerance. (Exact only at the same
    torch thread count: a forward pass on 1 thread and on 2 differ by one float32 ulp;
    both processes here run torch's default.)"""
    online, done = final_predictions(run)
    assert sorted(online) == trading_days
    assert sorted(done) == trading_days
    expected = offline_days(offline, DAYS)
    for day in trading_days:
        markers = done[day]
        assert {(m.count, m.reason) for m in markers} == {(len(online[day]), "complete")}, \
            (day, markers)
        assert not expected[day].is_empty(), day
        got = predictions_frame(online[day]).sort("code", "horizon")
        want = expected[day].sort("code", "horizon")
        assert got.columns == want.columns
        assert got.equals(want), (day, got, want)


def test_a_worker_killed_mid_run_resumes_from_its_recovered_tables(
        run: StreamsRun, trading_days: list[date]) -> None:
    """kill -9 after 25 published days, then a start with the same settings: the window
    table comes back from its changelog (its last published day within one of the one
    /readyz showed before the kill: one more may have been published in between, or the
    last mark may not have reached the changelog, and that day is closed again), no
    warm-up day is closed again, and the run goes on to the last day."""
    assert run.exits[0] == -signal.SIGKILL
    assert run.killed_at is not None
    killed_at = date.fromisoformat(run.killed_at)
    second = run.log(1)
    recovered = re.findall(r"window recovered: (\d+) dates, last published (\S+)", second)
    assert recovered, second[-3000:]
    dates, last = recovered[-1]
    assert last != "None", "the restarted worker's window was empty: not recovered"
    last_day = date.fromisoformat(last)
    assert abs(trading_days.index(last_day) - trading_days.index(killed_at)) <= 1, \
        (killed_at, last_day)
    assert int(dates) > 20  # the trailing window of bars, not only the markers
    assert "closed (warm-up)" not in second
    closed = [date.fromisoformat(d) for d in re.findall(r"(\d{4}-\d\d-\d\d) closed \(", second)]
    assert closed and min(closed) > last_day, (last_day, closed[:3])
    assert closed[-1] == trading_days[-1]


def test_the_restarted_ingest_resumes_after_the_last_day_it_sent(
        run: StreamsRun, checkpoint: Path, jquants_dir: Path, trading_days: list[date]) -> None:
    """md.bars holds one replay, not two: at most a day or two (sent, but the ingest
    table's mark of it not yet in the changelog at the kill) are sent again. An ingest
    that started over would have sent the warm-up backfill and every day a second time."""
    from inference.serving import Predictor
    from infra.kafka import fetched_high_watermarks, partition_count, topics
    from streams.ingest import FileSource
    from streams.signals import sessions_for

    bars = topics(run.settings).bars
    partitions = partition_count(run.settings, bars)
    source = FileSource(jquants_dir, trading_days[0], trading_days[-1],
                        warmup=sessions_for(Predictor(checkpoint, device="cpu")))
    per_day = [len(routed) for _day, _predict, routed in source.messages(partitions)]
    marks = fetched_high_watermarks(run.settings, {(bars, p): 0 for p in range(partitions)},
                                    group=f"marks-{uuid.uuid4().hex[:8]}")
    assert len(marks) == partitions
    sent = sum(marks.values())
    assert sum(per_day) <= sent <= sum(per_day) + 2 * max(per_day[1:]), (sent, sum(per_day))


def test_the_restart_places_no_order_twice_and_trades_every_predicted_day_once(
        run: StreamsRun, trading_days: list[date]) -> None:
    """Orders in the event store: one per client order id ``top-decile:<date>:<symbol>``,
    for predicted days only; each predicted day's decision (the strategy table's
    changelog) was taken once, and the orders of a day are exactly its decision."""
    import msgspec

    from aggregates import ids
    from aggregates.order import Order
    from api.wiring import trading_app
    from streams.strategies.base import OrderIntent

    settings = Settings(persistence="sqlite", sqlite_path=run.folder / "events.sqlite")
    app = trading_app(settings)
    try:
        account = ids.account_id(ACCOUNT)
        placed = [e for n in app.recorder.select_notifications(start=1, limit=10_000_000)
                  if isinstance(e := app.mapper.to_domain_event(n), Order.Placed)
                  and e.account_id == account]
    finally:
        app.close()
    keys = [e.client_order_id for e in placed]
    assert placed, "the strategy placed no order"
    assert len(keys) == len(set(keys)), "a client order id placed twice"
    by_day: dict[date, set[str]] = {}
    for e in placed:
        name, text, symbol = e.client_order_id.split(":")
        assert name == STRATEGY and symbol == e.symbol
        by_day.setdefault(date.fromisoformat(text), set()).add(symbol)
    assert set(by_day) <= set(trading_days)
    decisions = strategy_decisions(run.settings)
    assert sorted(decisions) == trading_days
    for day, values in decisions.items():
        assert len(set(values)) == 1, f"{day} decided {len(set(values))} ways"
        intents = msgspec.json.decode(values[0], type=list[OrderIntent])
        assert by_day.get(day, set()) <= {i.symbol for i in intents}, day
    assert len(by_day) >= DAYS // 2, f"only {len(by_day)} of {DAYS} days placed orders"


def strategy_decisions(settings: Settings) -> dict[date, list[bytes]]:
    """Every value the strategy table stored under ``d|<date>`` (its changelog topic)."""
    from confluent_kafka import Consumer, TopicPartition

    from infra.kafka import admin, consumer_config, fetched_high_watermarks

    topic = f"{settings.kafka_topic_prefix}-streams-strategy-changelog"
    partitions = list(admin(settings).list_topics(topic, timeout=10).topics[topic].partitions)
    marks = fetched_high_watermarks(settings, {(topic, p): 0 for p in partitions},
                                    group=f"marks-{uuid.uuid4().hex[:8]}")
    consumer = Consumer(consumer_config(settings, f"read-{uuid.uuid4().hex[:8]}"))
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    left = {p for p in partitions if marks.get((topic, p), 0) > 0}
    out: dict[date, list[bytes]] = {}
    deadline = time.monotonic() + 60
    try:
        while left and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None or record.error():
                continue
            key, value = record.key() or b"", record.value()
            offset, partition = record.offset(), record.partition()
            assert offset is not None and partition is not None
            if key.startswith(b"d|") and value is not None:
                out.setdefault(date.fromisoformat(key[2:].decode()), []).append(value)
            if offset + 1 >= marks[(topic, partition)]:
                left.discard(partition)
    finally:
        consumer.close()
    assert not left, f"changelog partitions {left} not read to their end"
    return out


def test_sigterm_stops_the_worker_with_exit_0_after_serving_readyz_and_metrics(
        run: StreamsRun, trading_days: list[date]) -> None:
    assert run.exits[1] == 0, run.log(1)[-3000:]
    assert run.readyz["ready"] is True
    assert run.readyz["last_published"] == trading_days[-1].isoformat()
    assert run.readyz["open_days"] == []
    assert run.readyz["last_traded"] == trading_days[-1].isoformat()
    assert run.readyz["bars"]["accepted"] > 0
    metrics = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^(tradecore_streams_\S+) (\S+)$", run.metrics, re.MULTILINE)}
    assert metrics['tradecore_streams_days_total{reason="complete"}'] >= 1
    assert metrics["tradecore_streams_predictions_total"] > 0
    assert metrics['tradecore_streams_bars_total{outcome="accepted"}'] > 0
    assert any(k.startswith("tradecore_streams_orders_total") for k in metrics)


# -- Faust's own test harness ---------------------------------------------------------------
def test_the_bars_agent_in_faust_test_context_predicts_each_closed_day(
        checkpoint: Path, jquants_dir: Path, listed_info: pl.DataFrame, trading_days: list[date],
        offline: list[Future[dict[date, pl.DataFrame]]], kafka_bootstrap: str) -> None:
    """The bars agent driven by ``agent.test_context()`` (values put straight into it, no
    consumer, no ingest task) with the warm-up backfill and three days of bars and
    end-of-day markers: its predictions go to the strategy agent, also in its test
    context, one message per stock then the done marker, day by day, and they are the
    offline ones. The tables keep their changelog (Faust's tables need a started
    producer to pick a changelog partition), so the producer runs on the dev broker."""
    from inference.serving import Predictor
    from infra.kafka import TopicSpec, ensure_topics
    from streams.faust_app import StreamsWorker
    from streams.ingest import FileSource
    from streams.market_data import encode
    from streams.signals import sessions_for

    days = trading_days[:3]
    predictor = Predictor(checkpoint, device="cpu")
    settings = Settings(kafka_bootstrap=kafka_bootstrap, kafka_dev_broker=True,
                        kafka_topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    worker = StreamsWorker(settings, predictor, listed_info, partitions=1)
    app = worker.app
    app.finalize()
    tables = (worker.window_table, worker.ingest_table, worker.strategy_table)
    ensure_topics(settings, [TopicSpec(t.changelog_topic.get_topic_name(), 1) for t in tables])
    source = FileSource(jquants_dir, days[0], days[-1], warmup=sessions_for(predictor))

    async def drive() -> list[Prediction | PredictionsDone]:
        await app.producer.start()
        try:
            async with app.agents["strategy"].test_context() as strategy, \
                    app.agents["bars"].test_context() as bars:
                worker.predictions_topic = strategy  # the bars agent sends to this one
                for _day, _predict, routed in source.messages(1):
                    for item in routed:
                        await bars.put(encode(item.message), key=item.key.encode(),
                                       partition=item.partition)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    got = [decode_prediction(v) for v in strategy.results.values()]
                    if sum(isinstance(m, PredictionsDone) for m in got) == len(days):
                        return got
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{len(strategy.results)} predictions only")
        finally:
            await app.producer.stop()

    sent = asyncio.run(drive())
    expected = offline_days(offline, len(days))
    at = 0
    for day in days:  # in order: the day's predictions, then its marker
        count = len(expected[day].get_column("code").unique())
        batch, marker = sent[at:at + count], sent[at + count]
        at += count + 1
        assert marker == PredictionsDone(day, count, "complete", [])
        assert all(isinstance(m, Prediction) and m.day == day for m in batch)
        got = predictions_frame(batch).sort("code", "horizon")  # type: ignore[arg-type]
        assert got.equals(expected[day].sort("code", "horizon")), day
    assert at == len(sent)
    assert worker.loop.window.last_published == days[-1]
    assert worker.window_table.get(f"p|{days[-1].isoformat()}".encode()) == b"[]"


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "value", "says"), [
    ("TRADECORE_MODEL_CHECKPOINT", None, "refused: TRADECORE_MODEL_CHECKPOINT: unset"),
    ("TRADECORE_MODEL_CHECKPOINT", "{tmp}/absent.safetensors",
     "refused: TRADECORE_MODEL_CHECKPOINT={tmp}/absent.safetensors: no such file"),
    ("TRADECORE_MODEL_CHECKPOINT", "{tmp}/notes.safetensors",
     "refused: TRADECORE_MODEL_CHECKPOINT={tmp}/notes.safetensors: checkpoint: "
     "{tmp}/notes.safetensors is not a safetensors file"),
    ("TRADECORE_KAFKA_BOOTSTRAP", "127.0.0.1:1",
     "refused: TRADECORE_KAFKA_BOOTSTRAP='127.0.0.1:1': no broker answers"),
])
def test_the_worker_refuses_bad_settings_in_one_line_with_exit_2(
        tmp_path: Path, kafka_bootstrap: str, setting: str, value: str | None,
        says: str) -> None:
    """No checkpoint, a checkpoint path with no file, a file that is no checkpoint, a
    broker that does not answer: exit 2 and one line naming the setting, no traceback."""
    (tmp_path / "notes.safetensors").write_text("not a checkpoint\n")
    env = env_for(tmp_path, TRADECORE_KAFKA_BOOTSTRAP=kafka_bootstrap,
                  TRADECORE_KAFKA_DEV_BROKER="true",
                  TRADECORE_KAFKA_TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}",
                  TRADECORE_MODEL_CHECKPOINT=str(tmp_path / "notes.safetensors"),
                  TRADECORE_WORKER_PORT="0")
    if value is None:
        env.pop(setting)
    else:
        env[setting] = value.format(tmp=tmp_path)
    done = subprocess.run([*TRADECORE, "worker", "streams"], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(says.format(tmp=tmp_path)), \
        done.stderr[-2000:]
