"""Fixtures for the snapshot tests: small exports and configs written to tmp_path, real LMDB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from snapshots.config import ProfilesConfig, load_config
from tests.snapshots.kit import PROFILES_CONFIG, WriteNdjson


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
