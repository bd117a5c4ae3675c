"""J-Quants column names and the one normalisation every source goes through.

The API, CSV exports, Parquet caches and JSON dumps all disagree slightly on types
(codes read as integers, dates as strings, empty turnover as ""), so every reader
ends in :func:`normalize_daily_quotes` / :func:`normalize_listed_info`: downstream
code (features, graph, model) can then rely on one exact schema.
"""

from __future__ import annotations

import re

import polars as pl

PRICE_COLUMNS: tuple[str, ...] = (
    "Open",
    "High",
    "Low",
    "Close",
    "Volume",
    "TurnoverValue",
    "AdjustmentFactor",
    "AdjustmentOpen",
    "AdjustmentHigh",
    "AdjustmentLow",
    "AdjustmentClose",
    "AdjustmentVolume",
)
DAILY_QUOTE_COLUMNS: tuple[str, ...] = ("Date", "Code", *PRICE_COLUMNS)
DAILY_QUOTES_SCHEMA: dict[str, type[pl.DataType]] = {
    "Date": pl.Date,
    "Code": pl.Utf8,
    **dict.fromkeys(PRICE_COLUMNS, pl.Float64),
}

LISTED_INFO_COLUMNS: tuple[str, ...] = (
    "Date",
    "Code",
    "CompanyName",
    "CompanyNameEnglish",
    "Sector17Code",
    "Sector17CodeName",
    "Sector33Code",
    "Sector33CodeName",
    "ScaleCategory",
    "MarketCode",
    "MarketCodeName",
)
#: Columns a listed-info source must carry; the others are filled with nulls if absent.
LISTED_INFO_REQUIRED: tuple[str, ...] = ("Code", "Sector33Code")

#: Columns a daily-quotes source must carry. Raw OHLC may be absent from some exports;
#: features only read the split-adjusted columns, but the schema is kept whole.
DAILY_QUOTES_REQUIRED: tuple[str, ...] = ("Date", "Code", "AdjustmentClose")


class DataSchemaError(ValueError):
    """A source does not have the J-Quants shape; the message names the field and rule."""


CODE_RULE = (
    "a TSE code: 4 characters, the 1st and 3rd digits, the 2nd and 4th digits or "
    "capital letters other than B E I O Q V Z (7203, 130A), optionally followed by "
    "J-Quants' 5th digit (72030); a 4-character code gets the trailing 0"
)
"""The rule every code meets, as error messages state it."""

#: TSE securities codes: digits, and since January 2024 letters in the 2nd and 4th
#: places (``130A``); J-Quants appends a 5th digit, ``0`` for a common stock.
_TICKER = r"[0-9][0-9ACDFGHJKLMNPRSTUWXY][0-9][0-9ACDFGHJKLMNPRSTUWXY]"
JQUANTS_CODE = rf"^{_TICKER}[0-9]$"


def normal_code(code: str) -> str | None:
    """The 5-character J-Quants code of ``code``, or None when it breaks :data:`CODE_RULE`.

    The trading side spells a stock by its 4-character TSE code (``7203``), J-Quants by
    that code plus a 5th digit, ``0`` for a common stock (``72030``): both are accepted
    wherever a code is read (files, ``--codes``, the market-data stream), and this is
    the one place that says how; :func:`code_expr` is the same rule on a column.
    """
    code = code.strip()
    if len(code) == 4:
        code += "0"
    return code if re.fullmatch(JQUANTS_CODE, code) else None


def code_expr(column: str = "Code") -> pl.Expr:
    """:func:`normal_code` on a column: a 4-character TSE code gets the trailing "0".

    Anything else (other letters, other lengths) is left as it was, for
    :func:`_check_codes` to name in its error.
    """
    code = pl.col(column).cast(pl.Utf8).str.strip_chars()
    ticker = code.str.contains(rf"^{_TICKER}$")
    return pl.when(ticker).then(code + "0").otherwise(code).alias(column)


def _date_expr(dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Date:
        return pl.col("Date")
    if isinstance(dtype, pl.Datetime):
        return pl.col("Date").dt.date()
    text = pl.col("Date").cast(pl.Utf8).str.replace_all("-", "")
    return text.str.strptime(pl.Date, "%Y%m%d", strict=True).alias("Date")


def _check_codes(df: pl.DataFrame, source: str) -> None:
    bad = df.filter(pl.col("Code").is_null() | ~pl.col("Code").str.contains(JQUANTS_CODE))
    if bad.height:
        raise DataSchemaError(
            f"{source}: field 'Code' must be {CODE_RULE}; "
            f"got {bad['Code'].unique(maintain_order=True).head(3).to_list()!r} "
            f"({bad.height} rows)"
        )


def normalize_daily_quotes(df: pl.DataFrame, source: str = "daily_quotes") -> pl.DataFrame:
    """Cast to :data:`DAILY_QUOTES_SCHEMA`, NaN -> null, reject duplicates, sort (Code, Date).

    NaN in a price column is a missing value in every J-Quants source we know (the API
    sends ``null``; pandas exports write ``NaN``), so it is read as null here and the
    feature pipeline applies its documented missing-price rule to it.
    """
    missing = [c for c in DAILY_QUOTES_REQUIRED if c not in df.columns]
    if missing:
        raise DataSchemaError(
            f"{source}: required field(s) {missing} missing; columns are {df.columns}"
        )
    try:
        exprs: list[pl.Expr] = [_date_expr(df.schema["Date"]), code_expr()]
    except Exception as exc:  # pragma: no cover - re-raised with the field named
        raise DataSchemaError(f"{source}: field 'Date': {exc}") from exc
    for name in PRICE_COLUMNS:
        if name in df.columns:
            col = pl.col(name)
            if df.schema[name] == pl.Utf8:
                col = pl.when(col.str.strip_chars() == "").then(None).otherwise(col)
            col = col.cast(pl.Float64, strict=False)
            exprs.append(pl.when(col.is_nan()).then(None).otherwise(col).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(name))
    try:
        out = df.select(exprs)
    except pl.exceptions.ComputeError as exc:
        raise DataSchemaError(f"{source}: field 'Date' must be YYYY-MM-DD: {exc}") from exc
    _check_codes(out, source)
    if out["Date"].null_count():
        raise DataSchemaError(f"{source}: field 'Date' has {out['Date'].null_count()} nulls")
    dup = out.filter(pl.struct("Code", "Date").is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        raise DataSchemaError(
            f"{source}: (Code, Date) must be unique; {dup.height} duplicated rows, "
            f"e.g. Code={first['Code']} Date={first['Date']}"
        )
    return out.sort("Code", "Date")


def normalize_listed_info(df: pl.DataFrame, source: str = "listed_info") -> pl.DataFrame:
    """Cast listed info to strings with a 5-digit Code; one row per Code (latest Date)."""
    missing = [c for c in LISTED_INFO_REQUIRED if c not in df.columns]
    if missing:
        raise DataSchemaError(
            f"{source}: required field(s) {missing} missing; columns are {df.columns}"
        )
    exprs: list[pl.Expr] = []
    for name in LISTED_INFO_COLUMNS:
        if name == "Date":
            if name in df.columns:
                exprs.append(_date_expr(df.schema["Date"]))
            else:
                exprs.append(pl.lit(None, dtype=pl.Date).alias("Date"))
        elif name == "Code":
            exprs.append(code_expr())
        elif name in df.columns:
            exprs.append(pl.col(name).cast(pl.Utf8))
        else:
            exprs.append(pl.lit(None, dtype=pl.Utf8).alias(name))
    extra = [c for c in df.columns if c not in LISTED_INFO_COLUMNS]
    out = df.select(*exprs, *[pl.col(c) for c in extra])
    _check_codes(out, source)
    # Several snapshots of the same issue: keep the newest, since sector codes are a
    # classification, not a price, and the latest one is what a user looks up.
    return (
        out.sort("Code", "Date", nulls_last=False)
        .unique(subset="Code", keep="last", maintain_order=True)
        .sort("Code")
    )
