"""File readers: every format gives the same exact J-Quants schema; bad files say why."""

from __future__ import annotations

import gzip
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from inference.data import (
    DAILY_QUOTES_SCHEMA,
    DataSchemaError,
    load_daily_quotes,
    load_listed_info,
)
from inference.data.listings import Listing, has_listings, read_listings


def _records(quotes: pl.DataFrame) -> list[dict[str, object]]:
    return quotes.with_columns(pl.col("Date").cast(pl.Utf8)).to_dicts()


def test_shared_data_loads_in_exact_schema(all_quotes: pl.DataFrame) -> None:
    assert dict(all_quotes.schema) == DAILY_QUOTES_SCHEMA
    assert all_quotes.height == 925_928
    assert all_quotes["Code"].n_unique() == 494
    assert all_quotes["Code"].str.len_chars().unique().to_list() == [5]
    assert all_quotes["Date"].min() == date(2008, 1, 4)
    assert all_quotes["Date"].max() == date(2015, 12, 30)
    assert all_quotes.equals(all_quotes.sort("Code", "Date"))
    # TurnoverValue is empty in this export: read as null, not as a string column.
    assert all_quotes["TurnoverValue"].null_count() == all_quotes.height


def test_every_format_reads_the_same(quotes_slice: pl.DataFrame, tmp_path: Path) -> None:
    quotes_slice.write_csv(tmp_path / "q.csv")
    (tmp_path / "q.csv.gz").write_bytes(gzip.compress(quotes_slice.write_csv().encode()))
    quotes_slice.write_parquet(tmp_path / "q.parquet")
    (tmp_path / "q.json").write_text(json.dumps({"daily_quotes": _records(quotes_slice)}))
    for name in ("q.csv", "q.csv.gz", "q.parquet", "q.json"):
        got = load_daily_quotes(tmp_path / name)
        assert got.equals(quotes_slice), name


def test_folder_resolves_daily_quotes_and_listed_info(jquants_dir: Path) -> None:
    listed = load_listed_info(jquants_dir)
    assert {"Code", "CompanyName", "Sector17Code", "Sector33Code", "ScaleCategory"} <= set(
        listed.columns
    )
    assert listed["Code"].is_unique().all()
    assert listed.filter(pl.col("Code") == "72030")["Sector33Code"].item() == "3700"


def test_json_in_api_shape_with_four_digit_codes_and_nan(tmp_path: Path) -> None:
    rows = [
        {"Date": "2015-01-05", "Code": "7203", "Open": 100.0, "High": 101.0, "Low": 99.0,
         "Close": 100.5, "Volume": 1000.0, "TurnoverValue": None, "AdjustmentFactor": 1.0,
         "AdjustmentOpen": 100.0, "AdjustmentHigh": 101.0, "AdjustmentLow": 99.0,
         "AdjustmentClose": float("nan"), "AdjustmentVolume": 1000.0},
    ]  # fmt: skip
    path = tmp_path / "daily_quotes.json"
    path.write_text(json.dumps({"daily_quotes": rows}))
    got = load_daily_quotes(tmp_path)
    assert got["Code"].to_list() == ["72030"]
    assert got["AdjustmentClose"].to_list() == [None]  # NaN is a missing value
    assert got["Date"].to_list() == [date(2015, 1, 5)]


def test_duplicate_rows_are_rejected(quotes_slice: pl.DataFrame, tmp_path: Path) -> None:
    doubled = pl.concat([quotes_slice.head(3), quotes_slice.head(1)])
    doubled.write_parquet(tmp_path / "daily_quotes.parquet")
    with pytest.raises(DataSchemaError, match=r"\(Code, Date\) must be unique"):
        load_daily_quotes(tmp_path)


def test_missing_column_is_named(quotes_slice: pl.DataFrame, tmp_path: Path) -> None:
    quotes_slice.drop("AdjustmentClose").write_parquet(tmp_path / "q.parquet")
    with pytest.raises(DataSchemaError, match="AdjustmentClose"):
        load_daily_quotes(tmp_path / "q.parquet")


def test_bad_code_and_missing_file_are_clear(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text(
        json.dumps({"daily_quotes": [{"Date": "2015-01-05", "Code": "123", "AdjustmentClose": 1}]})
    )
    with pytest.raises(DataSchemaError, match="'Code'"):
        load_daily_quotes(tmp_path / "q.json")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_daily_quotes(tmp_path / "empty_folder_that_is_missing")
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="no daily_quotes file"):
        load_daily_quotes(tmp_path / "sub")
    (tmp_path / "x.json").write_text(json.dumps({"quotes": []}))
    with pytest.raises(DataSchemaError, match="no 'daily_quotes' list"):
        load_daily_quotes(tmp_path / "x.json")


def test_empty_file_gives_empty_frame_in_schema(tmp_path: Path) -> None:
    (tmp_path / "daily_quotes.json").write_text(json.dumps({"daily_quotes": []}))
    got = load_daily_quotes(tmp_path)
    assert got.is_empty() and dict(got.schema) == DAILY_QUOTES_SCHEMA


# ---- listings: the records the write model's universe is built from ---------------------

QUOTES_CSV = """\
Date,Code,Open,High,Low,Close,Volume,AdjustmentClose
2015-01-05,72030,7000.0,7100.0,6900.0,7050.0,100.0,7050.0
2015-01-06,72030,7050.0,7100.0,6900.0,6990.5,100.0,6990.5
2015-01-07,72030,,,,,0.0,
2015-01-06,67580,2500.0,2600.0,2400.0,2454.5,100.0,2454.5
2015-01-07,31970,1000.0,1000.0,1000.0,1000.0,100.0,1000.0
"""
LISTED = {
    "info": [
        {
            "Date": "2017-10-31",
            "Code": "72030",
            "CompanyName": "トヨタ自動車",
            "CompanyNameEnglish": "TOYOTA MOTOR CORPORATION",
            "Sector33Code": "3700",
            "ScaleCategory": "TOPIX Core30",
        },
        {
            "Date": "2017-10-31",
            "Code": "6758",
            "CompanyName": "ソニー",
            "Sector33Code": "3650",
            "ScaleCategory": "TOPIX Core30",
        },
        {
            "Date": "2017-10-31",
            "Code": "31970",
            "CompanyName": "すかいらーく",
            "CompanyNameEnglish": "SKYLARK",
            "Sector33Code": "6100",
            "ScaleCategory": "TOPIX Mid400",
        },
        {
            "Date": "2017-10-31",
            "Code": "99840",
            "CompanyName": "ソフトバンク",
            "Sector33Code": "5250",
            "ScaleCategory": "TOPIX Core30",
        },  # never traded
    ]
}


def _jquants_folder(folder: Path, quotes: str = QUOTES_CSV) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "listed_info.json").write_text(json.dumps(LISTED, ensure_ascii=False), "utf-8")
    (folder / "daily_quotes.csv.gz").write_bytes(gzip.compress(quotes.encode()))
    return folder


def test_listings_carry_the_last_raw_close_exactly(tmp_path: Path) -> None:
    folder = _jquants_folder(tmp_path / "jquants")
    assert has_listings(folder) and not has_listings(tmp_path)
    got = read_listings(folder)
    assert [listing.code for listing in got] == ["31970", "67580", "72030"]
    toyota = got[2]
    assert toyota == Listing(
        "72030",
        "TOYOTA MOTOR CORPORATION",
        "3700",
        "TOPIX Core30",
        Decimal("6990.5"),
        date(2015, 1, 6),
    )  # the empty close skipped
    assert isinstance(toyota.last_close, Decimal)
    assert got[1].name == "ソニー"  # no English name: the Japanese one
    dated = {listing.code: listing for listing in read_listings(folder, date(2015, 1, 5))}
    assert set(dated) == {"72030"} and dated["72030"].last_close == Decimal("7050.0")
    assert read_listings(folder, date(2014, 12, 31)) == []


def test_listings_from_parquet_quotes_read_the_same(tmp_path: Path) -> None:
    folder = _jquants_folder(tmp_path / "csv")
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    (parquet / "listed_info.json").write_bytes((folder / "listed_info.json").read_bytes())
    load_daily_quotes(folder).write_parquet(parquet / "daily_quotes.parquet")
    assert read_listings(parquet) == read_listings(folder)


def test_a_close_that_is_not_a_number_names_the_file_and_code(tmp_path: Path) -> None:
    folder = _jquants_folder(tmp_path, QUOTES_CSV.replace("2454.5", "24x4"))
    with pytest.raises(DataSchemaError, match=r"daily_quotes.csv.gz: Close '24x4' .* 67580"):
        read_listings(folder)


@pytest.mark.parametrize(
    ("raw", "code"),
    [("7203", "72030"), (" 72030 ", "72030"), ("6758", "67580"), ("AB12", None),
     ("TOYOT", None), ("720", None), ("720300", None), ("７２０３", None),
     ("130A", "130A0"), ("130A0", "130A0"), ("285A", "285A0"), ("13B0", None),
     ("1301A", None), ("a30A", None)],
)  # fmt: skip
def test_one_rule_for_codes_4_digit_tickers_become_j_quants_codes(
    raw: str, code: str | None
) -> None:
    from inference.data.schema import code_expr, normal_code

    assert normal_code(raw) == code
    column = pl.DataFrame({"Code": [raw]}).select(code_expr()).item()
    assert column == (code if code is not None else raw.strip())


@pytest.mark.parametrize("bad", ["AB12", "TOYOT", "1301A"])
def test_a_letter_code_in_a_file_is_refused_naming_the_file_and_rule(
    tmp_path: Path, bad: str
) -> None:
    path = tmp_path / "daily_quotes.json"
    rows = [{"Date": "2015-01-05", "Code": c, "AdjustmentClose": 1} for c in ("7203", bad)]
    path.write_text(json.dumps({"daily_quotes": rows}))
    with pytest.raises(DataSchemaError, match="a TSE code") as raised:
        load_daily_quotes(path)
    assert str(path) in str(raised.value) and repr([bad]) in str(raised.value)
