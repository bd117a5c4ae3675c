"""Input cleaning: the documented bad-input rules applied before any feature is computed."""

from __future__ import annotations

import warnings

import polars as pl

from inference.data.schema import DataSchemaError, code_expr
from inference.features.catalog import UNKNOWN_SECTOR


class DataQualityWarning(UserWarning):
    """Input rows were dropped or repaired by a documented bad-input rule."""


_REQUIRED = (
    "Date",
    "Code",
    "AdjustmentOpen",
    "AdjustmentHigh",
    "AdjustmentLow",
    "AdjustmentClose",
    "AdjustmentVolume",
)


def _warn(message: str) -> None:
    warnings.warn(message, DataQualityWarning, stacklevel=4)


def _bad_price(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | ~c.is_finite() | (c <= 0)


def clean_quotes(quotes: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Select the adjusted OHLCV, apply the bad-input rules, sort by (code, date)."""
    lf = quotes.lazy()
    names = lf.collect_schema().names()
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise DataSchemaError(f"quotes: required column(s) {missing} missing")
    turnover_parts: list[pl.Expr] = []
    if "TurnoverValue" in names:
        turnover_parts.append(pl.col("TurnoverValue").cast(pl.Float64))
    if "Close" in names and "Volume" in names:
        turnover_parts.append(pl.col("Close").cast(pl.Float64) * pl.col("Volume").cast(pl.Float64))
    turnover_parts.append(pl.col("AdjustmentClose") * pl.col("AdjustmentVolume"))
    ok = [pl.when(t.is_finite() & (t >= 0)).then(t) for t in turnover_parts]
    date = pl.col("Date")
    schema = lf.collect_schema()
    if schema["Date"] != pl.Date:
        date = (
            date.cast(pl.Utf8).str.to_date(strict=False)
            if schema["Date"] == pl.Utf8
            else (date.cast(pl.Date))
        )
    code = pl.col("Code")
    if schema["Code"] != pl.Utf8 or (
        lf.select((code.str.len_bytes() != 5).any()).collect().item()
    ):  # only non-standard codes pay for the string normalisation
        code = code_expr("Code")
    df = (
        lf.select(
            date.alias("date"),
            code.alias("code"),
            *[
                pl.col(f"Adjustment{n}").cast(pl.Float64).alias(n.lower())
                for n in ("Open", "High", "Low", "Close", "Volume")
            ],
            pl.coalesce(ok).alias("turnover"),
        )
        .sort("code", "date")
        .collect()
    )
    if df.height == 0:
        raise DataSchemaError("quotes: no rows (empty input or empty date range)")
    if df["date"].null_count() or df["code"].null_count():
        raise DataSchemaError("quotes: fields 'Date' and 'Code' must not be null")
    same = (df["code"] == df["code"].shift(1)) & (df["date"] == df["date"].shift(1))
    if same.any():
        row = df.filter(same).row(0, named=True)
        raise DataSchemaError(
            f"quotes: (Code, Date) must be unique; Code={row['code']} Date={row['date']} repeats"
        )
    bad_close = df.select(_bad_price("close")).to_series()
    if bad_close.any():
        first = df.filter(bad_close).row(0, named=True)
        _warn(
            f"quotes: dropped {int(bad_close.sum())} rows whose AdjustmentClose is missing, NaN "
            f"or <= 0 (e.g. Code={first['code']} Date={first['date']})"
        )
        df = df.filter(~bad_close)
        if df.height == 0:
            raise DataSchemaError("quotes: no row has a valid AdjustmentClose")
    repaired = df.select(
        pl.any_horizontal(_bad_price("open"), _bad_price("high"), _bad_price("low")).sum()
    ).item()
    inverted = df.select(
        ((pl.col("high") < pl.max_horizontal("open", "close", "low"))
         | (pl.col("low") > pl.min_horizontal("open", "close", "high"))).sum()
    ).item()  # fmt: skip
    if repaired or inverted:
        _warn(
            f"quotes: repaired {repaired} rows with missing/non-positive AdjustmentOpen/High/Low "
            f"(set to AdjustmentClose) and {inverted} rows whose High/Low did not contain "
            "Open/Close (widened)"
        )
        c = pl.col("close")
        df = df.with_columns(
            *[
                pl.when(_bad_price(n)).then(c).otherwise(pl.col(n)).alias(n)
                for n in ("open", "high", "low")
            ]
        ).with_columns(
            pl.max_horizontal("open", "high", "low", "close").alias("high"),
            pl.min_horizontal("open", "high", "low", "close").alias("low"),
        )
    v = pl.col("volume")
    bad_volume = df.select((v.is_null() | ~v.is_finite() | (v < 0)).sum()).item()
    if bad_volume:
        _warn(f"quotes: set AdjustmentVolume to 0 on {bad_volume} rows where it was missing or < 0")
        df = df.with_columns(
            pl.when(v.is_finite() & (v >= 0)).then(v).otherwise(0.0).alias("volume")
        )
    return df.with_columns(pl.col("turnover").fill_null(0.0))


def sector_codes(codes: pl.Series, listed: pl.DataFrame) -> pl.Series:
    """Sector33 code per row; codes unknown to listed info get UNKNOWN_SECTOR (and a warning)."""
    if "Code" not in listed.columns or "Sector33Code" not in listed.columns:
        raise DataSchemaError("listed: columns 'Code' and 'Sector33Code' are required")
    table = listed.select(
        pl.col("Code").cast(pl.Utf8), pl.col("Sector33Code").cast(pl.Utf8)
    ).unique(subset="Code", keep="last")
    frame = pl.DataFrame({"Code": codes}).join(table, on="Code", how="left", maintain_order="left")
    sector = frame["Sector33Code"]
    if sector.null_count():
        unknown = frame.filter(pl.col("Sector33Code").is_null())["Code"].unique().sort().to_list()
        _warn(
            f"listed: {len(unknown)} code(s) absent from listed_info get sector33="
            f"'{UNKNOWN_SECTOR}' and null sector features: {unknown[:10]}"
        )
    return sector.fill_null(UNKNOWN_SECTOR).alias("sector33")
