"""Small slices of the real J-Quants data shared by the inference tests.

Read once per session from the shared data folder (never copied into the repo);
tests that use them skip when the files are absent and fail under
TRADECORE_REQUIRE_DATA=1.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features
from inference.model.panel import FeaturePanel

#: 12 stocks in 4 Sector33 groups (banks, autos, electric appliances, pharma) plus
#: two with split days in the slice: INPEX 1:400 (2013-09-26) and 46810 1:2 (2013-12-26).
SLICE_CODES: tuple[str, ...] = (
    "83060", "83160", "84110",  # banks
    "72030", "72670", "72690",  # transport equipment
    "67580", "67520", "65030",  # electric appliances
    "45020", "45030", "45680",  # pharmaceuticals
    "16050", "46810",  # split days
)  # fmt: skip
SPLIT_DAYS: tuple[tuple[str, date], ...] = (
    ("16050", date(2013, 9, 26)),
    ("46810", date(2013, 12, 26)),
)
SLICE_START = date(2012, 1, 1)
SLICE_END = date(2013, 12, 31)


@pytest.fixture(scope="session")
def quotes_slice(all_quotes: pl.DataFrame) -> pl.DataFrame:
    """SLICE_CODES over 2012-2013: about 6.9 k real rows in the J-Quants schema."""
    return all_quotes.filter(
        pl.col("Code").is_in(SLICE_CODES),
        pl.col("Date").is_between(SLICE_START, SLICE_END),
    )


@pytest.fixture(scope="session")
def slice_features(all_quotes: pl.DataFrame, listed_info: pl.DataFrame) -> pl.DataFrame:
    """60 real stocks (every 8th code), 2008-12 to 2010-12."""
    codes = sorted(all_quotes.get_column("Code").unique().to_list())[::8][:60]
    quotes = all_quotes.filter(
        pl.col("Code").is_in(codes),
        pl.col("Date").is_between(date(2008, 12, 1), date(2010, 12, 30)),
    )
    return build_features(quotes, listed_info)


@pytest.fixture(scope="session")
def slice_panel(slice_features: pl.DataFrame) -> FeaturePanel:
    return FeaturePanel.from_frame(slice_features, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
