"""Listed stocks with their last raw close: the records a tradable universe is built from.

The write model needs, per stock, the J-Quants listed info (name, sector, scale category,
which decides the tick table) and the last *raw* (unadjusted) close on or before a date,
which is the base price of the next day's price limits. This module reads both from
J-Quants files and hands back plain records; the composition root
(:func:`api.wiring.load_instruments`) turns them into an ``aggregates.instruments.Universe``
(``Universe.from_listings``), so the domain never reads files.

Closes stay exact: CSV files are read with ``Close`` as text and parsed as ``Decimal``
(never through a float); other formats come through :func:`load_daily_quotes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from inference.data.files import find_source, load_daily_quotes, load_listed_info
from inference.data.schema import DataSchemaError


@dataclass(frozen=True, slots=True)
class Listing:
    """One listed stock and its last raw close (yen, exact) on or before ``as_of``."""

    code: str  # 5-digit J-Quants code, e.g. "72030"
    name: str  # English name when the source has one, else the Japanese name or the code
    sector33: str  # TSE 33-sector code, e.g. "3700"
    scale_category: str  # "TOPIX Core30", "TOPIX Large70", "TOPIX Mid400", ...
    last_close: Decimal  # raw (unadjusted) close in yen
    last_close_date: date


def has_listings(jquants_dir: str | Path) -> bool:
    """Whether ``jquants_dir`` holds both a listed-info and a daily-quotes file."""
    try:
        find_source(jquants_dir, "listed_info")
        find_source(jquants_dir, "daily_quotes")
    except FileNotFoundError:
        return False
    return True


def _close_frame(quotes: Path) -> pl.DataFrame:
    """``Date`` (ISO text), ``Code`` and ``Close`` (text) of every row with a close."""
    name = quotes.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        frame = pl.read_csv(
            quotes,
            columns=["Date", "Code", "Close"],
            schema_overrides={"Date": pl.String, "Code": pl.String, "Close": pl.String},
        )
    else:
        frame = load_daily_quotes(quotes).select(
            pl.col("Date").cast(pl.String), "Code", pl.col("Close").cast(pl.String)
        )
    return frame.filter(pl.col("Close").is_not_null() & (pl.col("Close") != ""))


def last_closes(source: str | Path, as_of: date | None = None) -> dict[str, tuple[date, Decimal]]:
    """J-Quants code -> (date, last raw ``Close``) on or before ``as_of`` (default: the
    last date in the file). Codes with no close by then are absent."""
    quotes = find_source(source, "daily_quotes")
    frame = _close_frame(quotes)
    if as_of is not None:
        # ISO dates compare correctly as strings, which avoids parsing 900k dates.
        frame = frame.filter(pl.col("Date") <= as_of.isoformat())
    last = frame.group_by("Code").agg(
        pl.col("Date").max().alias("Day"), pl.col("Close").sort_by("Date").last()
    )
    out: dict[str, tuple[date, Decimal]] = {}
    for code, day, close in last.iter_rows():
        try:
            out[str(code).strip()] = (date.fromisoformat(day), Decimal(close.strip()))
        except (InvalidOperation, ValueError):
            raise DataSchemaError(
                f"{quotes.name}: Close {close!r} on {day} for {code} is not a decimal number"
            ) from None
    return out


def _listed_rows(source: str | Path) -> Iterator[dict[str, str | None]]:
    listed = load_listed_info(source)
    columns = ["Code", "CompanyName", "CompanyNameEnglish", "Sector33Code", "ScaleCategory"]
    yield from listed.select(columns).iter_rows(named=True)


def read_listings(jquants_dir: str | Path, as_of: date | None = None) -> list[Listing]:
    """Every listed stock in ``jquants_dir`` with a close on or before ``as_of``, in code
    order. Stocks that had not traded by then are left out: without a base price the
    exchange sets no limits and accepts no orders."""
    closes = last_closes(jquants_dir, as_of)
    listings = []
    for row in _listed_rows(jquants_dir):
        code = str(row["Code"])
        found = closes.get(code)
        if found is None:
            continue
        day, close = found
        listings.append(
            Listing(
                code=code,
                name=str(row["CompanyNameEnglish"] or row["CompanyName"] or code),
                sector33=str(row["Sector33Code"] or ""),
                scale_category=str(row["ScaleCategory"] or ""),
                last_close=close,
                last_close_date=day,
            )
        )
    return listings
