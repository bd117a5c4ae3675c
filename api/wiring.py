"""Composition: build the write model from settings (embedded or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import Application

from aggregates.application import TradingApplication
from aggregates.instruments import Universe, load_universe
from aggregates.risk import RiskLimits
from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from projections.projectors import RecorderLog
from projections.schema import upgrade
from projections.store import ReadStore


def load_instruments(settings: Settings) -> Universe:
    """The real TOPIX universe from the shared data when present, else the bundled one."""
    data_dir = settings.data_dir if settings.data_dir.exists() else None
    return load_universe(data_dir)


def trading_app(
    settings: Settings, *, universe: Universe | None = None, auto_process: bool = True
) -> TradingApplication:
    return TradingApplication(
        eventsourcing_env(settings),
        universe=universe or load_instruments(settings),
        engine=settings.matching_engine,
        limits=RiskLimits(settings.max_order_notional_yen, settings.fat_finger_pct),
        schedule=settings.commission_schedule,
        batch_size=settings.saga_batch_size,
        auto_process=auto_process,
        snapshot_interval=settings.snapshot_interval,
    )


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
