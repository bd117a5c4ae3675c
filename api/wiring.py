"""Composition: build the write model from settings (embedded or PostgreSQL)."""

from __future__ import annotations

from aggregates.application import TradingApplication
from aggregates.instruments import Universe, load_universe
from aggregates.risk import RiskLimits
from infra.eventstore import eventsourcing_env
from infra.settings import Settings


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
