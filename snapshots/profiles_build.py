"""Profile builder: NDJSON/Parquet exports → stitched, merged profiles + alias index in LMDB.

The work is done by the embedded engine (`snapshots.engine`, DuckDB); Spark runs the same
stitching and merge at cluster scale (`snapshots.spark_job`). This module keeps the builder's
public name where callers import it.
"""

from __future__ import annotations

from snapshots.engine import (
    ALIAS_DB,
    DEFAULT_MEMORY_LIMIT,
    PROFILES_DB,
    EngineOptions,
    build_profiles,
)

__all__ = ["ALIAS_DB", "DEFAULT_MEMORY_LIMIT", "PROFILES_DB", "EngineOptions", "build_profiles"]
