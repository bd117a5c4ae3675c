"""``tradecore projections rebuild`` fanned out: groups of projections rebuilt by
processes of their own, at once.

The bulk rebuild (:func:`projections.rebuild.rebuild`) is one Python process's work:
reading and decoding the log, the handlers and the ``COPY`` all share one core. The
projections are independent of each other (each has its own tables and its own tracking
row, and reads only the events it handles), so on PostgreSQL they are rebuilt by several
processes at once, each in ONE transaction of its own over its own tables and tracking
rows. A crash leaves every projection either rebuilt or as it was (with the tracking
that matches its rows); a projection never holds half a rebuild.

SQLite has one writer at a time: there the rebuild is one process (the same bulk path).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from infra.settings import Settings
from projections.projectors import all_projections, select
from projections.rebuild import rebuild
from projections.store import ReadStore
from streams.projection_worker import open_event_log

# How the four projections share processes: `orders` reads the Order events (about
# 40 % of an order flow's log, the most rows per event); positions and balances both
# read the settlements, so they share a process while there are fewer than three.
_SHARES = (("orders",), ("positions",), ("balances", "halts"))


def groups_for(names: Sequence[str], processes: int) -> list[list[str]]:
    """``names`` split into at most ``processes`` groups (orders alone first)."""
    shares = [[n for n in share if n in names] for share in _SHARES]
    shares = [share for share in shares if share]
    while len(shares) > max(processes, 1):
        last = shares.pop()
        shares[-1] += last
    return [sorted(share) for share in shares]


def _rebuild_part(log_settings: Settings, location: str, schema: str,
                  names: list[str]) -> int:
    """One group, in a process of its own (its own connections, its own transaction)."""
    store = ReadStore.postgres(location, schema)
    log, close = open_event_log(log_settings)
    try:
        return rebuild(store, log, select(all_projections(log_settings.projection_shares),
                                          names))
    finally:
        close()
        store.close()


def rebuild_in_processes(log_settings: Settings, store: ReadStore,
                         names: Sequence[str] = (), *, processes: int = 2) -> int:
    """Rebuild the named projections (all when none) from the event store of
    ``log_settings`` into ``store``, in up to ``processes`` processes (this one
    included); the position reached. Raises what a process raised, after the others
    finished (their projections are rebuilt, the failed one's are as they were)."""
    made = all_projections(log_settings.projection_shares)
    # by projection, each with all its shares (they share tables: rebuilt together)
    chosen = list(dict.fromkeys(p.family for p in select(made, names)))
    groups = groups_for(chosen, processes) if store.dialect == "postgres" else [chosen]
    if len(groups) == 1:
        log, close = open_event_log(log_settings)
        try:
            return rebuild(store, log, select(made, groups[0]))
        finally:
            close()
    assert store.schema is not None
    spawn = multiprocessing.get_context("spawn")  # nothing of this process is inherited
    with ProcessPoolExecutor(len(groups) - 1, mp_context=spawn) as pool:
        others = [pool.submit(_rebuild_part, log_settings, store.location, store.schema,
                              group) for group in groups[1:]]
        log, close = open_event_log(log_settings)
        try:
            reached = rebuild(store, log, select(made, groups[0]))
        finally:
            close()
        return min([reached, *(other.result() for other in others)])
