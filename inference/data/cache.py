"""A Parquet cache for API responses: one file per (endpoint, query).

Historical quotes do not change, and the J-Quants API is rate limited and slow to
page through; caching each fully paged response as Parquet makes a second research
run read local columnar files instead of the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import polars as pl


class ParquetCache:
    """Stores frames under ``root/<endpoint>/<hash of the query>.parquet``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, endpoint: str, params: dict[str, str]) -> Path:
        """The file a query is cached in; the query is hashed in canonical (sorted) form."""
        canonical = json.dumps(sorted(params.items()), separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:24]
        return self.root / endpoint.strip("/").replace("/", "_") / f"{digest}.parquet"

    def get(self, endpoint: str, params: dict[str, str]) -> pl.DataFrame | None:
        path = self.path_for(endpoint, params)
        return pl.read_parquet(path) if path.is_file() else None

    def put(self, endpoint: str, params: dict[str, str], frame: pl.DataFrame) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        path = self.path_for(endpoint, params)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        frame.write_parquet(tmp)
        tmp.replace(path)
        return path
