"""Phase 1, read: every input file into two DuckDB tables, `recs(rid, payload)` and
`ids(rid, pos, val, rank)` (the key `type:val`, its type said by the rank), each file by its
format (`read_ndjson`, `read_parquet`); records read one at a time come in batches."""

from __future__ import annotations

import contextlib

from snapshots.engine import read_ndjson, read_parquet
from snapshots.engine.session import Session
from snapshots.inputs import InputFile

NDJSON_RECORD_BYTES = 400  # a typical export line, to estimate records before reading


def estimate_records(files: list[InputFile]) -> int:
    """Records in the inputs, from Parquet footers and NDJSON sizes (nothing is read)."""
    import pyarrow.parquet as pq

    n = 0
    for f in files:
        if f.format == "parquet":
            # A bad file is reported, with its name, when it is read.
            with contextlib.suppress(Exception):
                n += pq.read_metadata(f.local).num_rows
        else:
            n += f.size // NDJSON_RECORD_BYTES
    return n


def read_inputs(session: Session, files: list[InputFile]) -> int:
    """Fill `recs` and `ids` from `files`; return the valid records (invalid ones are in
    `session.problems`)."""
    import pyarrow as pa

    con = session.con
    con.execute("CREATE TABLE recs (rid BIGINT, payload BLOB)")
    # An identifier's key `type:val` is kept as its value and the type's rank: the type
    # is said by the rank (`components` sorts by (the type's place, value)).
    con.execute("CREATE TABLE ids (rid BIGINT, pos BIGINT, val VARCHAR, rank INTEGER)")
    cut = {rank: len(t) + 1 for t, rank, _, _ in session.rules.tinfo}  # len("type:")
    total_bytes = sum(f.size for f in files) or 1
    done_bytes = 0
    valid = 0
    rid_l: list[int] = []
    pay_l: list[bytes] = []
    id_rid: list[int] = []
    id_pos: list[int] = []
    id_val: list[str] = []
    id_rank: list[int] = []

    def flush() -> None:
        if rid_l:
            batch = pa.table({"rid": pa.array(rid_l, pa.int64()),
                              "payload": pa.array(pay_l, pa.binary())})  # fmt: skip
            con.register("batch_recs", batch)
            con.execute("INSERT INTO recs SELECT * FROM batch_recs")
            con.unregister("batch_recs")
        if id_rid:
            ib = pa.table({"rid": pa.array(id_rid, pa.int64()),
                           "pos": pa.array(id_pos, pa.int64()),
                           "val": pa.array(id_val, pa.string()),
                           "rank": pa.array(id_rank, pa.int32())})  # fmt: skip
            con.register("batch_ids", ib)
            con.execute("INSERT INTO ids SELECT * FROM batch_ids")
            con.unregister("batch_ids")
        for lst in (rid_l, pay_l, id_rid, id_pos, id_val, id_rank):
            lst.clear()

    def accept(rid: int, payload: bytes, keys: list[tuple[str, int]]) -> None:
        rid_l.append(rid)
        pay_l.append(payload)
        for pos, (key, rank) in enumerate(keys):
            id_rid.append(rid)
            id_pos.append(pos)
            id_val.append(key[cut[rank] :])
            id_rank.append(rank)

    # The phase starts now, not at the first batch (a large first Parquet file is read in
    # one statement, which was counted as setup).
    session.tick("read", 0, None)
    for fi, f in enumerate(files):
        if f.format == "ndjson":
            valid += read_ndjson.read_file(session, fi, f, accept, flush, done_bytes, total_bytes)
            done_bytes += f.size
        else:
            valid += read_parquet.read_file(session, fi, f, accept, flush)
            done_bytes += f.size
        flush()
        read = session.records_read
        session.tick("read", read, int(read * total_bytes / max(1, done_bytes)))
    flush()
    return valid
