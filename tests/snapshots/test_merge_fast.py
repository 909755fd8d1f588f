"""The build's fast merge path writes the very bytes of the reference path (issue 17): the
compiled `merge.FlatMerger` against `merge.Merger`, and a whole row group through
`merge_pool.GroupMerger` (payloads decoded together by `flat.GroupDecoder`) against
`identity.Assembler.value` person by person — on random configurations (every policy, keys of
their own policy, unranked sources) and random records: ties in time, -0.0, ints beside
floats, duplicate segments, nulls in LOOSE payloads, NDJSON lines with offsets and with times
so far out that two microseconds share one double. Profiles are compared as msgpack bytes, so
a value, a key order or a zero's sign that differs fails."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots import merge_pool
from snapshots.config import ProfilesConfig
from snapshots.flat import (
    CLEAN,
    EXACT_SECONDS,
    LOOSE,
    FlatDecoder,
    FlatRecord,
    GroupDecoder,
    from_record,
)
from snapshots.identity import Assembler
from snapshots.merge import MERGE_GROUPS, FlatMerger, Merger
from snapshots.merge_pool import GroupMerger

POLICIES = ("newest", "source_priority", "sum", "max")
KEYS = ("a", "b", "tier")
SOURCES = ("crm", "web", "app", "pos")  # pos: in no configuration's priority list
TIMES = (0.0, 1.0e9, 1.0e9, 1.7e9, 1.7e9 + 0.5, -86400.0)
# As NDJSON writes them: offsets, fractions, and (2300, 9999) times where 1 µs is below a
# double's spacing, so float order ties where datetime order does not.
STAMPS = (
    "2026-11-01T00:00:00Z",
    "2026-11-01T01:00:00+01:00",
    "2026-11-02T00:00:00.5Z",
    "2300-01-01T00:00:00.000001Z",
    "2300-01-01T00:00:00.000002Z",
    "9999-12-31T23:59:59.999999Z",
)

numbers = st.one_of(st.sampled_from([0.0, -0.0, 0.5, -1.25, 1e3, 3.0]), st.integers(-3, 3))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), numbers, st.sampled_from(["gold", ""])
)
maps = st.dictionaries(st.sampled_from(KEYS), numbers, max_size=3)
segments = st.lists(st.sampled_from(["vip", "nl", "a"]), max_size=3)


@st.composite
def configs(draw: Any) -> ProfilesConfig:
    fields: dict[str, str] = {}
    for g in MERGE_GROUPS:
        if draw(st.booleans()):
            fields[g] = draw(st.sampled_from(POLICIES))
        for k in draw(st.sets(st.sampled_from(KEYS), max_size=2)):
            fields[f"{g}.{k}"] = draw(st.sampled_from(POLICIES))
    raw = {
        "id_types": {"cookie": {"priority": 1}, "email": {"priority": 2}},
        "source_priority": draw(st.permutations(["crm", "web", "app"]))[: draw(st.integers(0, 3))],
        "merge": {"default": draw(st.sampled_from(POLICIES)), "fields": fields},
    }
    return msgspec.convert(raw, ProfilesConfig)


def floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


@st.composite
def flat_records(draw: Any) -> FlatRecord:
    return FlatRecord(
        draw(st.sampled_from(SOURCES)),
        draw(st.sampled_from(TIMES)),
        draw(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=3)),
        floats(draw(maps)),
        draw(segments),
        floats(draw(maps)),
        floats(draw(maps)),
    )


def enc(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


@settings(max_examples=300, deadline=None)
@given(cfg=configs(), recs=st.lists(flat_records(), min_size=2, max_size=5))
def test_compiled_merge_writes_the_reference_bytes(cfg: ProfilesConfig, recs: Any) -> None:
    before = enc(recs)
    ids = {"cookie": ["k1", "k2"]}
    assert enc(FlatMerger(cfg).merge("p_1", ids, recs)) == enc(
        Merger(cfg).merge_flat("p_1", ids, recs)
    )
    assert enc(recs) == before  # the records' own maps are left as they were


def test_compiled_merge_keeps_nan_where_the_reference_does(
    profiles_config: Any,
) -> None:
    cfg = profiles_config(merge={"default": "max", "fields": {"counters": "sum"}})
    nan = math.nan
    recs = [
        FlatRecord("crm", 1.0, {"a": nan}, {"a": nan}, [], {"a": nan}, {"a": 1.0}),
        FlatRecord("web", 2.0, {"a": 2.0}, {"a": 2.0}, [], {"a": 1.0}, {"a": nan}),
    ]
    assert enc(FlatMerger(cfg).merge("p", {}, recs)) == enc(Merger(cfg).merge_flat("p", {}, recs))


# ---- a row group, payload kinds mixed ---------------------------------------------------------


@st.composite
def payloads(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["clean", "clean", "loose", "line"]))
    source = draw(st.sampled_from(SOURCES))
    if kind == "line":
        line = {
            "source": source,
            "ids": {"cookie": "k1"},
            "updated_at": draw(st.sampled_from(STAMPS)),
            "attributes": draw(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=3)),
            "interests": draw(maps),
            "segments": draw(segments),
            "counters": draw(maps),
            "last_seen": draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(STAMPS))),
        }
        # Keys left out are the record's defaults.
        for k in ("attributes", "interests", "segments", "counters", "last_seen"):
            if draw(st.integers(0, 4)) == 0:
                del line[k]
        return orjson.dumps(line) + draw(st.sampled_from([b"", b"\n"]))
    rec: dict[str, Any] = {
        "source": source,
        "updated_at": draw(st.sampled_from(TIMES)),
        "attributes": draw(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=3)),
        "interests": floats(draw(maps)),
        "segments": draw(segments),
        "counters": floats(draw(maps)),
        "last_seen": floats(draw(maps)),
    }
    if kind == "clean":
        return bytes([CLEAN]) + orjson.dumps(rec)
    # LOOSE: any column or value may be null.
    for k in ("attributes", "interests", "counters", "last_seen"):
        if draw(st.integers(0, 3)) == 0:
            rec[k] = None
        elif rec[k] and draw(st.booleans()):
            rec[k][next(iter(rec[k]))] = None
    if draw(st.booleans()):
        rec["segments"] = None if draw(st.booleans()) else [*rec["segments"], None]
    return bytes([LOOSE]) + orjson.dumps(rec)


persons = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["cookie:k1", "cookie:k2", "email:e1", "email:a:b"]), min_size=1),
        st.lists(payloads(), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=12,
)


def table(people: list[tuple[list[str], list[bytes]]], binary: Any, chunks: int) -> Any:
    cids = [f"p_{i:04d}" for i in range(len(people))]
    t = pa.table(
        {
            "cid": pa.array(cids, pa.string()),
            "payloads": pa.array([p for _, p in people], pa.list_(binary)),
            "keys": pa.array([k for k, _ in people], pa.list_(pa.string())),
        }
    )
    if chunks > 1 and len(people) > 1:  # as a file read in pieces: several chunks, sliced
        cut = len(people) // 2
        t = pa.concat_tables([t.slice(0, cut), t.slice(cut)])
    return t


@settings(max_examples=200, deadline=None)
@given(
    cfg=configs(),
    people=persons,
    binary=st.sampled_from([pa.binary(), pa.large_binary()]),
    chunks=st.integers(1, 2),
    skip=st.integers(0, 2),
    piece=st.sampled_from([1, 3, merge_pool.SLICE]),
)
def test_a_row_group_merges_to_the_reference_bytes(
    cfg: ProfilesConfig, people: Any, binary: Any, chunks: int, skip: int, piece: int
) -> None:
    t = table(people, binary, chunks).slice(min(skip, len(people) - 1))
    reference = Assembler(cfg)
    want = [
        (cid.encode(), reference.value(cid, keys, p))
        for cid, p, keys in zip(
            t.column(0).to_pylist(), t.column(1).to_pylist(), t.column(2).to_pylist(), strict=True
        )
    ]
    default, merge_pool.SLICE = merge_pool.SLICE, piece  # persons decoded a few at a time too
    try:
        assert GroupMerger(cfg).pairs(t) == want
    finally:
        merge_pool.SLICE = default


def test_far_lines_are_found_and_near_ones_are_not() -> None:
    near = orjson.dumps({"source": "crm", "ids": {}, "updated_at": STAMPS[0]})
    far = orjson.dumps({"source": "crm", "ids": {}, "updated_at": STAMPS[3]})
    clean = bytes([CLEAN]) + orjson.dumps({"source": "web", "updated_at": 1.0})
    recs, found = GroupDecoder().decode(pa.array([clean, near, far, clean, far], pa.binary()))
    assert [r.source for r in recs] == ["web", "crm", "crm", "web", "crm"]
    assert found == [2, 4]
    assert recs[1].updated_at == 1793491200.0


def test_a_payload_that_is_not_json_is_an_error_not_a_wrong_profile(
    profiles_config: Any,
) -> None:
    bad = bytes([CLEAN]) + b'{"source": "crm", "updated_at": '
    with pytest.raises(msgspec.DecodeError):
        GroupMerger(profiles_config()).pairs(table([(["cookie:k1"], [bad])], pa.binary(), 1))


def person_bytes(cfg: ProfilesConfig, payloads: list[bytes]) -> tuple[bytes, bytes]:
    t = table([(["cookie:k1"], payloads)], pa.binary(), 1)
    (pair,) = GroupMerger(cfg).pairs(t)
    return pair[1], Assembler(cfg).value("p_0000", ["cookie:k1"], payloads)


def test_lines_a_microsecond_apart_where_doubles_tie_merge_in_datetime_order(
    profiles_config: Any,
) -> None:
    # Later first in the input: by float time they tie (input order would let the earlier
    # win), by datetime the later wins — the reference merges NDJSON lines by datetime.
    later, earlier = (
        orjson.dumps({"source": "web", "ids": {}, "updated_at": s, "attributes": {"city": c}})
        for s, c in ((STAMPS[4], "Paris"), (STAMPS[3], "Lyon"))
    )
    fast, reference = person_bytes(profiles_config(), [later, earlier])
    assert fast == reference
    assert msgspec.msgpack.decode(fast)["attributes"] == {"city": "Paris"}


def test_a_newest_key_after_a_source_priority_key_takes_the_newest_record(
    profiles_config: Any,
) -> None:
    # Each key overriding its group's policy is read in its own policy's order: `b` (newest)
    # takes the newer record's value even though `a` before it was read in trust order.
    cfg = profiles_config(
        source_priority=["crm"],
        merge={
            "default": "sum",
            "fields": {"attributes.a": "source_priority", "attributes.b": "newest"},
        },
    )
    recs = [
        FlatRecord("crm", 0.0, {"a": "crm", "b": "crm"}),
        FlatRecord("web", 1.0, {"a": "web", "b": "web"}),
    ]
    reference = enc(Merger(cfg).merge_flat("p", {}, recs))
    assert msgspec.msgpack.decode(reference)["attributes"] == {"a": "crm", "b": "web"}
    assert enc(FlatMerger(cfg).merge("p", {}, recs)) == reference


def test_a_hostile_field_key_is_data_in_the_compiled_merge(profiles_config: Any) -> None:
    # Field keys come from the profiles config: they are bound as constants, never source text.
    key = "x\"]; import os; os._exit(3) #\n'"
    cfg = profiles_config(merge={"default": "newest", "fields": {f"counters.{key}": "max"}})
    recs = [
        FlatRecord("web", 0.0, counters={key: 2.0}),
        FlatRecord("crm", 1.0, counters={key: 1.0}),
    ]
    merger = FlatMerger(cfg)
    assert key not in merger.source
    fast = enc(merger.merge("p", {}, recs))
    assert fast == enc(Merger(cfg).merge_flat("p", {}, recs))
    assert msgspec.msgpack.decode(fast)["counters"] == {key: 2.0}


# ---- a row group of one kind: decoded in one call, as it lies ---------------------------------


def one_by_one(payloads: list[bytes]) -> list[FlatRecord]:
    out = []
    for p in payloads:
        r = FlatDecoder().decode(p)
        out.append(r if isinstance(r, FlatRecord) else from_record(r))
    return out


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(["clean", "line"]),
    data=st.data(),
    binary=st.sampled_from([pa.binary(), pa.large_binary()]),
    skip=st.integers(0, 2),
)
def test_a_group_of_one_kind_decodes_as_each_payload_alone(
    kind: str, data: Any, binary: Any, skip: int
) -> None:
    # CLEAN payloads have their marks made line breaks in one copy; NDJSON lines are decoded as
    # they lie, one object after another, with or without their line breaks.
    one = payloads().filter(lambda p: (p[0] == CLEAN) == (kind == "clean") and p[0] != LOOSE)
    got = data.draw(st.lists(one, min_size=1, max_size=20))
    arr = pa.array([b"\x00" * 3, *got], binary).slice(1)  # offsets not from 0
    recs, far = GroupDecoder().decode(arr.slice(min(skip, len(got) - 1)))
    want = one_by_one(got[min(skip, len(got) - 1) :])
    assert enc(recs) == enc(want)
    assert far == [i for i, r in enumerate(want) if abs(r.updated_at) >= EXACT_SECONDS]


@pytest.mark.parametrize(
    "group",
    [
        # A mark inside a payload is a raw control byte: no JSON, whatever the first bytes say.
        [bytes([CLEAN]) + b'{"source":"crm\x01","updated_at":1.0}'],
        [bytes([CLEAN]) + b'{"source":"crm","updated_at":1.0}\x01'],
        [b'{"source":"crm","ids":{},"updated_at":"2026-11-01T00:00:00Z","segments":["\x02"]}'],
        # Two records in one payload, one in none: counted, not shifted onto other persons.
        [
            bytes([CLEAN]) + b'{"source":"crm","updated_at":1.0}{"source":"web","updated_at":2.0}',
            bytes([CLEAN]),
        ],
        [
            b'{"source":"crm","ids":{},"updated_at":"2026-11-01T00:00:00Z"}\n'
            b'{"source":"web","ids":{},"updated_at":"2026-11-01T00:00:00Z"}',
            b'{"source":"app","ids":{},"updated_at":"2026-11-01T00:00:00Z"}',
        ],
    ],
)
def test_a_group_whose_payloads_do_not_split_as_given_is_an_error(group: list[bytes]) -> None:
    with pytest.raises((ValueError, msgspec.DecodeError)):
        GroupDecoder().decode(pa.array(group, pa.binary()))


def test_lines_that_do_not_start_with_their_object_are_decoded_one_by_one_alike() -> None:
    # Leading blanks are JSON's whitespace: such a group takes the general path, same records.
    lines = [
        b'{"source":"crm","ids":{},"updated_at":"2026-11-01T00:00:00Z","segments":["a"]}\r\n',
        b' \t{"source":"web","ids":{},"updated_at":"2026-11-02T00:00:00.5Z"}',
        b'{"source":"app","ids":{},"updated_at":"2300-01-01T00:00:00.000001Z"}',
    ]
    recs, far = GroupDecoder().decode(pa.array(lines, pa.binary()))
    assert enc(recs) == enc(one_by_one(lines))
    assert far == [2]
