"""Fences: at most one holder per name across processes, for stages that must be single.

A saga or a matching stage that ran twice on the same input would apply it twice, so
each takes a fence before it starts and holds it while it runs; a second one waits.
Any number of command writers need no fence (optimistic concurrency decides them).

- SQLite (embedded): an exclusive ``flock`` on a file beside the database. The kernel
  drops it when the holder dies, kill -9 included.
- PostgreSQL: a session-level advisory lock on a connection held open; the server drops
  it when that connection dies.
- ``:memory:`` stores live in one process: a process-wide lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from pathlib import Path
from typing import Any, ClassVar, Protocol

from infra.settings import Settings


class Fence(Protocol):
    name: str

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    @property
    def held(self) -> bool: ...


def wait_for(fence: Fence, stop: threading.Event, poll_s: float = 1.0) -> bool:
    """Take ``fence``, waiting for it (a hot standby) until it is free or ``stop`` is set;
    whether it is held."""
    while not stop.is_set():
        if fence.acquire(blocking=True, timeout=poll_s):
            return True
    return False


class FileFence:
    """An exclusive flock on ``path``; non-reentrant, one holder per path per host."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = None
        self._mutex = threading.Lock()  # flock is per open file: guard threads here too

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        import time

        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            if self._try():
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(0.05)

    def _try(self) -> bool:
        with self._mutex:
            if self._fd is not None:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return True

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None


class LocalFence:
    """For stores that live in one process (``:memory:``)."""

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        with self._guard:
            self._lock = self._locks.setdefault(name, threading.Lock())
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout if blocking else -1)
        self._held = self._held or got
        return got

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()


class AdvisoryFence:
    """A PostgreSQL session advisory lock keyed by (schema, name)."""

    def __init__(self, url: str, key: str, name: str) -> None:
        self.url = url
        self.name = name
        self.key = zlib.crc32(key.encode()) - (1 << 31)  # a signed 32-bit key
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        import time

        import psycopg

        deadline = None if timeout < 0 else time.monotonic() + timeout
        conn = psycopg.connect(self.url, autocommit=True)
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if row and row[0]:
                self._conn = conn
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                conn.close()
                return False
            time.sleep(0.05)

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            finally:
                self._conn.close()
                self._conn = None


def stage_fence(settings: Settings, name: str) -> Fence:
    """The fence for a stage (``name`` such as ``saga@trading:0``) of this deployment."""
    if settings.persistence == "postgres":
        from infra.eventstore import postgres_url

        url = postgres_url(settings)
        return AdvisoryFence(url, f"{settings.postgres_db}/{settings.postgres_schema}/{name}",
                             name)
    path = str(settings.sqlite_path)
    if path == ":memory:":
        return LocalFence(name)
    safe = name.replace("@", "-").replace(":", "-").replace("/", "-")
    return FileFence(Path(f"{path}.{safe}.lock"), name)
