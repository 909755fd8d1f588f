"""The read phase for a Parquet file: DuckDB reads it, renders each plain row as a typed payload
(its columns as JSON, times as epoch seconds: `flat`) and emits its keys one id type at a time
(`parquet_schema`), straight into `recs` and `ids`; the rare other rows are read one at a time."""

from __future__ import annotations

import msgspec

from snapshots.engine.session import Accept, Flush, Session
from snapshots.errors import InputUnreadable
from snapshots.identity import RID_FILE_SHIFT, make_rid
from snapshots.inputs import InputFile
from snapshots.parquet_schema import (
    INT64_MAX,
    check_profiles_schema,
    key_rows_sql,
    keys_sql,
    payload_expr,
    typed_payload_expr,
    wide_attributes_sql,
)


def read_file(session: Session, fi: int, f: InputFile, accept: Accept, flush: Flush) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(f.local)
        schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        raise InputUnreadable(
            f"{f.name}: not a readable Parquet file (truncated or not Parquet): {exc}"
        ) from None
    check_profiles_schema(f.name, schema)
    _, plain = keys_sql(schema, session.rules.tinfo)
    # An unsigned attribute past a record's integers makes the row an invalid record.
    wide = wide_attributes_sql(schema)
    if wide is not None:
        plain = f"({plain}) AND NOT ({wide[0]})"
    payload = payload_expr(schema)
    src = "read_parquet(?, file_row_number = true)"
    rid = f"(({int(fi)}::BIGINT << {RID_FILE_SHIFT}) | (file_row_number + 1))"
    con = session.con
    dec_ids = msgspec.json.Decoder(dict[str, str | list[str] | None]).decode
    keyed = session.rules.keyed
    problems = session.problems
    valid = 0
    cur = con.cursor()
    # Column names are quoted and config values are SQL literals (parquet_schema); the
    # file path is a parameter.
    try:
        # Plain rows (nearly all) are read, keyed and stored in DuckDB, no Python per row.
        n_plain: int = con.execute(
            f"INSERT INTO recs SELECT {rid}, {typed_payload_expr(schema)} FROM {src} "  # noqa: S608
            f"WHERE {plain}",
            [f.local],
        ).fetchone()[0]
        rows = key_rows_sql(schema, session.rules.tinfo, "p")
        con.execute(
            f"""INSERT INTO ids WITH p AS MATERIALIZED
                (SELECT {rid} AS rid, ids FROM {src} WHERE {plain}) {rows}""",  # noqa: S608
            [f.local],
        )
        session.records_read += n_plain
        valid += n_plain
        session.tick("read", session.records_read, None)
        if n_plain == meta.num_rows:
            return valid  # no other row: no third pass over the file for none
        # The others take the original per-record path, in row order, so problems and
        # blocked examples are reported as ever.
        sql = (
            "SELECT file_row_number, source IS NULL, updated_at IS NULL, to_json(ids), "  # noqa: S608
            f"{payload}, {wide[1] if wide else 'NULL'} FROM {src} WHERE NOT ({plain}) "
            "ORDER BY file_row_number"
        )
        reader = cur.sql(sql, params=[f.local]).to_arrow_reader(session.batch)
        for batch in reader:
            rows = batch.column(0).to_pylist()
            bad_src = batch.column(1).to_pylist()
            bad_ts = batch.column(2).to_pylist()
            ids_json = batch.column(3).to_pylist()
            payloads = batch.column(4).to_pylist()
            too_wide = batch.column(5).to_pylist()
            for row, no_src, no_ts, ij, pl, big in zip(
                rows, bad_src, bad_ts, ids_json, payloads, too_wide, strict=True
            ):
                session.records_read += 1
                rid_n = make_rid(fi, row + 1)
                where = f"{f.name}:row {row + 1}"
                if no_src or no_ts:
                    col = "source" if no_src else "updated_at"
                    problems.bad(rid_n, f"{where}: `{col}` is null")
                    continue
                if big is not None:
                    problems.bad(
                        rid_n,
                        f"{where}: invalid record: attribute {big}, more than a record's "
                        f"integers may be ({INT64_MAX})",
                    )
                    continue
                k = keyed(dec_ids(ij) if ij is not None else {})
                if k.blocked:
                    problems.block(rid_n, where, k.blocked)
                if k.problem is not None:
                    problems.bad(rid_n, f"{where}: {k.problem}")
                    continue
                accept(rid_n, pl.encode(), k.keys)
                valid += 1
            flush()
            session.tick("read", session.records_read, None)
    except Exception as exc:
        if type(exc).__module__.startswith(("duckdb", "_duckdb")) and "parquet" in str(exc).lower():
            raise InputUnreadable(f"{f.name}: cannot read Parquet: {exc}") from None
        raise
    finally:
        cur.close()
    return valid
