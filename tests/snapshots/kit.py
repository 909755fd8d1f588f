"""Helpers shared by the snapshot tests: the folder's one kit (tests/<folder>/kit.py), beside its
conftest.py of fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def damage_until_a_reader_crashes(snap: Path, seed: int, tries: int = 400) -> str:
    """Write random damage into `snap`'s data.mdb (past the meta pages) until reading every page
    crashes LMDB — about 3 in 100 damages do — and return the scan's message; the file stays
    damaged. Its digest in the manifest is left stale."""
    from random import Random

    import snapshots
    from snapshots.scan import scan

    rnd = Random(seed)
    original = (snap / "data.mdb").read_bytes()
    for _ in range(tries):
        raw = bytearray(original)
        for _ in range(rnd.randint(1, 400)):
            raw[8192 + rnd.randrange(len(raw) - 8192)] = rnd.randrange(256)
        (snap / "data.mdb").write_bytes(bytes(raw))
        try:
            scan(snap)
        except snapshots.SnapshotError as exc:
            if "crashed the reading process" in str(exc):
                return str(exc)
    raise AssertionError(
        f"no damage among {tries} crashed LMDB (expected about {tries * 3 // 100})"
    )
