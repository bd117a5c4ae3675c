"""The bus seam: where a stage reads its input from.

A :class:`Source` is one ordered, numbered stream of domain events: the event store's
notification log (in-process, embedded deployment) or one partition of a Kafka
topic. Positions are notification ids (on Kafka, each record's header); a stage tracks
the last one it processed under ``f"{stage}@{source.name}:{source.partition}"``.

:class:`Signal` is how the in-process bus wakes a stage: whoever stores events in this
process raises it. Writers in other processes (the CLI, other API workers) are found by
polling the store's head, so a stage never waits for a command to come its way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol


class Source(Protocol):
    name: str
    partition: int

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        """Up to ``limit`` (position, event) pairs after ``after``, in order."""

    def pending(self, after: int, cap: int) -> int:
        """How many events wait after ``after`` (counted up to ``cap``)."""

    def head(self) -> int:
        """The newest position of the underlying stream (filtered or not)."""

    def wait(self, timeout: float) -> None:
        """Return when new input may be there, or after ``timeout`` seconds."""


class Signal:
    """A wake-up for the stages of one process: raised by every local write."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def raise_(self, _position: int = 0) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def generation(self) -> int:
        return self._generation

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until raised after generation ``seen`` (or ``timeout``); the new one."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)
            return self._generation


class EventLogSource:
    """The event store's notification log, optionally only some event topics.

    ``recorder`` and ``mapper`` are an eventsourcing application's; the topic filter
    runs in the database (``select_notifications(topics=...)``).
    """

    def __init__(self, recorder: Any, mapper: Any, *, topics: Sequence[str] = (),
                 name: str = "trading", partition: int = 0, signal: Signal | None = None,
                 poll_s: float = 0.1) -> None:
        self.recorder = recorder
        self.mapper = mapper
        self.topics = list(topics)
        self.name = name
        self.partition = partition
        self.signal = signal
        self.poll_s = poll_s
        self._seen = signal.generation() if signal else 0
        # (lo, hi]: a stretch of the log known to hold none of this source's topics.
        # The log is gapless and in commit order, so a stage that is past lo need not
        # scan it again (with a filter, the other stages' events after its own tracked
        # position were read again on every poll).
        self._quiet = (0, 0)

    def _start(self, after: int) -> int:
        lo, hi = self._quiet
        return (max(after, hi) if lo <= after else after) + 1

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        if self.signal is not None:
            self._seen = self.signal.generation()
        start = self._start(after)
        head = self.head()
        if start > head:
            return []
        notifications = self.recorder.select_notifications(
            start=start, limit=limit, stop=head, topics=self.topics)
        if not notifications:
            self._quiet = (after, head)
        elif len(notifications) < limit:  # nothing else up to the head asked about
            self._quiet = (notifications[-1].id, head)
        to_event = self.mapper.to_domain_event
        return [(n.id, to_event(n)) for n in notifications]

    def pending(self, after: int, cap: int) -> int:
        if not self.topics:  # the whole log: no need to read it
            return min(max(self.head() - after, 0), cap)
        return len(self.recorder.select_notifications(
            start=self._start(after), limit=cap, topics=self.topics))

    def head(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    def wait(self, timeout: float) -> None:
        timeout = min(timeout, self.poll_s)
        if self.signal is None:
            threading.Event().wait(timeout)
        else:
            self._seen = self.signal.wait(self._seen, timeout)
