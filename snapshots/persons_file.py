"""The persons the merge workers merge: one row per person, in canonical-id order, a group
of persons (one merge task) at a time.

Schema (`merge_pool` reads it by position): `cid` VARCHAR, `payloads` LIST<BLOB> (the
person's records in input order), `keys` LIST<VARCHAR> (identifiers in first-seen order).

It is assembled from two streams the engine sorts by (person number, order within person):
records and identifiers. Person numbers are 0..n-1 in canonical-id order, so each row group's
lists are cut from the streams by the person column alone (offsets from counts), with no
list aggregate, join or sort of the lists themselves: grouping payload lists in the engine
(a hash aggregate of blobs, then a sort of the lists by canonical id) was most of the stitch
phase.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA = pa.schema(
    [
        pa.field("cid", pa.string(), nullable=False),
        pa.field("payloads", pa.list_(pa.binary())),
        pa.field("keys", pa.list_(pa.string())),
    ]
)


class _Stream:
    """Record batches of (person, value), sorted by person, taken a range of persons at a time."""

    def __init__(self, batches: Iterator[pa.RecordBatch], value_type: pa.DataType) -> None:
        self._batches = batches
        self._rest: pa.RecordBatch | None = None
        self._type = value_type

    def take(self, lo: int, hi: int) -> pa.ListArray:
        """The values of persons lo..hi-1 as one list per person (the stream is at `lo`)."""
        persons: list[np.ndarray] = []
        values: list[pa.Array] = []
        while True:
            b = self._rest
            self._rest = None
            if b is None:
                b = next(self._batches, None)
                if b is None:
                    break
            p = b.column(0).to_numpy()
            cut = int(np.searchsorted(p, hi))
            if cut < len(p):
                self._rest = b.slice(cut)
                b, p = b.slice(0, cut), p[:cut]
            persons.append(p)
            values.append(b.column(1))
            if self._rest is not None:
                break
        n = hi - lo
        p_all = np.concatenate(persons) if persons else np.zeros(0, np.int64)
        if len(p_all) and (p_all[0] < lo or p_all[-1] >= hi):
            raise AssertionError("persons stream out of order")
        counts = np.bincount(p_all - lo, minlength=n) if len(p_all) else np.zeros(n, np.int64)
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(counts, out=offsets[1:])
        vals = pa.concat_arrays(values) if values else pa.array([], self._type)
        if vals.type != self._type:
            vals = vals.cast(self._type)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), vals)

    def done(self) -> bool:
        if self._rest is not None and len(self._rest):
            return False
        nxt = next(self._batches, None)
        while nxt is not None and not len(nxt):
            nxt = next(self._batches, None)
        return nxt is None


def _batches(reader: Any) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def fixed_strings(rows: np.ndarray) -> pa.Array:
    """A 2-D uint8 array (one fixed-width ASCII string per row) as an Arrow string array."""
    n, width = rows.shape
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    data = np.ascontiguousarray(rows)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def person_groups(cids: np.ndarray, records: Any, keys: Any, group: int) -> Iterator[pa.Table]:
    """The persons, `group` at a time (the last group may be smaller), as tables of `SCHEMA`;
    `cids` holds the sorted canonical ids, one fixed-width row of bytes each (person i is row
    i); `records`/`keys` are Arrow record-batch readers of (person, payload) and (person, key)
    rows sorted by person, then input order / first-seen order. Each group goes to a merge
    worker as it is cut: no file of all persons is written (compressing it, writing and
    reading it back was ~2 CPU s at 1 M people, and the workers waited for all of it)."""
    recs = _Stream(_batches(records), pa.binary())
    ids = _Stream(_batches(keys), pa.string())
    n = len(cids)
    for lo in range(0, n, group):
        hi = min(n, lo + group)
        yield pa.Table.from_arrays(
            [fixed_strings(cids[lo:hi]), recs.take(lo, hi), ids.take(lo, hi)], schema=SCHEMA
        )
        # Arrow's allocator would keep what the groups before freed, beside the engine's two
        # sorts (the build's peak): handed back a group at a time.
        pa.default_memory_pool().release_unused()
    if not (recs.done() and ids.done()):
        raise AssertionError("persons streams hold rows past the last person")
