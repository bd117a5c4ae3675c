"""The stages on Kafka (item 4 of issue 11, the consumer side), on the real dev broker and
a real PostgreSQL: the saga and the matching service as consumer-group members, one
tracked processor per partition, positions = notification ids.

Records are produced as the relay produces them (``relay_once``: the event store's log
in order, each event as ``infra.kafka.event_message``; venue commands also to
``matching.in`` by symbol, a session close to every partition; venue reports also to
``matching.out``), so these tests do not depend on the relay's own tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest

from aggregates import ids
from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.instruments import round_to_tick
from aggregates.order import OrderStatus
from infra.kafka import (
    AGGREGATES,
    aggregate_of,
    consumer_config,
    event_message,
    producer_config,
    topics,
)
from infra.locks import stage_fence
from infra.settings import Settings
from streams.kafka_bus import StageConsumer, partition_for
from streams.kafka_workers import REPORTED, matching_consumer, saga_consumer
from streams.matching import VENUE_COMMAND_TOPICS
from tests.api.server import free_port
from tests.processes import PROJECT_ROOT, TRADECORE

pytestmark = [pytest.mark.postgres]


# -- the relay's output, produced here ------------------------------------------------------
class LogRelay:
    """Produces the event store's log after ``position`` as the relay does."""

    def __init__(self, settings: Settings, app: TradingApplication) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.app = app
        self.topics = topics(settings)
        self.producer = Producer(producer_config(settings))
        self.position = 0
        self.sent: list[tuple[str, int | None, Any]] = []

    def records(self, after: int, upto: int | None = None) -> list[tuple[str, str, int | None,
                                                                        Any]]:
        """(topic, key, partition or None, message) for each record of the log after
        ``after``."""
        out: list[tuple[str, str, int | None, Any]] = []
        self.last = after
        for n in self.app.recorder.select_notifications(start=after + 1, limit=100_000):
            if upto is not None and n.id > upto:
                break
            self.last = n.id
            message = event_message(n.id, n.originator_id, n.originator_version, n.topic,
                                    n.state)
            aggregate = aggregate_of(n.topic)
            if aggregate in AGGREGATES:
                out.append((self.topics.events(aggregate), message.key, None, message))
            if n.topic in VENUE_COMMAND_TOPICS or n.topic == REPORTED:
                event = self.app.mapper.to_domain_event(n)
                symbol = getattr(event, "symbol", None)
                target = self.topics.matching_out if n.topic == REPORTED else \
                    self.topics.matching_in
                if symbol:
                    out.append((target, symbol, None, message))
                else:  # a session close: one copy to every partition
                    out += [(target, "*", p, message)
                            for p in range(self.settings.kafka_matching_partitions)]
        return out

    def produce(self, records: list[tuple[str, str, int | None, Any]]) -> None:
        for topic, key, partition, message in records:
            extra = {} if partition is None else {"partition": partition}
            self.producer.produce(topic, key=key.encode(), value=message.value,
                                  headers=message.headers, **extra)
        assert self.producer.flush(30) == 0

    def once(self) -> int:
        records = self.records(self.position)
        self.produce(records)
        self.position = self.last
        return len(records)


# -- a small desk ---------------------------------------------------------------------------
def meta() -> Meta:
    return Meta.command("tester")


def price_of(app: TradingApplication, symbol: str) -> int:
    instrument = app.universe.get(symbol)
    return round_to_tick((instrument.limits.lower + instrument.limits.upper) // 2,
                         instrument.tick_table, "down")


def below(app: TradingApplication, symbol: str, price: int, ticks: int) -> int:
    """``ticks`` price steps under ``price``."""
    table = app.universe.get(symbol).tick_table
    for _ in range(ticks):
        price = round_to_tick(price - 1, table, "down")
    return price


def desk(app: TradingApplication) -> tuple[UUID, UUID]:
    buyer = app.open_account("buyer", owner="buyer", meta=meta())
    app.deposit(buyer, 10_000_000_000, meta())
    seller = app.open_account("seller", owner="seller", meta=meta(), allow_short=True)
    app.deposit(seller, 10_000_000_000, meta())
    return buyer, seller


def cross(app: TradingApplication, buyer: UUID, seller: UUID, symbol: str, n: int = 1,
          tag: str = "x") -> list[UUID]:
    """``n`` crossing pairs on ``symbol``: the buy orders' ids."""
    price = price_of(app, symbol)
    buys = []
    for i in range(n):
        app.place_order(seller, client_order_id=f"{tag}s{symbol}{i}", symbol=symbol,
                        side="sell", quantity=100, price=price, meta=meta())
        buys.append(app.place_order(buyer, client_order_id=f"{tag}b{symbol}{i}",
                                    symbol=symbol, side="buy", quantity=100, price=price,
                                    meta=meta()).order_id)
    return buys


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               tick: Callable[[], Any] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def filled(app: TradingApplication, orders: list[UUID]) -> Callable[[], bool]:
    return lambda: all(app.get_order(o).status == OrderStatus.FILLED for o in orders)


@pytest.fixture
def distributed_settings(distributed_settings: Settings) -> Settings:
    """The shared fixture with a shorter group session (joins and failovers take about
    half of it on the dev broker)."""
    return distributed_settings.model_copy(update={"kafka_session_timeout_ms": 3000})


@pytest.fixture
def apps(distributed_settings: Settings) -> Iterator[Callable[[], TradingApplication]]:
    """Trading applications over the test's PostgreSQL schema (one per 'process')."""
    from api.wiring import trading_app

    opened: list[TradingApplication] = []

    def open_app() -> TradingApplication:
        app = trading_app(distributed_settings)
        opened.append(app)
        return app

    yield open_app
    for app in opened:
        app.close()


@contextmanager
def running(consumer: StageConsumer) -> Iterator[StageConsumer]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), f"{consumer.name} did not stop"


def matching_for(settings: Settings, app: TradingApplication, **kwargs: Any) -> StageConsumer:
    from api.wiring import matching_stage

    return matching_consumer(settings, app, lambda: matching_stage(settings, app), **kwargs)


def reports(app: TradingApplication) -> list[tuple[str, int, str, list[Any]]]:
    """Every stored venue report: (symbol, stream version, command, reports)."""
    out = []
    for n in app.recorder.select_notifications(start=1, limit=1_000_000, topics=[REPORTED]):
        e = app.mapper.to_domain_event(n)
        out.append((e.symbol, e.originator_version, e.command, e.reports))
    return out


# -- tests ----------------------------------------------------------------------------------
def test_partition_for_matches_the_producers(distributed_settings: Settings) -> None:
    """The partition a stage thinks a key is on is where the producer put it (the
    matching stage opens a session's books by it; the log replay filters by it)."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(distributed_settings))
    landed: dict[str, int] = {}
    keys = ["7203", "6758", "9984", "*", "a-long-aggregate-id-0123456789", "x", ""]

    def delivered(err: Any, msg: Any) -> None:
        assert err is None
        landed[msg.key().decode()] = msg.partition()

    topic = topics(distributed_settings).events("order")
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"{}", on_delivery=delivered)
    assert producer.flush(30) == 0
    assert landed == {k: partition_for(k, distributed_settings.kafka_event_partitions)
                      for k in keys}


def test_order_flow_across_saga_and_matching_consumers(
        distributed_settings: Settings, apps: Callable[[], TradingApplication]) -> None:
    """Orders placed on the write model trade through the saga and matching consumers;
    producing every record again (the relay re-sending, Kafka redelivering) changes
    nothing; and the consumers report their partitions, positions and lag."""
    settings = distributed_settings
    desk_app = apps()
    relay = LogRelay(settings, desk_app)
    buyer, seller = desk(desk_app)
    symbols = desk_app.universe.symbols[:4]
    buys = [o for s in symbols for o in cross(desk_app, buyer, seller, s, 2)]
    with running(saga_consumer(settings, apps())) as saga, \
            running(matching_for(settings, apps())) as matching:
        wait_until(filled(desk_app, buys), 60, "every buy filled", relay.once)
        relay.once()
        wait_until(lambda: all(d["lag"] == 0 for d in saga.health()["partitions"].values())
                   and len(saga.health()["partitions"]) == 5, 20, "saga idle", relay.once)
        head = desk_app.head()
        before = reports(desk_app)
        health = saga.health()
        assert health["ready"], health
        assert health["applied"] > 0 and health["dead_lettered"] == 0
        assert matching.health()["ready"]
        # everything again, from the start of the log: all of it at or below what each
        # partition has applied, so dropped
        duplicates = saga.stats.duplicates + matching.stats.duplicates
        relay.produce(relay.records(0))
        wait_until(lambda: saga.stats.duplicates + matching.stats.duplicates
                   >= duplicates + len(buys) * 2, 20, "duplicates seen")
        time.sleep(0.5)
        assert desk_app.head() == head, "a duplicate was applied"
        assert reports(desk_app) == before
    assert len(before) == len(buys) * 2  # a report per routed order
    for symbol in symbols:
        position = desk_app.get_position(buyer, symbol)
        assert position is not None and position.quantity == 200


def test_bad_messages_go_to_the_dead_letters(
        distributed_settings: Settings, apps: Callable[[], TradingApplication]) -> None:
    """A message without the contract's headers, one of an unknown event type, one whose
    value does not decode and one of an unknown (newer) schema version each go to the
    dead-letter topic with the reason; the saga goes on to the good order behind them,
    and nothing of the bad ones is stored."""
    from confluent_kafka import Consumer, Producer

    settings = distributed_settings
    desk_app = apps()
    relay = LogRelay(settings, desk_app)
    buyer, seller = desk(desk_app)
    symbol = desk_app.universe.symbols[0]
    relay.once()
    sells = cross(desk_app, buyer, seller, symbol, 1)
    good = relay.records(relay.position)
    relay.position = relay.last
    placed = next(m for t, _, _, m in good if t.endswith(".events.order")
                  and dict(m.headers)["type"].endswith(b"Order.Placed"))
    key = dict(placed.headers)["aggregate_id"]  # bytes
    order_topic = topics(settings).events("order")
    producer = Producer(producer_config(settings))
    bad_type = [(k, b"aggregates.order:Order.Teleported" if k == "type" else v)
                for k, v in placed.headers]
    bad_nid = [(k, str(desk_app.head() + 1000).encode() if k == "notification_id" else v)
               for k, v in placed.headers]
    producer.produce(order_topic, key=key, value=placed.value,
                     headers=[("type", dict(placed.headers)["type"])])  # headers missing
    producer.produce(order_topic, key=key, value=b"{not json", headers=bad_nid)
    producer.produce(order_topic, key=key, value=placed.value,
                     headers=[(k, v) for k, v in bad_type if k != "notification_id"]
                     + [("notification_id", str(desk_app.head() + 1001).encode())])
    newer = re.sub(rb'^\{"schema_version":\d+,', b'{"schema_version":99,', placed.value)
    assert newer != placed.value
    producer.produce(order_topic, key=key, value=newer, headers=[
        (k, str(desk_app.head() + 1002).encode() if k == "notification_id" else v)
        for k, v in placed.headers])
    assert producer.flush(30) == 0
    head = desk_app.head()
    with running(saga_consumer(settings, apps())) as saga, \
            running(matching_for(settings, apps())):
        wait_until(lambda: saga.stats.dead_lettered == 4, 30, "four dead letters")
        assert desk_app.head() == head, "a bad message changed the store"
        relay.produce(good)  # the good records behind them still flow
        wait_until(filled(desk_app, sells), 60, "the order behind them filled", relay.once)
    reader = Consumer(consumer_config(settings, f"{settings.kafka_topic_prefix}.dlq-reader"))
    reader.subscribe([topics(settings).dead_letter])
    letters: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 20
    while len(letters) < 4 and time.monotonic() < deadline:
        for m in reader.consume(10, 0.5):
            if m.error() is None:
                letters.append(dict(m.headers()))
    reader.close()
    reasons = sorted(h["reason"].decode() for h in letters)
    assert len(reasons) == 4, reasons
    assert any("schema_version 99 is newer" in r for r in reasons), reasons
    assert any("header 'aggregate_id' is missing" in r for r in reasons), reasons
    assert any("Order.Teleported" in r for r in reasons), reasons
    assert any(r.startswith("cannot decode aggregates.order:Order.Placed") for r in reasons)
    assert all(h["source_topic"].decode() == order_topic for h in letters)


def test_matching_restart_restores_from_snapshot_and_tail(
        distributed_settings: Settings, apps: Callable[[], TradingApplication]) -> None:
    """A matching service stopped and started again restores each partition's books
    from its newest snapshot plus the tail read from the event store, and goes on
    producing exactly the reports one uninterrupted venue produces."""
    from api.wiring import matching_stage
    from streams.processor import TrackedProcessor

    settings = distributed_settings.model_copy(update={"venue_snapshot_every": 3})
    desk_app = apps()
    relay = LogRelay(settings, desk_app)
    buyer, seller = desk(desk_app)
    symbols = desk_app.universe.symbols[:4]
    price = {s: price_of(desk_app, s) for s in symbols}
    resting = []  # orders that rest (no cross): the books a restore must rebuild
    for i, s in enumerate(symbols):
        for j in range(4):
            resting.append(desk_app.place_order(
                buyer, client_order_id=f"r{i}{j}", symbol=s, side="buy", quantity=100,
                price=below(desk_app, s, price[s], j + 1), meta=meta()).order_id)
    saga = saga_consumer(settings, apps())
    with running(saga), running(matching_for(settings, apps())):
        wait_until(lambda: len(reports(desk_app)) == len(resting), 60, "resting reported",
                   relay.once)
    # a tail after the newest snapshot: a venue that snapshots never this time
    for i, s in enumerate(symbols):
        resting.append(desk_app.place_order(
            buyer, client_order_id=f"t{i}", symbol=s, side="buy", quantity=100,
            price=below(desk_app, s, price[s], 5), meta=meta()).order_id)
    never = settings.model_copy(update={"venue_snapshot_every": 10**6})
    with running(saga), running(matching_for(never, apps())):
        wait_until(lambda: len(reports(desk_app)) == len(resting), 60, "the tail reported",
                   relay.once)
    # sells that trade with what rests, through a new matching service
    sells = []
    for i, s in enumerate(symbols):
        sells.append(desk_app.place_order(seller, client_order_id=f"s{i}", symbol=s,
                                          side="sell", quantity=300,
                                          price=below(desk_app, s, price[s], 4),
                                          meta=meta()).order_id)
    restarted = matching_for(settings, apps())
    with running(saga), running(restarted):
        wait_until(lambda: len(reports(desk_app)) == len(resting) + len(sells), 60,
                   "sells reported", relay.once)
        wait_until(filled(desk_app, sells), 30, "the sells filled", relay.once)
        stages = [lane.processor.step.stage for lane in restarted.lanes.values()]
    assert len(stages) == settings.kafka_matching_partitions
    assert all(stage.restored_from is not None for stage in stages), "no snapshot used"
    assert sum(stage.replayed for stage in stages) == len(symbols), "tail not replayed"
    # one uninterrupted venue over the whole log, embedded: the same reports
    oracle_app = apps()
    stage = matching_stage(settings.model_copy(update={"venue_snapshot_every": 10**6}),
                           oracle_app)
    got = reports(desk_app)
    from streams.bus import EventLogSource

    class Collect:
        name = "oracle"

        def __init__(self) -> None:
            self.out: list[Any] = []

        def position(self, key: str, fresh: bool = False) -> int:
            return self.out[-1][0] if self.out else 0

        def start(self, key: str, source: Any) -> None:
            stage.start(0, source)

        def process(self, key: str, batch: list[tuple[int, Any]]) -> None:
            self.out.append((batch[-1][0], stage.apply(batch)))

    collect = Collect()
    TrackedProcessor(collect, EventLogSource(oracle_app.recorder, oracle_app.mapper,
                                             topics=VENUE_COMMAND_TOPICS)).catch_up()
    expected = [(e.symbol, e.originator_version, e.command, e.reports)
                for _, events in collect.out for e in events]
    assert sorted(got, key=lambda r: (r[0], r[1])) == sorted(expected,
                                                            key=lambda r: (r[0], r[1]))


# -- real processes -------------------------------------------------------------------------
class Fleet:
    """`tradecore` processes of one distributed deployment, as an operator starts them."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        from tests.conftest import distributed_env

        self.folder = folder
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))
                               if p)
        self.env = {**os.environ, "PYTHONPATH": path, **distributed_env(settings),
                    "TRADECORE_BUS": "kafka",
                    "TRADECORE_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
                    "TRADECORE_JWT_KEYS_PATH": str(folder / "keys.json")}
        self.processes: dict[str, tuple[subprocess.Popen[str], int]] = {}

    def tc(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TRADECORE, *args], capture_output=True, text=True,
                              env={**self.env, **env}, timeout=120, check=False)

    def start(self, name: str, *args: str) -> int:
        """Start ``tradecore ARGS`` as ``name``; its health (or HTTP) port."""
        port = free_port()
        out = (self.folder / f"{name}.log").open("w")
        process = subprocess.Popen([*TRADECORE, *args], text=True, stdout=out,
                                   stderr=subprocess.STDOUT,
                                   env={**self.env, "TRADECORE_WORKER_PORT": str(port),
                                        "TRADECORE_API_PORT": str(port)})
        self.processes[name] = (process, port)
        return port

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def ready(self, name: str, timeout: float = 60) -> dict[str, Any]:
        process, port = self.processes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{name} exited:\n{self.log(name)}"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if answer.status_code == 200:
                    return answer.json()  # type: ignore[no-any-return]
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} not ready in {timeout} s:\n{self.log(name)}")

    def health(self, name: str) -> dict[str, Any]:
        port = self.processes[name][1]
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()  # type: ignore[no-any-return]

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        process, _ = self.processes.pop(name)
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{name} did not stop on {sig}:\n{self.log(name)}") from None

    def close(self) -> None:
        for name in list(self.processes):
            with contextlib.suppress(AssertionError):
                self.stop(name, signal.SIGKILL)


@pytest.fixture
def fleet(distributed_settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    deployment = Fleet(distributed_settings, tmp_path)
    try:
        yield deployment
    finally:
        deployment.close()


def test_a_worker_pointed_at_no_broker_exits_2_naming_the_setting(fleet: Fleet) -> None:
    done = fleet.tc("worker", "saga", TRADECORE_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "refused: TRADECORE_KAFKA_BOOTSTRAP='127.0.0.1:1': no broker answers"), done.stderr
    assert "Traceback" not in done.stderr


def test_an_order_flow_across_processes(distributed_settings: Settings, fleet: Fleet) -> None:
    """`tradecore kafka init`, the relay, matching, saga and projection workers and
    `serve --distributed` as their own processes: a trade placed over HTTP reaches the
    read models (fills, positions, balances); `projections status` shows each Kafka
    stage's partitions; SIGTERM stops every process with exit 0."""
    init = fleet.tc("kafka", "init")
    assert init.returncode == 0, init.stdout + init.stderr
    for worker in ("relay", "matching", "saga", "projections"):
        fleet.start(worker, "worker", worker)
    api = fleet.start("api", "serve", "--distributed", "--log-level", "warning")
    fleet.ready("api")
    token = fleet.tc("auth", "token", "--subject", "ops", "--role", "admin")
    assert token.returncode == 0, token.stderr
    http = httpx.Client(base_url=f"http://127.0.0.1:{api}/v1", timeout=30,
                        headers={"Authorization": f"Bearer {token.stdout.strip()}"})
    buyer = http.post("/accounts", json={"name": "buyer", "owner": "buyer"}).json()
    seller = http.post("/accounts", json={"name": "seller", "owner": "seller",
                                          "allow_short": True}).json()
    for account in (buyer, seller):
        assert http.post(f"/accounts/{account['account_id']}/deposits",
                         json={"amount": 100_000_000}).status_code == 201
    from api.wiring import load_instruments

    universe = load_instruments(distributed_settings)
    symbol = universe.symbols[0]
    instrument = universe.get(symbol)
    price = round_to_tick((instrument.limits.lower + instrument.limits.upper) // 2,
                          instrument.tick_table, "down")
    for account, side in ((seller, "sell"), (buyer, "buy")):
        placed = http.post("/orders", json={
            "account_id": account["account_id"], "client_order_id": f"e2e-{side}",
            "symbol": symbol, "side": side, "quantity": 100, "price": price})
        assert placed.status_code == 201, placed.text
    for worker in ("relay", "matching", "saga", "projections"):
        fleet.ready(worker)
    buyer_id = buyer["account_id"]

    def traded() -> bool:
        fills = http.get("/fills", params={"account_id": buyer_id}).json()["items"]
        return len(fills) == 1

    wait_until(traded, 60, "the buyer's fill in the read models")
    fill = http.get("/fills", params={"account_id": buyer_id}).json()["items"][0]
    assert (fill["symbol"], fill["side"], fill["price"], fill["quantity"]) == (
        symbol, "buy", price, 100)
    wait_until(lambda: [(p["symbol"], p["quantity"]) for p in http.get(
        f"/accounts/{buyer_id}/positions").json()] == [(symbol, 100)], 30, "position")
    balance = http.get(f"/accounts/{buyer_id}/balance").json()
    assert balance["reserved"] == 0 and balance["cash"] < 100_000_000
    saga = fleet.health("saga")
    assert saga["ready"] and saga["applied"] >= 4 and saga["dead_lettered"] == 0, saga
    metrics = httpx.get(f"http://127.0.0.1:{fleet.processes['saga'][1]}/metrics").text
    assert 'tradecore_kafka_applied_total{partition=' in metrics
    assert 'tradecore_kafka_lag_records{partition=' in metrics
    # the buy and the sell each filled once
    assert re.search(r'tradecore_stage_events_stored_total\{stage="saga",type="Order.Filled"\}'
                     r' 2\.0', metrics), metrics
    status = fleet.tc("projections", "status", "--worker",
                      f"http://127.0.0.1:{fleet.processes['matching'][1]}")
    assert status.returncode == 0, status.stdout + status.stderr
    prefix = distributed_settings.kafka_topic_prefix
    for partition in range(distributed_settings.kafka_matching_partitions):
        assert f"{prefix}.matching.in:{partition}" in status.stdout, status.stdout
    assert "matching-worker" in status.stdout
    http.close()
    for name in ("api", "relay", "matching", "saga", "projections"):
        assert fleet.stop(name) == 0, fleet.log(name)


def test_two_saga_workers_share_partitions_and_survive_a_rebalance(
        distributed_settings: Settings, fleet: Fleet,
        apps: Callable[[], TradingApplication]) -> None:
    """Two saga workers split the saga's partitions; one killed -9, the other takes its
    partitions over (after the group's session timeout) and every order still trades
    exactly once; the killed one started again gets a share back."""
    desk_app = apps()
    buyer, seller = desk(desk_app)
    for name in ("relay", "matching", "saga-a", "saga-b"):
        fleet.start(name, "worker", name.partition("-")[0])
    for name in ("relay", "matching", "saga-a", "saga-b"):
        fleet.ready(name)

    def shares() -> tuple[set[str], set[str]]:
        a, b = (set(fleet.health(n)["partitions"]) if n in fleet.processes else set()
                for n in ("saga-a", "saga-b"))
        return a, b

    partitions = distributed_settings.kafka_event_partitions + \
        distributed_settings.kafka_matching_partitions
    wait_until(lambda: all(shares()) and len(set.union(*shares())) == partitions, 40,
               "both saga workers hold partitions")
    a, b = shares()
    assert not a & b
    symbols = desk_app.universe.symbols[:6]
    buys = [o for s in symbols for o in cross(desk_app, buyer, seller, s, 1, "one")]
    wait_until(filled(desk_app, buys), 60, "the first orders filled")
    fleet.stop("saga-a", signal.SIGKILL)
    more = [o for s in symbols for o in cross(desk_app, buyer, seller, s, 1, "two")]
    wait_until(filled(desk_app, more), 60, "the orders after the kill filled")
    assert len(shares()[1]) == partitions  # saga-b took everything over
    fleet.start("saga-a", "worker", "saga")
    fleet.ready("saga-a")
    wait_until(lambda: all(shares()), 40, "the restarted worker holds partitions again")
    last = [o for s in symbols for o in cross(desk_app, buyer, seller, s, 1, "three")]
    wait_until(filled(desk_app, last), 60, "the orders after the rebalance filled")
    for symbol in symbols:  # nothing doubled: each buy filled once
        position = desk_app.get_position(buyer, symbol)
        assert position is not None and position.quantity == 300
    assert len(reports(desk_app)) == 6 * len(symbols)
    for name in ("saga-a", "saga-b", "matching", "relay"):
        assert fleet.stop(name) == 0, fleet.log(name)


def test_a_consumer_whose_broker_goes_away_says_so_and_resumes(
        distributed_settings: Settings, apps: Callable[[], TradingApplication],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker stopped under a running saga consumer: /readyz turns not ready naming
    the broker; started again, the consumer reconnects by itself (librdkafka's backoff),
    turns ready and goes on with what arrives."""
    from infra.kafka import ensure_topics
    from infra.services import ensure_kafka

    port = free_port()
    script = PROJECT_ROOT / "infra" / "kafka.sh"
    monkeypatch.setenv("TRADECORE_PYTHON", os.environ.get("TRADECORE_PYTHON", sys.executable))
    env = {**os.environ, "TRADECORE_KAFKA_PORT": str(port)}

    def broker(action: str) -> None:
        subprocess.run(["bash", str(script), action], check=True, capture_output=True,
                       env=env, timeout=60)

    try:
        settings = distributed_settings.model_copy(
            update={"kafka_bootstrap": ensure_kafka(port)})
        ensure_topics(settings)
        desk_app = apps()
        relay = LogRelay(settings, desk_app)
        buyer, seller = desk(desk_app)
        consumer = saga_consumer(settings, apps())
        with running(consumer), running(matching_for(settings, apps())):
            buys = cross(desk_app, buyer, seller, desk_app.universe.symbols[0], 1, "up")
            wait_until(filled(desk_app, buys), 60, "trading before the outage", relay.once)
            broker("stop")
            wait_until(lambda: not consumer.health()["ready"], 30, "not ready")
            assert "broker unreachable" in consumer.health()["reason"]
            broker("start")  # memory-only: its topics are gone, made again as by kafka init
            ensure_topics(settings)
            wait_until(lambda: consumer.health()["ready"], 60, "ready again")
            # the broker lost everything (its producer ids too): a new producer publishes
            # the log again, as the relay does after a dev-broker restart
            relay = LogRelay(settings, desk_app)
            buys = cross(desk_app, buyer, seller, desk_app.universe.symbols[1], 1, "again")
            wait_until(filled(desk_app, buys), 60, "trading after the outage", relay.once)
    finally:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, env=env,
                       timeout=60, check=False)


def test_session_bars_and_close_reach_every_partition_each_venue_its_own_symbols(
        distributed_settings: Settings, apps: Callable[[], TradingApplication]) -> None:
    """A session's bars and its close are copied to every partition of matching.in: each
    venue opens and expires only the symbols that hash to it, so no two partitions write
    the same venue stream (they would collide on its versions) and nothing is missed."""
    from streams.kafka_workers import venue_key

    settings = distributed_settings
    n = settings.kafka_matching_partitions
    desk_app = apps()
    relay = LogRelay(settings, desk_app)
    buyer, _ = desk(desk_app)
    symbols: list[str] = []
    for symbol in desk_app.universe.symbols:  # two symbols on each partition
        if sum(partition_for(s, n) == partition_for(symbol, n) for s in symbols) < 2:
            symbols.append(symbol)
        if len(symbols) == 2 * n:
            break
    bars = []
    for s in symbols:
        instrument = desk_app.universe.get(s)
        base = instrument.base_price
        bars.append({"symbol": s, "open": base, "high": base, "low": base, "close": base,
                     "volume": 1_000_000, "base": base})
    today = datetime.now(ZoneInfo("Asia/Tokyo")).date().isoformat()
    desk_app.open_bars(today, bars, meta(), participation_bp=100, slippage_ticks=2)
    orders = [desk_app.place_order(buyer, client_order_id=f"day{s}", symbol=s, side="buy",
                                   quantity=100, price=below(desk_app, s, b["open"], 5),
                                   meta=meta()).order_id for s, b in zip(symbols, bars,
                                                                        strict=True)]
    with running(saga_consumer(settings, apps())), \
            running(matching_for(settings, apps())) as matching:
        wait_until(lambda: len(reports(desk_app)) == 2 * len(symbols), 60, "orders resting",
                   relay.once)
        desk_app.close_session(today, meta())
        wait_until(lambda: all(desk_app.get_order(o).status == OrderStatus.EXPIRED
                               for o in orders), 60, "the DAY orders expired", relay.once)
        assert all(d["state"] == "running" for d in matching.health()["partitions"].values())
    got = sorted((symbol, version, command) for symbol, version, command, _ in
                 reports(desk_app))
    assert got == sorted((s, v, c) for s in symbols
                         for v, c in ((1, "open"), (2, "new"), (3, "expire"))), got
    # what the log replay filters by, keyed as the relay keys: a version-1 cancel (no
    # symbol) by its order's symbol, an unknown order's as unrouted, a close everywhere
    key_of = venue_key(desk_app)
    assert key_of(SimpleNamespace(symbol=None, originator_id=orders[0])) == symbols[0]
    assert key_of(SimpleNamespace(symbol=None, originator_id=uuid4())) == "?"
    assert key_of(desk_app.history(ids.MARKET_ID)[-1]) is None


def test_a_partition_with_a_full_buffer_is_paused_until_it_drains(
        distributed_settings: Settings, apps: Callable[[], TradingApplication]) -> None:
    """Backpressure: with room for 20 decoded records a partition, a burst of orders is
    read in pieces (the partition paused whenever its buffer filled, resumed as it
    drained), never held whole in memory, and every order is still routed."""
    from aggregates.application import OrderRequest

    settings = distributed_settings
    desk_app = apps()
    relay = LogRelay(settings, desk_app)
    buyer, _ = desk(desk_app)
    symbol = desk_app.universe.symbols[0]
    price = below(desk_app, symbol, price_of(desk_app, symbol), 5)
    placed = desk_app.place_orders([
        OrderRequest(account_id=buyer, client_order_id=f"burst{i}", symbol=symbol,
                     side="buy", quantity=100, price=price, meta=meta()) for i in range(240)])
    orders = [p.order_id for p in placed]  # type: ignore[union-attr]
    relay.once()
    saga = StageConsumer(settings, "saga", saga_consumer(settings, apps()).inputs.values(),
                         saga_consumer(settings, apps()).step_for, desk_app.mapper,
                         desk_app.recorder, batch_size=4, buffer_limit=20)
    # another saga still holds the order partitions (as in a rebalance): records arrive
    # faster than they are applied
    order_topic = topics(settings).events("order")
    held = [stage_fence(settings, f"saga@{order_topic}:{p}")
            for p in range(settings.kafka_event_partitions)]
    for fence in held:
        assert fence.acquire(blocking=False)
    try:
        with running(saga):
            def paused() -> bool:
                lanes = [d for k, d in saga.health()["partitions"].items()
                         if k.startswith(order_topic)]
                return len(lanes) == len(held) and all(d["paused"] for d in lanes)

            wait_until(paused, 30, "every order partition paused with a full buffer",
                       relay.once)
            for fence in held:
                fence.release()
            wait_until(lambda: all(desk_app.get_order(o).status != OrderStatus.PLACED
                                   for o in orders), 60, "every order routed", relay.once)
            lanes = saga.health()["partitions"]
            peak = max(lane.peak for lane in saga.lanes.values())
    finally:
        for fence in held:
            fence.release()
    assert sum(d["applied"] for d in lanes.values()) == len(orders)
    assert not any(d["paused"] for d in lanes.values())
    assert 20 <= peak <= 20 + 4 * 4  # filled to the limit, and one poll's worth over
