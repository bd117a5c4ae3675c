"""The matching engine is a setting; concurrent writers are retried, never lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aggregates.application import TradingApplication
from tests.aggregates.helpers import funded, meta
from tests.aggregates.test_crash_restart import open_app, state, steps


def test_reference_and_kernel_engines_give_the_same_state(universe: Any, tmp_path: Path) -> None:
    results = []
    for engine in ("reference", "kernel"):
        app = open_app({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                        "SQLITE_DBNAME": str(tmp_path / f"{engine}.sqlite")}, universe, engine)
        for step in steps(app):
            step()
        results.append(state(app))
        app.close()
    assert results[0] == results[1]


def test_a_stale_writer_is_retried_not_lost(store_env: dict[str, str], universe: Any) -> None:
    first = TradingApplication(store_env, universe=universe)
    account = funded(first, "shared", cash=1_000)
    second = TradingApplication(store_env, universe=universe)  # another process
    second.deposit(account, 10, meta())
    first.deposit(account, 100, meta())  # first's cached account is one version behind
    third = TradingApplication(store_env, universe=universe)
    assert third.get_account(account).cash == 1_110
    for app in (first, second, third):
        app.close()
