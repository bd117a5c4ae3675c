"""``tradecore backtest``: a strategy over real daily bars through the live order flow.

The runs use a small J-Quants folder cut from the shared data (12 liquid stocks, 2015),
written in the J-Quants file schemas, so each run takes seconds; the shared data is
never copied into the repository (the folder lives in pytest's temporary directory).
"""

from __future__ import annotations

import gc
import json
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from projections.store import ReadStore
from streams.backtest import BacktestError, BacktestSpec, run_backtest
from streams.backtest.data import BacktestDataError
from streams.strategies.base import MarketHistory, OrderIntent, Portfolio
from streams.strategies.momentum import Momentum
from tests.conftest import require_data
from tests.projections.test_read_models import assert_pnl_rows_follow_the_position_history

CODES = ("72030", "67580", "83060", "99840", "94320", "80350", "45020", "69540",
         "79740", "80580", "63670", "40630")
GAP_CODE = "99840"
GAP_DAYS = (date(2015, 11, 9), date(2015, 11, 10), date(2015, 11, 11))


def _write(folder: Path, quotes: pl.DataFrame, listed: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    quotes.with_columns(pl.col("Date").cast(pl.Utf8)).write_csv(folder / "daily_quotes.csv")
    (folder / "listed_info.json").write_text(json.dumps({"info": listed}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def shared() -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    from inference.data import load_daily_quotes

    quotes_file = require_data("jquants/daily_quotes.csv.gz")
    listed_file = require_data("jquants/listed_info.json")
    quotes = load_daily_quotes(quotes_file).filter(
        pl.col("Code").is_in(CODES), pl.col("Date").is_between(date(2015, 1, 1),
                                                               date(2015, 12, 31)))
    listed = [r for r in json.loads(listed_file.read_text(encoding="utf-8"))["info"]
              if r["Code"] in CODES]
    return quotes, listed


@pytest.fixture(scope="module")
def data(shared: tuple[pl.DataFrame, list[dict[str, Any]]],
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 stocks over 2015, with a three-session gap in one of them."""
    quotes, listed = shared
    gappy = quotes.filter(~((pl.col("Code") == GAP_CODE) & pl.col("Date").is_in(GAP_DAYS)))
    return _write(tmp_path_factory.mktemp("data") / "jquants", gappy, listed)


def _spec(data: Path, start: str = "2015-11-02", end: str = "2015-11-20",
          **kw: Any) -> BacktestSpec:
    return BacktestSpec(data, date.fromisoformat(start), date.fromisoformat(end), **kw)


def _events(run: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run / "events.sqlite") as conn:
        return conn.execute("SELECT * FROM stored_events ORDER BY rowid").fetchall()


def test_a_momentum_run_trades_through_the_live_path_and_writes_its_report(
        data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_backtest(Momentum(top=5), _spec(data), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "daily.csv", "drawdown.png", "equity.png", "events.sqlite", "fees.png",
        "readmodels.sqlite", "report.md", "summary.json", "turnover.png"]
    assert len(result.days) == 14 and result.orders["placed"] >= 5  # Nov 3: a holiday
    assert result.orders["filled"] + result.orders["partially_filled"] >= 5
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| 2015 |" in report and "## Orders" in report and "![equity](equity.png)" in report
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["final_equity"] == result.days[-1].equity != 100_000_000
    # every fill is against the outside world's liquidity, settled on our side only
    topics = {row[2] for row in _events(out)}
    assert {"aggregates.market:Market.BarsOpened", "aggregates.order:Order.Filled",
            "aggregates.account:Account.BuySettled"} <= topics
    # the read models were projected from the run's events: the account's cash is there
    with sqlite3.connect(out / "readmodels.sqlite") as conn:
        (cash,) = conn.execute("SELECT cash FROM balances").fetchone()
    assert cash == result.days[-1].cash
    # the PnL rows (one per fill and settlement) agree with the fills' own history, as
    # positions open and go flat during the run
    store = ReadStore.sqlite(out / "readmodels.sqlite")
    try:
        assert store.fetchone("SELECT COUNT(*) FROM pnl")[0] > 10  # type: ignore[index]
        assert_pnl_rows_follow_the_position_history(store)
    finally:
        store.close()
    # no stock was ordered on a session it did not trade (the gap)
    with sqlite3.connect(out / "events.sqlite") as conn:
        placed = [json.loads(state) for (state,) in conn.execute(
            "SELECT state FROM stored_events WHERE topic LIKE '%Order.Placed'")]
    gap_symbol = GAP_CODE[:4]
    assert result.reasons["skipped: no price for the session (no bar)"] >= 1
    assert not [p for p in placed if p["symbol"] == gap_symbol
                and any(str(d) in p["client_order_id"] for d in GAP_DAYS)]


def test_the_same_backtest_twice_stores_byte_identical_events(
        data: Path, tmp_path: Path) -> None:
    gc.unfreeze()  # an in-process server earlier in this session may have frozen its own
    first = run_backtest(Momentum(top=4), _spec(data, end="2015-11-13"), tmp_path / "a")
    second = run_backtest(Momentum(top=4), _spec(data, end="2015-11-13"), tmp_path / "b")
    a, b = _events(tmp_path / "a"), _events(tmp_path / "b")
    assert gc.get_freeze_count() == 0  # the collector is given back as it was found
    assert len(a) == first.events == second.events > 100
    assert a == b
    # ids and times come from the run, not from uuid4 or the wall clock
    daily = [(tmp_path / run / "daily.csv").read_bytes() for run in ("a", "b")]
    assert daily[0] == daily[1]


class Raising:
    name = "raising"

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Any:
        if day >= date(2015, 11, 5):
            raise ZeroDivisionError("division by zero")
        return {"7203": 0.5}


def test_a_strategy_that_raises_is_a_clear_error_and_leaves_no_run(
        data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "raising"
    with pytest.raises(BacktestError) as refused:
        run_backtest(Raising(), _spec(data), out)
    assert refused.value.field == "strategy"
    assert "raised on 2015-11-05: ZeroDivisionError" in refused.value.message
    assert list((tmp_path / "runs").iterdir()) == []  # no run, no half-written folder


class Nonsense:
    """Orders the exchange refuses: off the tick grid, not a whole lot, an unknown code,
    selling shares it does not hold."""

    name = "nonsense"

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Any:
        close = int(history.latest_closes[history.symbols.index("7203")] * 10)
        return [OrderIntent("7203", "buy", 100, close + 3),
                OrderIntent("6758", "buy", 50, 0, "market"),
                OrderIntent("0000", "buy", 100, 10_000),
                OrderIntent("8306", "sell", 100, 0, "market")]


def test_invalid_orders_are_rejected_by_the_live_checks_and_counted(
        data: Path, tmp_path: Path) -> None:
    result = run_backtest(Nonsense(), _spec(data, end="2015-11-04"), tmp_path / "run")
    reasons = result.reasons
    # two sessions (Nov 3 is a holiday), four orders each
    assert result.orders["placed"] == 0 and result.orders["rejected"] == 2 * 4
    assert any("price" in r and "tick" in r for r in reasons)
    assert any(r.startswith("rejected: quantity") for r in reasons)
    assert any(r.startswith("rejected: symbol") for r in reasons)
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "Rejected or skipped, by reason" in report and "| rejected | 8 |" in report


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, ["backtest", *args])


@pytest.mark.parametrize(("args", "field", "words"), [
    (["--from", "2015-11-20", "--to", "2015-11-02"], "from", "is after --to"),
    (["--from", "2014-06-02", "--to", "2015-11-02"], "from", "outside the data"),
    (["--from", "2015-11-02", "--to", "2016-02-01"], "to", "outside the data"),
    (["--from", "2015-11-02", "--to", "2015-11-03", "--slippage-ticks", "0"],
     "slippage_ticks", "1..100"),
    (["--from", "2015-11-02", "--to", "2015-11-03", "--participation", "150"],
     "participation", "(0, 100]"),
    (["--from", "2015-13-02", "--to", "2015-11-03"], "from", "not a date"),
    (["--strategy", "model", "--from", "2015-11-02", "--to", "2015-11-03"],
     "checkpoint", "--checkpoint"),
])
def test_bad_input_is_one_line_naming_the_field_and_writes_nothing(
        data: Path, tmp_path: Path, args: list[str], field: str, words: str) -> None:
    if "--strategy" not in args:
        args = ["--strategy", "momentum", *args]
    result = _cli(*args, "--data", str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert f"field={field}" in result.output and words in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_codes_missing_from_listed_info_are_refused(
        shared: tuple[pl.DataFrame, list[dict[str, Any]]], tmp_path: Path) -> None:
    quotes, listed = shared
    folder = _write(tmp_path / "jquants", quotes, [r for r in listed if r["Code"] != "72030"])
    with pytest.raises(BacktestDataError) as refused:
        run_backtest(Momentum(top=3), _spec(folder), tmp_path / "run")
    assert refused.value.field == "data" and "72030" in refused.value.message
    assert not (tmp_path / "run").exists()


def test_the_cli_runs_a_backtest_and_its_store_is_auditable(data: Path, tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    out = tmp_path / "run"
    result = _cli("--strategy", "momentum", "--data", str(data), "--from", "2015-11-02",
                  "--to", "2015-11-06", "--top", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "4 sessions" in result.output and str(out / "report.md") in result.output
    # the run's store is an ordinary event store: the normal CLI reads its audit trail
    monkeypatch.setenv("TRADECORE_SQLITE_PATH", str(out / "events.sqlite"))
    from infra.settings import get_settings

    get_settings.cache_clear()  # type: ignore[attr-defined]
    try:
        trail = CliRunner().invoke(cli, ["events", "backtest-momentum", "--json"])
    finally:
        monkeypatch.delenv("TRADECORE_SQLITE_PATH")
        get_settings.cache_clear()  # type: ignore[attr-defined]
    assert trail.exit_code == 0, trail.output
    kinds = [json.loads(line)["event"] for line in trail.output.splitlines()]
    assert kinds[:2] == ["Account.Opened", "Account.Deposited"] and "Account.BuySettled" in kinds


def test_the_readme_backtest_example_works_as_written(tmp_path: Path) -> None:
    """The README's "Backtests" block, line by line in bash, from a folder whose
    ``.venv/bin/tradecore`` is this checkout and whose ``../shared/data`` is the shared
    data (linked, not copied)."""
    import os
    import subprocess

    from infra.settings import get_settings
    from tests.api.test_readme import block_after, user_folder

    data_dir = require_data("jquants/daily_quotes.csv.gz").parents[1]
    home = user_folder(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_dir.resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECORE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["TRADECORE_DATA_DIR"] = str(get_settings().data_dir)
    lines = block_after("Backtests")
    assert lines[0].startswith(".venv/bin/tradecore backtest --strategy momentum")
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=home, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    run = home / "var" / "backtests" / "momentum-2015-11"
    assert (run / "report.md").is_file() and (run / "equity.png").is_file()
    assert "Account.Deposited" in done.stdout  # the audit trail of the run's account


class Careless:
    """Targets naming a code the market does not know, and intents of the wrong types."""

    name = "careless"

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Any:
        if day.day % 2:
            return {"0000": 0.3, "7203": 0.3}
        return [OrderIntent("7203", "buy", "100", 0, "market")]  # type: ignore[arg-type]


def test_unknown_targets_and_mistyped_intents_are_counted_not_crashed(
        data: Path, tmp_path: Path) -> None:
    result = run_backtest(Careless(), _spec(data, end="2015-11-13"), tmp_path / "run")
    assert result.reasons["skipped: unknown symbol"] >= 1
    assert any("not an OrderIntent" in r for r in result.reasons)
    assert result.orders["placed"] >= 1  # the valid target was still bought


class Silent:
    name = "silent"

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Any:
        return None


def test_a_strategy_returning_nothing_usable_is_a_clear_error(
        data: Path, tmp_path: Path) -> None:
    with pytest.raises(BacktestError) as refused:
        run_backtest(Silent(), _spec(data), tmp_path / "run")
    assert refused.value.field == "strategy" and "returned NoneType" in refused.value.message
    assert not (tmp_path / "run").exists()
