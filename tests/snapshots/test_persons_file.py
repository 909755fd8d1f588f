"""The persons the merge workers merge (issue 17): one row per person cut from two streams
sorted by person, whatever the batch boundaries, a group at a time; the schema `merge_pool`
reads."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.merge_pool import hand_over, merge_file
from snapshots.persons_file import SCHEMA, fixed_strings, person_groups


def _reader(rows: list[tuple[int, bytes | str]], cuts: list[int], typ: pa.DataType) -> object:
    """`rows` as record batches cut at `cuts` (empty batches included)."""
    batches = []
    edges = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]
    for lo, hi in itertools.pairwise(edges):
        part = rows[lo:hi]
        batches.append(
            pa.record_batch(
                [pa.array([p for p, _ in part], pa.int32()), pa.array([v for _, v in part], typ)],
                names=["p", "v"],
            )
        )
    schema = pa.schema([("p", pa.int32()), ("v", typ)])
    return pa.RecordBatchReader.from_batches(schema, iter(batches))


def _cids(n: int) -> np.ndarray:
    return np.frombuffer(b"".join(f"p_{i:020x}".encode() for i in range(n)), np.uint8).reshape(
        n, 22
    )


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=0, max_size=12),
    rec_cuts=st.lists(st.integers(0, 40), max_size=6),
    key_cuts=st.lists(st.integers(0, 40), max_size=6),
    group=st.integers(1, 5),
)
def test_rows_are_whole_persons_whatever_the_batches(
    sizes: list[tuple[int, int]], rec_cuts: list[int], key_cuts: list[int], group: int
) -> None:
    recs = [(p, f"r{p}.{i}".encode()) for p, (nr, _) in enumerate(sizes) for i in range(nr)]
    keys = [(p, f"k{p}.{i}") for p, (_, nk) in enumerate(sizes) for i in range(nk)]
    n = len(sizes)
    groups = list(
        person_groups(
            _cids(n),
            _reader(recs, rec_cuts, pa.binary()),
            _reader(keys, key_cuts, pa.string()),
            group,
        )
    )
    assert all(t.schema == SCHEMA for t in groups)
    assert [t.num_rows for t in groups] == [min(group, n - lo) for lo in range(0, n, group)]
    got = [row for t in groups for row in t.to_pylist()]
    assert got == [
        {
            "cid": f"p_{p:020x}",
            "payloads": [f"r{p}.{i}".encode() for i in range(nr)],
            "keys": [f"k{p}.{i}" for i in range(nk)],
        }
        for p, (nr, nk) in enumerate(sizes)
    ]


def test_rows_past_the_last_person_are_an_error() -> None:
    groups = person_groups(
        _cids(1),
        _reader([(0, b"a"), (1, b"b")], [], pa.binary()),
        _reader([(0, "k")], [], pa.string()),
        4,
    )
    with pytest.raises(AssertionError, match="past the last person"):
        list(groups)


def test_the_merge_workers_take_a_group_cut_from_larger_batches(tmp_path: Path) -> None:
    """`merge_pool` takes columns by position (cid, payloads, keys); a group is handed to a
    worker as a file holding that group alone, not the batches it was sliced from, and the
    worker removes it."""
    from snapshots.merge_pool import _init

    line = b'{"source":"crm","ids":{"cookie":"k1"},"updated_at":"2026-11-01T00:00:00Z"}'
    recs = [(0, line), *[(1, b"x" * 1000)] * 100]
    keys = [(0, "cookie:k1"), (1, "cookie:k2")]
    first, _ = person_groups(
        _cids(2), _reader(recs, [], pa.binary()), _reader(keys, [], pa.string()), 1
    )
    path = hand_over(first, str(tmp_path / "g.arrow"))
    assert Path(path).stat().st_size < 2000
    _init(b'{"id_types": {"cookie": {"priority": 1}}}')
    [(cid, value)] = merge_file(path)
    assert cid == b"p_00000000000000000000" and value
    assert list(tmp_path.iterdir()) == []


def test_fixed_strings() -> None:
    rows = np.frombuffer(b"abcdefxyz", np.uint8).reshape(3, 3)
    assert fixed_strings(rows[1:]).to_pylist() == ["def", "xyz"]
    assert fixed_strings(rows[:0]).to_pylist() == []
