"""J-Quants data access: files, the HTTP API client and a Parquet cache, one schema.

Every source returns the J-Quants column names with exact types (see
:mod:`inference.data.schema`), so features, graph and model code are source-agnostic.
"""

from inference.data.cache import ParquetCache
from inference.data.client import JQuantsClient, JQuantsError
from inference.data.files import find_source, load_daily_quotes, load_listed_info
from inference.data.listings import Listing, has_listings, last_closes, read_listings
from inference.data.schema import (
    DAILY_QUOTE_COLUMNS,
    DAILY_QUOTES_SCHEMA,
    LISTED_INFO_COLUMNS,
    DataSchemaError,
    normalize_daily_quotes,
    normalize_listed_info,
)

__all__ = [
    "DAILY_QUOTES_SCHEMA",
    "DAILY_QUOTE_COLUMNS",
    "LISTED_INFO_COLUMNS",
    "DataSchemaError",
    "JQuantsClient",
    "JQuantsError",
    "Listing",
    "ParquetCache",
    "find_source",
    "has_listings",
    "last_closes",
    "load_daily_quotes",
    "load_listed_info",
    "normalize_daily_quotes",
    "normalize_listed_info",
    "read_listings",
]
