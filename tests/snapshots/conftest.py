"""Fixtures for the snapshot tests: small exports and configs written to tmp_path, real LMDB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from snapshots.config import ProfilesConfig, load_config

WriteNdjson = Callable[[str, list[Any]], Path]


PROFILES_CONFIG: dict[str, Any] = {
    "kind": "profiles",
    "id_types": {
        "customer_id": {"priority": 1, "unique": True},
        "email_sha256": {"priority": 2, "unique": True},
        "cookie": {"priority": 3},
        "device_id": {"priority": 4},
    },
    "blocklist": {"email_sha256": ["junk"], "device_id": ["0000"]},
    "max_cluster_size": 16,
    "source_priority": ["crm", "web"],
    "merge": {
        "default": "newest",
        "fields": {"counters": "sum", "interests": "max", "attributes.tier": "source_priority"},
    },
}


def rec(
    source: str, ids: dict[str, Any], updated_at: str = "2026-11-20T10:00:00Z", **kw: Any
) -> dict[str, Any]:
    return {"source": source, "ids": ids, "updated_at": updated_at, **kw}


@pytest.fixture
def write_ndjson(tmp_path: Path) -> WriteNdjson:
    """Write records (dicts, or raw bytes for deliberately broken lines) as an NDJSON file."""

    def write(name: str, records: list[Any]) -> Path:
        path = tmp_path / name
        path.write_bytes(
            b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)
        )
        return path

    return write


@pytest.fixture
def profiles_config_path(tmp_path: Path) -> Callable[..., Path]:
    def make(**overrides: Any) -> Path:
        path = tmp_path / "profiles.yaml"
        path.write_text(yaml.safe_dump({**PROFILES_CONFIG, **overrides}))
        return path

    return make


@pytest.fixture
def profiles_config(profiles_config_path: Callable[..., Path]) -> Callable[..., ProfilesConfig]:
    def make(**overrides: Any) -> ProfilesConfig:
        return load_config(profiles_config_path(**overrides), ProfilesConfig)

    return make
