"""LOBSTER replay: the kernels' book against a real NASDAQ day, row by row."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from streams.replay.lobster import load, main, replay
from tests.conftest import require_data

GOOG = "lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"

# A two-level toy day. Row 0 is the book after message 0 (which is folded into the seed).
MESSAGES = """\
34200.1,1,11,100,1000100,-1
34200.2,1,12,50,999900,1
34200.3,4,11,40,1000100,-1
34200.4,3,99,30,1000000,1
34200.5,2,12,20,999900,1
34200.6,5,0,10,1000050,1
"""
BOOK_ROWS = [
    # ask p, ask q, bid p, bid q  (level 1), then level 2
    [9999999999, 0, 1000000, 30, 9999999999, 0, -9999999999, 0],
    [1000100, 100, 1000000, 30, 9999999999, 0, -9999999999, 0],
    [1000100, 100, 1000000, 30, 9999999999, 0, 999900, 50],
    [1000100, 60, 1000000, 30, 9999999999, 0, 999900, 50],
    [1000100, 60, 999900, 50, 9999999999, 0, -9999999999, 0],
    [1000100, 60, 999900, 30, 9999999999, 0, -9999999999, 0],
    [1000100, 60, 999900, 30, 9999999999, 0, -9999999999, 0],
]


def write_day(folder: Path, rows: list[list[int]]) -> Path:
    path = folder / "TOY_2012-06-21_34200000_57600000.zip"
    book = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    message_rows = "34200.0,1,10,30,1000000,1\n" + MESSAGES  # message 0: the seed's order
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("TOY_2012-06-21_34200000_57600000_message_2.csv", message_rows)
        archive.writestr("TOY_2012-06-21_34200000_57600000_orderbook_2.csv", book)
    return path


def test_toy_day_replays_without_a_mismatch(tmp_path: Path) -> None:
    day = load(write_day(tmp_path, BOOK_ROWS))
    assert day.levels == 2 and day.messages.shape == (7, 5)
    result = replay(day)
    assert result.counts["messages_compared"] == 6
    assert result.counts["mismatched_messages"] == 0
    # order 99 was never submitted (before the open): served from the seeded level
    assert result.counts["placeholder_references"] == 1
    assert result.counts["hidden_executions_skipped"] == 1


def test_a_wrong_book_row_is_caught_as_unexplained(tmp_path: Path) -> None:
    rows = [list(r) for r in BOOK_ROWS]
    rows[3][1] = 61  # the file claims one more share at the best ask than the flow gives
    result = replay(load(write_day(tmp_path, rows)))
    # the bad row, and the next one (the replay had aligned to the bad row)
    assert result.counts["unexplained_mismatches"] == 2
    assert list(np.nonzero(result.flags)[0]) == [3, 4]


def test_command_line_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(write_day(tmp_path, BOOK_ROWS))]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["messages"] == 7 and summary["unexplained_mismatches"] == 0


def test_loader_refuses_a_file_that_is_not_lobster(tmp_path: Path) -> None:
    other = tmp_path / "prices.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="LOBSTER"):
        load(other)


@pytest.mark.parametrize(
    ("module", "allowed"),
    [("kernels.lobster", set()), ("streams.replay.lobster", {"streams"})],
)
def test_replay_needs_only_numpy_numba_the_kernels_and_stdlib(
    module: str, allowed: set[str]
) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aggregates', 'infra', 'api', 'streams', 'projections', 'inference', 'pydantic', "
        "'polars', 'torch', 'hypothesis'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted(allowed))


@pytest.mark.slow
def test_goog_full_day_every_book_row_is_matched_or_explained() -> None:
    """All 147,916 messages; after each one the top 10 levels are compared with the file.

    The only mismatches allowed are levels coming into view from beyond the previous
    row's 10-level window: a level-10 LOBSTER file carries no messages for them.
    """
    day = load(require_data(GOOG))
    assert day.messages.shape[0] == 147_916 and day.levels == 10
    result = replay(day)
    counts = result.counts
    assert counts["messages_compared"] == 147_915
    assert counts["unexplained_mismatches"] == 0
    assert counts["unresolved_references"] == 0
    assert counts["rejected_submissions"] == 0  # every submission was on the cent grid
    assert counts["hidden_executions_skipped"] == 3_913
    # out-of-window mismatches stay rare: under 5 % of messages
    assert counts["window_mismatches"] < 0.05 * counts["messages_compared"]
    assert counts["mismatched_messages"] == counts["window_mismatches"]
