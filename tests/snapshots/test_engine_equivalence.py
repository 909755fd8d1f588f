"""The engine builds what the original builder built (issue 17): on random exports — ids drawn
from small pools so records collide, unique-type conflicts, junk values, small cluster caps,
every merge policy, ties in time, Parquet or NDJSON — the canonical profiles, the alias index
and the report are the same. The original builder (tests/snapshots/oracle_build.py) is the
oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import lmdb
import msgspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snapshots.engine.emit
import snapshots.engine.session
from snapshots.config import ProfilesConfig
from snapshots.engine import EngineOptions, build_profiles
from snapshots.model import Profile
from tests.snapshots.oracle_build import build_profiles as oracle_build

# "cookie_id" beside "cookie": keys of a type whose name starts with another's sort apart
# (`stitching.key_places`).
TYPES = ("customer_id", "email", "cookie", "cookie_id")
POLICIES = ("newest", "source_priority", "sum", "max")
STAMPS = [f"2026-11-0{d}T0{h}:00:00Z" for d in (1, 2) for h in (0, 5)] + [
    "2026-11-01T01:00:00+01:00"  # the same instant as 00:00Z: a tie written another way
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([0.5, -1.25, 2.0, 1e3]),
    st.sampled_from(["gold", "silver", ""]),
)
numbers = st.one_of(st.integers(0, 9), st.sampled_from([0.25, 1.5, -2.0]))
keys = st.sampled_from(["a", "b", "c"])


@st.composite
def id_values(draw: Any, t: str) -> str | list[str]:
    pool = {
        "customer_id": ["C1", "C2", "C3"],
        "email": ["e1", "e2", "junk"],
        "cookie": ["k1", "k2", "k3", "k4", "k5"],
        "cookie_id": ["d1", "d2", "0000"],
    }[t]
    if draw(st.integers(0, 4)) == 0:
        return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    return draw(st.sampled_from(pool))


@st.composite
def records(draw: Any) -> dict[str, Any]:
    types = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True))
    ids = {t: draw(id_values(t)) for t in types}
    return {
        "source": draw(st.sampled_from(["crm", "web", "app"])),
        "ids": ids,
        "updated_at": draw(st.sampled_from(STAMPS)),
        "attributes": draw(st.dictionaries(keys, scalars, max_size=3)),
        "interests": draw(st.dictionaries(keys, numbers, max_size=2)),
        "segments": draw(st.lists(st.sampled_from(["vip", "nl"]), max_size=2)),
        "counters": draw(st.dictionaries(keys, numbers, max_size=2)),
        "last_seen": draw(st.dictionaries(keys, st.sampled_from(STAMPS), max_size=2)),
    }


@st.composite
def configs(draw: Any) -> ProfilesConfig:
    unique = draw(st.sets(st.sampled_from(TYPES)))
    fields: dict[str, str] = {}
    for g in ("attributes", "interests", "counters", "last_seen"):
        if draw(st.booleans()):
            fields[g] = draw(st.sampled_from(POLICIES))
    if draw(st.booleans()):
        fields["attributes." + draw(keys)] = draw(st.sampled_from(POLICIES))
    raw = {
        "id_types": {t: {"priority": i, "unique": t in unique} for i, t in enumerate(TYPES)},
        "blocklist": {"email": ["junk"], "*": ["0000"]},
        "max_cluster_size": draw(st.integers(2, 8)),
        "source_priority": draw(st.permutations(["crm", "web"])),
        "merge": {"default": draw(st.sampled_from(POLICIES)), "fields": fields},
    }
    return msgspec.convert(raw, ProfilesConfig)


def dump(snap: Path) -> tuple[dict[str, Profile], dict[bytes, bytes]]:
    dec = msgspec.msgpack.Decoder(Profile)
    env = lmdb.open(str(snap), readonly=True, lock=False, max_dbs=4, subdir=True)
    try:
        with env.begin() as txn:
            profiles = {
                k.decode(): dec.decode(v) for k, v in txn.cursor(env.open_db(b"profiles", txn=txn))
            }
            aliases = dict(txn.cursor(env.open_db(b"alias", txn=txn)))
    finally:
        env.close()
    return profiles, aliases


def ids_column(recs: list[dict[str, Any]], layout: str) -> Any:
    """`ids` as a map of lists, a struct of lists, or (when every value is one string) a struct
    of strings: the engine keys plain rows of each layout in SQL, the others record by record."""
    lists = [{k: [v] if isinstance(v, str) else v for k, v in r["ids"].items()} for r in recs]
    if layout == "map":
        return pa.array([list(d.items()) for d in lists],
                        pa.map_(pa.string(), pa.list_(pa.string())))  # fmt: skip
    if layout == "struct_str" and all(isinstance(v, str) for r in recs for v in r["ids"].values()):
        typ = pa.struct([(t, pa.string()) for t in TYPES])
        return pa.array([{t: r["ids"].get(t) for t in TYPES} for r in recs], typ)
    typ = pa.struct([(t, pa.list_(pa.string())) for t in TYPES])
    return pa.array([{t: d.get(t) for t in TYPES} for d in lists], typ)


def to_parquet(recs: list[dict[str, Any]], path: Path, layout: str = "map") -> None:
    """The same records as a warehouse would unload them: ids as `layout`, attributes as a
    map of JSON-typed scalars is not Arrow-typable when types mix, so this variant is only used
    for records whose attributes are all strings (see the test)."""
    ts = pa.timestamp("us", tz="UTC")

    def t(s: str) -> Any:
        from datetime import datetime

        return datetime.fromisoformat(s.replace("Z", "+00:00"))

    table = pa.table(
        {
            "source": [r["source"] for r in recs],
            "ids": ids_column(recs, layout),
            "updated_at": pa.array([t(r["updated_at"]) for r in recs], ts),
            "interests": pa.array(
                [[(k, float(v)) for k, v in r["interests"].items()] for r in recs],
                pa.map_(pa.string(), pa.float64()),
            ),
            "segments": pa.array([r["segments"] for r in recs], pa.list_(pa.string())),
            "counters": pa.array(
                [[(k, float(v)) for k, v in r["counters"].items()] for r in recs],
                pa.map_(pa.string(), pa.float64()),
            ),
            "last_seen": pa.array(
                [[(k, t(v)) for k, v in r["last_seen"].items()] for r in recs],
                pa.map_(pa.string(), ts),
            ),
        }
    )
    pq.write_table(table, path, row_group_size=7)  # several row groups: order must survive


SUMMARY_FIELDS = (
    "records_read", "records_invalid", "written", "aliases", "merges", "links", "conflicts",
    "conflict_examples", "capped", "capped_examples", "blocked", "invalid",
)  # fmt: skip


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cfg=configs(),
    recs=st.lists(records(), min_size=1, max_size=30),
    split=st.integers(0, 30),
)
def test_engine_equals_the_original_builder(
    tmp_path_factory: Any, cfg: ProfilesConfig, recs: list[dict[str, Any]], split: int
) -> None:
    tmp = tmp_path_factory.mktemp("eq")
    files, old = two_files_and_the_oracle(tmp, cfg, recs, split)
    new = build_profiles(
        files, cfg, tmp / "new", skip_invalid=True, options=EngineOptions(threads=2)
    )
    assert_same_build(tmp, new, old)
    assert new.blocked_examples == old.blocked_examples


def two_files_and_the_oracle(
    tmp: Path, cfg: ProfilesConfig, recs: list[dict[str, Any]], split: int
) -> tuple[list[Path], Any]:
    """`recs` as two NDJSON exports (order across files matters as much as order inside one),
    and what the original builder made of them in `tmp / "old"`."""
    a, b = tmp / "a.ndjson", tmp / "b.ndjson"
    a.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs[:split]))
    b.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs[split:]))
    return [a, b], oracle_build([a, b], cfg, tmp / "old", skip_invalid=True)


def assert_same_build(tmp: Path, new: Any, old: Any) -> None:
    for f in SUMMARY_FIELDS:
        assert getattr(new, f) == getattr(old, f), f
    assert dump(tmp / "new") == dump(tmp / "old")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cfg=configs(),
    recs=st.lists(records(), min_size=1, max_size=40),
    split=st.integers(0, 40),
    batch=st.integers(1, 6),
    group=st.integers(1, 4),
)
def test_engine_equals_the_original_builder_in_small_batches(
    tmp_path_factory: Any,
    cfg: ProfilesConfig,
    recs: list[dict[str, Any]],
    split: int,
    batch: int,
    group: int,
) -> None:
    """The engine cuts sorted streams into batches (identifiers numbered off a sorted stream,
    persons' lists cut from two, aliases) and persons into row groups: cut anywhere, a key's
    rows or a person's records across batches, the build is the same."""
    tmp = tmp_path_factory.mktemp("eqb")
    files, old = two_files_and_the_oracle(tmp, cfg, recs, split)
    with (
        mock.patch.object(snapshots.engine.session, "BATCH", batch),
        mock.patch.object(snapshots.engine.emit, "PERSON_GROUP", group),
    ):
        new = build_profiles(files, cfg, tmp / "new", skip_invalid=True)
    assert_same_build(tmp, new, old)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cfg=configs(),
    recs=st.lists(records(), min_size=1, max_size=25),
    layout=st.sampled_from(["map", "struct_list", "struct_str"]),
)
def test_parquet_builds_the_same_profiles_as_ndjson(
    tmp_path_factory: Any, cfg: ProfilesConfig, recs: list[dict[str, Any]], layout: str
) -> None:
    tmp = tmp_path_factory.mktemp("pq")
    for r in recs:  # Arrow needs one type per map; the NDJSON run gets the same strings
        r["attributes"] = {k: str(v) for k, v in r["attributes"].items() if v is not None}
    nd = tmp / "in.ndjson"
    nd.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    pqf = tmp / "in.parquet"
    to_parquet(recs, pqf, layout)
    import pyarrow.compute as pc

    t = pq.read_table(pqf)
    attrs = pa.array([list(r["attributes"].items()) for r in recs],
                     pa.map_(pa.string(), pa.string()))  # fmt: skip
    pq.write_table(t.append_column("attributes", attrs), pqf, row_group_size=7)
    del pc
    from_nd = build_profiles([nd], cfg, tmp / "nd", skip_invalid=True)
    from_pq = build_profiles([pqf], cfg, tmp / "pq", skip_invalid=True)
    for f in ("written", "aliases", "merges", "links", "conflicts", "capped", "blocked"):
        assert getattr(from_pq, f) == getattr(from_nd, f), f
    assert [e.replace(":row ", ":") for e in from_pq.invalid] == [
        e.replace(str(nd), str(pqf)) for e in from_nd.invalid
    ]
    assert dump(tmp / "pq") == dump(tmp / "nd")
