"""The composition root builds the universe: J-Quants files through the data layer when
they are there, the bundled 14 stocks otherwise."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

from aggregates.instruments import TickTable, bundled_universe
from api.wiring import load_instruments, universe_from_files
from infra.settings import Settings


def test_without_files_the_bundled_universe(tmp_path: Path) -> None:
    bundled = bundled_universe().symbols
    assert universe_from_files(None).symbols == bundled
    assert universe_from_files(tmp_path).symbols == bundled  # no jquants/ folder
    (tmp_path / "jquants").mkdir()
    assert universe_from_files(tmp_path).symbols == bundled  # folder without the files
    settings = Settings(data_dir=tmp_path / "absent")
    assert load_instruments(settings).symbols == bundled


def test_with_files_the_listed_stocks_at_their_last_close(tmp_path: Path) -> None:
    jquants = tmp_path / "jquants"
    jquants.mkdir()
    (jquants / "listed_info.json").write_text(
        json.dumps(
            {
                "info": [
                    {
                        "Code": "72030",
                        "CompanyNameEnglish": "TOYOTA",
                        "Sector33Code": "3700",
                        "ScaleCategory": "TOPIX Core30",
                    },
                    {
                        "Code": "31970",
                        "CompanyName": "SKYLARK",
                        "Sector33Code": "6100",
                        "ScaleCategory": "TOPIX Mid400",
                    },
                ]
            }
        )
    )
    quotes = (
        "Date,Code,Close,AdjustmentClose\n2015-01-05,72030,7050.0,7050.0\n"
        "2015-01-06,72030,6990.5,6990.5\n2015-01-06,31970,1001.0,1001.0\n"
    )
    (jquants / "daily_quotes.csv.gz").write_bytes(gzip.compress(quotes.encode()))

    universe = load_instruments(Settings(data_dir=tmp_path))
    assert universe.symbols == ("3197", "7203")
    assert universe.source == str(jquants)
    assert universe.get("7203").base_price == 69_905
    assert universe.get("7203").tick_table is TickTable.TOPIX100
    assert universe.get("3197").name == "SKYLARK"
    dated = universe_from_files(tmp_path, as_of=date(2015, 1, 5))
    assert dated.symbols == ("7203",) and dated.get("7203").base_price == 70_500
    assert dated.source.endswith("as of 2015-01-05")


def test_the_universe_is_cached_until_the_files_change(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Reading the quotes cost every CLI call half a second: the records are kept in the
    cache folder and read again only when a file in the data folder changes."""
    import inference.data.listings as listings

    jquants = tmp_path / "data" / "jquants"
    jquants.mkdir(parents=True)
    (jquants / "listed_info.json").write_text(json.dumps({"info": [
        {"Code": "72030", "CompanyNameEnglish": "TOYOTA MOTOR CORPORATION",
         "Sector33Code": "3700", "ScaleCategory": "TOPIX Core30"}]}))
    quotes = jquants / "daily_quotes.csv.gz"
    quotes.write_bytes(gzip.compress(b"Date,Code,Close\n2015-01-06,72030,6990.5\n"))
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")

    first = load_instruments(settings)
    assert len(list((tmp_path / "cache").glob("universe-*.json"))) == 1

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the files were read again")

    monkeypatch.setattr(listings, "read_listings", no_reading)
    cached = load_instruments(settings)
    assert cached.instruments == first.instruments
    assert cached.source == first.source
    assert cached.get("7203").name == "TOYOTA MOTOR CORPORATION"

    monkeypatch.undo()
    quotes.write_bytes(gzip.compress(b"Date,Code,Close\n2015-01-07,72030,7001\n"))
    assert load_instruments(settings).get("7203").base_price == 70_010  # read again
