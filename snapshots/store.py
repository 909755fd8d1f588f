"""The store of versions on disk (docs/CONTRACTS.md, docs/snapshots.md § Lifecycle):

    DATA/<kind>/versions/<version>/      one verified snapshot directory (immutable)
    DATA/<kind>/versions/.staging/<id>/  uploads being received, unpacked and checked
    DATA/<kind>/versions/.history        JSON list of activations, oldest first
    DATA/<kind>/versions/.lock           flock'ed while a push/activate/rollback of this kind runs
    DATA/<kind>/active -> versions/<version>

Crash safety rests on three renames, each followed by an fsync of the directory that holds it:
a version directory appears in `versions/` only once every file in it is on disk; `active` is
replaced by renaming a temp symlink over it (POSIX: a reader sees the old or the new target, never
neither); `.history` is replaced the same way. A crash between two of them leaves `active` on the
old or the new complete version; leftovers (staging, temp dirs) are swept by `clean_staging`. A
crash between the swap and the history write leaves the active version unrecorded: the next
`activate` records it before GC reads the history, and `rollback` counts it as the current one.
Dot-names inside `versions/` are never versions, so `list_versions` and readers ignore them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from snapshots.errors import StoreError
from snapshots.manifest import KINDS, check_version, read_manifest, valid_version
from snapshots.verify import check_snapshot

DEFAULT_KEEP = 3  # versions kept besides the active one, for rollback
STAGING = ".staging"
HISTORY = ".history"
LOCK = ".lock"


class StoreBusy(StoreError):
    """Another push, activation or rollback of the same kind holds the kind's lock."""


class NoPrevious(StoreError):
    """Rollback asked for, but no earlier version is left on disk."""


class UnknownVersion(StoreError):
    """The requested version is not installed."""


class Activation(msgspec.Struct, frozen=True):
    version: str
    at: float


_history_decoder = msgspec.json.Decoder(list[Activation])


def _kind_dir(data_dir: str | os.PathLike[str], kind: str) -> Path:
    if kind not in KINDS:
        raise StoreError(f"unknown snapshot kind {kind!r}; expected one of {KINDS}")
    return Path(data_dir) / kind


def versions_dir(data_dir: str | os.PathLike[str], kind: str) -> Path:
    return _kind_dir(data_dir, kind) / "versions"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable: the new name survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file of a flat snapshot directory, then the directory itself."""
    for p in path.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(path)


@contextlib.contextmanager
def locked(data_dir: str | os.PathLike[str], kind: str) -> Iterator[None]:
    """Hold the kind's lock or raise `StoreBusy` at once (never wait: a push is refused, 409).

    `flock` locks belong to the open file description, so they exclude other worker processes and
    other requests in this process alike, and the kernel drops them when a process dies: a SIGKILL
    mid-push never leaves the kind locked.
    """
    vdir = versions_dir(data_dir, kind)
    vdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(vdir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreBusy(
                f"another push, activation or rollback of {kind} is in progress; retry when "
                "it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


def new_staging(data_dir: str | os.PathLike[str], kind: str, prefix: str = "upload-") -> Path:
    """A fresh directory for one upload, on the same filesystem as `versions/` (rename works)."""
    root = versions_dir(data_dir, kind) / STAGING
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def clean_staging(data_dir: str | os.PathLike[str], kind: str) -> int:
    """Remove leftovers of interrupted uploads and installs; call with the kind's lock held."""
    vdir = versions_dir(data_dir, kind)
    removed = 0
    staging = vdir / STAGING
    if staging.is_dir():
        for p in staging.iterdir():
            _remove(p)
            removed += 1
    if vdir.is_dir():
        for p in vdir.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name:
                _remove(p)
                removed += 1
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


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
    versions = versions_dir(data_dir, manifest.kind)
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / manifest.version
    if final.exists():
        return manifest.version
    tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.tmp-", dir=versions))
    try:
        for name in [*manifest.files, "manifest.json"]:
            shutil.copyfile(src / name, tmp / name)
        fsync_tree(tmp)
        os.rename(tmp, final)
        fsync_dir(versions)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest.version


def install_staged(data_dir: str | os.PathLike[str], kind: str, staged: Path, version: str) -> bool:
    """Move an already verified staging directory into `versions/`; False if it was present."""
    check_version(version)
    versions = versions_dir(data_dir, kind)
    final = versions / version
    if final.exists():
        shutil.rmtree(staged, ignore_errors=True)
        return False
    fsync_tree(staged)
    os.rename(staged, final)
    fsync_dir(versions)
    return True


def _swap_active(kdir: Path, version: str) -> None:
    tmp_link = kdir / f".active.tmp-{os.getpid()}"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    # Relative target: the data dir can be moved or mounted elsewhere.
    os.symlink(os.path.join("versions", version), tmp_link)
    os.replace(tmp_link, kdir / "active")
    fsync_dir(kdir)


def _swapped_at(kdir: Path) -> float | None:
    """When `active` last moved: the link is created by each swap, so its own mtime says."""
    try:
        return os.lstat(kdir / "active").st_mtime
    except FileNotFoundError:
        return None


def activate(
    data_dir: str | os.PathLike[str], kind: str, version: str, *, keep: int | None = None
) -> Path:
    """Point `active` at an installed version, record it in the history and, when `keep` is
    given, garbage-collect all but the active and `keep` previous versions."""
    kdir = _kind_dir(data_dir, kind)
    check_version(version)
    target = kdir / "versions" / version
    if not (target / "manifest.json").is_file():
        raise UnknownVersion(f"{target}: version {version} of {kind} is not installed")
    previous = active_version(data_dir, kind)
    previous_at = _swapped_at(kdir) if previous is not None else None
    _swap_active(kdir, version)
    history = read_history(data_dir, kind)
    if (
        previous is not None
        and previous_at is not None
        and previous != version
        and (not history or history[-1].version != previous)
    ):
        # A crash between an earlier swap and its history write left `previous` active but
        # unrecorded. Record it before GC reads the history: otherwise GC counts the versions
        # recorded before it as the most recent and deletes `previous` — the version active just
        # before this one, which rollback must return to (a SIGKILL mid-push under load, issue 18).
        history.append(Activation(version=previous, at=previous_at))
    history.append(Activation(version=version, at=time.time()))
    _write_history(data_dir, kind, history[-100:])
    if keep is not None:
        gc(data_dir, kind, keep=keep)
    return target


def rollback(data_dir: str | os.PathLike[str], kind: str) -> tuple[str, str | None]:
    """Re-activate the version active before the current one; return (version, rolled back from).

    History is a stack of activations: rolling back pops the current one, so a second rollback
    goes one further back. Versions already garbage-collected are skipped.
    """
    kdir = _kind_dir(data_dir, kind)
    current = active_version(data_dir, kind)
    history = read_history(data_dir, kind)
    names = [a.version for a in history]
    # A crash between the symlink swap and the history write leaves the active version out of
    # the history: then the last recorded one is the previous.
    end = len(names) - 1 - names[::-1].index(current) if current in names else len(names)
    for i in range(end - 1, -1, -1):
        candidate = names[i]
        if not valid_version(candidate):
            continue  # the history is a file on disk: a name outside the grammar is never used
        if candidate != current and (kdir / "versions" / candidate / "manifest.json").is_file():
            _swap_active(kdir, candidate)
            _write_history(data_dir, kind, history[: i + 1])
            return candidate, current
    raise NoPrevious(
        f"no earlier {kind} version is kept to roll back to (active: {current}); "
        "push or activate a version instead"
    )


def read_history(data_dir: str | os.PathLike[str], kind: str) -> list[Activation]:
    path = versions_dir(data_dir, kind) / HISTORY
    try:
        return _history_decoder.decode(path.read_bytes())
    except FileNotFoundError:
        return []
    except msgspec.DecodeError:
        # Written by rename, so never half-written; unreadable means edited by hand. Start over.
        return []


def _write_history(data_dir: str | os.PathLike[str], kind: str, history: list[Activation]) -> None:
    vdir = versions_dir(data_dir, kind)
    tmp = vdir / f".history.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode(history))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, vdir / HISTORY)
    fsync_dir(vdir)


def gc(data_dir: str | os.PathLike[str], kind: str, *, keep: int = DEFAULT_KEEP) -> list[str]:
    """Delete all versions but the active one and the `keep` most recently active before it
    (then the newest by name). Workers still mapping a deleted version keep reading it: an
    unlinked file lives on until its last mapping closes."""
    kdir = _kind_dir(data_dir, kind)
    present = list_versions(data_dir, kind)
    active = active_version(data_dir, kind)
    kept: list[str] = [active] if active else []
    recent = [a.version for a in reversed(read_history(data_dir, kind))]
    for v in [*recent, *sorted(present, reverse=True)]:
        if len(kept) >= keep + (1 if active else 0):
            break
        if v in present and v not in kept:
            kept.append(v)
    removed = [v for v in present if v not in kept]
    for v in removed:
        # Rename first so a half-deleted directory is never mistaken for a version.
        doomed = kdir / "versions" / f".{v}.tmp-gc"
        os.rename(kdir / "versions" / v, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    if removed:
        fsync_dir(kdir / "versions")
    return removed


def active_path(data_dir: str | os.PathLike[str], kind: str) -> Path | None:
    link = _kind_dir(data_dir, kind) / "active"
    if not link.is_symlink():
        return None
    path = link.parent / os.readlink(link)
    # The link is ours, but a version installed before names were checked may be anything: a
    # name outside the grammar (snapshots/manifest.py) is never served, at start-up or later.
    if not valid_version(path.name) or path.parent.name != "versions":
        return None
    return path if path.is_dir() else None


def active_version(data_dir: str | os.PathLike[str], kind: str) -> str | None:
    path = active_path(data_dir, kind)
    return None if path is None else path.name


def list_versions(data_dir: str | os.PathLike[str], kind: str) -> list[str]:
    versions = versions_dir(data_dir, kind)
    if not versions.is_dir():
        return []
    return sorted(p.name for p in versions.iterdir() if valid_version(p.name) and p.is_dir())


def list_staging(data_dir: str | os.PathLike[str], kind: str) -> list[Path]:
    staging = versions_dir(data_dir, kind) / STAGING
    return sorted(staging.iterdir()) if staging.is_dir() else []


def version_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def describe(path: Path) -> tuple[float, dict[str, int]]:
    """created_at and counts of an installed version (cheap: the manifest only)."""
    m = read_manifest(path)
    return m.created_at, m.counts
