"""A profile record with its times as epoch seconds, however it was read.

Merging needs times only to order records and to store them as epoch seconds, so the build
engine merges `FlatRecord`s: an NDJSON line is decoded as the `ProfileRecord` it must be (its
errors are the user's) and flattened only when it shares a person with a Parquet row; a
Parquet row arrives as *typed JSON* rendered by DuckDB straight from its columns
(`parquet_schema.typed_payload_expr`) — several times cheaper to render than the NDJSON-shaped
line, and decoded straight into a `FlatRecord` when it holds no null (`CLEAN`, nearly every
row); a row with nulls (`LOOSE`: a null inside a map or struct means "not set") has them
dropped here. The first byte says which; no JSON text starts with either.
"""

from __future__ import annotations

from typing import Any

import msgspec

from snapshots.model import ProfileRecord, Scalar

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


def from_record(r: ProfileRecord) -> FlatRecord:
    return FlatRecord(
        r.source,
        r.updated_at.timestamp(),
        r.attributes,
        r.interests,
        r.segments,
        r.counters,
        {k: v.timestamp() for k, v in r.last_seen.items()} if r.last_seen else {},
    )


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
