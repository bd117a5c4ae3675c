"""Projections split by aggregate (``TRADECORE_PROJECTION_SHARES``): the projections whose
rows each depend on one aggregate's events (balances, halts) project in shares, each
with its own tracking row and fence, so a worker per share scales one projection past a
core. Shares projected apart add up to exactly what one projector writes; a read model
projected under another layout is refused until it is rebuilt; a share is never rebuilt
without its siblings (they share tables)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from uuid import UUID

import pytest

from infra.eventstore import eventsourcing_env
from infra.settings import Settings
from projections.projectors import (
    LayoutChanged,
    Projector,
    RecorderLog,
    all_projections,
    select,
    share,
)
from projections.schema import upgrade
from projections.store import ReadStore
from streams.projection_worker import ProjectionWorker, projection_worker
from tests.processes import TRADECORE, env_for
from tests.projections.test_bulk_rebuild import everything, flow, trade_more
from tests.projections.test_projection_workers import replay, wait_for


def without_tracking(rows: dict[str, list[tuple[object, ...]]]) -> dict[str, object]:
    return {t: r for t, r in rows.items() if t != "projection_tracking"}


def test_only_projections_whose_rows_follow_one_aggregate_split() -> None:
    names = [p.name for p in all_projections(3)]
    assert names == ["orders", "positions", "balances#0of3", "balances#1of3",
                     "balances#2of3", "halts#0of3", "halts#1of3", "halts#2of3"]
    assert [p.name for p in select(all_projections(2), ["balances"])] == [
        "balances#0of2", "balances#1of2"]
    for whole in ("orders", "positions"):
        with pytest.raises(ValueError, match="cannot be split by aggregate"):
            share(select(all_projections(1), [whole])[0], 0, 2)


def test_shares_projected_by_workers_apart_equal_one_projector(tmp_path: Path) -> None:
    """A worker per share (threads here; `tradecore worker projections --projection
    balances#1of2` is the same runnable), following the log while it is written."""
    settings = Settings(persistence="sqlite", sqlite_path=tmp_path / "events.sqlite",
                        readmodel_sqlite_path=tmp_path / "readmodels.sqlite",
                        projection_shares=2)
    app = flow(eventsourcing_env(settings))
    log = RecorderLog(app.recorder, app.mapper)
    shared = ReadStore.from_settings(settings)
    upgrade(shared)
    workers = [ProjectionWorker(settings, names, batch_size=size, open_store=shared.reopen,
                                open_log=lambda: (RecorderLog(app.recorder, app.mapper),
                                                  lambda: None))
               for names, size in ((["orders", "positions"], 9),
                                   (["balances#0of2", "halts#0of2"], 5),
                                   (["balances#1of2", "halts#1of2"], 13))]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for thread in threads:
        thread.start()
    try:
        for round in range(3):
            trade_more(app, f"s{round}")
        head = log.head()
        wait_for(lambda: all(w.position == head for w in workers))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    got = everything(shared)
    assert without_tracking(got) == without_tracking(replay(settings, log, tmp_path))
    assert {name for name, _ in got["projection_tracking"]} == {
        "orders", "positions", "balances#0of2", "balances#1of2", "halts#0of2", "halts#1of2"}
    # both shares did work: the accounts fall on both sides of the split
    accounts = {UUID(str(a)).int % 2 for (a,) in shared.fetchall(
        "SELECT account_id FROM balances")}
    assert accounts == {0, 1}
    shared.close()


def test_a_change_of_shares_is_refused_until_a_rebuild(tmp_path: Path) -> None:
    settings = Settings(persistence="sqlite", sqlite_path=tmp_path / "events.sqlite",
                        readmodel_sqlite_path=tmp_path / "readmodels.sqlite")
    app = flow(eventsourcing_env(settings))
    log = RecorderLog(app.recorder, app.mapper)
    store = ReadStore.from_settings(settings)
    upgrade(store)
    Projector(store, log, projections=all_projections(1)).catch_up()
    reference = without_tracking(everything(store))

    two = env_for(tmp_path, TRADECORE_PROJECTION_SHARES="2")
    refused = subprocess.run([*TRADECORE, "worker", "projections"], capture_output=True,
                             text=True, env=two, timeout=120, check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("refused: TRADECORE_PROJECTION_SHARES: the read models "
                                     "hold balances, halts"), refused.stderr
    assert "tradecore projections rebuild" in refused.stderr
    with pytest.raises(LayoutChanged):  # and a projector in-process refuses the same
        Projector(store, log, projections=all_projections(2)).catch_up()
    assert without_tracking(everything(store)) == reference  # nothing was written

    alone = subprocess.run([*TRADECORE, "projections", "rebuild", "--projection",
                            "balances#0of2"], capture_output=True, text=True, env=two,
                           timeout=300, check=False)
    assert alone.returncode == 2 and "name balances to rebuild all its shares" in alone.stdout
    rebuilt = subprocess.run([*TRADECORE, "projections", "rebuild"], capture_output=True,
                             text=True, env=two, timeout=300, check=False)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert without_tracking(everything(store)) == reference
    assert sorted(n for n, _ in everything(store)["projection_tracking"]) == [
        "balances#0of2", "balances#1of2", "halts#0of2", "halts#1of2", "orders",
        "positions"]
    projection_worker(settings.model_copy(update={"projection_shares": 2}), [])  # accepted
    store.close()


@pytest.mark.postgres
def test_the_bulk_rebuild_in_processes_splits_as_the_settings_say(tmp_path: Path) -> None:
    """On PostgreSQL the rebuild runs in processes (orders | the rest): a projection's
    shares stay in one process, and the result equals the row-by-row replay."""
    from tests.projections.test_projection_workers import Deployment

    deployment = Deployment("postgres", tmp_path)
    try:
        app = flow(deployment.app_env)
        log = RecorderLog(app.recorder, app.mapper)
        deployment.env["TRADECORE_PROJECTION_SHARES"] = "3"
        rebuilt = deployment.cli("projections", "rebuild", "--processes", "2")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        got = everything(deployment.store)
        assert without_tracking(got) == without_tracking(
            replay(deployment.settings, log, tmp_path))
        assert sum(1 for n, _ in got["projection_tracking"] if "#" in n) == 6
    finally:
        deployment.close()
