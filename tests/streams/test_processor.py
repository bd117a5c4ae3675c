"""The tracked processor: resumes from its tracking record, stores nothing for a failed
batch, decides a conflicting batch again, survives failures in its thread, and holds
its fence so a second one waits."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from infra.locks import FileFence
from streams.processor import TrackedProcessor


class Log:
    """A source over a list: positions 1..n."""

    name = "log"
    partition = 0

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        return [(i + 1, e) for i, e in enumerate(self.events)][after:after + limit]

    def pending(self, after: int, cap: int) -> int:
        return min(max(len(self.events) - after, 0), cap)

    def head(self) -> int:
        return len(self.events)

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.01))


class Sink:
    """A step whose 'store' is a list and a tracking dict, changed together or not."""

    name = "sink"

    def __init__(self, fail: dict[int, BaseException] | None = None) -> None:
        self.stored: list[Any] = []
        self.tracked: dict[str, int] = {}
        self.fail = fail or {}  # batch number -> what to raise (once)
        self.batches = 0
        self.starts = 0

    def position(self, key: str, fresh: bool = False) -> int:
        return self.tracked.get(key, 0)

    def start(self, key: str, source: Any) -> None:
        self.starts += 1

    def process(self, key: str, batch: list[tuple[int, Any]]) -> None:
        self.batches += 1
        error = self.fail.pop(self.batches, None)
        if error is not None:
            raise error  # before anything is stored, as one transaction would
        self.stored.extend(event for _, event in batch)
        self.tracked[key] = batch[-1][0]


def test_it_resumes_from_its_tracking_record() -> None:
    sink, log = Sink(), Log(list("abcdefg"))
    first = TrackedProcessor(sink, log, batch_size=3)
    first.open()
    assert first.run_once() == 3 and sink.stored == list("abc")
    again = TrackedProcessor(sink, log, batch_size=3)  # a restart on the same store
    again.open()
    assert again.catch_up() == 4 and sink.stored == list("abcdefg")
    assert again.lag().behind == 0 and again.lag().position == 7


def test_a_conflicting_batch_is_decided_again_and_stored_once() -> None:
    sink = Sink({1: IntegrityError("moved"), 2: IntegrityError("moved")})
    processor = TrackedProcessor(sink, Log(list("abc")))
    processor.open()
    assert processor.catch_up() == 3
    assert sink.stored == list("abc") and processor.conflicts == 2
    assert sink.starts == 3  # memory rebuilt after each conflict


def test_a_failed_batch_stores_nothing_and_the_next_try_rebuilds_first() -> None:
    sink = Sink({1: RuntimeError("store down")})
    processor = TrackedProcessor(sink, Log(list("ab")))
    processor.open()
    with pytest.raises(RuntimeError, match="store down"):
        processor.catch_up()
    assert sink.stored == [] and not processor.started
    assert processor.catch_up() == 2 and sink.stored == ["a", "b"] and sink.starts == 2


def test_in_its_thread_a_failure_is_reported_then_recovered() -> None:
    sink = Sink({1: RuntimeError("store down")})
    processor = TrackedProcessor(sink, Log(list("abcd")), batch_size=2)
    stop = threading.Event()
    thread = threading.Thread(target=processor.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        seen_failure = False
        while time.monotonic() < deadline and sink.stored != list("abcd"):
            seen_failure = seen_failure or processor.lag().state == "failed"
            time.sleep(0.005)
        assert sink.stored == list("abcd") and seen_failure
        assert processor.lag().state == "running" and processor.error is None
    finally:
        stop.set()
        thread.join(5)


def test_a_second_processor_waits_for_the_fence(tmp_path: Path) -> None:
    log = Log(list("abc"))
    first = TrackedProcessor(Sink(), log, fence=FileFence(tmp_path / "f.lock", "sink"))
    second = TrackedProcessor(Sink(), log, fence=FileFence(tmp_path / "f.lock", "sink"))
    assert first.open(blocking=False)
    assert not second.open(blocking=False)
    assert second.lag().state == "waiting" and not second.lag().running
    first.close()
    assert second.open(blocking=False) and second.lag().state == "running"
    second.close()


class Recorder:
    """A notification log: ids 1..n, each with a topic; counts the rows it scans."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.scanned = 0

    def max_notification_id(self) -> int:
        return len(self.rows)

    def select_notifications(self, start: int, limit: int, stop: int | None = None,
                             topics: Any = ()) -> list[Any]:
        from types import SimpleNamespace

        out = []
        for id in range(start, (stop or len(self.rows)) + 1):
            self.scanned += 1
            if not topics or self.rows[id - 1] in topics:
                out.append(SimpleNamespace(id=id, topic=self.rows[id - 1]))
                if len(out) == limit:
                    break
        return out


class Mapper:
    def to_domain_event(self, n: Any) -> Any:
        return n.topic


def test_a_filtered_source_does_not_rescan_what_held_nothing_for_it() -> None:
    from streams.bus import EventLogSource

    recorder = Recorder()
    source = EventLogSource(recorder, Mapper(), topics=["mine"])
    recorder.rows += ["mine", "other", "other"]
    assert source.read(0, 10) == [(1, "mine")]
    recorder.rows += ["other"] * 50
    assert source.read(1, 10) == []
    scanned = recorder.scanned
    assert source.read(1, 10) == [] and recorder.scanned == scanned  # nothing new: no scan
    recorder.rows += ["mine"]
    assert source.read(1, 10) == [(54, "mine")]
    assert recorder.scanned - scanned == 1  # only the new row
    assert source.read(0, 10) == [(1, "mine"), (54, "mine")]  # a restart further back
    assert source.pending(1, 100) == 1 and source.pending(54, 100) == 0
