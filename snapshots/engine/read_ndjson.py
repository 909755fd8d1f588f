"""The read phase for an NDJSON file: its blocks of lines, decoded and validated by msgspec and
keyed (`ndjson_blocks`), by the scanner processes for large builds, into `recs` and `ids`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from snapshots.engine.session import Accept, Flush, Session
from snapshots.identity import RID_FILE_SHIFT, make_rid
from snapshots.inputs import InputFile
from snapshots.model import ProfileRecord
from snapshots.ndjson import MAX_LINE_BYTES, LineError, decode_line, line_too_long
from snapshots.ndjson_blocks import (
    ScannedBlock,
    long_line,
    payloads,
    read_span,
    scan_block,
    scan_span,
    spans,
)


def read_file(
    session: Session,
    fi: int,
    f: InputFile,
    accept: Accept,
    flush: Flush,
    done_bytes: int,
    total_bytes: int,
) -> int:
    """One NDJSON file, a block of lines at a time (`ndjson_blocks`): a plain block's
    payloads and keys go to DuckDB as Arrow columns; any other block is read line by line
    as ever, so errors, `--skip-invalid` and blocked examples are reported as they were."""
    import numpy as np
    import pyarrow as pa

    problems, con = session.problems, session.con
    batch = session.batch
    valid = 0
    fbytes = 0
    pending_recs: list[Any] = []
    pending_ids: list[Any] = []
    pending = 0

    def insert() -> None:
        nonlocal pending
        if pending_recs:
            con.register("block_recs", pa.concat_tables(pending_recs))
            con.execute("INSERT INTO recs SELECT * FROM block_recs")
            con.unregister("block_recs")
        if pending_ids:
            con.register("block_ids", pa.concat_tables(pending_ids))
            con.execute("INSERT INTO ids SELECT * FROM block_ids")
            con.unregister("block_ids")
        pending_recs.clear()
        pending_ids.clear()
        pending = 0

    first = 1  # the block's first line number
    for block, sb in scanned(session, f.local):
        fbytes += len(block) or sb.too_long
        kb = sb.keyed
        if sb.too_long:
            session.records_read += 1
            problems.bad(make_rid(fi, first), str(line_too_long(f.name, first, sb.too_long)))
        elif kb is None:
            valid += read_lines(session, fi, f.name, first, block, sb.offsets, sb.ids, accept)
            flush()
        else:
            n = sb.lines
            session.records_read += n
            valid += n
            rids = np.arange(first, first + n, dtype=np.int64) | (fi << RID_FILE_SHIFT)
            for i, text in kb.blocked:
                problems.block(int(rids[i]), f"{f.name}:{first + i}", [text])
            pending_recs.append(pa.table({"rid": rids, "payload": payloads(block, sb.offsets)}))
            pending_ids.append(pa.table({"rid": rids[kb.record], "pos": kb.pos,
                                         "val": kb.value, "rank": kb.rank}))  # fmt: skip
            pending += n
            if pending >= batch:
                insert()
        first += sb.lines
        est = int(session.records_read * total_bytes / max(1, done_bytes + fbytes))
        session.tick("read", session.records_read, est)
    insert()
    return valid


def scanned(session: Session, path: str) -> Iterator[tuple[bytes, ScannedBlock]]:
    """The file's blocks in order, each with its decoded and keyed lines: scanned by the
    scanner processes when there are some (large builds), a few blocks ahead of this
    process, which stores the blocks before; else here. An over-long line comes as an
    empty block (`ScannedBlock.too_long`): it is never read."""
    pool = session.scanners
    if pool is None or not pool.parallel:
        decoder = msgspec.json.Decoder(ProfileRecord)
        for span in spans(path):
            if span.too_long:
                yield b"", long_line(span)
                continue
            block = read_span(path, span.offset, span.length)
            yield block, scan_block(block, decoder, session.rules)
        return
    parts = list(spans(path))
    results = pool.ordered(scan_span, ((pool.cfg_json, path, span) for span in parts))
    for span, blocks in zip(parts, results, strict=True):
        yield b"" if span.too_long else read_span(path, span.offset, span.length), blocks


def read_lines(
    session: Session,
    fi: int,
    name: str,
    first: int,
    block: bytes,
    offs: Any,
    ids: list[Any] | None,
    accept: Accept,
) -> int:
    """A block read line by line, the original reader's way: blank lines skipped, each
    other line decoded (unless `ids` has every line's already) and keyed by `IdRules`."""
    decoder = msgspec.json.Decoder(ProfileRecord)
    keyed, problems = session.rules.keyed, session.problems
    valid = 0
    ends: list[int] = offs.tolist()
    for i in range(len(ends) - 1):
        line = block[ends[i] : ends[i + 1]]
        lineno = first + i
        too_long = len(line) - line.endswith(b"\n")
        if too_long > MAX_LINE_BYTES:  # `decode_ids` gave up on the block: ids is None
            session.records_read += 1
            problems.bad(make_rid(fi, lineno), str(line_too_long(name, lineno, too_long)))
            continue
        if ids is None and not line.strip():
            continue
        session.records_read += 1
        rid = make_rid(fi, lineno)
        if ids is None:
            rec = decode_line(decoder, name, lineno, line)
            if isinstance(rec, LineError):
                problems.bad(rid, str(rec))
                continue
            k = keyed(rec.ids)
        else:
            k = keyed(ids[i])
        if k.blocked:
            problems.block(rid, f"{name}:{lineno}", k.blocked)
        if k.problem is not None:
            problems.bad(rid, f"{name}:{lineno}: {k.problem}")
            continue
        accept(rid, line, k.keys)
        valid += 1
    return valid
