"""Writing a snapshot: an LMDB environment in a temp dir, then manifest, then one rename.

Keys are written sorted with `append=True` (LMDB then fills pages left to right with no splits,
the fastest way to bulk-load and the most compact result). `writemap` is not used: with it LMDB
sizes data.mdb to the whole map, which we would then hash, pack and ship.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import lmdb

from snapshots.errors import OutputExists
from snapshots.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    encode_manifest,
)
from snapshots.ndjson import file_sha256
from snapshots.signing import sign_manifest

CHUNK = 50_000
MIN_MAP = 64 << 20


class EnvWriter:
    """One LMDB environment being filled db by db; grows its map when full."""

    def __init__(self, path: Path, size_hint: int) -> None:
        self.path = path
        self._map_size = max(MIN_MAP, int(size_hint * 1.6))
        self.env = lmdb.open(
            str(path),
            map_size=self._map_size,
            subdir=True,
            max_dbs=8,
            sync=False,  # one explicit sync at the end; a crash mid-build leaves only a temp dir
            metasync=False,
            readahead=False,
        )

    def put_sorted(self, db_name: str, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Write `items` (keys strictly ascending) into db `db_name`; return the count."""
        db = self.env.open_db(db_name.encode())
        it = iter(items)
        total = 0
        while True:
            chunk = list(islice(it, CHUNK))
            if not chunk:
                return total
            self._commit(db, chunk)
            total += len(chunk)

    def put_sorted_columns(
        self, db_name: str, batches: Iterable[tuple[list[bytes], list[bytes]]]
    ) -> int:
        """`put_sorted` for pairs that come as columns, a batch of keys and one of values at a
        time: no tuple, generator step or `islice` per pair (they cost more than `putmulti`
        itself: 1.26 -> 0.70 CPU s for 2.8 M aliases). Transactions hold `CHUNK` pairs, as
        `put_sorted`'s do, so the file is the same byte for byte."""
        db = self.env.open_db(db_name.encode())
        keys: list[bytes] = []
        values: list[bytes] = []
        total = 0
        for k, v in batches:
            if len(k) != len(v):
                raise ValueError(f"{len(k)} keys but {len(v)} values")
            keys += k
            values += v
            while len(keys) >= CHUNK:
                self._commit(db, keys[:CHUNK], values[:CHUNK])
                del keys[:CHUNK], values[:CHUNK]
                total += CHUNK
        if keys:
            self._commit(db, keys, values)
            total += len(keys)
        return total

    def _commit(self, db: Any, keys: list[Any], values: list[bytes] | None = None) -> None:
        """One transaction putting `keys` and `values` (or pairs, `keys` alone), growing the
        map and starting over when it is full."""
        while True:
            try:
                with self.env.begin(write=True, db=db) as txn:
                    pairs = keys if values is None else zip(keys, values, strict=True)
                    txn.cursor().putmulti(pairs, append=True)
                return
            except lmdb.MapFullError:
                self._map_size *= 2
                self.env.set_mapsize(self._map_size)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()
        # Readers open with lock=False; the snapshot holds only data.mdb + manifest.json.
        with contextlib.suppress(FileNotFoundError):
            (self.path / "lock.mdb").unlink()


def make_version(created_at: float, digest: str) -> str:
    """Sortable by time, unique by content: `20261122T151000Z-1a2b3c4d`."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created_at)) + "-" + digest[:8]


def finalize(
    tmp_dir: Path,
    *,
    kind: str,
    counts: dict[str, int],
    sources: dict[str, str],
    params: dict[str, list[str]] | None = None,
    signing_key: bytes | None = None,
) -> Manifest:
    """Hash every file, write (and sign) the manifest in `tmp_dir`."""
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for p in sorted(tmp_dir.iterdir()):
        if p.name == MANIFEST_NAME:
            continue
        files[p.name] = file_sha256(p)
        sizes[p.name] = p.stat().st_size
    created_at = time.time()
    digest = hashlib.sha256("".join(files[n] for n in sorted(files)).encode()).hexdigest()
    manifest = Manifest(
        kind=kind,
        version=make_version(created_at, digest),
        created_at=created_at,
        schema_version=SCHEMA_VERSION,
        counts=counts,
        files=files,
        sizes=sizes,
        sources=sources,
        params=params or {},
    )
    if signing_key is not None:
        manifest = sign_manifest(manifest, signing_key)
    (tmp_dir / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
    return manifest


@contextlib.contextmanager
def staging_dir(out: Path, *, force: bool = False) -> Iterator[Path]:
    """A temp dir beside `out`, renamed to `out` on success and removed on any failure."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExists(f"{out}: already exists and is not empty; snapshots are immutable")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_snapshot(
    out: Path,
    dbs: dict[str, list[tuple[bytes, bytes]]],
    *,
    kind: str,
    counts: dict[str, int],
    sources: dict[str, str],
    params: dict[str, list[str]] | None = None,
    signing_key: bytes | None = None,
    force: bool = False,
    size_hint: int | None = None,
) -> Manifest:
    """Write sorted key/value pairs into named databases of a new snapshot at `out`, with its
    signed manifest; nothing appears at `out` unless every step succeeds."""
    if size_hint is None:
        size_hint = sum(len(k) + len(v) + 64 for pairs in dbs.values() for k, v in pairs)
    with staging_dir(out, force=force) as tmp:
        w = EnvWriter(tmp, size_hint * 2)
        try:
            for name, pairs in dbs.items():
                w.put_sorted(name, pairs)
        finally:
            w.close()
        return finalize(
            tmp,
            kind=kind,
            counts=counts,
            sources=sources,
            params=params,
            signing_key=signing_key,
        )
