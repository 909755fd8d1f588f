"""Build inputs (issue 17): Parquet, globs, directories, s3:// on a real S3-compatible server
(moto's server mode, a separate process on 127.0.0.1), and every kind of bad input — each
refused with the file (and row) named, nothing at `--out`, no temp files left."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bench.gen
from bench.procs import free_port
from snapshots import InputInvalid, SnapshotError
from snapshots.config import ProfilesConfig, load_config
from snapshots.engine import build_profiles
from snapshots.errors import BuildFailed, InputUnreadable
from tests.snapshots.kit import WriteNdjson, rec
from tests.snapshots.test_engine_equivalence import dump

Cfg = Callable[..., ProfilesConfig]


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gen")
    for sub, fmt in (("nd", "ndjson"), ("pq", "parquet")):
        bench.gen.generate(400, 5, 11, d / sub, fmt)
        (d / sub / "profiles").mkdir()  # the profile exports alone, as a partitioned export
        for s in bench.gen.SOURCES:
            (d / sub / f"{s}.{fmt}").rename(d / sub / "profiles" / f"{s}.{fmt}")
    return d


def test_parquet_export_builds_the_same_snapshot_as_ndjson(gen_data: Path, tmp_path: Path) -> None:
    cfg = load_config(gen_data / "nd" / "profiles.yaml", ProfilesConfig)
    nd = build_profiles([str(gen_data / "nd" / "profiles" / "*.ndjson")], cfg, tmp_path / "nd")
    pqs = build_profiles([gen_data / "pq" / "profiles"], cfg, tmp_path / "pq")  # a directory
    assert pqs.records_read == nd.records_read > 400
    assert (pqs.written, pqs.aliases, pqs.blocked) == (nd.written, nd.aliases, nd.blocked)
    assert dump(tmp_path / "pq") == dump(tmp_path / "nd")
    assert pqs.peak_rss_mb > 0


def _table(**cols: pa.Array) -> pa.Table:
    base = {
        "source": pa.array(["crm", "web"]),
        "ids": pa.array([{"cookie": "k1"}, {"cookie": "k2"}]),
        "updated_at": pa.array([1_700_000_000_000_000] * 2, pa.timestamp("us", tz="UTC")),
    }
    base.update(cols)
    return pa.table({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (_table(source=None), "missing column `source`"),
        (
            _table(updated_at=pa.array(["2026-11-20T10:00:00Z"] * 2)),
            "column `updated_at` is string",
        ),
        (_table(updated_at=pa.array([1, 2], pa.timestamp("us"))), "timestamp with a time zone"),
        (_table(ids=pa.array([{"cookie": 1}, {"cookie": 2}])), "column `ids.cookie` is int64"),
        (_table(interests=pa.array([{"a": "x"}, {"a": "y"}])), "column `interests.a` is string"),
        (_table(colour=pa.array(["red", "blue"])), "unknown column `colour`"),
    ],
)
def test_parquet_with_missing_or_mistyped_columns_is_refused(
    tmp_path: Path, profiles_config: Cfg, table: pa.Table, says: str
) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(InputUnreadable) as err:
        build_profiles([path], profiles_config(), tmp_path / "snap")
    assert str(err.value).startswith(f"{path}: ")
    assert says in str(err.value)
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_a_truncated_parquet_file_is_refused(tmp_path: Path, profiles_config: Cfg) -> None:
    path = tmp_path / "cut.parquet"
    pq.write_table(_table(), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputUnreadable) as err:
        build_profiles([path], profiles_config(), tmp_path / "snap")
    assert str(err.value).startswith(f"{path}: not a readable Parquet file")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_bad_parquet_rows_are_reported_with_file_and_row(
    tmp_path: Path, profiles_config: Cfg
) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(
        _table(
            source=pa.array(["crm", None, "web"]),
            ids=pa.array([{"cookie": "k1"}, {"cookie": "k2"}, {"cookie": None}]),
            updated_at=pa.array([1_700_000_000_000_000] * 3, pa.timestamp("us", tz="UTC")),
        ),
        path,
    )
    with pytest.raises(InputInvalid) as err:
        build_profiles([path], profiles_config(), tmp_path / "snap")
    assert err.value.problems == [
        f"{path}:row 2: `source` is null",
        f"{path}:row 3: no identifiers",
    ]
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_malformed_ndjson_names_file_and_line_and_leaves_nothing(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg
) -> None:
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": "a"}), b'{"source": "crm", "ids"'])
    with pytest.raises(InputInvalid) as err:
        build_profiles([src], profiles_config(), tmp_path / "snap")
    assert err.value.problems[0].startswith(f"{src}:2: malformed JSON")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_a_glob_that_matches_nothing_is_refused(tmp_path: Path, profiles_config: Cfg) -> None:
    with pytest.raises(InputUnreadable, match=r"nothing-\*\.parquet: matches no file"):
        build_profiles([str(tmp_path / "nothing-*.parquet")], profiles_config(), tmp_path / "s")


# ---- object storage: a real S3-compatible server ------------------------------------------------


def _moto(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3(gen_data: Path) -> Iterator[str]:
    """A moto server holding the generated exports under s3://exports/{nd,pq}/."""
    import boto3

    for url in _moto({}):
        client = boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        client.create_bucket(Bucket="exports")
        for sub in ("nd", "pq"):
            for p in sorted((gen_data / sub / "profiles").iterdir()):
                client.upload_file(str(p), "exports", f"{sub}/part/{p.name}")
        yield url


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    def use(url: str, key: str = "test") -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("EDGESIDE_S3_TIMEOUT_S", "2")

    return use


def test_s3_globs_build_the_same_snapshot_as_local_files(
    s3: str, s3_env: Callable[..., None], gen_data: Path, tmp_path: Path
) -> None:
    s3_env(s3)
    cfg = load_config(gen_data / "nd" / "profiles.yaml", ProfilesConfig)
    local = build_profiles([gen_data / "pq" / "profiles"], cfg, tmp_path / "local")
    remote = build_profiles(["s3://exports/pq/part/*.parquet"], cfg, tmp_path / "remote")
    assert remote.records_read == local.records_read
    assert dump(tmp_path / "remote") == dump(tmp_path / "local")
    nd = build_profiles(["s3://exports/nd/part/"], cfg, tmp_path / "nd")  # a prefix
    assert nd.records_read == local.records_read
    assert dump(tmp_path / "nd") == dump(tmp_path / "local")
    from snapshots import read_manifest

    assert sorted(read_manifest(tmp_path / "remote").sources) == [
        f"{s}.parquet" for s in sorted(bench.gen.SOURCES)
    ]
    assert leftovers(tmp_path) == []


def test_a_missing_s3_object_names_the_url(
    s3: str, s3_env: Callable[..., None], profiles_config: Cfg, tmp_path: Path
) -> None:
    s3_env(s3)
    with pytest.raises(InputUnreadable, match=r"s3://exports/pq/none\.parquet: no such object"):
        build_profiles(["s3://exports/pq/none.parquet"], profiles_config(), tmp_path / "snap")
    assert leftovers(tmp_path) == []


def test_unreachable_object_storage_fails_fast_with_the_url(
    s3_env: Callable[..., None], profiles_config: Cfg, tmp_path: Path
) -> None:
    s3_env(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    t = time.monotonic()
    with pytest.raises(InputUnreadable) as err:
        build_profiles(["s3://exports/pq/crm.parquet"], profiles_config(), tmp_path / "snap")
    assert str(err.value).startswith("s3://exports/pq/crm.parquet: cannot read from object storage")
    assert time.monotonic() - t < 60
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_refused_credentials_name_the_url(
    s3_env: Callable[..., None], profiles_config: Cfg, tmp_path: Path
) -> None:
    # moto enforces IAM authentication after this many unauthenticated actions: none here, so
    # every request with a key it never issued is refused (InvalidAccessKeyId, 403).
    for url in _moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}):
        s3_env(url, key="AKIAIDONOTEXIST00000")
        with pytest.raises(InputUnreadable) as err:
            build_profiles(["s3://exports/pq/crm.parquet"], profiles_config(), tmp_path / "snap")
        text = str(err.value)
        assert text.startswith("s3://exports/pq/crm.parquet: cannot read from object storage")
        assert "ACCESS_DENIED" in text or "403" in text or "InvalidAccessKeyId" in text
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


# ---- a disk that fills while the engine spills ------------------------------------------------

SPILL_CHILD = """
import json, os, sys
from pathlib import Path
from snapshots.config import ProfilesConfig, load_config
from snapshots.engine import EngineOptions, build_profiles
from snapshots.errors import SnapshotError
data, tmp, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
cfg = load_config(data / "profiles.yaml", ProfilesConfig)
try:
    s = build_profiles(sorted(data.glob("*.ndjson")), cfg, out,
                       options=EngineOptions(memory_limit="128MB", temp_dir=tmp, threads=1))
    res = {"ok": True, "temp_disk_mb": s.temp_disk_mb}
except SnapshotError as exc:
    res = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
res["left_in_tmp"] = os.listdir(tmp)
res["out_exists"] = out.exists()
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def spill_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("spill")
    bench.gen.gen_profiles(60_000, 3, d)  # ~46 MB of records: more than 128 MB of engine state
    (d / "profiles.yaml").write_text(bench.gen.PROFILES_CONFIG)
    return d


def _spill_run(spill_data: Path, tmp_path: Path, tmpfs_mb: int | None) -> dict[str, object]:
    import json

    spill = tmp_path / "spill"
    spill.mkdir()
    child = [sys.executable, "-c", SPILL_CHILD, str(spill_data), str(spill), str(tmp_path / "o")]
    if tmpfs_mb is not None:
        # A small filesystem of its own for the temp dir, in a private mount namespace (works
        # as root and, through a user namespace, without): the disk really fills.
        script = f'mount -t tmpfs -o size={tmpfs_mb}m tmpfs "$1" && shift && exec "$@"'
        child = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script,
                 "sh", str(spill), *child]  # fmt: skip
    out = subprocess.run(child, capture_output=True, text=True, timeout=600, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr[-2000:]
    res: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def test_a_disk_that_fills_while_spilling_fails_cleanly(spill_data: Path, tmp_path: Path) -> None:
    roomy = _spill_run(spill_data, tmp_path / "a", None) if (tmp_path / "a").mkdir() is None else {}
    assert roomy["ok"] is True and float(roomy["temp_disk_mb"]) > 8  # type: ignore[arg-type]
    (tmp_path / "b").mkdir()
    # Half of what the build needs: the disk fills whichever temp file is being written.
    full = _spill_run(spill_data, tmp_path / "b", int(float(roomy["temp_disk_mb"]) / 2))  # type: ignore[arg-type]
    assert full["ok"] is False and full["type"] == BuildFailed.__name__
    assert "out of disk space while spilling" in str(full["error"])
    assert str(tmp_path / "b" / "spill") in str(full["error"])
    assert full["left_in_tmp"] == [] and full["out_exists"] is False


def test_build_errors_are_snapshot_errors() -> None:
    assert issubclass(InputUnreadable, SnapshotError) and issubclass(BuildFailed, SnapshotError)


def test_content_builds_from_parquet_through_the_same_inputs(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from snapshots import open_content
    from snapshots.config import ContentConfig
    from snapshots.content_build import build_content

    pq.write_table(
        pa.table(
            {
                "id": ["a", "b"],
                "type": ["banner", "product"],
                "title": ["A", "B"],
                "tags": [["x"], ["y"]],
                "valid_from": pa.array(
                    [datetime(2026, 1, 1, tzinfo=UTC), None], pa.timestamp("us", tz="UTC")
                ),
                "attributes": [{"price": 10.0}, {"price": 30.0}],
            }
        ),
        tmp_path / "gen.parquet",
    )
    (tmp_path / "c.yaml").write_text(
        "kind: content\nsources:\n  gen: {}\n"
        "enrich:\n  - when: {attribute: price, lt: 20}\n    add_tags: [budget]\n"
    )
    cfg = load_config(tmp_path / "c.yaml", ContentConfig)
    summary = build_content([str(tmp_path / "*.parquet")], cfg, tmp_path / "snap")
    assert summary.written == 2
    with open_content(tmp_path / "snap") as c:
        a = c.item("a")
        assert a is not None and a.tags == ["budget", "x"] and a.source == "gen"
        assert a.valid_from == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
        assert a.attributes == {"price": 10.0}
    assert leftovers(tmp_path) == []


def test_parquet_nulls_mean_not_set_beside_ndjson_records_of_the_same_people(
    tmp_path: Path, profiles_config: Cfg
) -> None:
    """Rows with a null inside a struct, a map, a list or a whole column take the engine's
    `LOOSE` path, rows without the `CLEAN` one; either merges with NDJSON records of the same
    person exactly as the same records written without those nulls would."""
    ts = pa.timestamp("us", tz="UTC")
    t0 = 1_700_000_000_000_000
    attrs = pa.struct([("tier", pa.string()), ("ltv", pa.float64())])
    table = pa.table(
        {
            "source": ["crm", "crm", "crm"],
            "ids": pa.array([{"cookie": "k1"}, {"cookie": "k2"}, {"cookie": "k3"}]),
            "updated_at": pa.array([t0 + 1, t0 + 2, t0 + 3], ts),
            "attributes": pa.array(
                [{"tier": "gold", "ltv": 2.5}, {"tier": None, "ltv": 1.0}, None], attrs
            ),
            "interests": pa.array(
                [[("run", 0.5)], [("run", None), ("hike", 0.25)], None],
                pa.map_(pa.string(), pa.float64()),
            ),
            "segments": pa.array([["vip"], ["nl", None], None], pa.list_(pa.string())),
            "last_seen": pa.array(
                [[("a", t0)], [("a", None), ("b", t0 + 123_457)], None],
                pa.map_(pa.string(), ts),
            ),
        }
    )
    pqf = tmp_path / "crm.parquet"
    pq.write_table(table, pqf)
    web = [  # later records of the same three people, from NDJSON
        rec(
            "web",
            {"cookie": f"k{i}"},
            "2023-11-14T22:13:21Z",
            attributes={"city": "Lyon"},
            interests={"run": 0.75},
            last_seen={"a": "2023-11-14T22:13:20.5Z"},
        )
        for i in (1, 2, 3)
    ]
    crm = [  # what the Parquet rows say, nulls left out
        rec("crm", {"cookie": "k1"}, "2023-11-14T22:13:20.000001Z",
            attributes={"tier": "gold", "ltv": 2.5}, interests={"run": 0.5}, segments=["vip"],
            last_seen={"a": "2023-11-14T22:13:20Z"}),
        rec("crm", {"cookie": "k2"}, "2023-11-14T22:13:20.000002Z", attributes={"ltv": 1.0},
            interests={"hike": 0.25}, segments=["nl"],
            last_seen={"b": "2023-11-14T22:13:20.123457Z"}),
        rec("crm", {"cookie": "k3"}, "2023-11-14T22:13:20.000003Z"),
    ]  # fmt: skip
    (tmp_path / "web.ndjson").write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in web))
    (tmp_path / "crm.ndjson").write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in crm))
    cfg = profiles_config(merge={"default": "newest", "fields": {"interests": "max",
                                                                 "last_seen": "max"}})  # fmt: skip
    build_profiles([pqf, tmp_path / "web.ndjson"], cfg, tmp_path / "mixed")
    build_profiles([tmp_path / "crm.ndjson", tmp_path / "web.ndjson"], cfg, tmp_path / "nd")
    mixed, nd = dump(tmp_path / "mixed"), dump(tmp_path / "nd")
    assert mixed == nd
    assert len(mixed[0]) == 3
    p2 = next(p for p in mixed[0].values() if p.ids["cookie"] == ["k2"])
    assert p2.attributes == {"ltv": 1.0, "city": "Lyon"} and p2.segments == ["nl"]
    assert p2.interests == {"run": 0.75, "hike": 0.25}
    assert p2.last_seen == {"a": 1700000000.5, "b": 1700000000.123457}


def test_an_integer_past_64_bits_names_file_and_line_and_leaves_nothing(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg
) -> None:
    huge = (
        b'{"source": "crm", "ids": {"cookie": "b"}, "updated_at": "2026-11-20T10:00:00Z", '
        b'"attributes": {"n": 18446744073709551616}}'
    )
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": "a"}), huge])
    with pytest.raises(InputInvalid) as err:
        build_profiles([src], profiles_config(), tmp_path / "snap")
    assert err.value.problems[0].startswith(f"{src}:2: invalid record"), err.value.problems
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []
    built = build_profiles([src], profiles_config(), tmp_path / "snap", skip_invalid=True)
    assert (built.written, built.records_invalid) == (1, 1)


@pytest.mark.parametrize("shape", ["struct", "map"])
def test_an_unsigned_parquet_integer_past_63_bits_names_file_and_row(
    tmp_path: Path, profiles_config: Cfg, shape: str
) -> None:
    """uint64 holds more than a record's integers may be (as NDJSON's `n: 2**63` is refused)."""
    top = 2**63 - 1
    values = [top, top + 1, 2**64 - 1, None]
    if shape == "struct":
        attrs = pa.array([{"n": v, "m": 1} for v in values],
                         pa.struct([("m", pa.uint64()), ("n", pa.uint64())]))  # fmt: skip
    else:
        attrs = pa.array([[("m", 1), ("n", v)] if v is not None else [("m", 1)] for v in values],
                         pa.map_(pa.string(), pa.uint64()))  # fmt: skip
    path = tmp_path / "wide.parquet"
    pq.write_table(
        _table(
            ids=pa.array([{"cookie": f"k{i}"} for i in range(4)]),
            source=pa.array(["crm"] * 4),
            updated_at=pa.array([1_700_000_000_000_000] * 4, pa.timestamp("us", tz="UTC")),
            attributes=attrs,
        ),
        path,
    )
    with pytest.raises(InputInvalid) as err:
        build_profiles([path], profiles_config(), tmp_path / "snap")
    says = f"more than a record's integers may be ({top})"
    assert err.value.problems == [
        f"{path}:row 2: invalid record: attribute `n` is {top + 1}, {says}",
        f"{path}:row 3: invalid record: attribute `n` is {2**64 - 1}, {says}",
    ]
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []
    built = build_profiles([path], profiles_config(), tmp_path / "snap", skip_invalid=True)
    assert (built.written, built.records_invalid) == (2, 2)
    profiles = dump(tmp_path / "snap")[0]
    assert sorted(p.attributes.get("n", -1) for p in profiles.values()) == [-1, top]


def test_a_sum_past_64_bits_names_the_profile_and_leaves_nothing(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg
) -> None:
    top = 2**63 - 1  # the largest integer an export may hold: three of them sum past 2**64
    records = [
        rec(source, {"cookie": "a"}, f"2026-11-2{day}T10:00:00Z", attributes={"n": top})
        for day, source in enumerate(("crm", "web", "crm"))
    ]
    src = write_ndjson("in.ndjson", records)
    cfg = profiles_config(merge={"default": "newest", "fields": {"attributes.n": "sum"}})
    with pytest.raises(BuildFailed, match="beyond the 64 bits") as err:
        build_profiles([src], cfg, tmp_path / "snap")
    assert "profile p_" in str(err.value)
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []
