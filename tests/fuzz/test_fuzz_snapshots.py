"""Snapshot readers under random and mutated input: a clear `SnapshotError`, nothing else,
never a hang.

Values are overwritten inside real LMDB files (a writable environment on a copy of a built
snapshot), the manifest is rewritten to match so the reader gets past its checksums and really
decodes the damage; manifests and `.tar` archives are mutated byte-wise. `EDGESIDE_FUZZ_EXAMPLES`
scales every test (CI: a few hundred cases in all).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import tarfile
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

import snapshots
from server.decide.world import open_rules
from snapshots import store
from snapshots.manifest import MANIFEST_NAME, encode_manifest, read_manifest
from snapshots.ndjson import file_sha256
from snapshots.verify import check_snapshot
from tests.provekit import bounded, prove_data

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_data"]

EXAMPLES = bounded("EDGESIDE_FUZZ_EXAMPLES", 250) // 4
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # a hang is a failure, not a slow example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def snapshot_of(data: Path, kind: str) -> Path:
    path = store.active_path(data, kind)
    assert path is not None
    return path.resolve()


@contextmanager
def damaged_copy(src: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "snap"
        shutil.copytree(src, dst)
        yield dst


def remanifest(path: Path) -> None:
    """Make the manifest describe the files as they are now, so only decoding can notice."""
    m = read_manifest(path)
    files = {name: file_sha256(path / name) for name in m.files}
    sizes = {name: (path / name).stat().st_size for name in m.files}
    new = msgspec.structs.replace(m, files=files, sizes=sizes, signature=None)
    (path / MANIFEST_NAME).write_bytes(encode_manifest(new))


def keys_of(path: Path, db: str) -> list[bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=8)
    try:
        with env.begin(db=env.open_db(db.encode(), create=False)) as txn:
            return [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
    finally:
        env.close()


def overwrite(path: Path, db: str, changes: list[tuple[int, bytes]]) -> list[bytes]:
    """Replace the values of some keys of `db` (by index) with `changes`' bytes; return the keys."""
    env = lmdb.open(str(path), max_dbs=8, map_size=64 << 20)
    try:
        handle = env.open_db(db.encode(), create=False)
        with env.begin(write=True, db=handle) as txn:
            keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
            for index, value in changes:
                txn.put(keys[index % len(keys)], value)
        return keys
    finally:
        env.close()


def mutate(original: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    raw = bytearray(original)
    for pos, byte in edits:
        if raw:
            raw[pos % len(raw)] = byte
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    return bytes(raw)


VALUES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"\xc0", b"\x91\xc0", b"\xde\xff\xff", b"\xdd\xff\xff\xff\xff"]),
)
CHANGES = st.lists(st.tuples(st.integers(0, 10_000), VALUES), min_size=1, max_size=8)
EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6)


def read_everything_profiles(path: Path, alias_keys: list[bytes]) -> None:
    with snapshots.open_profiles(path) as reader:
        reader.sample(1000)
        for key in alias_keys[:200]:
            id_type, _, value = key.decode("utf-8", "replace").partition(":")
            reader.lookup({id_type: value})
            reader.resolve(id_type, value)


@FUZZ
@given(changes=CHANGES, db=st.sampled_from(["profiles", "alias"]))
def test_profiles_with_random_values_raise_snapshot_errors_only(
    prove_data: Path, changes: list[tuple[int, bytes]], db: str
) -> None:
    with damaged_copy(snapshot_of(prove_data, "profiles")) as path:
        overwrite(path, db, changes)
        remanifest(path)
        try:
            read_everything_profiles(path, keys_of(path, "alias"))
        except snapshots.SnapshotError as exc:
            assert str(exc)


@FUZZ
@given(changes=CHANGES, db=st.sampled_from(["items", "index"]))
def test_content_with_random_values_raises_snapshot_errors_only(
    prove_data: Path, changes: list[tuple[int, bytes]], db: str
) -> None:
    with damaged_copy(snapshot_of(prove_data, "content")) as path:
        keys = overwrite(path, db, changes)
        remanifest(path)
        try:
            with snapshots.open_content(path) as reader:
                for key in keys:
                    text = key.decode("utf-8", "replace")
                    if db == "items":
                        reader.get(text)
                    else:
                        field, _, value = text.partition(":")
                        reader.ids(field, value)
        except snapshots.SnapshotError as exc:
            assert str(exc)


@FUZZ
@given(edits=EDITS, cut=st.none() | st.integers(0, 1 << 16))
def test_mutated_rules_blob_is_refused_as_the_server_expects(
    prove_data: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    """The rules file inside a rules snapshot, damaged: the worker's loader must fail with one of
    the errors `WorldHolder.prepare` turns into a `/readyz` warning."""
    with damaged_copy(snapshot_of(prove_data, "rules")) as path:
        _, files = snapshots.read_blob_snapshot(path)
        name, text = sorted(files.items())[0]
        env = lmdb.open(str(path), max_dbs=8, map_size=64 << 20)
        try:
            with env.begin(write=True) as txn:
                db_names = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
            for db_name in db_names:
                handle = env.open_db(db_name, create=False)
                with env.begin(write=True, db=handle) as txn:
                    if txn.get(name.encode()) is not None:
                        txn.put(name.encode(), mutate(text, edits, cut))
        finally:
            env.close()
        remanifest(path)
        try:
            open_rules(path, None)
        except (snapshots.SnapshotError, OSError, UnicodeDecodeError) as exc:
            assert str(exc)


@FUZZ
@given(edits=EDITS, cut=st.none() | st.integers(0, 4096))
def test_mutated_manifests_raise_snapshot_errors_only(
    prove_data: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    with damaged_copy(snapshot_of(prove_data, "profiles")) as path:
        manifest = path / MANIFEST_NAME
        manifest.write_bytes(mutate(manifest.read_bytes(), edits, cut))
        try:
            check_snapshot(path, signing_key=b"k" if edits and edits[0][1] % 2 else None)
            snapshots.open_profiles(path).close()
        except snapshots.SnapshotError as exc:
            assert str(exc)


@pytest.fixture(scope="module")
def packed(prove_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tar") / "rules.tar"
    snapshots.pack(snapshot_of(prove_data, "rules"), out)
    return out


@FUZZ
@given(edits=EDITS, cut=st.none() | st.integers(0, 1 << 16))
def test_mutated_and_truncated_archives_raise_snapshot_errors_only(
    packed: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.tar"
        src.write_bytes(mutate(packed.read_bytes(), edits, cut))
        dest = Path(tmp) / "out"
        try:
            snapshots.unpack(src, dest)
        except snapshots.SnapshotError as exc:
            assert str(exc)
            assert not dest.exists(), "a refused archive left files behind"


def test_archive_cut_inside_a_member_is_an_unsafe_archive(packed: Path, tmp_path: Path) -> None:
    """Regression: a tar truncated inside a member's data escaped as `tarfile.ReadError`."""
    src = tmp_path / "cut.tar"
    src.write_bytes(packed.read_bytes()[:1500])
    with pytest.raises(snapshots.UnsafeArchive):
        snapshots.unpack(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_with_a_garbage_second_header_is_an_unsafe_archive(
    packed: Path, tmp_path: Path
) -> None:
    raw = packed.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        first = tar.getmembers()[0]
    end = first.offset_data + ((first.size + 511) // 512) * 512
    src = tmp_path / "garbage.tar"
    src.write_bytes(raw[:end] + b"\x01" * 512 + raw[end + 512 :])
    with pytest.raises(snapshots.UnsafeArchive):
        snapshots.unpack(src, tmp_path / "out")


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(8192, 1 << 22), st.integers(0, 255)), max_size=400),
    kind=st.sampled_from(["profiles", "content"]),
)
def test_damaged_lmdb_pages_raise_snapshot_errors_only(
    prove_data: Path, edits: list[tuple[int, int]], kind: str
) -> None:
    """Bit rot in data.mdb past the two meta pages, with a manifest that matches it (as after a
    bad copy whose digest was taken afterwards): LMDB's own page errors and undecodable records
    are `SnapshotError`s too. Regression: `lmdb.CorruptedError` and `UnicodeDecodeError` escaped.

    LMDB keeps no page checksums: some damage crashes the reading process inside LMDB (SIGBUS on
    a page past the data, an assertion's abort) before any error reaches Python — about 3 in 100
    random damages here. Nothing in Python can turn those into errors, so the reads run in a
    forked child; such examples are set aside (and counted), and every other one must end in
    `SnapshotError`s only. (The defence against them is upstream: snapshots are signed after a
    verified build, and every file's digest is checked before a snapshot is opened.)"""
    with damaged_copy(snapshot_of(prove_data, kind)) as path:
        alias_keys = keys_of(path, "alias") if kind == "profiles" else []
        data = path / "data.mdb"
        raw = bytearray(data.read_bytes())
        for pos, byte in edits:
            raw[8192 + pos % (len(raw) - 8192)] = byte
        data.write_bytes(bytes(raw))
        remanifest(path)

        def read() -> None:
            if kind == "profiles":
                read_everything_profiles(path, alias_keys)
            else:
                with snapshots.open_content(path) as reader:
                    for cid in reader.all_ids():
                        reader.get(cid)
                    for tag in ("running", "default", "budget", "fresh"):
                        reader.ids("tag", tag)

        code = in_forked_child(read)
        if code < 0:
            event(f"LMDB crashed the reader (signal {-code})")
            reject()
        assert code == 0, "an error other than SnapshotError escaped (traceback above)"


def in_forked_child(read: Callable[[], None]) -> int:
    """Run `read` in a forked process: 0 when it returned or raised a `SnapshotError` with a
    message, 1 for anything else (its traceback on stderr), minus the signal that killed it."""

    def child() -> None:
        try:
            read()
        except snapshots.SnapshotError as exc:
            os._exit(0 if str(exc) else 1)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(60)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise AssertionError("reading a damaged snapshot hung")
    return proc.exitcode
