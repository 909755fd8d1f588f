"""Blob snapshots (kind `rules`): a few named files stored in one LMDB db, same manifest."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb

from snapshots.errors import SnapshotError
from snapshots.manifest import Manifest
from snapshots.verify import check_snapshot
from snapshots.writer import write_snapshot

FILES_DB = "files"


def write_blob_snapshot(
    out_dir: str | os.PathLike[str],
    *,
    kind: str,
    files: dict[str, bytes],
    signing_key: bytes | None = None,
    sources: dict[str, str] | None = None,
) -> Manifest:
    pairs = sorted((name.encode(), data) for name, data in files.items())
    return write_snapshot(
        Path(out_dir),
        {FILES_DB: pairs},
        kind=kind,
        counts={"files": len(pairs)},
        sources=sources or {},
        signing_key=signing_key,
    )


def read_blob_snapshot(
    path: str | os.PathLike[str], *, signing_key: bytes | None = None
) -> tuple[Manifest, dict[str, bytes]]:
    """Verified in full (blobs are small): sizes, sha256 and, with a key, the signature."""
    root = Path(path)
    manifest = check_snapshot(root, signing_key=signing_key, hashes=True)
    try:
        env = lmdb.open(str(root), readonly=True, lock=False, max_dbs=8, create=False)
    except lmdb.Error as exc:
        raise SnapshotError(f"{root}: cannot open LMDB environment: {exc}") from None
    try:
        db = env.open_db(FILES_DB.encode(), create=False)
        with env.begin(db=db) as txn:
            files = {bytes(k).decode(): bytes(v) for k, v in txn.cursor()}
    except lmdb.Error as exc:
        raise SnapshotError(f"{root}: no {FILES_DB!r} database: {exc}") from None
    finally:
        env.close()
    return manifest, files
