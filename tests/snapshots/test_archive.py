"""Packing for transport, and an unpacker that refuses anything but a flat snapshot."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from snapshots import UnsafeArchive, open_profiles, verify_snapshot
from snapshots.archive import pack, unpack
from snapshots.config import ProfilesConfig
from snapshots.profiles_build import build_profiles
from tests.snapshots.kit import WriteNdjson, rec


def test_pack_and_unpack_round_trip(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> None:
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": "k1"})])
    build_profiles([src], profiles_config(), tmp_path / "snap")
    tar = pack(tmp_path / "snap", tmp_path / "snap.tar")
    with tarfile.open(tar) as t:
        assert t.getnames() == ["manifest.json", "data.mdb"]
    out = unpack(tar, tmp_path / "unpacked")
    assert verify_snapshot(out) == []
    with open_profiles(out) as r:
        assert r.lookup({"cookie": "k1"}) is not None


def evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as t:
        manifest = tarfile.TarInfo("manifest.json")
        manifest.size = 2
        t.addfile(manifest, io.BytesIO(b"{}"))
        if member.isreg():
            member.size = len(data)
            t.addfile(member, io.BytesIO(data))
        else:
            t.addfile(member)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = linkname
    return m


@pytest.mark.parametrize(
    ("m", "reason"),
    [
        (member("../data.mdb"), "escapes"),
        (member("/etc/passwd"), "absolute path"),
        (member("data.mdb", tarfile.SYMTYPE, "/etc/shadow"), "links are not allowed"),
        (member("data.mdb", tarfile.LNKTYPE, "manifest.json"), "links are not allowed"),
        (member("data.mdb", tarfile.CHRTYPE), "not a regular file"),
        (member("sub/data.mdb"), "unknown file"),
        (member("run.sh"), "unknown file"),
        (member("manifest.json"), "appears twice"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_left(
    tmp_path: Path, m: tarfile.TarInfo, reason: str
) -> None:
    tar = evil_tar(tmp_path / "evil.tar", m)
    with pytest.raises(UnsafeArchive, match=reason):
        unpack(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "data.mdb").exists()


def test_oversize_members_and_non_tars_are_refused(tmp_path: Path) -> None:
    tar = evil_tar(tmp_path / "big.tar", member("data.mdb"), b"y" * 1000)
    with pytest.raises(UnsafeArchive, match="exceeds the limit"):
        unpack(tar, tmp_path / "out", max_member_bytes=999)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UnsafeArchive, match="not a readable tar"):
        unpack(tmp_path / "junk.tar", tmp_path / "out2")


def _sparse_member(name: str, real_size: int) -> bytes:
    """A GNU old-style sparse member: one 512-byte block of data standing for `real_size` bytes
    (tarfile reads these; an unchecked unpacker writes all of `real_size`)."""
    import tarfile as tf

    info = tf.TarInfo(name)
    info.type = tf.GNUTYPE_SPARSE
    info.size = 512
    head = bytearray(info.tobuf(tf.GNU_FORMAT))
    block = head[:512]

    def octal(value: int, width: int) -> bytes:
        return (b"%0*o" % (width - 1, value)) + b"\0"

    block[386:398] = octal(real_size - 512, 12)  # sparse[0].offset
    block[398:410] = octal(512, 12)  # sparse[0].numbytes
    block[482] = 0  # not extended
    block[483:495] = octal(real_size, 12)  # realsize
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + b"x" * 512


def test_a_sparse_or_oversized_member_writes_nothing(tmp_path: Path) -> None:
    """Issue 14, defect 8: a 3.5 KB tar declaring a 2 GB sparse member made the unpacker write
    1.96 GB before any size was checked. Now members are checked against the manifest's declared
    sizes and a total cap before a byte is written (this test fails on the old code: it counts the
    bytes written)."""
    import io
    import tarfile as tf

    from snapshots.manifest import DATA_NAME, MANIFEST_NAME, Manifest, encode_manifest

    manifest = Manifest(
        kind="rules",
        version="v1",
        created_at=0.0,
        schema_version=1,
        counts={},
        files={DATA_NAME: "0" * 64},
        sizes={DATA_NAME: 4096},
        sources={},
    )
    raw = encode_manifest(manifest)
    buf = io.BytesIO()
    with tf.open(fileobj=buf, mode="w", format=tf.GNU_FORMAT) as tar:
        info = tf.TarInfo(MANIFEST_NAME)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    body = buf.getvalue().rstrip(b"\0")
    body = body + b"\0" * (-len(body) % 512)
    tar_path = tmp_path / "sparse.tar"
    # 64 MiB, not the 2 GB: enough to show it, small enough for the old code to write.
    tar_path.write_bytes(body + _sparse_member(DATA_NAME, 64 << 20) + b"\0" * 1024)
    assert tar_path.stat().st_size < 8192
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchive, match="sparse"):
        unpack(tar_path, dest)  # the default cap (64 GiB) would not stop it
    assert not dest.exists()
    # A plain member larger than the manifest declares: refused before writing too.
    big = io.BytesIO()
    with tf.open(fileobj=big, mode="w", format=tf.PAX_FORMAT) as tar:
        info = tf.TarInfo(MANIFEST_NAME)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        info = tf.TarInfo(DATA_NAME)
        info.size = 8192
        tar.addfile(info, io.BytesIO(b"y" * 8192))
    (tmp_path / "big.tar").write_bytes(big.getvalue())
    with pytest.raises(UnsafeArchive, match="declares 4096"):
        unpack(tmp_path / "big.tar", dest)
    assert not dest.exists()
