"""Read every page of a snapshot in a process of its own, before anything serves it.

LMDB keeps no page checksums. A data file damaged before it was hashed and signed (a builder that
wrote bad pages) passes every digest check, and some such damage crashes the process that reads
it inside LMDB (SIGBUS, an assertion's abort) before Python sees an error. `read_all` touches
every key and value of every database; `scan` runs it in a child process, so the damage costs
that process and the snapshot is refused instead of crashing a worker later.

    python -m snapshots.scan PATH     # exit 0: every page read; 1: an error, named on stderr
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmdb

from .errors import SnapshotError


def read_all(path: Path) -> tuple[int, int]:
    """Read every key and value of every database of the LMDB snapshot at `path`: how many
    entries and bytes. LMDB's own errors are `SnapshotError`s."""
    try:
        env = lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, create=False, max_dbs=64
        )
    except lmdb.Error as exc:
        raise SnapshotError(f"{path}: cannot open LMDB environment: {exc}") from None
    entries = size = 0
    try:
        with env.begin() as txn:
            names = [bytes(key) for key in txn.cursor().iternext(keys=True, values=False)]
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db, buffers=True) as txn:
                for key, value in txn.cursor():
                    # Copying reads each page of the key and value, overflow pages included.
                    size += len(bytes(key)) + len(bytes(value))
                    entries += 1
    except lmdb.Error as exc:
        raise SnapshotError(f"{path}: damaged LMDB data: {exc}") from None
    finally:
        env.close()
    return entries, size


def scan(path: Path, timeout_s: float = 600.0) -> None:
    """`read_all` in a child process; a `SnapshotError` when it fails, crashes or hangs."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "snapshots.scan", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise SnapshotError(f"{path}: reading every page took over {timeout_s:g} s") from None
    if done.returncode < 0:
        raise SnapshotError(
            f"{path}: reading every page crashed the reading process (signal {-done.returncode}):"
            " the data file is damaged, though its digest matches"
        )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise SnapshotError(lines[-1] if lines else f"{path}: reading every page failed")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m snapshots.scan PATH", file=sys.stderr)
        return 2
    try:
        read_all(Path(args[0]))
    except SnapshotError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
