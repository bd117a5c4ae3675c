"""Composition: build the write model from settings (embedded or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from uuid import UUID

from eventsourcing.application import Application

from aggregates.application import TradingApplication
from aggregates.instruments import Universe, bundled_universe
from aggregates.risk import RiskLimits
from infra.eventstore import eventsourcing_env
from infra.locks import stage_fence
from infra.settings import Settings
from projections.projectors import Projector, RecorderLog
from projections.schema import upgrade
from projections.store import ReadStore
from streams.embedded import Stages
from streams.matching import MatchingStage, make_engine, venue_snapshots


def universe_from_files(data_dir: Path | None, as_of: date | None = None) -> Universe:
    """The universe from J-Quants files in ``data_dir/jquants`` (listed info, and the last
    raw close on or before ``as_of`` as each base price; default: the file's last date),
    or the bundled 14 stocks when ``data_dir`` is None or lacks those files, so the
    embedded deployment starts with nothing installed.

    The data layer reads the files into plain records; the domain builds the universe
    from them (polars is imported only when there are files to read).
    """
    if data_dir is not None:
        jquants = Path(data_dir) / "jquants"
        if jquants.is_dir():
            from inference.data.listings import has_listings, read_listings

            if has_listings(jquants):
                suffix = f" as of {as_of.isoformat()}" if as_of else ""
                return Universe.from_listings(
                    read_listings(jquants, as_of), source=f"{jquants}{suffix}"
                )
    return bundled_universe()


def load_instruments(settings: Settings) -> Universe:
    """The real TOPIX universe from the shared data when present, else the bundled one."""
    return universe_from_files(settings.data_dir if settings.data_dir.exists() else None)


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
    return MatchingStage(make_engine(settings.matching_engine), app.universe.get,
                         venue_snapshots(settings),
                         snapshot_every=settings.venue_snapshot_every, clock=app.clock.now)


def trading_stages(settings: Settings, *, universe: Universe | None = None,
                   projector: bool = False, app: TradingApplication | None = None
                   ) -> tuple[Stages, ReadStore | None]:
    """The write model with every stage of the order flow (and, with ``projector``,
    the read models it projects into, returned too)."""
    app = app or trading_app(settings, universe=universe)
    store = read_store(settings) if projector else None
    stages = Stages(
        app, matching_stage(settings, app),
        projector=Projector(store, RecorderLog(app.recorder, app.mapper),
                            batch_size=settings.projection_batch_size) if store else None,
        fence_for=lambda key: stage_fence(settings, key),
        saga_batch_size=settings.saga_batch_size,
        projection_batch_size=settings.projection_batch_size)
    return stages, store


def stepped_app(settings: Settings, *, universe: Universe | None = None) -> TradingApplication:
    """The write model for a command-line process: after each command it runs the
    stages in its own thread until they are idle, unless a server is running them (they
    are fenced), so `tradecore order place` without a server still trades."""
    stages, _ = trading_stages(settings, universe=universe)
    stages.app.after_command = stages.settle
    return stages.app


class _EventStore(Application[UUID]):
    """The trading application's stored events, opened read-only for projections."""

    name = TradingApplication.name


def event_log(settings: Settings) -> tuple[RecorderLog, Callable[[], None]]:
    """The notification log the projectors follow, and how to close it."""
    store = _EventStore(eventsourcing_env(settings))
    return RecorderLog(store.recorder, store.mapper), store.close


def read_store(settings: Settings) -> ReadStore:
    """The read-model database, migrated to the current schema."""
    store = ReadStore.from_settings(settings)
    upgrade(store)
    return store
