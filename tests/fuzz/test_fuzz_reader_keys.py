"""Regressions found by the snapshot fuzzers: readers facing ids LMDB cannot store and values
that do not decode."""

from __future__ import annotations

from pathlib import Path

import pytest

import snapshots
from tests.fuzz.test_fuzz_snapshots import damaged_copy, overwrite, remanifest, snapshot_of
from tests.provekit import prove_data

__all__ = ["prove_data"]


def test_lookups_with_keys_lmdb_cannot_hold_find_nothing(prove_data: Path) -> None:
    """Regression: an empty id or one over LMDB's 511-byte key limit raised BadValsizeError (a
    500 on `GET /v1/profiles/%0A`); such an id is simply unknown."""
    long = "x" * 600
    with snapshots.open_profiles(snapshot_of(prove_data, "profiles")) as profiles:
        assert profiles.get("") is None
        assert profiles.get(long) is None
        assert profiles.get("\ud800") is None
        assert profiles.resolve("cookie", long) is None
        assert profiles.lookup({"cookie": long, "customer_id": ""}) is None
    with snapshots.open_content(snapshot_of(prove_data, "content")) as content:
        assert content.get("") is None
        assert content.get(long) is None
        assert content.ids("tag", long) == frozenset()


def test_a_corrupt_profile_value_is_a_corrupt_record(prove_data: Path) -> None:
    """Regression: a value that does not decode escaped as msgspec.DecodeError."""
    with damaged_copy(snapshot_of(prove_data, "profiles")) as path:
        keys = overwrite(path, "profiles", [(0, b"\xc1garbage")])
        remanifest(path)
        with snapshots.open_profiles(path) as reader, pytest.raises(snapshots.CorruptRecord):
            reader.get(keys[0].decode())
