"""`.tar` transport of a snapshot directory, and an unpacker that trusts nothing in the archive.

A snapshot is a flat directory of known files. Unpacking rejects anything else: absolute paths,
`..`, sub-directories, links, devices, unknown names, duplicates and members larger than a cap.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from snapshots.errors import UnsafeArchive
from snapshots.manifest import DATA_NAME, MANIFEST_NAME, read_manifest

ALLOWED = frozenset({MANIFEST_NAME, DATA_NAME})
DEFAULT_MAX_MEMBER = 64 << 30  # 64 GiB: far above a 10 M-profile snapshot, far below a disk
MANIFEST_MAX = 1 << 20


def pack(snapshot_dir: str | os.PathLike[str], out_tar: str | os.PathLike[str]) -> Path:
    """Write `manifest.json` first so a streaming receiver can check it before the data."""
    root = Path(snapshot_dir)
    manifest = read_manifest(root)
    out = Path(out_tar)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in [MANIFEST_NAME, *sorted(manifest.files)]:
            info = tar.gettarinfo(str(root / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with open(root / name, "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, out)
    return out


def unpack(
    tar_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER,
) -> Path:
    """Extract into `dest` (must not exist); on any rejection nothing is left behind."""
    target = Path(dest)
    if target.exists():
        raise UnsafeArchive(f"{target}: destination already exists")
    target.mkdir(parents=True)
    try:
        try:
            tar = tarfile.open(tar_path, "r:")  # noqa: SIM115 - closed by the `with` below
        except (tarfile.TarError, OSError) as exc:
            raise UnsafeArchive(f"{tar_path}: not a readable tar archive: {exc}") from None
        seen: set[str] = set()
        declared: dict[str, int] | None = None
        total = 0
        with tar:
            try:
                for m in tar:
                    _check_member(tar_path, m, seen, max_member_bytes)
                    # The manifest comes first (`pack` writes it first) and says how large each
                    # file is: a member is checked against it, and the total against the cap,
                    # before a byte of it is written — a 3.5 KB tar declaring a 2 GB sparse member
                    # wrote 1.96 GB before any size was checked (issue 14, defect 8).
                    if m.name != MANIFEST_NAME:
                        if MANIFEST_NAME not in seen:
                            raise UnsafeArchive(
                                f"{tar_path}: member {m.name!r} before {MANIFEST_NAME}; the "
                                "manifest must come first"
                            )
                        if declared is None:
                            declared = dict(read_manifest(target).sizes)
                        if declared.get(m.name) != m.size:
                            raise UnsafeArchive(
                                f"{tar_path}: member {m.name!r} is {m.size} bytes, the manifest "
                                f"declares {declared.get(m.name)}"
                            )
                        total += m.size
                        if total > max_member_bytes:
                            raise UnsafeArchive(
                                f"{tar_path}: members total over the limit of {max_member_bytes}"
                            )
                    src = tar.extractfile(m)
                    if src is None:
                        raise UnsafeArchive(f"{tar_path}: member {m.name!r} has no data")
                    with src, open(target / m.name, "xb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
            except (tarfile.TarError, EOFError) as exc:  # truncated or garbled after the start
                raise UnsafeArchive(f"{tar_path}: damaged tar archive: {exc}") from None
        if MANIFEST_NAME not in seen:
            raise UnsafeArchive(f"{tar_path}: no {MANIFEST_NAME} in the archive")
        # tarfile ends quietly at a garbled header after the first member: the manifest says what
        # must have arrived.
        missing = sorted(set(read_manifest(target).files) - seen)
        if missing:
            raise UnsafeArchive(f"{tar_path}: archive ends before {missing} (truncated?)")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _check_member(tar_path: object, m: tarfile.TarInfo, seen: set[str], cap: int) -> None:
    name = m.name
    where = f"{tar_path}: member {name!r}"
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchive(f"{where}: absolute path")
    if ".." in Path(name).parts:
        raise UnsafeArchive(f"{where}: path escapes the snapshot directory ('..')")
    if m.issym() or m.islnk():
        raise UnsafeArchive(f"{where}: links are not allowed (-> {m.linkname!r})")
    if m.issparse():  # `pack` never writes one; its size is not the bytes it carries
        raise UnsafeArchive(f"{where}: sparse members are refused")
    if not m.isreg():
        raise UnsafeArchive(f"{where}: not a regular file (devices, dirs, fifos are refused)")
    if "/" in name or name not in ALLOWED:
        raise UnsafeArchive(f"{where}: unknown file; a snapshot holds only {sorted(ALLOWED)}")
    if name in seen:
        raise UnsafeArchive(f"{where}: appears twice")
    limit = MANIFEST_MAX if name == MANIFEST_NAME else cap
    if m.size > limit:
        raise UnsafeArchive(f"{where}: {m.size} bytes exceeds the limit of {limit}")
    seen.add(name)
