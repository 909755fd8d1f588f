"""Corrupt, tampered, truncated, unsigned, wrongly signed or mislabelled snapshots are refused
by `verify_snapshot` and by the readers, with a message naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from snapshots import (
    ChecksumMismatch,
    KindMismatch,
    ManifestInvalid,
    MissingFile,
    SignatureInvalid,
    SignatureMissing,
    SizeMismatch,
    open_content,
    open_profiles,
    verify_snapshot,
)
from snapshots.config import ProfilesConfig
from snapshots.profiles_build import build_profiles
from tests.snapshots.kit import WriteNdjson, rec

KEY = b"s3cret"


@pytest.fixture
def snap(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> Path:
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": f"k{i}"}) for i in range(50)])
    build_profiles([src], profiles_config(), tmp_path / "snap", signing_key=KEY)
    return tmp_path / "snap"


def test_a_sound_signed_snapshot_verifies(snap: Path) -> None:
    assert verify_snapshot(snap, signing_key=KEY) == []
    assert verify_snapshot(snap) == []  # without a key the signature is not checked
    with open_profiles(snap, signing_key=KEY) as r:
        assert r.manifest.signature is not None and r.manifest.signature.alg == "hmac-sha256"


def test_a_flipped_byte_fails_the_checksum(snap: Path) -> None:
    data = snap / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    problems = verify_snapshot(snap, signing_key=KEY)
    assert len(problems) == 1 and "data.mdb" in problems[0] and "sha256" in problems[0]
    with pytest.raises(ChecksumMismatch, match=r"data\.mdb"):
        open_profiles(snap)
    open_profiles(snap, verify=False).close()  # sizes match: only hashing can tell


def test_a_tampered_manifest_fails_the_signature(snap: Path) -> None:
    path = snap / "manifest.json"
    m = json.loads(path.read_text())
    m["counts"]["profiles"] = 1
    path.write_text(json.dumps(m))
    assert any("tampered" in p for p in verify_snapshot(snap, signing_key=KEY))
    with pytest.raises(SignatureInvalid, match=r"manifest\.json"):
        open_profiles(snap, signing_key=KEY, verify=False)


def test_another_key_and_no_signature_are_refused(
    tmp_path: Path,
    snap: Path,
    write_ndjson: WriteNdjson,
    profiles_config: Callable[..., ProfilesConfig],
) -> None:
    with pytest.raises(SignatureInvalid, match="signed with key"):
        open_profiles(snap, signing_key=b"other")
    src = write_ndjson("u.ndjson", [rec("crm", {"cookie": "k"})])
    build_profiles([src], profiles_config(), tmp_path / "unsigned")
    with pytest.raises(SignatureMissing, match="unsigned"):
        open_profiles(tmp_path / "unsigned", signing_key=KEY)


def test_missing_truncated_and_extra_files(snap: Path) -> None:
    data = snap / "data.mdb"
    data.write_bytes(data.read_bytes()[:4096])
    with pytest.raises(SizeMismatch, match="truncated"):
        open_profiles(snap, verify=False)
    (snap / "evil.sh").write_text("#!/bin/sh")
    problems = verify_snapshot(snap)
    assert any("evil.sh: not listed" in p for p in problems)
    data.unlink()
    with pytest.raises(MissingFile, match=r"data\.mdb"):
        open_profiles(snap, verify=False)


def test_garbage_manifest_and_wrong_kind(snap: Path) -> None:
    with pytest.raises(KindMismatch, match="profiles snapshot, expected content"):
        open_content(snap)
    (snap / "manifest.json").write_text('{"kind": "profiles"}')
    with pytest.raises(ManifestInvalid, match=r"manifest\.json"):
        open_profiles(snap)
    assert "missing required field" in verify_snapshot(snap)[0]
