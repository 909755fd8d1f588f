"""Checking a snapshot directory against its manifest: sizes, sha256 of every file, signature."""

from __future__ import annotations

import os
from pathlib import Path

from snapshots.errors import ChecksumMismatch, KindMismatch, SnapshotError
from snapshots.manifest import MANIFEST_NAME, Manifest, check_sizes, read_manifest
from snapshots.ndjson import file_sha256
from snapshots.signing import check_signature


def check_snapshot(
    path: str | os.PathLike[str],
    *,
    signing_key: bytes | None = None,
    hashes: bool = True,
    expect_kind: str | None = None,
) -> Manifest:
    """Raise the first `SnapshotError` found; return the manifest when sound.

    The signature is checked first (it is cheap and proves who wrote the digests), then sizes,
    then — when `hashes` — the sha256 of every file, which reads all the data.
    """
    root = Path(path)
    manifest = read_manifest(root)
    check_signature(manifest, signing_key, str(root / MANIFEST_NAME))
    if expect_kind is not None and manifest.kind != expect_kind:
        raise KindMismatch(f"{root}: a {manifest.kind} snapshot, expected {expect_kind}")
    check_sizes(root, manifest)
    if hashes:
        for name, digest in manifest.files.items():
            actual = file_sha256(root / name)
            if actual != digest:
                raise ChecksumMismatch(
                    f"{root / name}: sha256 {actual[:16]}…, the manifest says {digest[:16]}… "
                    "(corrupt or modified)"
                )
    return manifest


def verify_snapshot(path: str | os.PathLike[str], *, signing_key: bytes | None = None) -> list[str]:
    """Every problem found, as messages; `[]` when the snapshot is sound."""
    root = Path(path)
    problems: list[str] = []
    try:
        manifest = read_manifest(root)
    except SnapshotError as exc:
        return [str(exc)]
    try:
        check_signature(manifest, signing_key, str(root / MANIFEST_NAME))
    except SnapshotError as exc:
        problems.append(str(exc))
    for name in manifest.files:
        try:
            single = Manifest(
                kind=manifest.kind,
                version=manifest.version,
                created_at=manifest.created_at,
                schema_version=manifest.schema_version,
                counts={},
                files={name: manifest.files[name]},
                sizes={name: manifest.sizes[name]},
                sources={},
            )
            check_sizes(root, single)
            actual = file_sha256(root / name)
            if actual != manifest.files[name]:
                problems.append(
                    f"{root / name}: sha256 {actual[:16]}…, the manifest says "
                    f"{manifest.files[name][:16]}… (corrupt or modified)"
                )
        except SnapshotError as exc:
            problems.append(str(exc))
    known = set(manifest.files) | {MANIFEST_NAME}
    problems.extend(
        f"{p}: not listed in the manifest" for p in sorted(root.iterdir()) if p.name not in known
    )
    return problems
