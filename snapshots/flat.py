"""A profile record with its times as epoch seconds, however it was read.

Merging needs times only to order records and to store them as epoch seconds, so the build
engine merges `FlatRecord`s: an NDJSON line is decoded as the `ProfileRecord` it must be (its
errors are the user's) and flattened only when it shares a person with a Parquet row; a
Parquet row arrives as *typed JSON* rendered by DuckDB straight from its columns
(`parquet_schema.typed_payload_expr`) — several times cheaper to render than the NDJSON-shaped
line, and decoded straight into a `FlatRecord` when it holds no null (`CLEAN`, nearly every
row); a row with nulls (`LOOSE`: a null inside a map or struct means "not set") has them
dropped here. The first byte says which; no JSON text starts with either.

A merge task decodes a whole row group's payloads at once (`GroupDecoder`): one msgspec call
for the lot instead of one per record, and NDJSON lines decoded only as far as merging needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from snapshots.model import ProfileRecord, Scalar, TzDatetime

CLEAN = 1
LOOSE = 2


class FlatRecord(msgspec.Struct, gc=False):
    source: str
    updated_at: float  # epoch seconds, as `datetime.timestamp()` gives them
    attributes: dict[str, Scalar] = {}
    interests: dict[str, float] = {}
    segments: list[str] = []
    counters: dict[str, float] = {}
    last_seen: dict[str, float] = {}


class LooseRecord(msgspec.Struct, gc=False):
    """A `LOOSE` payload: any column or value may be null."""

    source: str
    updated_at: float
    attributes: dict[str, Scalar] | None = None
    interests: dict[str, float | None] | None = None
    segments: list[str | None] | None = None
    counters: dict[str, float | None] | None = None
    last_seen: dict[str, float | None] | None = None


class LineRecord(msgspec.Struct, gc=False):
    """An NDJSON line as merging needs it: `ids` skipped (the engine keyed them already) and no
    unknown-field check (the line was validated as a `ProfileRecord` when it was read)."""

    source: str
    updated_at: TzDatetime
    attributes: dict[str, Scalar] = {}
    interests: dict[str, float] = {}
    segments: list[str] = []
    counters: dict[str, float] = {}
    last_seen: dict[str, TzDatetime] = {}


# |epoch seconds| below which distinct microseconds stay distinct doubles (the spacing of
# doubles there is under 1 µs), so ordering lines by float time is ordering them by datetime.
EXACT_SECONDS = float(2**33)


def from_records(rs: Iterable[ProfileRecord | LineRecord]) -> list[FlatRecord]:
    """Records as `FlatRecord`s (times as epoch seconds). One comprehension for a whole group:
    a call per record was a tenth of decoding an NDJSON group (`GroupDecoder`)."""
    return [
        FlatRecord(
            r.source,
            r.updated_at.timestamp(),
            r.attributes,
            r.interests,
            r.segments,
            r.counters,
            {k: v.timestamp() for k, v in r.last_seen.items()} if r.last_seen else {},
        )
        for r in rs
    ]


def from_record(r: ProfileRecord | LineRecord) -> FlatRecord:
    return from_records((r,))[0]


def _set(d: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None} if d else {}


def from_loose(t: LooseRecord) -> FlatRecord:
    return FlatRecord(
        t.source,
        t.updated_at,
        _set(t.attributes),
        _set(t.interests),
        [s for s in t.segments if s is not None] if t.segments else [],
        _set(t.counters),
        _set(t.last_seen),
    )


class FlatDecoder:
    """Payload bytes → a `ProfileRecord` (an NDJSON line) or a `FlatRecord` (typed)."""

    def __init__(self) -> None:
        self._record = msgspec.json.Decoder(ProfileRecord).decode
        self._clean = msgspec.json.Decoder(FlatRecord).decode
        self._loose = msgspec.json.Decoder(LooseRecord).decode

    def decode(self, payload: bytes | str) -> ProfileRecord | FlatRecord:
        if isinstance(payload, str):
            return self._record(payload)
        first = payload[0]
        if first == CLEAN:
            return self._clean(memoryview(payload)[1:])
        if first == LOOSE:
            return from_loose(self._loose(memoryview(payload)[1:]))
        return self._record(payload)


def layout(values: Any) -> tuple[Any, memoryview]:
    """An Arrow binary array's value offsets (numpy, from 0) and its values end to end: no copy,
    no object per value."""
    import numpy as np
    import pyarrow as pa

    n = len(values)
    _, offsets, data = values.buffers()
    wide = pa.types.is_large_binary(values.type)
    offs = np.frombuffer(offsets, np.int64 if wide else np.int32)[values.offset :][: n + 1]
    start, end = int(offs[0]), int(offs[-1])
    return offs - start, memoryview(data)[start:end] if end > start else memoryview(b"")


COMMA, OPEN, CLOSE, OBJECT = b",[]{"


class GroupDecoder:
    """A row group's payloads (an Arrow binary array: every person's, concatenated) → one
    `FlatRecord` each.

    The `CLEAN` payloads are decoded in one msgspec call (as one JSON array: their marks made
    commas), and so are the NDJSON lines (as they lie, one object after another, when each
    starts with its "{"); only `LOOSE` ones go one by one. `far` lists the NDJSON lines whose
    time lies beyond `EXACT_SECONDS`: a person made only of lines is merged in datetime order
    by `merge.Merger.merge`, which float order could get wrong there (ties), so `merge_pool`
    leaves those persons to the reference path.

    A payload's kind is read from its first byte alone: a mark anywhere else is a raw control
    byte, which no JSON text holds and msgspec refuses; every call checks that it decoded as
    many records as it was given payloads."""

    def __init__(self) -> None:
        self._clean = msgspec.json.Decoder(list[FlatRecord]).decode
        self._lines = msgspec.json.Decoder(LineRecord).decode_lines
        self._line_array = msgspec.json.Decoder(list[LineRecord]).decode
        self._loose = msgspec.json.Decoder(LooseRecord).decode

    def decode(self, values: Any) -> tuple[list[FlatRecord], list[int]]:
        import numpy as np

        n = len(values)
        if n == 0:
            return [], []
        offs, data = layout(values)
        starts = offs[:-1]
        firsts = np.frombuffer(data, np.uint8)[starts]
        clean = int(np.count_nonzero(firsts == CLEAN))
        if clean == n:  # nearly every Parquet build's every group
            # "\x01{…}\x01{…}" → "[{…},{…}]": one copy, n + 1 bytes written.
            buf = bytearray(len(data) + 1)
            buf[:-1] = data
            np.frombuffer(buf, np.uint8)[starts] = COMMA
            buf[0], buf[-1] = OPEN, CLOSE
            return self._decoded_clean(buf, n), []
        if np.count_nonzero(firsts == OBJECT) == n:  # an NDJSON build's every group
            # The lines as they lie, "{…}\n{…}{…}": each starts an object, no copy.
            lines = self._lines(data)
            if len(lines) != n:
                raise ValueError(f"{n} NDJSON payloads decoded as {len(lines)} records")
            out = from_records(lines)
            return out, [
                i for i, f in enumerate(out) if not -EXACT_SECONDS < f.updated_at < EXACT_SECONDS
            ]
        o: list[int] = offs.tolist()
        where: list[int] = np.flatnonzero(firsts != CLEAN).tolist()
        pieces: list[memoryview] = []
        prev = 0
        for i in where:  # the CLEAN ones end to end: cut the others out
            pieces.append(data[prev : o[i]])
            prev = o[i + 1]
        pieces.append(data[prev:])
        recs = self._clean_all(b"".join(pieces), n - len(where))
        others, far = self._others([data[o[i] : o[i + 1]] for i in where])
        far = [where[i] for i in far]
        if not recs:
            return others, far
        if len(others) * 16 < n:
            for i, r in zip(where, others, strict=True):  # ascending: each lands at its index
                recs.insert(i, r)
            return recs, far
        at = dict(zip(where, others, strict=True))
        it_clean = iter(recs)
        return [at[i] if i in at else next(it_clean) for i in range(n)], far

    def _others(self, payloads: list[memoryview]) -> tuple[list[FlatRecord], list[int]]:
        """Payloads that are not CLEAN: NDJSON lines (decoded together) and LOOSE ones."""
        lines = [p for p in payloads if p[0] != LOOSE]
        it_lines = iter(self._line_array(b"[" + b",".join(lines) + b"]"))
        out: list[FlatRecord] = []
        far: list[int] = []
        for i, p in enumerate(payloads):
            if p[0] == LOOSE:
                out.append(from_loose(self._loose(p[1:])))
                continue
            f = from_record(next(it_lines))
            if not -EXACT_SECONDS < f.updated_at < EXACT_SECONDS:
                far.append(i)
            out.append(f)
        return out, far

    def _clean_all(self, data: bytes, n: int) -> list[FlatRecord]:
        if n == 0:
            return []
        # "\x01{…}\x01{…}" → "[{…},{…}]"
        return self._decoded_clean(b"[" + data.replace(b"\x01", b",")[1:] + b"]", n)

    def _decoded_clean(self, array: bytes | bytearray, n: int) -> list[FlatRecord]:
        recs = self._clean(array)
        if len(recs) != n:
            raise ValueError(f"{n} typed payloads decoded as {len(recs)} records")
        return recs
