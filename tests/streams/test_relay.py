"""The relay: a real order flow in PostgreSQL, published to the dev broker, read back.

One order flow (accounts, crossing and resting orders on two symbols, a cancel, an
amend, a session close; the saga and the matching stage run in-process) is written
once per module; each test publishes that log to topics of its own prefix (the relay's
position and fence are per prefix), so the tests share the store, never the topics.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.venue import Venue
from api.wiring import stepped_app
from infra import codec
from infra.eventstore import postgres_url
from infra.kafka import (
    AGGREGATES,
    HEADER_NOTIFICATION,
    aggregate_of,
    consumer_config,
    ensure_topics,
    event_message,
    topic_specs,
    topics,
)
from infra.settings import Settings
from streams.matching import VENUE_COMMAND_TOPICS
from streams.relay import BrokerLost, Relay, schema_version
from tests.api.server import free_port
from tests.conftest import distributed_env, postgres_env
from tests.processes import TRADECORE

pytestmark = pytest.mark.postgres

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BROADCAST = {"aggregates.market:Market.SessionClosed", "aggregates.market:Market.BarsOpened"}


@dataclass(frozen=True)
class Flow:
    settings: Settings  # the store's; each test sets its own topic prefix
    app: TradingApplication
    account: Any

    def log(self) -> list[Any]:
        return list(self.app.recorder.select_notifications(start=1, limit=1_000_000))


def _order_flow(app: TradingApplication) -> Any:
    """Accounts, crossing orders (fills: Venue.Reported), resting orders, a cancel, an
    amend and a session close (one copy to every matching partition)."""
    meta = lambda: Meta.command("relay-test")  # noqa: E731
    alice = app.open_account("alice", owner="alice", meta=meta())
    bob = app.open_account("bob", owner="bob", meta=meta(), allow_short=True)
    app.deposit(alice, 10**11, meta())
    app.deposit(bob, 10**11, meta())
    symbols = [s for s in ("7203", "8306") if s in app.universe] or app.universe.symbols[:2]
    requests = []
    for s_index, symbol in enumerate(symbols):
        inst = app.universe.get(symbol)
        tick = inst.tick_size(inst.base_price)
        price = inst.base_price - inst.base_price % tick
        for i in range(120):
            buy = i % 2 == 1
            requests.append(OrderRequest(
                account_id=alice if buy else bob, client_order_id=f"x{s_index}-{i}",
                symbol=symbol, side="buy" if buy else "sell", quantity=100,
                price=price - (5 * tick if i >= 100 and buy else 0), meta=meta()))
    placed = [p for p in app.place_orders(requests) if hasattr(p, "order_id")]
    resting = [p.order_id for p in placed
               if app.get_order(p.order_id).status.value in ("working", "new")]
    assert len(resting) >= 2, "the flow needs resting orders to cancel and amend"
    app.cancel_order(resting[0], meta())
    order = app.get_order(resting[1])
    app.amend_order(resting[1], quantity=200, price=order.price, meta=meta())
    app.close_session("2026-12-01", meta())
    return alice


@pytest.fixture(scope="module")
def flow() -> Iterator[Flow]:
    env = postgres_env()
    settings = Settings(persistence="postgres", postgres_schema=env["POSTGRES_SCHEMA"],
                        kafka_dev_broker=True, kafka_event_partitions=3,
                        kafka_matching_partitions=2, kafka_fetch_wait_ms=20)
    app = stepped_app(settings)
    account = _order_flow(app)
    yield Flow(settings, app, account)
    app.close()


def _settings(flow: Flow, bootstrap: str, prefix: str, **extra: Any) -> Settings:
    settings = flow.settings.model_copy(update={"kafka_bootstrap": bootstrap,
                                                "kafka_topic_prefix": prefix, **extra})
    ensure_topics(settings)
    return settings


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    headers: list[tuple[str, bytes]]
    value: bytes

    @property
    def nid(self) -> int:
        return int(dict(self.headers)[HEADER_NOTIFICATION])


def read_topic(settings: Settings, topic: str, at_least: int, timeout: float = 30
               ) -> list[Record]:
    """Every record of ``topic`` (all partitions, from the start), once at least
    ``at_least`` arrived and every partition reported its end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer: Any = Consumer(consumer_config(settings, f"check-{uuid.uuid4().hex[:8]}",
                                             **{"enable.partition.eof": True}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        records: list[Record] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in consumer.consume(2000, 0.2):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    at_end.add(m.partition())
                    continue
                at_end.discard(m.partition())
                headers = [(k, v or b"") for k, v in m.headers() or ()]
                records.append(Record(topic, m.partition(), m.offset(), m.key().decode(),
                                      headers, m.value() or b""))
            if len(records) >= at_least and at_end == set(parts):
                return records
        raise AssertionError(f"{topic}: {len(records)} records in {timeout} s, "
                             f"expected at least {at_least}")
    finally:
        consumer.close()


def publish_all(relay: Relay) -> int:
    published = 0
    while (done := relay.publish_once()) > 0:
        published += done
    return published


def applied(records: list[Record]) -> dict[int, list[int]]:
    """What a consumer that drops every notification id at or below the last it applied
    (per partition) applies: the ids per partition."""
    seen: dict[int, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if not seen[r.partition] or r.nid > seen[r.partition][-1]:
            seen[r.partition].append(r.nid)
    return seen


def assert_exactly_the_log(settings: Settings, log: list[Any], timeout: float = 30) -> None:
    """The events topics, read by consumers that drop seen ids, hold exactly the log:
    every event once, in log order per partition, key = aggregate id."""
    t = topics(settings)
    want = {n.id for n in log}
    got: list[int] = []
    for aggregate in AGGREGATES:
        expected = sum(1 for n in log if aggregate_of(n.topic) == aggregate)
        records = read_topic(settings, t.events(aggregate), expected, timeout)
        for partition, ids in applied(records).items():
            assert ids == sorted(ids), f"{aggregate}:{partition} out of log order"
            got += ids
        by_id = {n.id: n for n in log}
        assert all(r.key == str(by_id[r.nid].originator_id) for r in records)
    assert sorted(got) == sorted(want), (
        f"missing {sorted(want - set(got))[:10]}, doubled {len(got) - len(set(got))}")


@pytest.fixture(scope="module")
def published(flow: Flow, kafka_bootstrap: str) -> Iterator[tuple[Settings, int]]:
    """The flow's log published once to a prefix of this module's own."""
    settings = _settings(flow, kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}")
    relay = Relay(settings)
    try:
        yield settings, publish_all(relay)
    finally:
        relay.close()


def test_every_event_arrives_on_its_topic_with_its_key_and_headers_in_order(
        flow: Flow, published: tuple[Settings, int]) -> None:
    settings, count = published
    log = flow.log()
    assert count == len(log) > 1000
    t = topics(settings)
    by_id = {n.id: n for n in log}
    for aggregate in AGGREGATES:
        expected = [n for n in log if aggregate_of(n.topic) == aggregate]
        records = read_topic(settings, t.events(aggregate), len(expected))
        assert sorted(r.nid for r in records) == [n.id for n in expected], aggregate
        for r in records:
            n = by_id[r.nid]
            message = event_message(n.id, n.originator_id, n.originator_version, n.topic,
                                    n.state, schema_version=schema_version(n.state))
            assert (r.key, r.value, r.headers) == (message.key, message.value,
                                                    message.headers)
            assert dict(r.headers)["schema_version"] == b"%d" % codec.codec.schema_for_topic(
                n.topic).version
        per_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            per_key[r.key].append((r.partition, r.nid))
        for key, seen in per_key.items():
            assert len({p for p, _ in seen}) == 1, f"{key} on several partitions"
            versions = [by_id[nid].originator_version for _, nid in seen]
            assert versions == sorted(versions) == list(range(versions[0], versions[0]
                                                              + len(versions))), key


def test_venue_commands_reach_matching_by_symbol_and_a_session_close_every_partition(
        flow: Flow, published: tuple[Settings, int]) -> None:
    settings, _ = published
    log = flow.log()
    t = topics(settings)
    commands = [n for n in log if n.topic in VENUE_COMMAND_TOPICS]
    routed = [n for n in commands if n.topic not in BROADCAST]
    closes = [n for n in commands if n.topic in BROADCAST]
    assert routed and closes
    records = read_topic(settings, t.matching_in, len(routed) + 2 * len(closes))
    assert len(records) == len(routed) + 2 * len(closes)
    by_nid: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        by_nid[r.nid].append(r)
    symbol_partition: dict[str, int] = {}
    for n in routed:
        (r,) = by_nid[n.id]
        assert r.key == codec.decode(n.topic, n.state).symbol
        assert symbol_partition.setdefault(r.key, r.partition) == r.partition
    assert len(set(symbol_partition.values())) >= 1
    for n in closes:
        assert sorted((r.key, r.partition) for r in by_nid[n.id]) == [("*", 0), ("*", 1)]
    for partition in (0, 1):
        ids = [r.nid for r in sorted(records, key=lambda r: r.offset)
               if r.partition == partition]
        assert ids == sorted(ids)
    reports = [n for n in log if n.topic == "aggregates.venue:Venue.Reported"]
    assert reports
    out = read_topic(settings, t.matching_out, len(reports))
    assert sorted(r.nid for r in out) == [n.id for n in reports]
    for r in out:
        report = codec.decode("aggregates.venue:Venue.Reported", r.value)
        assert isinstance(report, Venue.Reported) and r.key == report.symbol
        assert symbol_partition.get(r.key, r.partition) in (0, 1)


def test_kafka_topics_shows_each_partition_s_end_offset_from_a_fetch(
        flow: Flow, published: tuple[Settings, int]) -> None:
    """What an operator checks after publishing: the records on each events topic (the
    dev broker's ListOffsets answer would show fewer)."""
    settings, _ = published
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **distributed_env(settings)}
    shown = subprocess.run([*TRADECORE, "kafka", "topics"], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    totals = {line.split()[0]: int(line.split()[-1]) for line in shown.stdout.splitlines()}
    t = topics(settings)
    log = flow.log()
    for aggregate in AGGREGATES:
        assert totals[t.events(aggregate)] == sum(
            1 for n in log if aggregate_of(n.topic) == aggregate), aggregate


def test_a_batch_the_broker_did_not_confirm_is_retried_and_its_position_not_stored(
        flow: Flow, kafka_bootstrap: str, kafka_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """One topic missing (an operator skipped `kafka init` on a new cluster): the market
    events cannot be delivered, so the relay stays at its position, says why on /readyz
    and in its metrics, and publishes everything once the topic is there."""
    from prometheus_client import REGISTRY

    settings = flow.settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap,
                                                "kafka_topic_prefix": kafka_prefix,
                                                "kafka_dev_broker": False})
    t = topics(settings)
    ensure_topics(settings, [s for s in topic_specs(settings)
                             if s.name != t.events("market")])
    log = flow.log()
    relay = Relay(settings, delivery_timeout_ms=1000)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,))
    worker.start()
    try:
        _wait(lambda: "not confirmed" in relay.health().get("error", ""), 30, "refused")
        detail = relay.health()
        assert not detail["ready"] and t.events("market") in detail["error"], detail
        assert relay.position == 0 == _position(settings)
        def failures() -> float:
            return REGISTRY.get_sample_value("tradecore_relay_failures_total",
                                             {"stream": kafka_prefix}) or 0.0

        _wait(lambda: failures() >= 2, 30, "retried with backoff")
        assert REGISTRY.get_sample_value("tradecore_relay_last_error_info", {
            "stream": kafka_prefix, "reason": relay.health()["error"][:500]}) == 1.0
        logged = [r for r in caplog.records if "not confirmed" in r.getMessage()]
        assert len(logged) == 1, "logged once per change of state, not per retry"
        ensure_topics(settings)
        _wait(lambda: relay.position == log[-1].id and relay.health()["ready"], 60,
              "published once the topic exists")
    finally:
        stop.set()
        worker.join(60)
        relay.close()
    assert_exactly_the_log(settings, log)


def test_a_cancel_stored_before_commands_named_their_book_goes_to_the_order_s_symbol(
        flow: Flow, kafka_bootstrap: str, kafka_prefix: str) -> None:
    """Version-1 cancels, amends and expiries carry no symbol: the relay routes them by
    the symbol of the order they are about (its Placed event), where its book is."""
    settings = _settings(flow, kafka_bootstrap, kafka_prefix)
    (cancel,) = [n for n in flow.log() if n.topic.endswith("Order.CancelRouted")]
    state = json.loads(cancel.state)
    assert state["schema_version"] == 2 and state.pop("symbol")
    state["schema_version"] = 1
    legacy = json.dumps(state, separators=(",", ":")).encode()
    placed = flow.app.get_order(cancel.originator_id)
    relay = Relay(settings)
    try:
        relay._ensure_producer()
        records = list(relay._records([(cancel.id, str(cancel.originator_id),
                                        cancel.originator_version, cancel.topic, legacy)]))
    finally:
        relay.close()
    t = topics(settings)
    assert [(topic, key) for topic, key, _p, _m in records] == [
        (t.events("order"), str(cancel.originator_id)), (t.matching_in, placed.symbol)]
    assert dict(records[0][3].headers)["schema_version"] == b"1"


# -- processes ------------------------------------------------------------------------
def _relay_process(settings: Settings, port: int, **extra: str) -> subprocess.Popen[str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, **distributed_env(settings),
           "TRADECORE_WORKER_PORT": str(port), **extra}
    return subprocess.Popen([*TRADECORE, "worker", "relay"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _position(settings: Settings) -> int:
    with (psycopg.connect(postgres_url(settings), autocommit=True) as conn,
          contextlib.suppress(psycopg.errors.UndefinedTable)):
            row = conn.execute(
                f'SELECT position FROM "{settings.postgres_schema}".relay_positions '
                "WHERE stream = %s", (settings.kafka_topic_prefix,)).fetchone()
            return int(row[0]) if row else 0
    return 0


def _wait(predicate: Any, timeout: float, what: str, process: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the relay exited\n{process.stdout.read()}")
        time.sleep(0.01)
    raise AssertionError(f"{what}: not in {timeout} s")


def _ready(port: int) -> dict[str, Any]:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.TransportError:
        return {"ready": False, "state": "not answering"}
    body: dict[str, Any] = r.json()
    assert (r.status_code == 200) == body["ready"]
    return body


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(30)


def test_a_relay_killed_mid_publish_resumes_and_nothing_is_missing_or_doubled(
        flow: Flow, kafka_bootstrap: str, kafka_prefix: str) -> None:
    settings = _settings(flow, kafka_bootstrap, kafka_prefix)
    log = flow.log()
    head = log[-1].id
    first = _relay_process(settings, free_port(), TRADECORE_RELAY_BATCH_SIZE="40")
    try:
        _wait(lambda: _position(settings) > head // 4, 60, "first batches", first)
    finally:
        _kill(first)  # kill -9, mid-publish: some records sent, their position not stored
    stopped_at = _position(settings)
    assert 0 < stopped_at < head, "the kill must land mid-publish"
    second = _relay_process(settings, free_port())
    try:
        _wait(lambda: _position(settings) == head, 60, "the rest", second)
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out
    assert_exactly_the_log(settings, log)


def test_a_second_relay_waits_on_the_fence_and_takes_over_after_kill_9(
        flow: Flow, kafka_bootstrap: str, kafka_prefix: str) -> None:
    settings = _settings(flow, kafka_bootstrap, kafka_prefix)
    port_a, port_b = free_port(), free_port()
    a = _relay_process(settings, port_a)
    b: subprocess.Popen[str] | None = None
    try:
        head = flow.log()[-1].id
        _wait(lambda: _position(settings) == head and _ready(port_a)["ready"], 60,
              "relay A publishing", a)
        b = _relay_process(settings, port_b)
        _wait(lambda: "fence" in _ready(port_b)["state"], 60, "relay B waiting", b)
        flow.app.deposit(flow.account, 1000, Meta.command("relay-test"))
        new_head = flow.app.recorder.max_notification_id()
        _wait(lambda: _position(settings) == new_head, 30, "A publishes the deposit", a)
        assert not _ready(port_b)["ready"]
        _kill(a)
        flow.app.deposit(flow.account, 2000, Meta.command("relay-test"))
        newer_head = flow.app.recorder.max_notification_id()
        _wait(lambda: _position(settings) == newer_head and _ready(port_b)["ready"], 60,
              "B takes over", b)
        metrics = httpx.get(f"http://127.0.0.1:{port_b}/metrics", timeout=5).text
        assert f'tradecore_relay_lag{{stream="{kafka_prefix}"}} 0.0' in metrics
    finally:
        _kill(a)
        if b is not None:
            _kill(b)
    assert_exactly_the_log(settings, flow.log())


def test_kafka_init_creates_the_topics_once_and_names_an_unreachable_broker(
        flow: Flow, kafka_bootstrap: str, kafka_prefix: str) -> None:
    settings = flow.settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap,
                                                "kafka_topic_prefix": kafka_prefix})
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **distributed_env(settings)}

    def init(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TRADECORE, "kafka", "init"], capture_output=True, text=True,
                              env={**env, **extra}, timeout=60, check=False)

    first, again = init(), init()
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 11 and all(line.split()[-1] == "created" for line in lines)
    assert [f"{kafka_prefix}.matching.in", "2", "partitions", "created"] in [
        line.split() for line in lines]
    assert [line.split()[-1] for line in again.stdout.strip().splitlines()] == ["exists"] * 11
    nowhere = f"127.0.0.1:{free_port()}"
    refused = init(TRADECORE_KAFKA_BOOTSTRAP=nowhere)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"refused: TRADECORE_KAFKA_BOOTSTRAP='{nowhere}': "
                                     "no broker answers"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stdout == ""


@pytest.fixture
def own_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
               ) -> Iterator[tuple[str, Any]]:
    """A dev broker on a port and in a folder of this test's own (stopping it stops
    nobody else's), and ``broker("stop" | "start")``. It is stopped with kill -9 (a crash:
    ``kafka.sh stop`` waits 5 s for Tansu to give up its connections; the memory is lost
    either way)."""
    from infra.services import ensure_kafka

    port = free_port()
    monkeypatch.setenv("TRADECORE_PYTHON", os.environ.get("TRADECORE_PYTHON", sys.executable))
    monkeypatch.setenv("TRADECORE_KAFKA_DIR", str(tmp_path))
    pidfile = tmp_path / f"tansu-{port}.pid"

    def broker(action: str) -> None:
        if action == "stop":
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not Path(f"/proc/{pid}").exists(), 10, "the broker gone")
        else:
            assert ensure_kafka(port) == bootstrap

    bootstrap = ensure_kafka(port)
    try:
        yield bootstrap, broker
    finally:
        broker("stop")


def test_after_the_dev_broker_restarts_the_relay_publishes_everything_again(
        flow: Flow, own_broker: tuple[str, Any], kafka_prefix: str) -> None:
    """The dev broker keeps everything in memory: stopped and started, it has no topics.
    The running relay says it is not ready while the broker is away, then notices the
    marker record is gone, re-creates the topics and publishes the whole log again."""
    bootstrap, broker = own_broker
    settings = _settings(flow, bootstrap, kafka_prefix)
    log = flow.log()
    relay = Relay(settings)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,))
    worker.start()
    try:
        _wait(lambda: relay.position == log[-1].id and relay.health()["ready"], 30,
              "published")
        broker("stop")
        _wait(lambda: not relay.health()["ready"], 30, "not ready while the broker is away")
        away = relay.health()
        assert away.get("error") or away.get("broker"), away
        broker("start")  # memory only: every topic and record is gone
        _wait(lambda: relay.health()["ready"] and relay.position == log[-1].id, 60,
              "published again")
        assert json.dumps(relay.health())  # what /readyz serves
    finally:
        stop.set()
        worker.join(60)
        relay.close()
    assert not worker.is_alive()
    assert_exactly_the_log(settings, log)


def test_publish_once_after_a_dev_broker_restart_starts_again_from_the_log_start(
        flow: Flow, own_broker: tuple[str, Any], kafka_prefix: str) -> None:
    bootstrap, broker = own_broker
    settings = _settings(flow, bootstrap, kafka_prefix)
    log = flow.log()
    relay = Relay(settings)
    try:
        assert publish_all(relay) == len(log)
        broker("stop")
        broker("start")
        with pytest.raises(BrokerLost, match="lost its data"):
            relay.publish_once()
        assert relay.position == 0 == _position(settings)
        assert publish_all(relay) == len(log)
    finally:
        relay.close()
    assert_exactly_the_log(settings, log)
