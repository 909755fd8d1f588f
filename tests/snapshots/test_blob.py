"""Blob snapshots carry the rules file (kind `rules`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshots import ChecksumMismatch, SignatureMissing, read_blob_snapshot, write_blob_snapshot


def test_round_trip_and_tamper(tmp_path: Path) -> None:
    files = {"rules.yaml": b"segments: {}\n", "notes.txt": "é".encode()}
    m = write_blob_snapshot(
        tmp_path / "r", kind="rules", files=files, signing_key=b"k", sources={"rules.yaml": "abc"}
    )
    assert m.kind == "rules" and m.counts == {"files": 2}
    manifest, got = read_blob_snapshot(tmp_path / "r", signing_key=b"k")
    assert got == files and manifest.version == m.version
    unsigned = write_blob_snapshot(tmp_path / "u", kind="rules", files=files)
    assert unsigned.signature is None
    with pytest.raises(SignatureMissing):
        read_blob_snapshot(tmp_path / "u", signing_key=b"k")
    data = tmp_path / "r" / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch):
        read_blob_snapshot(tmp_path / "r")
