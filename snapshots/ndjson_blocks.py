"""NDJSON read in blocks of whole lines: the build engine's fast path (issue 17).

Per-line Python cost as much as decoding: keying each record's identifiers (`IdRules.keyed`),
appending each line, key and number to lists, converting the lists to Arrow. Here a block of
lines (several MB) is decoded line by line by msgspec into the same `ProfileRecord`, keeping
only each record's `ids`; everything after that is done per block on columns:

- the payloads are the block's own bytes cut at line ends (an Arrow binary array over the
  block, no object per line); the record ids come from a running line count;
- identifiers are keyed one id type at a time (`key_block`): the type's values as an Arrow
  string column, empty and blocklisted values masked out (the key `type:value` is the type's
  rank and the value: the engine never spells it out per identifier).

A block that is not plain — a line that is blank or does not decode, a record whose keying is
not the common case (an id type as a list, an unknown id type, no usable identifier) — is left
to the caller's per-line path, which reports exactly as the original reader does; `key_block`
returning None means "key these records one by one". So what reaches the snapshot is what
the per-line reader would have produced, only cheaper.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO, NamedTuple

import msgspec

from snapshots.identity import IdRules
from snapshots.ndjson import MAX_LINE_BYTES, SKIP_CHUNK

BLOCK_BYTES = 8 << 20


class Span(NamedTuple):
    """A block of whole lines of a file (`offset`, `length` in bytes); or, `too_long` > 0, one
    line longer than `MAX_LINE_BYTES` (`too_long` its bytes, newline not counted) that is not
    to be read."""

    offset: int
    length: int
    too_long: int = 0


def spans(path: str | os.PathLike[str], size: int | None = None) -> Iterator[Span]:
    """The file's blocks of whole lines, each ending with a newline but for a last line without
    one; about `size` bytes each (`BLOCK_BYTES`). Lines are cut at b"\\n" only, as reading the
    file line by line does. Only the line each cut falls in is read (in chunks): when it is
    longer than `MAX_LINE_BYTES`, it is a span of its own, `too_long`, so a block holds no line
    longer than itself (about `size`) and no over-long line is ever read whole."""
    size = size or BLOCK_BYTES
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        at = 0
        while at < end:
            if at + size >= end:
                yield Span(at, end - at)
                return
            last = at + size - 1  # the line this byte is in ends the block
            start = _line_start(f, at, last)
            f.seek(last)
            stop, newline = _line_end(f)
            n = stop - start
            length = n - 1 if newline else n
            if length <= MAX_LINE_BYTES:
                yield Span(at, stop - at)
            else:
                if start > at:
                    yield Span(at, start - at)
                yield Span(start, n, length)
            at = stop


def _line_start(f: BinaryIO, lo: int, pos: int) -> int:
    """Where the line holding byte `pos` starts: after the last newline before `pos`, or `lo`
    (a line start) if there is none from `lo` on; read backwards in chunks."""
    hi = pos
    while hi > lo:
        a = max(lo, hi - SKIP_CHUNK)
        chunk = os.pread(f.fileno(), hi - a, a)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return a + i + 1
        hi = a
    return lo


def _line_end(f: BinaryIO) -> tuple[int, bool]:
    """Past the end of the line `f` is in, read in chunks: (offset, whether a newline ends
    it; not at the file's end)."""
    while True:
        part = f.readline(SKIP_CHUNK)
        if not part or part.endswith(b"\n"):
            return f.tell(), part.endswith(b"\n")


def read_span(path: str | os.PathLike[str], offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def split_lines(block: bytes) -> list[bytes]:
    """The block's lines without their newlines."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    return lines


def line_offsets(lines: Sequence[bytes], block_len: int) -> Any:
    """Where each line (newline included) starts in its block, and the block's end: the
    value offsets of an Arrow binary array of the lines as the per-line reader yields them."""
    import numpy as np

    offs = np.zeros(len(lines) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)) + 1, out=offs[1:])
    offs[-1] = min(int(offs[-1]), block_len)  # a last line without a newline
    return offs


def payloads(block: bytes, offsets: Any) -> Any:
    """The lines of `block` as an Arrow binary array sharing the block's memory."""
    import pyarrow as pa

    n = len(offsets) - 1
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    )


def decode_ids(
    decoder: msgspec.json.Decoder[Any], lines: Sequence[bytes]
) -> list[Mapping[str, Any]] | None:
    """Every line validated as the decoder's record type, its `ids` kept; None when any line
    is blank, longer than `MAX_LINE_BYTES` or does not decode (the caller reads that block
    line by line)."""
    if lines and max(map(len, lines)) > MAX_LINE_BYTES:
        return None
    decode = decoder.decode
    # The records form no cycles and die at once: the collector would only walk them, again
    # and again, while they are made (a quarter of the decoding time; as in `merge_pool`).
    was = gc.isenabled()
    gc.disable()
    try:
        return [decode(line).ids for line in lines]
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    finally:
        if was:
            gc.enable()


class KeyedBlock(msgspec.Struct):
    """A block's identifier rows (record index in the block, position in the record's keys,
    value, type rank: the key is `type:value`) and its blocklisted values (record index,
    `type:value`) in record order, each record's in priority order."""

    record: Any  # numpy int64
    pos: Any  # numpy int64
    value: Any  # Arrow string array
    rank: Any  # numpy int32
    blocked: list[tuple[int, str]]


def key_block(rules: IdRules, ids: Sequence[Mapping[str, Any]]) -> KeyedBlock | None:
    """What `rules.keyed` gives each record, for a block whose every record is the common
    case: each configured id type a single string (or absent), no other type, at least one
    usable identifier. None otherwise: the caller keys the block record by record."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    present = sum(map(len, ids))  # NDJSON ids hold no nulls: every entry is a value
    # One pass over the dicts in C: a configured type a record lacks is null; other types
    # are left out, and counted below.
    typ = pa.struct([(t, pa.string()) for t, _, _, _ in rules.tinfo])
    try:
        table = pa.array(ids, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # a list of values somewhere (or text Arrow cannot hold)
    cols = [table.field(i) for i in range(len(rules.tinfo))]
    matched = sum(n - c.null_count for c in cols)
    if matched != present:
        return None  # an unknown id type: `keyed` words the problem
    count = np.zeros(n, np.int64)
    recs: list[Any] = []
    poss: list[Any] = []
    values: list[Any] = []
    ranks: list[Any] = []
    blocked: list[tuple[int, int, str]] = []
    for ti, ((t, rank, junk, _unique), col) in enumerate(zip(rules.tinfo, cols, strict=True)):
        # `keyed` skips empty values and moves blocklisted ones aside.
        usable = pc.fill_null(pc.greater(pc.binary_length(col), 0), False)
        if junk is not None:
            bad = pc.fill_null(pc.is_in(col, value_set=pa.array(sorted(junk), pa.string())), False)
            bad = pc.and_(bad, usable)
            if pc.any(bad).as_py():
                where = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
                vals = col.take(pa.array(where)).to_pylist()
                blocked.extend((int(i), ti, f"{t}:{v}") for i, v in zip(where, vals, strict=True))
                usable = pc.and_(usable, pc.invert(bad))
        idx = np.flatnonzero(usable.to_numpy(zero_copy_only=False))
        if not len(idx):
            continue
        recs.append(idx)
        poss.append(count[idx])
        count[idx] += 1
        values.append(col.take(pa.array(idx)))
        ranks.append(np.full(len(idx), rank, np.int32))
    if n and not count.all():
        return None  # a record with no usable identifier: refused, in `keyed`'s words
    blocked.sort(key=lambda b: (b[0], b[1]))
    return KeyedBlock(
        record=np.concatenate(recs) if recs else np.zeros(0, np.int64),
        pos=np.concatenate(poss) if poss else np.zeros(0, np.int64),
        value=pa.concat_arrays(values) if values else pa.array([], pa.string()),
        rank=np.concatenate(ranks) if ranks else np.zeros(0, np.int32),
        blocked=[(i, text) for i, _, text in blocked],
    )


class ScannedBlock(msgspec.Struct):
    """A block's lines (count and offsets) and keys; or `keyed` None: the block is read line
    by line, given every record's `ids` when they all decoded (keyed one by one then); or
    `too_long` > 0: the span was one over-long line of that many bytes, not read (`long_line`)."""

    lines: int
    offsets: Any
    keyed: KeyedBlock | None
    ids: list[Mapping[str, Any]] | None
    too_long: int = 0


def long_line(span: Span) -> ScannedBlock:
    """What a `too_long` span scans to, without reading it: one line, an invalid record."""
    return ScannedBlock(1, None, None, None, span.too_long)


def scan_block(block: bytes, decoder: msgspec.json.Decoder[Any], rules: IdRules) -> ScannedBlock:
    lines = split_lines(block)
    offsets = line_offsets(lines, len(block))
    ids = decode_ids(decoder, lines)
    keyed = key_block(rules, ids) if ids is not None else None
    return ScannedBlock(len(lines), offsets, keyed, ids if keyed is None else None)


_worker: tuple[bytes, msgspec.json.Decoder[Any], IdRules] | None = None


def scan_span(cfg_json: bytes, path: str, span: Span) -> ScannedBlock:
    """Worker side (the build's scanner processes): one block of a file, decoded and keyed;
    the parent reads the same bytes for the payloads and does the rest."""
    from snapshots.config import ProfilesConfig
    from snapshots.model import ProfileRecord

    if span.too_long:
        return long_line(span)
    global _worker
    if _worker is None or _worker[0] != cfg_json:
        cfg = msgspec.json.decode(cfg_json, type=ProfilesConfig)
        _worker = (cfg_json, msgspec.json.Decoder(ProfileRecord), IdRules(cfg))
    return scan_block(read_span(path, span.offset, span.length), _worker[1], _worker[2])
