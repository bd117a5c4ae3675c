"""Feature pipeline on real data: schema, warm-up, targets, indicator values, bad input."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from inference.data import DataSchemaError
from inference.features import (
    BAD_INPUT_RULES,
    CATALOG,
    FEATURE_COLUMNS,
    HORIZONS,
    TARGET_COLUMNS,
    UNKNOWN_SECTOR,
    DataQualityWarning,
    build_features,
    feature_catalog_markdown,
)
from tests.inference.conftest import SPLIT_DAYS

MARKET_LEVEL = {f.name for f in CATALOG if f.name.startswith("mkt_")}


@pytest.fixture(scope="module")
def features(quotes_slice: pl.DataFrame, listed_info: pl.DataFrame) -> pl.DataFrame:
    return build_features(quotes_slice, listed_info)


def _with_row_index(frame: pl.DataFrame) -> pl.DataFrame:
    """Each row's position in its stock's history and the date's position in the market."""
    return frame.sort("code", "date").with_columns(
        pl.int_range(pl.len()).over("code").alias("row"),
        (pl.col("date").rank("dense") - 1).alias("market_row"),
    )


def test_schema_order_and_size(features: pl.DataFrame, quotes_slice: pl.DataFrame) -> None:
    assert len(FEATURE_COLUMNS) >= 100
    assert len(set(FEATURE_COLUMNS)) == len(FEATURE_COLUMNS)
    assert features.columns == ["date", "code", "sector33", *FEATURE_COLUMNS, *TARGET_COLUMNS]
    assert features.schema["date"] == pl.Date
    assert features.schema["code"] == pl.Utf8 and features.schema["sector33"] == pl.Utf8
    assert all(features.schema[c] == pl.Float32 for c in (*FEATURE_COLUMNS, *TARGET_COLUMNS))
    assert features.height == quotes_slice.height
    assert features.equals(features.sort("date", "code"))


def test_no_nan_or_inf_and_nulls_only_in_warmup(features: pl.DataFrame) -> None:
    values = features.select(*FEATURE_COLUMNS, *TARGET_COLUMNS)
    assert not values.select(pl.any_horizontal(pl.all().is_nan()).any()).item()
    assert not values.select(pl.any_horizontal(pl.all().is_infinite()).any()).item()
    indexed = _with_row_index(features)
    for feature in CATALOG:
        position = "market_row" if feature.name in MARKET_LEVEL else "row"
        after_warmup = indexed.filter(pl.col(position) >= feature.warmup)[feature.name]
        assert after_warmup.null_count() == 0, feature.name
        in_warmup = indexed.filter(pl.col(position) < feature.warmup)[feature.name]
        assert in_warmup.null_count() == in_warmup.len(), feature.name


def test_targets_are_forward_adjusted_returns(
    features: pl.DataFrame, quotes_slice: pl.DataFrame
) -> None:
    close = pl.col("AdjustmentClose")
    expected = quotes_slice.select(
        pl.col("Date").alias("date"),
        pl.col("Code").alias("code"),
        *[(close.shift(-h) / close - 1).over("Code").alias(f"want_{h}") for h in HORIZONS],
    )
    got = features.join(expected, on=["date", "code"])
    for h in HORIZONS:
        want = got[f"want_{h}"].cast(pl.Float32)
        assert got[f"target_{h}d"].null_count() == want.null_count() == 14 * h
        np.testing.assert_allclose(
            got[f"target_{h}d"].drop_nulls().to_numpy(), want.drop_nulls().to_numpy(), rtol=1e-6
        )


def test_split_day_is_not_a_return(features: pl.DataFrame, quotes_slice: pl.DataFrame) -> None:
    for code, day in SPLIT_DAYS:
        raw = quotes_slice.filter(pl.col("Code") == code, pl.col("Date") <= day).tail(2)
        raw_jump = raw["Close"][1] / raw["Close"][0] - 1
        adjusted = raw["AdjustmentClose"][1] / raw["AdjustmentClose"][0] - 1
        assert abs(raw_jump) > 0.4  # the raw price halves (or worse) on the split day
        row = features.filter(pl.col("code") == code, pl.col("date") == day)
        assert row["ret_1d"].item() == pytest.approx(adjusted, rel=1e-5)
        assert abs(row["ret_1d"].item()) < 0.15


def test_indicators_match_independent_polars_formulas(features: pl.DataFrame) -> None:
    """A few features recomputed with plain Polars rolling expressions per stock."""
    adj = features.sort("code", "date")
    c = (1 + pl.col("ret_1d").fill_null(0)).cum_prod().over("code")  # close up to a factor
    check = adj.with_columns(c.alias("c")).with_columns(
        (pl.col("c") / pl.col("c").rolling_mean(20) - 1).over("code").alias("sma_gap_20_pl"),
        pl.col("c").log().diff().rolling_std(20).over("code").alias("vol_20d_pl"),
        ((pl.col("ret_1d").rank() - 1) / (pl.col("ret_1d").count() - 1))
        .over("date")
        .alias("rank_ret_1d_pl"),
        pl.col("ret_1d").mean().over("date").alias("mkt_ret_1d_pl"),
    )
    for name in ("sma_gap_20", "vol_20d", "rank_ret_1d", "mkt_ret_1d"):
        both = check.select(name, f"{name}_pl").drop_nulls()
        assert both.height > 5000
        np.testing.assert_allclose(both[name], both[f"{name}_pl"], rtol=2e-3, atol=2e-6)


def test_beta_matches_least_squares(features: pl.DataFrame) -> None:
    stock = features.filter(pl.col("code") == "72030").sort("date")
    y = stock["ret_1d"].to_numpy()[-60:].astype(np.float64)
    x = stock["mkt_ret_1d"].to_numpy()[-60:].astype(np.float64)
    slope = np.polyfit(x, y, 1)[0]
    # mkt_ret_1d is stored as float32; the kernel used float64, so compare loosely.
    assert stock["beta_60"][-1] == pytest.approx(slope, rel=1e-3)
    assert 0.3 < stock["beta_60"][-1] < 3.0


def test_sector_relative_and_cross_section(features: pl.DataFrame) -> None:
    day = features.filter(pl.col("date") == date(2013, 6, 28))
    banks = day.filter(pl.col("sector33") == "7050")
    assert banks.height == 3
    assert banks["rel_sec_ret_1d"].sum() == pytest.approx(0.0, abs=1e-6)
    assert banks["sec_ret_1d"].unique().len() == 1
    assert day["z_ret_5d"].mean() == pytest.approx(0.0, abs=1e-6)
    assert day["z_ret_5d"].std() == pytest.approx(1.0, rel=1e-4)
    assert sorted(day["rank_ret_5d"].to_list()) == pytest.approx(
        [i / (day.height - 1) for i in range(day.height)]
    )


def test_lazy_input_and_thread_count_give_the_same_frame(
    quotes_slice: pl.DataFrame, listed_info: pl.DataFrame, features: pl.DataFrame
) -> None:
    assert build_features(quotes_slice.lazy(), listed_info, threads=1).equals(features)
    assert build_features(quotes_slice, listed_info, threads=5).equals(features)


# --- bad input ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(quotes_slice: pl.DataFrame) -> pl.DataFrame:
    return quotes_slice.filter(pl.col("Code").is_in(["72030", "72670", "83060"]))


def test_missing_close_rows_are_dropped_with_a_warning(
    small: pl.DataFrame, listed_info: pl.DataFrame
) -> None:
    halted_day = date(2013, 5, 15)
    broken = small.with_columns(
        pl.when((pl.col("Code") == "72030") & (pl.col("Date") == halted_day))
        .then(float("nan"))
        .otherwise(pl.col("AdjustmentClose"))
        .alias("AdjustmentClose")
    )
    with pytest.warns(DataQualityWarning, match="dropped 1 rows"):
        got = build_features(broken, listed_info)
    toyota = got.filter(pl.col("code") == "72030")
    assert halted_day not in toyota["date"].to_list()
    assert got.height == small.height - 1
    after = toyota.filter(pl.col("date") > halted_day).head(1)
    assert after["gap_days"].item() == 1.0  # one market date skipped
    prev_close = small.filter(pl.col("Code") == "72030", pl.col("Date") < halted_day)[
        "AdjustmentClose"
    ][-1]
    next_close = small.filter(pl.col("Code") == "72030", pl.col("Date") > halted_day)[
        "AdjustmentClose"
    ][0]
    assert after["ret_1d"].item() == pytest.approx(next_close / prev_close - 1, rel=1e-5)
    assert not got.select(pl.any_horizontal(pl.col(FEATURE_COLUMNS).is_nan()).any()).item()


def test_zero_volume_and_missing_open_are_handled(
    small: pl.DataFrame, listed_info: pl.DataFrame
) -> None:
    in_2013 = pl.col("Date").dt.year() == 2013
    broken = small.with_columns(
        pl.when(in_2013).then(0.0).otherwise(pl.col("AdjustmentVolume")).alias("AdjustmentVolume"),
        pl.when(in_2013 & (pl.col("Date").dt.day() == 10))
        .then(None)
        .otherwise(pl.col("AdjustmentOpen"))
        .alias("AdjustmentOpen"),
    )
    with pytest.warns(DataQualityWarning, match="AdjustmentOpen/High/Low"):
        got = build_features(broken, listed_info)
    late = got.filter(pl.col("date") >= date(2013, 3, 1))
    assert late["zero_volume_ratio_20"].unique().to_list() == [1.0]
    assert late["log_volume"].unique().to_list() == [0.0]
    values = late.select(FEATURE_COLUMNS)
    assert values.null_count().sum_horizontal().item() == 0
    assert not values.select(pl.any_horizontal(pl.all().is_nan()).any()).item()
    repaired = got.filter(pl.col("date") == date(2013, 6, 10))
    assert repaired["ret_intraday"].to_list() == [0.0] * 3  # open := close


def test_code_absent_from_listed_info(small: pl.DataFrame, listed_info: pl.DataFrame) -> None:
    listed = listed_info.filter(pl.col("Code") != "83060")
    with pytest.warns(DataQualityWarning, match="83060"):
        got = build_features(small, listed)
    bank = got.filter(pl.col("code") == "83060")
    assert bank["sector33"].unique().to_list() == [UNKNOWN_SECTOR]
    assert bank["rel_sec_ret_1d"].null_count() == bank.height
    assert bank["ret_1d"].null_count() == 1  # its own features are unaffected


def test_input_errors_name_the_field(small: pl.DataFrame, listed_info: pl.DataFrame) -> None:
    with pytest.raises(DataSchemaError, match="no rows"):
        build_features(small.filter(pl.col("Date") > date(2030, 1, 1)), listed_info)
    with pytest.raises(DataSchemaError, match="AdjustmentVolume"):
        build_features(small.drop("AdjustmentVolume"), listed_info)
    with pytest.raises(DataSchemaError, match=r"\(Code, Date\) must be unique"):
        build_features(pl.concat([small, small.head(1)]), listed_info)
    with pytest.raises(DataSchemaError, match="Sector33Code"):
        build_features(small, listed_info.drop("Sector33Code"))


def test_single_stock_cross_section_is_neutral(
    small: pl.DataFrame, listed_info: pl.DataFrame
) -> None:
    got = build_features(small.filter(pl.col("Code") == "72030"), listed_info)
    warm = got.filter(pl.col("ret_5d").is_not_null())
    assert warm["rank_ret_5d"].unique().to_list() == [0.5]
    assert warm["z_ret_5d"].unique().to_list() == [0.0]
    assert warm["rel_sec_ret_5d"].unique().to_list() == [0.0]


def test_catalog_documents_every_feature_and_docs_are_current() -> None:
    assert [f.name for f in CATALOG] == FEATURE_COLUMNS
    assert all(f.description and f.warmup >= 0 for f in CATALOG)
    text = feature_catalog_markdown()
    for name in (*FEATURE_COLUMNS, *TARGET_COLUMNS):
        assert f"| `{name}` |" in text
    assert all(case in text for case, _ in BAD_INPUT_RULES)
    docs = Path(__file__).resolve().parents[2] / "docs" / "features.md"
    assert docs.read_text(encoding="utf-8") == text, (
        "docs/features.md is stale: run `python -m inference.features > docs/features.md`"
    )


def test_four_digit_codes_are_normalised(small: pl.DataFrame, listed_info: pl.DataFrame) -> None:
    four = small.with_columns(pl.col("Code").str.slice(0, 4))
    got = build_features(four, listed_info)
    assert sorted(got["code"].unique().to_list()) == ["72030", "72670", "83060"]
    assert got["sector33"].null_count() == 0 and UNKNOWN_SECTOR not in got["sector33"]
