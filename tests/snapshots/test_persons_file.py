"""The persons file the merge workers read (issue 17): one row per person cut from two streams
sorted by person, whatever the batch boundaries; the schema and row groups `merge_pool` reads."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.merge_pool import merge_group
from snapshots.persons_file import SCHEMA, fixed_strings, write_persons


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
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[tuple[int, int]],
    rec_cuts: list[int],
    key_cuts: list[int],
    group: int,
) -> None:
    path = tmp_path_factory.mktemp("persons") / "persons.parquet"
    recs = [(p, f"r{p}.{i}".encode()) for p, (nr, _) in enumerate(sizes) for i in range(nr)]
    keys = [(p, f"k{p}.{i}") for p, (_, nk) in enumerate(sizes) for i in range(nk)]
    n = len(sizes)
    groups = write_persons(
        path,
        _cids(n),
        _reader(recs, rec_cuts, pa.binary()),
        _reader(keys, key_cuts, pa.string()),
        group,
    )
    f = pq.ParquetFile(path)
    assert f.schema_arrow == SCHEMA
    assert groups == f.metadata.num_row_groups == -(-n // group)
    assert [f.metadata.row_group(g).num_rows for g in range(groups)] == [
        min(group, n - g * group) for g in range(groups)
    ]
    got = f.read().to_pylist() if groups else []
    assert got == [
        {
            "cid": f"p_{p:020x}",
            "payloads": [f"r{p}.{i}".encode() for i in range(nr)],
            "keys": [f"k{p}.{i}" for i in range(nk)],
        }
        for p, (nr, nk) in enumerate(sizes)
    ]


def test_rows_past_the_last_person_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="past the last person"):
        write_persons(
            tmp_path / "p.parquet",
            _cids(1),
            _reader([(0, b"a"), (1, b"b")], [], pa.binary()),
            _reader([(0, "k")], [], pa.string()),
            4,
        )


def test_the_merge_workers_read_it(tmp_path: Path) -> None:
    """`merge_pool.merge_group` takes columns by position: cid, payloads, keys."""
    from snapshots.merge_pool import _init

    path = tmp_path / "p.parquet"
    line = b'{"source":"crm","ids":{"cookie":"k1"},"updated_at":"2026-11-01T00:00:00Z"}'
    write_persons(
        path,
        _cids(1),
        _reader([(0, line)], [], pa.binary()),
        _reader([(0, "cookie:k1")], [], pa.string()),
        16,
    )
    _init(b'{"id_types": {"cookie": {"priority": 1}}}')
    [(cid, value)] = merge_group(str(path), 0)
    assert cid == b"p_00000000000000000000" and value


def test_fixed_strings() -> None:
    rows = np.frombuffer(b"abcdefxyz", np.uint8).reshape(3, 3)
    assert fixed_strings(rows[1:]).to_pylist() == ["def", "xyz"]
    assert fixed_strings(rows[:0]).to_pylist() == []
