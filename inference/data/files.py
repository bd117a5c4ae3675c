"""Read J-Quants daily quotes and listed info from files (CSV, CSV.gz, Parquet, JSON).

Files are what research runs on (exports, caches, the shared test data); the API
client returns the same schemas, so the feature pipeline never knows the difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from inference.data.schema import (
    DAILY_QUOTES_SCHEMA,
    DataSchemaError,
    normalize_daily_quotes,
    normalize_listed_info,
)

_SUFFIXES = (".parquet", ".csv.gz", ".csv", ".json", ".json.gz")


def _find_in_folder(folder: Path, stem: str) -> Path:
    for suffix in _SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{folder}: no {stem} file; looked for {', '.join(stem + s for s in _SUFFIXES)}"
    )


def find_source(source: str | Path, stem: str) -> Path:
    """``source`` itself when it is a file, else the ``stem`` file in that folder (the
    first of ``.parquet``, ``.csv.gz``, ``.csv``, ``.json``, ``.json.gz``)."""
    path = Path(source)
    if path.is_dir():
        return _find_in_folder(path, stem)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DataSchemaError(f"{path}: unknown file type; expected one of {', '.join(_SUFFIXES)}")


def _read_json_records(path: Path, key: str) -> list[dict[str, Any]]:
    """Records from the API's ``{key: [...]}`` envelope, or a bare list of records."""
    if path.name.lower().endswith(".gz"):
        import gzip

        with gzip.open(path, "rt", encoding="utf-8") as fh:
            payload = json.load(fh)
    else:
        with path.open(encoding="utf-8") as fh:
            payload = json.load(fh)
    if isinstance(payload, dict):
        if key not in payload:
            raise DataSchemaError(f"{path}: JSON object has no '{key}' list; keys {list(payload)}")
        payload = payload[key]
    if not isinstance(payload, list):
        raise DataSchemaError(f"{path}: '{key}' must be a list of records")
    return payload


def records_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame from API-shaped records, typing every value as it comes (no guessing on 100)."""
    if not records:
        return pl.DataFrame()
    return pl.DataFrame(records, infer_schema_length=None, strict=False)


def load_daily_quotes(source: str | Path) -> pl.DataFrame:
    """Daily quotes in the exact J-Quants schema, sorted by (Code, Date).

    ``source`` is a file or a folder holding ``daily_quotes.{parquet,csv.gz,csv,json}``.
    """
    path = find_source(source, "daily_quotes")
    suffix = _suffix(path)
    if suffix == ".parquet":
        raw = pl.read_parquet(path)
    elif suffix in (".csv", ".csv.gz"):
        overrides = {"Code": pl.Utf8, "Date": pl.Utf8, "TurnoverValue": pl.Utf8}
        raw = pl.read_csv(path, schema_overrides=overrides, infer_schema_length=10_000)
        if raw.height and "Date" in raw.columns:
            raw = raw.with_columns(pl.col("Date").str.to_date("%Y-%m-%d", strict=False))
            if raw["Date"].null_count():
                raw = pl.read_csv(path, schema_overrides=overrides)  # other date format
    else:
        raw = records_frame(_read_json_records(path, "daily_quotes"))
    if raw.is_empty() and not raw.columns:
        return pl.DataFrame(schema=DAILY_QUOTES_SCHEMA)
    return normalize_daily_quotes(raw, source=str(path))


def load_listed_info(source: str | Path) -> pl.DataFrame:
    """Listed issues (Code, CompanyName, Sector17Code, Sector33Code, ScaleCategory, ...)."""
    path = find_source(source, "listed_info")
    suffix = _suffix(path)
    if suffix == ".parquet":
        raw = pl.read_parquet(path)
    elif suffix in (".csv", ".csv.gz"):
        raw = pl.read_csv(path, infer_schema=False)
    else:
        raw = records_frame(_read_json_records(path, "info"))
    return normalize_listed_info(raw, source=str(path))
