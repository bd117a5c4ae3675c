"""A new user's first hour with the command line (issue 10, items 7-11): real processes.

Help that explains arguments, units and allowed values; an audit trail that shows every
detail; the principal who acted; a demo that cleans up after itself and prints company
names whole; a command line that does not import the server, the model or the Numba
kernels to show an account (``benchmarks/cli_startup.py`` has the timings).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.processes import PROJECT_ROOT, TRADECORE, env_for, tc


def _help(folder: Path, *command: str) -> str:
    done = subprocess.run(
        [*TRADECORE, *command, "--help"],
        capture_output=True,
        text=True,
        env=env_for(folder, COLUMNS="100"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", done.stdout))


HELP: dict[tuple[str, ...], tuple[str, ...]] = {
    ("account", "open"): (
        "NAME",
        "letters, digits",
        "--owner",
        "belongs to",
        "--principal",
        "Who is acting",
    ),
    ("account", "deposit"): (
        "ACCOUNT",
        "Account name (as opened) or account id",
        "AMOUNT",
        "Integer yen",
    ),
    ("account", "show"): ("ACCOUNT", "in yen", "available"),
    ("order", "place"): (
        "SYMBOL",
        "7203",
        "<buy|sell>",
        "QUANTITY",
        "100-share lot",
        "<limit|market>",
        "<day|gtc|ioc|fok>",
        "until cancelled",
        "Limit price in yen",
        "market order",
        "--client-order-id",
    ),
    ("order", "amend"): (
        "ORDER_ID",
        "QUANTITY",
        "total quantity in shares",
        "PRICE",
        "limit price in yen",
    ),
    ("order", "cancel"): ("ORDER_ID", "Cancel what is left"),
    ("market", "resume"): ("SYMBOL", "halted", "Exchange code"),
    ("market", "close-session"): ("SESSION_DATE", "YYYY-MM-DD", "Tokyo", "7 days"),
    ("events",): ("--long", "--json", "tenths of a yen", "principal"),
    ("demo",): ("--keep", "--store", "deleted"),
}


@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_leaf_commands_explain_arguments_units_and_values(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    text = _help(tmp_path, *command)
    for needed in HELP[command]:
        assert needed in text, f"`tradecore {' '.join(command)} --help` lacks {needed!r}"


def test_multi_paragraph_help_is_not_broken_mid_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TRADECORE, "projections", "rebuild", "--help"],
        capture_output=True,
        text=True,
        env=env_for(tmp_path, COLUMNS="100"),
        timeout=60,
        check=False,
    )
    lines = [line.strip() for line in done.stdout.splitlines()]
    # the docstring's own line breaks ("... from the end of" / "the rebuild") are gone
    assert not any(line.endswith(("end of", "use --until", "so use")) for line in lines)
    assert "end of the rebuild" in " ".join(lines)


# ------------------------------------------------------------------ a desk on the CLI


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("desk")
    symbol, price = _priced_symbol(folder)
    for args in (
        ("account", "open", "alice", "--owner", "alice"),
        ("account", "deposit", "alice", "100000000"),
    ):
        done = tc(folder, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    placed = tc(
        folder,
        "order",
        "place",
        "alice",
        symbol,
        "buy",
        "100",
        "--price",
        price,
        "--tif",
        "gtc",
        "--client-order-id",
        "first",
    )
    assert placed.returncode == 0, placed.stdout + placed.stderr
    found = re.search(r"order ([0-9a-f-]{36})", placed.stdout)
    assert found, placed.stdout
    return {"folder": folder, "order": found.group(1), "symbol": symbol, "price": price}


def _priced_symbol(folder: Path) -> tuple[str, str]:
    """A symbol of the configured universe and a valid limit price in yen."""
    code = (
        "import json; from api.wiring import load_instruments; "
        "from infra.settings import get_settings; u = load_instruments(get_settings()); "
        "i = u.get('7203') if '7203' in u else u.instruments[0]; "
        "print(json.dumps([i.symbol, i.base_price]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env_for(folder),
        timeout=120,
        check=True,
    )
    symbol, units = json.loads(done.stdout)
    return symbol, f"{units / 10:g}"


def test_events_show_every_detail_even_on_a_narrow_terminal(desk: dict[str, Any]) -> None:
    folder, order = desk["folder"], desk["order"]
    units = str(int(float(desk["price"]) * 10))
    narrow = subprocess.run(
        [*TRADECORE, "events", order],
        capture_output=True,
        text=True,
        env=env_for(folder, COLUMNS="80"),
        timeout=60,
        check=False,
    )
    assert narrow.returncode == 0, narrow.stderr
    flat = re.sub(r"[\s│]+", " ", narrow.stdout)
    for detail in (
        "side=buy",
        "quantity=100",
        f"price={units}",
        "tif=gtc",
        f"symbol={desk['symbol']}",
        "client_order_id=first",
    ):
        assert detail in flat.replace(" ", "") or detail in flat, (detail, narrow.stdout)
    assert "side=bu " not in flat
    long = tc(folder, "events", order, "--long")
    assert long.returncode == 0
    for line in ("  side: buy", "  quantity: 100", f"  price: {units}", "  principal: operator"):
        assert line in long.stdout, (line, long.stdout)
    as_json = tc(folder, "events", order, "--json")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    placed = next(e for e in events if e["event"] == "Order.Placed")
    assert (placed["side"], placed["quantity"], placed["price"]) == ("buy", 100, int(units))
    assert placed["principal"] == "operator" and placed["version"] == 1


def test_account_opened_records_who_acted_not_the_owner(desk: dict[str, Any]) -> None:
    folder = desk["folder"]
    opened = json.loads(tc(folder, "events", "alice", "--json").stdout.splitlines()[0])
    assert opened["event"] == "Account.Opened"
    assert (opened["owner"], opened["principal"]) == ("alice", "operator")
    assert (
        tc(folder, "account", "open", "bob", "--owner", "bob", "--principal", "ops-jane").returncode
        == 0
    )
    bob = json.loads(tc(folder, "events", "bob", "--json").stdout.splitlines()[0])
    assert (bob["owner"], bob["principal"]) == ("bob", "ops-jane")


def test_account_show_loads_no_server_model_or_kernels(desk: dict[str, Any]) -> None:
    """Start-up was about 2 s a call: FastAPI, uvicorn, polars, torch, the stages and the
    Numba kernels were imported to print a balance. None of them are now."""
    heavy = (
        "fastapi",
        "uvicorn",
        "polars",
        "torch",
        "numba",
        "streams",
        "projections",
        "psycopg",
        "inference",
        "jwt",
    )
    code = (
        "import sys; from api.cli import app; sys.argv = ['tradecore', 'account', 'show', "
        "'alice']\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env_for(desk["folder"]),
        timeout=60,
        check=False,
        cwd=PROJECT_ROOT,
    )
    assert "100,000,000" in done.stdout, done.stdout + done.stderr
    assert "LOADED []" in done.stdout, done.stdout


# ------------------------------------------------------------------ the demo


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [*TRADECORE, "demo", "--orders", "60", "--symbols", "6", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env_for(tmp_path, TMPDIR=str(scratch), COLUMNS="80"),
    )


def test_the_demo_deletes_its_store_and_prints_names_whole(tmp_path: Path) -> None:
    run = _demo(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert list((tmp_path / "tmp").iterdir()) == [], "the demo left its store behind"
    deleted = re.search(r"temporary store (\S+) deleted", run.stdout)
    assert deleted and deleted.group(1).startswith(str(tmp_path / "tmp"))
    names = _names(tmp_path)
    rows = [line.split("│") for line in run.stdout.splitlines() if line.startswith("│")]
    shown = {
        cells[2].strip(): cells[3].strip()
        for cells in rows
        if len(cells) == 8 and cells[2].strip() in names
    }
    assert shown, run.stdout
    for symbol, name in shown.items():
        assert name == names[symbol], f"{symbol}: {name!r} is not {names[symbol]!r}"


def test_the_demo_keeps_its_store_when_asked(tmp_path: Path) -> None:
    run = _demo(tmp_path, "--keep")
    assert run.returncode == 0, run.stdout + run.stderr
    kept = re.search(r"events kept in (\S+)", run.stdout)
    assert kept and Path(kept.group(1)).is_file()


def _names(folder: Path) -> dict[str, str]:
    code = (
        "import json; from api.wiring import load_instruments; "
        "from infra.settings import get_settings; "
        "print(json.dumps({i.symbol: i.name for i in "
        "load_instruments(get_settings()).instruments}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env_for(folder),
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]
