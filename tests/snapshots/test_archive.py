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
