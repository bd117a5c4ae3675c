"""Composition: build the write model from settings (embedded or PostgreSQL).

The stages (``streams``: the matching engine's Numba kernels among them) and the read
models (``projections``) are imported by the functions that build them, so a command
that only reads the write model (``tradecore account show``) starts without them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregates.application import TradingApplication
from aggregates.instruments import Universe, bundled_universe
from aggregates.risk import RiskLimits
from infra.eventstore import eventsourcing_env
from infra.locks import Fence, stage_fence
from infra.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from projections.projectors import RecorderLog
    from projections.store import ReadStore
    from streams.embedded import Stages
    from streams.matching import MatchingStage


def universe_from_files(data_dir: Path | None, as_of: date | None = None, *,
                        cache_dir: Path | None = None) -> Universe:
    """The universe from J-Quants files in ``data_dir/jquants`` (listed info, and the last
    raw close on or before ``as_of`` as each base price; default: the file's last date),
    or the bundled 14 stocks when ``data_dir`` is None or lacks those files, so the
    embedded deployment starts with nothing installed.

    The data layer reads the files into plain records; the domain builds the universe
    from them (polars is imported only when there are files to read). Reading 900,000
    quotes takes about half a second, every CLI call and server start paid it, so with
    ``cache_dir`` the records are kept there as JSON, keyed by the folder's files (name,
    size, mtime) and ``as_of``: any change to the data reads it again.
    """
    if data_dir is not None:
        jquants = Path(data_dir) / "jquants"
        if jquants.is_dir():
            suffix = f" as of {as_of.isoformat()}" if as_of else ""
            source = f"{jquants}{suffix}"
            cache = _listings_cache(cache_dir, jquants, as_of)
            cached = _read_cached(cache)
            if cached is not None:
                return Universe.from_listings(cached, source=source)
            from inference.data.listings import has_listings, read_listings

            if has_listings(jquants):
                listings = read_listings(jquants, as_of)
                _write_cached(cache, listings)
                return Universe.from_listings(listings, source=source)
    return bundled_universe()


@dataclass(frozen=True, slots=True)
class _CachedListing:
    """A listing as the cache keeps it (what ``Universe.from_listings`` reads)."""

    code: str
    name: str
    sector33: str
    scale_category: str
    last_close: Decimal


_CACHE_VERSION = 1
_CACHE_KEEP = 16  # newest cache files kept (other data folders, other as_of dates)


def _listings_cache(cache_dir: Path | None, jquants: Path, as_of: date | None) -> Path | None:
    if cache_dir is None:
        return None
    try:
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                       for p in jquants.iterdir() if p.is_file())
    except OSError:
        return None
    if not files:
        return None
    key = json.dumps([_CACHE_VERSION, str(jquants.resolve()),
                      as_of.isoformat() if as_of else None, files])
    return Path(cache_dir) / f"universe-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _read_cached(cache: Path | None) -> list[_CachedListing] | None:
    if cache is None:
        return None
    try:
        rows = json.loads(cache.read_text(encoding="utf-8"))
        return [_CachedListing(r["code"], r["name"], r["sector33"], r["scale_category"],
                               Decimal(r["last_close"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError):
        return None  # absent or unreadable: read the files again


def _write_cached(cache: Path | None, listings: Iterable[Any]) -> None:
    """Keep the records for the next process (best effort: a read-only disk only costs
    the next process the read)."""
    if cache is None:
        return
    rows = [{"code": x.code, "name": x.name, "sector33": x.sector33,
             "scale_category": x.scale_category, "last_close": str(x.last_close)}
            for x in listings]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".universe-", dir=cache.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(rows, out)
        os.replace(tmp, cache)
        older = sorted(cache.parent.glob("universe-*.json"), key=lambda p: p.stat().st_mtime)
        for stale in older[:-_CACHE_KEEP]:
            stale.unlink(missing_ok=True)
    except OSError:
        log.debug("universe cache not written to %s", cache, exc_info=True)


def load_instruments(settings: Settings) -> Universe:
    """The real TOPIX universe from the shared data when present, else the bundled one."""
    return universe_from_files(settings.data_dir if settings.data_dir.exists() else None,
                               cache_dir=settings.cache_dir)


def trading_app(settings: Settings, *, universe: Universe | None = None) -> TradingApplication:
    """The command side over the configured event store.

    Opening it creates the store's tables when they are missing; processes starting
    together (``serve --workers N``, workers) take turns, since the library's table
    creation (and its tracking-table migration) is not safe to run concurrently."""
    universe = universe or load_instruments(settings)
    schema_fence = stage_fence(settings, "schema")
    schema_fence.acquire(blocking=True, timeout=120)
    try:
        return TradingApplication(
            eventsourcing_env(settings),
            universe=universe,
            limits=RiskLimits(settings.max_order_notional_yen, settings.fat_finger_pct),
            schedule=settings.commission_schedule,
            snapshot_interval=settings.snapshot_interval,
            session_rules=settings.session_rules,
        )
    finally:
        schema_fence.release()


def matching_stage(settings: Settings, app: TradingApplication) -> MatchingStage:
    """The venue over ``app``'s store, its books snapshotted beside the events."""
    from streams.matching import MatchingStage, make_engine, venue_snapshots

    return MatchingStage(make_engine(settings.matching_engine), app.universe.get,
                         venue_snapshots(settings),
                         snapshot_every=settings.venue_snapshot_every, clock=app.clock.now)


def trading_stages(settings: Settings, *, universe: Universe | None = None,
                   projector: bool = False, app: TradingApplication | None = None
                   ) -> tuple[Stages, ReadStore | None]:
    """The write model with every stage of the order flow (and, with ``projector``,
    the read models it projects into, returned too)."""
    from projections.projectors import Projector, RecorderLog, all_projections
    from streams.embedded import Stages
    from streams.processor import tracking_key
    from streams.projection_worker import projection_fence

    app = app or trading_app(settings, universe=universe)
    store = read_store(settings) if projector else None

    def fence_for(key: str) -> Fence:
        # the in-process projector runs every projection: it takes each one's fence, as
        # a `tradecore worker projections` would, so the two never run one projection
        if key == tracking_key(Projector.name):
            return projection_fence(settings)
        return stage_fence(settings, key)

    stages = Stages(
        app, matching_stage(settings, app),
        projector=Projector(store, RecorderLog(app.recorder, app.mapper),
                            projections=all_projections(settings.projection_shares),
                            batch_size=settings.projection_batch_size) if store else None,
        fence_for=fence_for,
        saga_batch_size=settings.saga_batch_size,
        projection_batch_size=settings.projection_batch_size)
    return stages, store


def stepped_app(settings: Settings, *, universe: Universe | None = None) -> TradingApplication:
    """The write model for a command-line process: after each command it runs the
    stages in its own thread until they are idle, unless a server is running them (they
    are fenced), so `tradecore order place` without a server still trades.

    With ``TRADECORE_BUS=kafka`` the stages are the Kafka workers' (fenced per
    partition, under other keys): a command only stores its events."""
    if settings.bus == "kafka":
        return trading_app(settings, universe=universe)
    stages, _ = trading_stages(settings, universe=universe)
    stages.app.after_command = stages.settle
    return stages.app


def event_log(settings: Settings) -> tuple[RecorderLog, Callable[[], None]]:
    """The notification log the projectors follow, and how to close it."""
    from streams.projection_worker import open_event_log

    return open_event_log(settings)


def read_store(settings: Settings) -> ReadStore:
    """The read-model database, migrated to the current schema."""
    from projections.schema import upgrade
    from projections.store import ReadStore

    store = ReadStore.from_settings(settings)
    upgrade(store)
    return store
