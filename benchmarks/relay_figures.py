# ruff: noqa: E402  (imports follow the sys.path fix below)
"""Relay throughput: events/s from a PostgreSQL event store to Kafka, delivery confirmed.

What runs:

1. the event log: the real write model's order flow (accounts, baskets of crossing
   orders on 20 symbols, cancels, session closes; saga and matching in-process), made
   once by ``benchmarks/projections.py``'s generator and cached under
   ``.local/bench/events-N.sqlite``; its stored events (bytes as stored, hash chain
   included) are copied into a fresh PostgreSQL schema with the eventsourcing
   recorder's ``insert_events``;
2. a dev broker (Tansu) of this run's own on a free port, so the shared one is not
   loaded (and its memory-only topics do not stay behind), stopped at the end;
3. baselines in the same run, to say what bounds the relay:
   ``read_events_per_s`` (``select_notifications`` over the log in the relay's batches,
   no producing) and ``produce_records_per_s`` (the relay's records, built beforehand,
   produced and flushed by one confluent-kafka producer with the relay's settings: the
   Python client plus the broker, no database);
4. the relay: ``Relay.publish_once()`` until the log is published (each batch: read,
   route, produce, wait for every delivery report, store the position);
   ``relay_events_per_s`` is notifications per second, ``records`` counts the copies to
   ``matching.in``/``matching.out`` too;
5. check: every events topic read back from the start (fetch, not ListOffsets) holds
   exactly one record per notification; a mismatch exits 1.

    python benchmarks/relay_figures.py                  # 100,000 events
    python benchmarks/relay_figures.py --events 30000 --batch 5000

Target: >= 30,000 events/s on the 2-core dev machine (a figure, not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from eventsourcing.persistence import StoredEvent

from benchmarks.support import (
    calibration,
    commit,
    drop_schema,
    fresh_schema,
    load_avg,
    postgres_url,
)
from infra.kafka import AGGREGATES, consumer_config, ensure_topics, producer_config, topics
from infra.settings import PROJECT_ROOT, Settings

TARGET_EVENTS_PER_S = 30_000
KAFKA_SCRIPT = PROJECT_ROOT / "infra" / "kafka.sh"


def copy_log(sqlite_path: Path, settings: Settings, chunk: int = 5000) -> int:
    """The cached SQLite log's stored events into the PostgreSQL schema, in log order."""
    from streams.relay import _event_store

    store = _event_store(settings)
    copied = 0
    try:
        with sqlite3.connect(sqlite_path) as conn:
            # infra.sqlite_store: the rowid is the notification id
            rows = conn.execute("SELECT originator_id, originator_version, topic, state "
                                "FROM stored_events ORDER BY rowid")
            while batch := rows.fetchmany(chunk):
                store.recorder.insert_events([
                    StoredEvent(uuid.UUID(str(oid)) if not isinstance(oid, uuid.UUID) else oid,
                                int(version), topic, bytes(state))
                    for oid, version, topic, state in batch])
                copied += len(batch)
    finally:
        store.close()
    return copied


def own_broker() -> tuple[str, int]:
    from infra.services import ensure_kafka
    from tests.api.server import free_port

    os.environ.setdefault("TRADECORE_PYTHON", sys.executable)
    port = free_port()
    return ensure_kafka(port), port


def stop_broker(port: int) -> None:
    subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], capture_output=True, timeout=60,
                   env={**os.environ, "TRADECORE_KAFKA_PORT": str(port)}, check=False)


def read_baseline(relay: Any, batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    position = count = 0
    while rows := relay.positions.read(position, batch):
        position = rows[-1][0]
        count += len(rows)
    seconds = time.perf_counter() - started
    return {"events": count, "seconds": round(seconds, 3),
            "read_events_per_s": round(count / seconds)}


def produce_baseline(relay: Any, settings: Settings, batch: int) -> dict[str, Any]:
    """The relay's records, built beforehand, through one producer with its settings."""
    from confluent_kafka import Producer

    records = []
    position = 0
    while rows := relay.positions.read(position, batch):
        position = rows[-1][0]
        records += [(t.replace(relay.stream, settings.kafka_topic_prefix, 1), k, p,
                     m.value, m.headers) for t, k, p, m in relay._records(rows)]
    producer = Producer(producer_config(settings, **{
        "queue.buffering.max.messages": len(records) + 1000}))
    failed: list[Any] = []
    started = time.perf_counter()
    for topic, key, partition, value, headers in records:
        if partition is None:
            producer.produce(topic, value, key, headers=headers,
                             on_delivery=lambda e, _m: e and failed.append(e))
        else:
            producer.produce(topic, value, key, partition, headers=headers,
                             on_delivery=lambda e, _m: e and failed.append(e))
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    return {"records": len(records), "seconds": round(seconds, 3),
            "produce_records_per_s": round(len(records) / seconds), "failed": len(failed),
            "undelivered": left}


def count_events_topics(settings: Settings, timeout: float = 120) -> int:
    """Records on the events topics, read from the start to each partition's end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(consumer_config(settings, f"bench-{uuid.uuid4().hex[:8]}",
                                        **{"enable.partition.eof": True}))
    t = topics(settings)
    parts = [TopicPartition(t.events(a), p, OFFSET_BEGINNING) for a in AGGREGATES
             for p in range(settings.kafka_event_partitions)]
    consumer.assign(parts)
    count, at_end = 0, set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(parts) and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add((m.topic(), m.partition()))
                    continue
                at_end.discard((m.topic(), m.partition()))
                count += 1
    finally:
        consumer.close()
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000,
                        help="notifications in the log (generated once, then cached)")
    parser.add_argument("--batch", type=int, default=Settings().relay_batch_size,
                        help="the relay's batch size (TRADECORE_RELAY_BATCH_SIZE)")
    args = parser.parse_args()

    from benchmarks.projections import ensure_log, log_path
    from streams.relay import Relay

    figures: dict[str, Any] = {"benchmark": "relay", "commit": commit(),
                               "load_avg_before": load_avg(), "calibration": calibration()}
    figures["log"] = ensure_log(args.events)
    url = postgres_url()
    schema = fresh_schema(url, "bench_relay")
    bootstrap, port = own_broker()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(persistence="postgres", postgres_schema=schema,
                        kafka_bootstrap=bootstrap, kafka_dev_broker=True,
                        kafka_topic_prefix=prefix, relay_batch_size=args.batch)
    relay = None
    try:
        started = time.perf_counter()
        events = copy_log(log_path(args.events), settings)
        figures["copy_to_postgres_s"] = round(time.perf_counter() - started, 1)
        ensure_topics(settings)
        relay = Relay(settings)
        figures["baseline_read"] = read_baseline(relay, args.batch)
        baseline_settings = settings.model_copy(update={"kafka_topic_prefix": prefix + "b"})
        ensure_topics(baseline_settings)
        figures["baseline_produce"] = produce_baseline(relay, baseline_settings, args.batch)
        published = batches = 0
        started = time.perf_counter()
        cpu = time.process_time()
        while (done := relay.publish_once()) > 0:
            published += done
            batches += 1
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        on_topics = count_events_topics(settings)
        records = figures["baseline_produce"]["records"]
        figures.update({
            "relay_events_per_s": round(published / seconds),
            "events": published, "records": records, "batches": batches,
            "batch_size": args.batch, "seconds": round(seconds, 3),
            "relay_cpu_s": round(cpu, 2),
            "relay_vs_produce_baseline": round(
                (records / seconds) / figures["baseline_produce"]["produce_records_per_s"], 3),
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "target_met": published / seconds >= TARGET_EVENTS_PER_S,
            "events_on_topics": on_topics,
            "load_avg_after": load_avg(),
        })
        ok = published == events == on_topics
    finally:
        if relay is not None:
            relay.close()
        stop_broker(port)
        drop_schema(url, schema)
    figures["check"] = "ok" if ok else "MISMATCH: events, published and on topics differ"
    print(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
