"""The store of versions on disk (docs/CONTRACTS.md):

    DATA/<kind>/versions/<version>/   one snapshot directory
    DATA/<kind>/active -> versions/<version>

`active` is replaced by renaming a temp symlink over it, which POSIX makes atomic: a reader sees
the old or the new target, never neither. Garbage collection and rollback come later.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from snapshots.errors import StoreError
from snapshots.manifest import KINDS, read_manifest
from snapshots.verify import check_snapshot


def _kind_dir(data_dir: str | os.PathLike[str], kind: str) -> Path:
    if kind not in KINDS:
        raise StoreError(f"unknown snapshot kind {kind!r}; expected one of {KINDS}")
    return Path(data_dir) / kind


def install(
    data_dir: str | os.PathLike[str],
    snapshot_dir: str | os.PathLike[str],
    *,
    signing_key: bytes | None = None,
) -> str:
    """Verify a built snapshot and copy it in (copy to a temp dir, then rename); return its
    version. Installing a version already present is a no-op."""
    src = Path(snapshot_dir)
    manifest = check_snapshot(src, signing_key=signing_key, hashes=True)
    versions = _kind_dir(data_dir, manifest.kind) / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / manifest.version
    if final.exists():
        return manifest.version
    tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.tmp-", dir=versions))
    try:
        for name in [*manifest.files, "manifest.json"]:
            shutil.copyfile(src / name, tmp / name)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest.version


def activate(data_dir: str | os.PathLike[str], kind: str, version: str) -> Path:
    kdir = _kind_dir(data_dir, kind)
    target = kdir / "versions" / version
    if not (target / "manifest.json").is_file():
        raise StoreError(f"{target}: version {version} of {kind} is not installed")
    tmp_link = kdir / f".active.tmp-{os.getpid()}"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    # Relative target: the data dir can be moved or mounted elsewhere.
    os.symlink(os.path.join("versions", version), tmp_link)
    os.replace(tmp_link, kdir / "active")
    return target


def active_path(data_dir: str | os.PathLike[str], kind: str) -> Path | None:
    link = _kind_dir(data_dir, kind) / "active"
    if not link.is_symlink():
        return None
    path = link.parent / os.readlink(link)
    return path if path.is_dir() else None


def active_version(data_dir: str | os.PathLike[str], kind: str) -> str | None:
    path = active_path(data_dir, kind)
    return None if path is None else read_manifest(path).version


def list_versions(data_dir: str | os.PathLike[str], kind: str) -> list[str]:
    versions = _kind_dir(data_dir, kind) / "versions"
    if not versions.is_dir():
        return []
    return sorted(p.name for p in versions.iterdir() if not p.name.startswith("."))
