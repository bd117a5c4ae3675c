"""Composition: build the write model from settings (embedded or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import Application

from aggregates.application import TradingApplication
from aggregates.instruments import Universe, load_universe
from aggregates.risk import RiskLimits
from infra.eventstore import eventsourcing_env
from infra.locks import stage_fence
from infra.settings import Settings
from projections.projectors import Projector, RecorderLog
from projections.schema import upgrade
from projections.store import ReadStore
from streams.embedded import Stages
from streams.matching import MatchingStage, make_engine, venue_snapshots


def load_instruments(settings: Settings) -> Universe:
    """The real TOPIX universe from the shared data when present, else the bundled one."""
    data_dir = settings.data_dir if settings.data_dir.exists() else None
    return load_universe(data_dir)


def trading_app(settings: Settings, *, universe: Universe | None = None) -> TradingApplication:
    """The command side over the configured event store."""
    return TradingApplication(
        eventsourcing_env(settings),
        universe=universe or load_instruments(settings),
        limits=RiskLimits(settings.max_order_notional_yen, settings.fat_finger_pct),
        schedule=settings.commission_schedule,
        snapshot_interval=settings.snapshot_interval,
    )


def matching_stage(settings: Settings, app: TradingApplication) -> MatchingStage:
    """The venue over ``app``'s store, its books snapshotted beside the events."""
    return MatchingStage(make_engine(settings.matching_engine), app.universe.get,
                         venue_snapshots(settings),
                         snapshot_every=settings.venue_snapshot_every)


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
