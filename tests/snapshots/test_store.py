"""The store of versions: install copies in, `active` is swapped atomically."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from snapshots import StoreError, read_manifest
from snapshots.config import ProfilesConfig
from snapshots.profiles_build import build_profiles
from snapshots.store import activate, active_path, active_version, install, list_versions
from tests.snapshots.kit import WriteNdjson, rec


def build(tmp_path: Path, write_ndjson: WriteNdjson, cfg: ProfilesConfig, name: str) -> Path:
    src = write_ndjson(f"{name}.ndjson", [rec("crm", {"cookie": name})])
    build_profiles([src], cfg, tmp_path / name)
    return tmp_path / name


def test_install_activate_and_swap(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> None:
    data = tmp_path / "data"
    assert active_path(data, "profiles") is None
    v1 = install(data, build(tmp_path, write_ndjson, profiles_config(), "one"))
    v2 = install(data, build(tmp_path, write_ndjson, profiles_config(), "two"))
    assert v1 != v2 and list_versions(data, "profiles") == sorted([v1, v2])
    assert install(data, tmp_path / "one") == v1  # idempotent
    activate(data, "profiles", v1)
    assert active_version(data, "profiles") == v1
    activate(data, "profiles", v2)
    path = active_path(data, "profiles")
    assert path is not None and read_manifest(path).version == v2
    assert os.readlink(data / "profiles" / "active") == f"versions/{v2}"
    assert sorted(p.name for p in (data / "profiles").iterdir()) == ["active", "versions"]
    with pytest.raises(StoreError, match="not installed"):
        activate(data, "profiles", "20990101T000000Z-deadbeef")


def test_readers_never_see_a_missing_active_link_during_swaps(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> None:
    data = tmp_path / "data"
    versions = [
        install(data, build(tmp_path, write_ndjson, profiles_config(), n)) for n in ("a", "b")
    ]
    activate(data, "profiles", versions[0])
    misses = 0
    reads = 0
    reading = threading.Event()
    stop = threading.Event()

    def read() -> None:
        nonlocal misses, reads
        reading.set()
        while not stop.is_set():
            if active_path(data, "profiles") is None:
                misses += 1
            reads += 1

    t = threading.Thread(target=read)
    t.start()
    # Swaps only once the reader runs: swaps it never overlapped would prove nothing.
    assert reading.wait(10), "the reader thread never started"
    swaps = 0
    while swaps < 300 or reads < 300:
        activate(data, "profiles", versions[swaps % 2])
        swaps += 1
    stop.set()
    t.join()
    assert misses == 0
    assert reads >= 300, f"the reader looked only {reads} times"
