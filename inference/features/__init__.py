"""Leak-free daily features and forward-return targets from J-Quants daily quotes.

How leak-freedom is built in, not hoped for:

* Per-stock features come from grouped kernels (:mod:`kernels.rolling`) over rows
  sorted by (code, date); every window looks back only within its own stock, so the
  value at date t is a function of that stock's rows dated <= t.
* Market, sector and cross-sectional features are computed per date from per-stock
  features *at that date* (and rolled over past dates only).
* Targets are the only forward-looking columns; no feature reads them.

Bad input follows the rules in :data:`BAD_INPUT_RULES` (also in docs/features.md):
each one either raises :class:`~inference.data.schema.DataSchemaError` naming the
field and rule, or repairs/drops rows with a :class:`DataQualityWarning` saying how many.
Prices are the split-adjusted ``Adjustment*`` columns, so a split day is not a return.
"""

from inference.features.catalog import (
    BAD_INPUT_RULES,
    CATALOG,
    FEATURE_COLUMNS,
    HORIZONS,
    TARGET_COLUMNS,
    UNKNOWN_SECTOR,
    WARMUP,
    Feature,
    feature_catalog_markdown,
)
from inference.features.cleaning import DataQualityWarning
from inference.features.pipeline import build_features

__all__ = [
    "BAD_INPUT_RULES",
    "CATALOG",
    "FEATURE_COLUMNS",
    "HORIZONS",
    "TARGET_COLUMNS",
    "UNKNOWN_SECTOR",
    "WARMUP",
    "DataQualityWarning",
    "Feature",
    "build_features",
    "feature_catalog_markdown",
]
