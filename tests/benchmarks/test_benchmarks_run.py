"""The benchmarks run and print their JSON with the figures and checks they promise.

Smoke runs only (``--quick``): these tests never look at a timing, only that each
benchmark ran, printed one JSON object with its keys, and that its own result checks
(invariants, orders accepted == orders listed, orders in the store) held.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` with this checkout's code; its printed JSON."""
    done = subprocess.run(
        ["env", f"PYTHONPATH={ROOT}", sys.executable, str(ROOT / "benchmarks" / script),
         *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}" \
                                 f"\n{done.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def assert_machine_noted(out: dict[str, Any]) -> None:
    assert out["commit"]
    assert len(out["load_avg_start"]) == 3
    assert out["calibration"]["py_loop_ms"] > 0


def assert_write_path(out: dict[str, Any], backend: str) -> None:
    figures = out[backend]
    for key in ("orders_per_s", "p50_ms", "p99_ms", "cpu_ms_per_order"):
        assert figures[key] > 0, key
    assert figures["ok"] is True
    for mode in ("stepped", "threads"):
        run_ = figures["modes"][mode]
        assert run_["orders"] == 256 and run_["refused"] == 0
        check = run_["check"]
        assert check["unanswered"] == 0 and check["stage_errors"] == []
        assert check["invariants_failed"] == [] and check["ok"] is True
        assert run_["fills"] > 0
    baseline = out["baseline"][backend]
    for key in ("orders_per_s", "p50_ms", "p99_ms", "cpu_ms_per_order"):
        assert baseline[key] > 0, (key, out["baseline"])
    assert out["ratio"][backend] > 0
    assert out["ok"] is True


def test_write_path_sqlite() -> None:
    out = run("write_path.py", "--quick", "--only", "sqlite")
    assert_machine_noted(out)
    assert_write_path(out, "sqlite")


@pytest.mark.postgres
def test_write_path_postgres() -> None:
    out = run("write_path.py", "--quick", "--only", "postgres")
    assert_write_path(out, "postgres")


def test_write_path_profile_names_where_time_goes() -> None:
    out = run("write_path.py", "--quick", "--only", "sqlite", "--modes", "stepped",
              "--no-baseline", "--profile")
    profile = out["profile"]["sqlite"]
    assert len(profile["top_own_time"]) == 10
    assert 0.99 <= sum(profile["by_area"].values()) <= 1.01
    assert any(f["function"].startswith(("aggregates/", "streams/"))
               for f in profile["project_inclusive"])


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed "
                    "(apt-get install -y wrk; make bench installs it)")
def test_api_load() -> None:
    out = run("api_load.py", "--quick")
    assert_machine_noted(out)
    server = out["workers_1"]
    assert "error" not in server, server.get("error")
    assert server["order_steps"] and all(s["errors"] == 0 for s in server["order_steps"])
    assert "orders_per_s_at_p95_100ms" in server and "orders_per_s_at_p95_50ms" in server
    assert len(server["runs"]) == 1
    assert len(server["fill_p95_ms"]) == len(server["positions_p95_ms"]) == 1
    assert server["runs"][0]["taker_filled"] > 0  # fills arrived on the stream
    assert server["stream"]["connections_delivering"] == 1
    check = server["check"]
    assert check["ok"] and check["accepted_not_listed"] == 0
    assert check["listed_not_answered"] <= check["in_flight_when_wrk_stopped"]
    assert out["summary"]["workers_1"]["met"].keys() == {
        "orders_per_s_at_p95_100ms", "fill_p95_ms", "positions_p95_ms_every_run"}


def test_restart(tmp_path: Path) -> None:
    out = run("restart.py", "--quick", "--cache-dir", str(tmp_path))
    assert_machine_noted(out)
    assert out["check"] == {"orders_in_store": 1000, "orders_expected": 1000, "ok": True}
    for key in ("startup_s_empty", "startup_s_loaded", "ratio_loaded_vs_empty",
                "cli_account_show_s_empty", "cli_account_show_s_loaded"):
        assert out[key] > 0, key
    assert "startup_s_100k_orders" in out
    for store in ("empty", "loaded"):
        assert out[store]["errors"] == []
        assert set(out[store]["inprocess"]["stage_open_s"]) == {"saga", "matching",
                                                                "projections"}
        assert all(v == 0 for v in out[store]["inprocess"]["behind_after_open"].values())


def test_intraday() -> None:
    from tests.conftest import require_data

    require_data("lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip")
    out = run("intraday.py", "--quick")
    assert_machine_noted(out)
    assert out["ok"] is True and out["messages"] == 147_915
    for agent in ("twap", "maker", "maker_fast"):
        assert out[agent]["msgs_per_s"] > 0 and out[agent]["ratio_to_plain"] > 0
        assert out[agent]["fills"] > 0 and out["reference"][agent]["fills_equal"] is True


def test_backtest_benchmark_runs_the_live_path_and_prints_its_figures() -> None:
    from tests.conftest import require_data

    require_data("jquants/daily_quotes.csv.gz")
    out = run("backtest.py", "--quick")
    assert_machine_noted(out)
    assert out["days_per_s"] > 0 and out["orders_per_s"] > 0
    assert out["eight_year_seconds"] is None and out["eight_year_seconds_estimate"] > 0
    run_ = out["run"]
    assert run_["sessions"] == 40 and run_["orders"]["placed"] > 0 and run_["ok"] is True
    assert out["verify_events_per_s"] > 0 and out["as_of_ms"] > 0  # the audit figures too


def test_audit_figures() -> None:
    out = run("audit_figures.py", "--quick")
    assert_machine_noted(out)
    assert out["verify_events_per_s"] > 0 and out["as_of_ms"] > 0
    assert out["verify"]["events"] == 5_000 + 1  # every account's events (and the market)
    assert out["as_of"]["from_snapshot"] is not None  # the as-of started from a snapshot
    assert out["as_of"]["tail"] < out["as_of"]["account_events"]
    assert set(out["targets_met"]) == {"verify_events_per_s", "as_of_ms"}


@pytest.mark.postgres
def test_projection_benchmark_projects_the_generated_log() -> None:
    out = run("projections.py", "--quick", "--no-profile")
    assert out["failures"] == []
    assert out["log"]["orders_placed"] > 0 and out["events"] >= 30_000
    assert out["events_per_s"] > 0 and out["sqlite_events_per_s"] > 0
    assert out["timescaledb_full"]["complete"] is True
    assert out["expected_rows"]["fills"] > 0


@pytest.mark.postgres
def test_projection_figures_check_the_bulk_rebuild_against_row_by_row() -> None:
    out = run("projection_figures.py", "--quick")
    assert out["failures"] == [] and out["rebuild_equals_row_by_row"] is True
    for key in ("rebuild_events_per_s", "row_by_row_events_per_s",
                "projection_events_per_s", "projection_events_per_s_one_worker"):
        assert out[key] > 0, key
    assert out["workers"]["complete"] is True and out["one_worker"]["complete"] is True
    assert out["rebuild"]["reached"] == out["events"]
