"""Every example in the README works as written, on the shared data (issue 10, item 6).

The README's order examples were refused on the data it tells users to set up (a price
of 2,500 yen for a stock at 7,488). This runs the two shell blocks a new user copies,
"Serving it" and "Using it from the command line", line by line in bash, in a folder
whose ``.venv/bin/tradecore`` is this checkout's command: real processes, a real
``tradecore serve``, real ``curl``. Only what a user fills in is filled in: ``<account_id>``,
``<order_id>``, ``<position>`` and ``<order-id | account name>`` from the answers before,
and the port (``localhost:8000`` becomes the test server's). ``make serve`` is the
server the test starts. The model commands (minutes of training) are covered by
``tests/inference/test_cli_model.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.settings import PROJECT_ROOT
from tests.conftest import require_data
from tests.processes import env_for, served

README = PROJECT_ROOT / "README.md"


def block_after(heading: str) -> list[str]:
    """The commands of the first ```bash block under ``heading`` (continuations joined)."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    body = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def user_folder(tmp_path: Path) -> Path:
    """A folder where ``.venv/bin/tradecore`` is this checkout's command."""
    home = tmp_path / "home"
    (home / ".venv" / "bin").mkdir(parents=True)
    shim = home / ".venv" / "bin" / "tradecore"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m api.cli "$@"\n')
    shim.chmod(0o755)
    return home


class Shell:
    """Runs README lines in bash as a user would, keeping ``NAME=$(...)`` variables."""

    def __init__(self, home: Path, store: Path, port: int | None = None) -> None:
        self.home, self.port = home, port
        self.env = env_for(store)
        self.filled: dict[str, str] = {}

    def fill(self, line: str) -> str:
        for placeholder, value in self.filled.items():
            line = line.replace(placeholder, value)
        assert "<" not in line.split("#", 1)[0].replace("<<", ""), f"unfilled: {line}"
        if self.port is not None:
            line = line.replace("localhost:8000", f"127.0.0.1:{self.port}")
        return line

    def run(self, line: str) -> str:
        command = self.fill(line)
        assigned = re.fullmatch(r"([A-Z_]+)=\$\((.*)\)", command)
        done = subprocess.run(
            ["bash", "-c", assigned.group(2) if assigned else command],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if assigned:
            self.env[assigned.group(1)] = done.stdout.strip()
        return done.stdout


def _problem_free(answer: str, line: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer)
    assert "status" not in body or not str(body.get("type", "")).startswith("https://"), (
        f"{line} was refused: {body}"
    )
    return body


def test_the_serving_examples(tmp_path: Path) -> None:
    require_data("jquants/listed_info.json")
    assert shutil.which("curl"), "the README's HTTP examples use curl"
    lines = block_after("Serving it")
    assert lines[0].startswith("make serve")
    home, store = user_folder(tmp_path), tmp_path / "store"
    store.mkdir()
    with served(store) as server:
        shell = Shell(home, store, server.port)
        answers: list[dict[str, Any]] = []
        for line in lines[1:]:
            out = shell.run(line)
            if not line.startswith("curl"):
                continue
            body = _problem_free(out, line)
            answers.append(body)
            if "account_id" in body:
                shell.filled.setdefault("<account_id>", body["account_id"])
            if body.get("order_id") and "position" in body:  # the order placed
                shell.filled["<order_id>"] = body["order_id"]
                shell.filled["<position>"] = str(body["position"])
        opened, deposited, placed, order, balance = answers
        assert opened["status"] == "open" and deposited["status"] == "deposited"
        assert placed["status"] == "placed" and placed["created"] is True
        assert (order["symbol"], order["price"], order["quantity"]) == ("7203", 74900, 100)
        assert balance["cash"] == 10_000_000 and balance["reserved"] > 0  # the buy holds cash


def test_the_command_line_examples(tmp_path: Path) -> None:
    require_data("jquants/listed_info.json")
    home, store = user_folder(tmp_path), tmp_path / "store"
    store.mkdir()
    shell = Shell(home, store)
    outputs = []
    for line in block_after("Using it from the command line"):
        out = shell.run(line)
        outputs.append(out)
        placed = re.search(r"^placed: order ([0-9a-f-]{36}) buy 100 7203 @ 7490 yen", out, re.M)
        if placed:
            shell.filled["<order-id | account name>"] = placed.group(1)
            shell.filled["<order-id>"] = placed.group(1)
    assert "<order-id>" in shell.filled, "the order was not placed:\n" + "\n".join(outputs)
    text = "\n".join(outputs)
    assert "cancel requested" in text and "-> cancelled" in text
    assert "Order.Cancelled" in text and "price: 74900" in text  # events, then --long
    assert "7203 halted: news pending" in text
    assert re.search(r"session \d{4}-\d{2}-\d{2} closed", text)


@pytest.mark.parametrize("heading", ["Serving it", "Using it from the command line"])
def test_the_blocks_are_found(heading: str) -> None:
    """A README rewrite that moves these blocks must move this test with them."""
    assert len(block_after(heading)) >= 6
    assert os.path.exists(README)
