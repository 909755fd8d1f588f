"""The embedded build engine: DuckDB (spilling to disk under a memory limit) + connected components.

Phases, each reported to `progress`:

1. **read** — NDJSON lines are decoded and validated by msgspec (the same `file:line` errors as
   ever), a block of lines at a time, keys made on Arrow columns (`ndjson_blocks`); Parquet
   is read by DuckDB, which renders each plain row as a typed payload (its columns as JSON,
   times as epoch seconds: `flat`) and emits its keys one id type at a time. Either way two
   tables fill: `recs(rid, payload)` and `ids(rid, pos, val, rank)` (the key `type:val`, its
   type said by the rank).
2. **stitch** — one sorted pass over the identifiers numbers their keys (`nodes`, in key order,
   so a person's best key is its smallest (rank, node) and the alias index is in node order;
   sorted as (the type's place in that order, value): `stitching.key_places`)
   and yields, as int arrays, an edge from each identifier's node to its record's anchor
   node; scipy's connected components labels that graph of nodes in C (a record is in its
   anchor's component). A component with at most one value of each unique type
   and no more identifiers than the cap is a person as it stands; the rare others (the guards
   fire) are split by the original sequential union-find (`identity.split_component`), so
   links refused, conflict reports and the cluster cap are exactly what the old builder did.
   Persons are numbers from here on (no key text is a join, group or sort key again): canonical
   ids are hashed once per person, and persons renumbered in canonical-id order.
3. **merge** — the persons, one row per person in canonical-id order, are cut a group at a
   time from two streams DuckDB sorts by (person, input order) and (person, first seen):
   records and identifiers (`persons_file`); each group goes straight to a worker process for
   large builds (`merge_pool`), which merges each person by policy and encodes the profile
   (`identity.Assembler`'s bytes) while the next groups are cut.
4. **write** — profiles and then aliases stream into LMDB in key order with `append=True`.

Everything larger than a batch lives in DuckDB's database file and spill files inside one temp
dir, removed whatever happens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.errors import BuildFailed, InputInvalid, InputUnreadable, OutputExists
from snapshots.identity import (
    RID_FILE_SHIFT,
    IdRules,
    first_examples,
    make_rid,
    split_component,
)
from snapshots.inputs import Format, InputFile, resolve_inputs, source_digests
from snapshots.merge_pool import MergePool
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
from snapshots.parquet_schema import (
    INT64_MAX,
    check_profiles_schema,
    key_rows_sql,
    keys_sql,
    payload_expr,
    typed_payload_expr,
    wide_attributes_sql,
)
from snapshots.progress import Progress, children_peak_rss_mb, dir_mb, peak_rss_mb
from snapshots.stitching import CID_DIGEST_BYTES, MAX_EXAMPLES, digest_order, key_places
from snapshots.summary import MAX_INVALID_KEPT, BuildSummary
from snapshots.writer import EnvWriter, finalize, staging_dir

PROFILES_DB = "profiles"
ALIAS_DB = "alias"
BATCH = 100_000
# Rows per row group of the temp Parquet files: the writer buffers one group per thread, and
# a group of 100 k payloads is ~40 MB; 16 k keeps that small beside the memory limit.
ROW_GROUP = 16_384
# Persons per group cut from the sorted persons: one merge task (~10 MB of JSON).
PERSON_GROUP = 16_384
# Below this many input records, starting worker processes costs more than merging in this one.
PARALLEL_MERGE_MIN_RECORDS = 150_000
NDJSON_RECORD_BYTES = 400  # a typical export line, to estimate records before reading
DEFAULT_MEMORY_LIMIT = "2GB"
RID_LINE_MASK = (1 << RID_FILE_SHIFT) - 1
CID_WIDTH = 2 + 2 * CID_DIGEST_BYTES  # "p_" + hex


class EngineOptions(msgspec.Struct, frozen=True):
    """How the embedded engine may use the machine."""

    memory_limit: str = DEFAULT_MEMORY_LIMIT  # DuckDB's buffer pool; spills beyond it
    threads: int = 0  # 0: every core
    temp_dir: str | None = None  # default: beside the output
    input_format: Format | None = None  # default: by file extension
    # Processes merging persons into profiles: 0 = one per thread for large inputs, 1 = none.
    merge_workers: int = 0


def _require() -> tuple[Any, Any]:
    try:
        import duckdb
        import pyarrow
    except ImportError as exc:
        raise BuildFailed(
            f"the build engine needs the [builds] extra ({exc.name} is missing): "
            "pip install 'edgeside[builds]'"
        ) from None
    return duckdb, pyarrow


class _Problems:
    def __init__(self) -> None:
        self.count = 0
        self.kept: list[tuple[int, str]] = []
        self.blocked = 0
        self.blocked_examples: list[tuple[int, str]] = []

    def bad(self, rid: int, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_INVALID_KEPT:
            self.kept.append((rid, text))

    def block(self, rid: int, where: str, what: list[str]) -> None:
        self.blocked += len(what)
        for w in what:
            if len(self.blocked_examples) < MAX_EXAMPLES:
                self.blocked_examples.append((rid, f"{where}: {w}"))


def build_profiles(
    inputs: list[Path] | list[str] | list[Path | str],
    cfg: ProfilesConfig,
    out: Path,
    *,
    skip_invalid: bool = False,
    signing_key: bytes | None = None,
    progress: Progress | None = None,
    force: bool = False,
    options: EngineOptions | None = None,
) -> BuildSummary:
    """Build a profiles snapshot in `out` from NDJSON and/or Parquet (paths, globs, s3:// URLs);
    raise `InputInvalid` (writing nothing) on bad records unless `skip_invalid`."""
    duckdb, _ = _require()
    opts = options or EngineOptions()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExists(f"{out}: already exists and is not empty; snapshots are immutable")
    base = Path(opts.temp_dir) if opts.temp_dir else out.parent
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgeside-build-", dir=base))
    try:
        build = _Build(cfg, opts, work, progress, duckdb)
        try:
            return build.run(list(inputs), out, skip_invalid, signing_key, force)
        finally:
            build.close()
    except duckdb.Error as exc:
        raise engine_failure(exc, work) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space left" in str(exc):
            # The nodes file and the groups handed to the merge workers are written by
            # Arrow beside the engine's spill files.
            raise engine_failure(exc, work) from None
        where = exc.filename or work
        raise BuildFailed(f"{where}: {exc.strerror or exc}; nothing was written") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sql_literal(path: Path) -> str:
    """A path as an SQL string literal (COPY TO takes no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def engine_failure(exc: Exception, work: Path) -> BuildFailed:
    """Say plainly what an engine error means for the operator."""
    text = str(exc)
    if "max_temp_directory_size" in text or "No space left" in text:
        return BuildFailed(
            f"{work / 'spill'}: out of disk space while spilling to disk; nothing was written "
            "and the build's temp files were removed (free space there, or point --temp-dir "
            f"at a larger disk). Engine said: {text.splitlines()[0]}"
        )
    if "Out of Memory" in text:
        return BuildFailed(
            "the engine ran out of memory; nothing was written (raise --memory-limit or lower "
            f"--threads). Engine said: {text.splitlines()[0]}"
        )
    return BuildFailed(f"build engine failed (temp dir {work}): {text}")


def spelt_keys(names: list[str], rank: Any, vals: Any) -> Any:
    """The keys `type:value` of identifiers given as their types' ranks (numpy, ascending in
    the types' places: runs of one type) and values (Arrow strings)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    cuts = [0, *(np.flatnonzero(rank[1:] != rank[:-1]) + 1).tolist(), len(rank)]
    parts = [
        pc.binary_join_element_wise(names[int(rank[a])], vals.slice(a, b - a), ":")
        for a, b in pairwise(cuts)
        if b > a
    ]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


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


class _Build:
    def __init__(
        self,
        cfg: ProfilesConfig,
        opts: EngineOptions,
        work: Path,
        progress: Progress | None,
        duckdb: Any,
    ) -> None:
        self.cfg = cfg
        self.rules = IdRules(cfg)
        self.work = work
        self.progress = progress
        self.temp_mb = 0.0
        spill = work / "spill"
        spill.mkdir()
        self.threads = opts.threads or (os.cpu_count() or 1)
        self.opts = opts
        self.spill = spill
        self.duckdb = duckdb
        self.con: Any = None
        self.pool: MergePool | None = None
        self.scanners: MergePool | None = None  # NDJSON block scanners, while reading
        self.workers_rss_mb = 0.0
        self.format = opts.input_format
        self.problems = _Problems()
        self.read = 0
        # Stitching's results, numpy arrays: person numbers by node and by record slot, then
        # (`_cids`) each person's place in canonical-id order and the sorted canonical ids.
        self.base: Any = None
        self.has_rec: Any = None
        self.node_person: Any = None
        self.slot_person: Any = None
        self.person_best: Any = None
        self.has_person: Any = None
        self.order: Any = None
        self.cids: Any = None
        self.nodes = work / "nodes.parquet"  # node, key, rank, first_rid, first_pos; node order

    def _connect(self, est_records: int, ndjson: bool = False) -> None:
        """Start the merge workers (if the build is large enough to need them), then DuckDB:
        in this order, so the workers fork from a process without engine threads."""
        workers = self.opts.merge_workers
        if workers == 0:
            workers = self.threads if est_records >= PARALLEL_MERGE_MIN_RECORDS else 1
        self.pool = MergePool(self.cfg, workers, str(self.work))
        if ndjson and workers > 1:
            # NDJSON blocks are scanned by processes of their own, stopped when the read
            # ends: scanning leaves a heap the merge would build on (+70 MB a merge worker's
            # peak, measured, when the merge workers scanned).
            self.scanners = MergePool(self.cfg, workers)
        self.con = self.duckdb.connect(
            ":memory:",
            config={
                "memory_limit": self.opts.memory_limit,
                "threads": self.threads,
                "temp_directory": str(self.spill),
                # Group and sort results are consumed in the order ORDER BY gives; nothing
                # relies on insertion order, and dropping it lets big operators spill.
                "preserve_insertion_order": False,
            },
        )
        # DuckDB's own bar writes to stdout; progress is ours to report, on stderr.
        self.con.execute("SET enable_progress_bar = false")
        # Text stored as it is: FSST-compressing the NDJSON lines as they were inserted took
        # ~0.8 of the read's ~3.6 CPU s in this process (1 M people), for 4 % less memory.
        # (A setting of DuckDB 1.3 on; at connect it is not taken. Older: compressed.)
        with contextlib.suppress(self.duckdb.Error):
            self.con.execute("SET disabled_compression_methods = 'fsst,dict_fsst'")

    def close(self) -> None:
        self._stop_scanners()
        if self.pool is not None:
            self.pool.close()
            if self.pool.workers > 1:
                # Each worker's peak is at most the largest one's: an upper bound of theirs.
                self.workers_rss_mb = self.pool.workers * children_peak_rss_mb()
            self.pool = None
        if self.con is not None:
            self.con.close()
            self.con = None

    def _stop_scanners(self) -> None:
        if self.scanners is not None:
            self.scanners.close()
            self.scanners = None

    def _tick(self, stage: str, n: int, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(stage, n, total)

    def _measure(self) -> None:
        self.temp_mb = max(self.temp_mb, dir_mb(self.work))

    @staticmethod
    def _release() -> None:
        """Give the memory Arrow's allocator holds freed back to the system, between steps.
        The allocator (mimalloc) keeps what a step freed for its reuse: after the canonical
        ids' pass over the nodes file that was 1.26 GB at 10 M people (measured, the file
        then read pre-buffered), held into the persons' sorts, where the engine takes
        its whole memory limit on top (issue 17)."""
        import pyarrow as pa

        pa.default_memory_pool().release_unused()

    # ---- read ----------------------------------------------------------------------------

    def _ingest(self, files: list[InputFile]) -> int:
        import pyarrow as pa

        con = self.con
        con.execute("CREATE TABLE recs (rid BIGINT, payload BLOB)")
        # An identifier's key `type:val` is kept as its value and the type's rank: the type
        # is said by the rank (`_components` sorts by (the type's place, value)).
        con.execute("CREATE TABLE ids (rid BIGINT, pos BIGINT, val VARCHAR, rank INTEGER)")
        cut = {rank: len(t) + 1 for t, rank, _, _ in self.rules.tinfo}  # len("type:")
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
        self._tick("read", 0, None)
        for fi, f in enumerate(files):
            if f.format == "ndjson":
                valid += self._ingest_ndjson(fi, f, accept, flush, done_bytes, total_bytes)
                done_bytes += f.size
            else:
                valid += self._ingest_parquet(fi, f, accept, flush)
                done_bytes += f.size
            flush()
            self._tick("read", self.read, int(self.read * total_bytes / max(1, done_bytes)))
        flush()
        return valid

    def _ingest_ndjson(
        self, fi: int, f: InputFile, accept: Any, flush: Any, done_bytes: int, total_bytes: int
    ) -> int:
        """One NDJSON file, a block of lines at a time (`ndjson_blocks`): a plain block's
        payloads and keys go to DuckDB as Arrow columns; any other block is read line by line
        as ever, so errors, `--skip-invalid` and blocked examples are reported as they were."""
        import numpy as np
        import pyarrow as pa

        problems, con = self.problems, self.con
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
        for block, sb in self._scanned(f.local):
            fbytes += len(block) or sb.too_long
            kb = sb.keyed
            if sb.too_long:
                self.read += 1
                problems.bad(make_rid(fi, first), str(line_too_long(f.name, first, sb.too_long)))
            elif kb is None:
                valid += self._ndjson_lines(fi, f.name, first, block, sb.offsets, sb.ids, accept)
                flush()
            else:
                n = sb.lines
                self.read += n
                valid += n
                rids = np.arange(first, first + n, dtype=np.int64) | (fi << RID_FILE_SHIFT)
                for i, text in kb.blocked:
                    problems.block(int(rids[i]), f"{f.name}:{first + i}", [text])
                pending_recs.append(pa.table({"rid": rids, "payload": payloads(block, sb.offsets)}))
                pending_ids.append(pa.table({"rid": rids[kb.record], "pos": kb.pos,
                                             "val": kb.value, "rank": kb.rank}))  # fmt: skip
                pending += n
                if pending >= BATCH:
                    insert()
            first += sb.lines
            est = int(self.read * total_bytes / max(1, done_bytes + fbytes))
            self._tick("read", self.read, est)
        insert()
        return valid

    def _scanned(self, path: str) -> Iterator[tuple[bytes, ScannedBlock]]:
        """The file's blocks in order, each with its decoded and keyed lines: scanned by the
        scanner processes when there are some (large builds), a few blocks ahead of this
        process, which stores the blocks before; else here. An over-long line comes as an
        empty block (`ScannedBlock.too_long`): it is never read."""
        pool = self.scanners
        if pool is None or not pool.parallel:
            decoder = msgspec.json.Decoder(ProfileRecord)
            for span in spans(path):
                if span.too_long:
                    yield b"", long_line(span)
                    continue
                block = read_span(path, span.offset, span.length)
                yield block, scan_block(block, decoder, self.rules)
            return
        parts = list(spans(path))
        scanned = pool.ordered(scan_span, ((pool.cfg_json, path, span) for span in parts))
        for span, blocks in zip(parts, scanned, strict=True):
            yield b"" if span.too_long else read_span(path, span.offset, span.length), blocks

    def _ndjson_lines(
        self,
        fi: int,
        name: str,
        first: int,
        block: bytes,
        offs: Any,
        ids: list[Any] | None,
        accept: Any,
    ) -> int:
        """A block read line by line, the original reader's way: blank lines skipped, each
        other line decoded (unless `ids` has every line's already) and keyed by `IdRules`."""
        decoder = msgspec.json.Decoder(ProfileRecord)
        keyed, problems = self.rules.keyed, self.problems
        valid = 0
        ends: list[int] = offs.tolist()
        for i in range(len(ends) - 1):
            line = block[ends[i] : ends[i + 1]]
            lineno = first + i
            too_long = len(line) - line.endswith(b"\n")
            if too_long > MAX_LINE_BYTES:  # `decode_ids` gave up on the block: ids is None
                self.read += 1
                problems.bad(make_rid(fi, lineno), str(line_too_long(name, lineno, too_long)))
                continue
            if ids is None and not line.strip():
                continue
            self.read += 1
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

    def _ingest_parquet(self, fi: int, f: InputFile, accept: Any, flush: Any) -> int:
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
        _, plain = keys_sql(schema, self.rules.tinfo)
        # An unsigned attribute past a record's integers makes the row an invalid record.
        wide = wide_attributes_sql(schema)
        if wide is not None:
            plain = f"({plain}) AND NOT ({wide[0]})"
        payload = payload_expr(schema)
        src = "read_parquet(?, file_row_number = true)"
        rid = f"(({int(fi)}::BIGINT << {RID_FILE_SHIFT}) | (file_row_number + 1))"
        con = self.con
        dec_ids = msgspec.json.Decoder(dict[str, str | list[str] | None]).decode
        keyed = self.rules.keyed
        problems = self.problems
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
            rows = key_rows_sql(schema, self.rules.tinfo, "p")
            con.execute(
                f"""INSERT INTO ids WITH p AS MATERIALIZED
                    (SELECT {rid} AS rid, ids FROM {src} WHERE {plain}) {rows}""",  # noqa: S608
                [f.local],
            )
            self.read += n_plain
            valid += n_plain
            self._tick("read", self.read, None)
            if n_plain == meta.num_rows:
                return valid  # no other row: no third pass over the file for none
            # The others take the original per-record path, in row order, so problems and
            # blocked examples are reported as ever.
            sql = (
                "SELECT file_row_number, source IS NULL, updated_at IS NULL, to_json(ids), "  # noqa: S608
                f"{payload}, {wide[1] if wide else 'NULL'} FROM {src} WHERE NOT ({plain}) "
                "ORDER BY file_row_number"
            )
            reader = cur.sql(sql, params=[f.local]).to_arrow_reader(BATCH)
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
                    self.read += 1
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
                self._tick("read", self.read, None)
        except Exception as exc:
            if (
                type(exc).__module__.startswith(("duckdb", "_duckdb"))
                and "parquet" in str(exc).lower()
            ):
                raise InputUnreadable(f"{f.name}: cannot read Parquet: {exc}") from None
            raise
        finally:
            cur.close()
        return valid

    # ---- stitch --------------------------------------------------------------------------

    def _slot_bases(self) -> Any:
        """Where each file's records start among the graph's record vertices: record `rid`
        is slot `base[file] + line`. Lines that are not records (invalid, blank) are slots
        too, isolated vertices nothing refers to; dense enough, and no lookup table."""
        import numpy as np

        rows = self.con.execute(
            f"SELECT rid >> {RID_FILE_SHIFT}, max(rid & {RID_LINE_MASK}) FROM recs GROUP BY 1"  # noqa: S608
        ).fetchall()
        n_files = max((int(f) for f, _ in rows), default=-1) + 1
        lines = np.zeros(n_files, np.int64)
        for f, last in rows:
            lines[int(f)] = int(last) + 1
        base = np.zeros(n_files + 1, np.int64)
        np.cumsum(lines, out=base[1:])
        return base

    def _nodes_sql(self) -> str:
        return f"read_parquet({sql_literal(self.nodes)})"

    def _node_batches(self, columns: list[str]) -> Iterator[Any]:
        import pyarrow.parquet as pq

        # Not pre-buffered: pyarrow's default reads every row group's columns ahead, so a pass
        # held the whole file (1.3 GB at 10 M people) however small its batches; and each
        # batch's memory handed back once used (else a pass leaves ~3 × more held).
        with pq.ParquetFile(self.nodes, pre_buffer=False) as f:
            for batch in f.iter_batches(batch_size=BATCH, columns=columns):
                yield batch
                del batch
                self._release()

    def _slot(self, rids: Any) -> Any:
        return self.base[rids >> RID_FILE_SHIFT] + (rids & RID_LINE_MASK)

    def _rid(self, slots: Any) -> Any:
        import numpy as np

        f = np.searchsorted(self.base, slots, side="right") - 1
        return (f << RID_FILE_SHIFT) | (slots - self.base[f])

    def _components(self) -> tuple[int, int, Any, Any, Any]:
        """Number identifier keys (the file `self.nodes`, in node = key order, with each one's
        rank and first-seen (record, position)), then label the connected components of the
        graph of nodes (linked when a record carries both) with scipy, on int arrays. Return
        (nodes, components, each node's label, each record slot's label, rank of each node)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        con = self.con
        self._tick("stitch", 0, None)
        n_ids: int = con.execute("SELECT count(*) FROM ids").fetchone()[0]
        self.base = self._slot_bases()
        n_slots = int(self.base[-1])
        if n_slots >= 1 << 32 or n_ids + n_slots >= 1 << 31:
            raise BuildFailed(f"{n_slots} input lines: more than this engine numbers (2^31)")
        # The one pass over identifier text: sorted by key (then record, position), a key's
        # rows are adjacent and its first row is where it was first seen. Keys sort as (their
        # type's place, value) do (`key_places`): sorting those, narrower and with no prefix
        # shared by a type's every key, cost 30 % less CPU (1 M people). Node numbers are
        # counted off the sorted stream — key (byte) order, so a person's best key is its
        # smallest (rank, node) and the alias index is written in node order — and each
        # row's edge node -> record slot goes straight into int arrays: no aggregate, join,
        # window or edge table on text. The nodes go to a Parquet file in node order: the
        # alias index reads it as it stands, and inserting into a table while the stream
        # read `ids` made dropping `ids` cost seconds.
        names = self.rules.order  # by rank
        try:
            place = key_places(names)
        except ValueError as exc:
            raise BuildFailed(str(exc)) from None
        rank_at = np.empty(len(names), np.int32)  # by place
        rank_at[place] = np.arange(len(names), dtype=np.int32)
        place_sql = " ".join(f"WHEN {r} THEN {p}" for r, p in enumerate(place))
        place_type = "UTINYINT" if len(names) <= 256 else "INTEGER"
        node_col = np.empty(n_ids, np.int32)
        slot_col = np.empty(n_ids, np.int32)
        ranks: list[Any] = []
        n_nodes = 0
        at = 0
        last: Any = None
        cur = con.cursor()
        schema = pa.schema([("node", pa.int32()), ("key", pa.string()), ("rank", pa.int32()),
                            ("first_rid", pa.int64()), ("first_pos", pa.int64())])  # fmt: skip
        # Dictionaries only where values repeat: for the unique keys and numbers Arrow built one
        # per row group only to drop it; and no statistics: every reader scans the whole file.
        # 1 M people: writing it 2.7 -> 0.9 s wall (loaded), 0.56 -> 0.17 CPU s (80 -> 86 MB).
        out = pq.ParquetWriter(
            self.nodes,
            schema,
            compression="none",
            use_dictionary=["rank", "first_pos"],
            write_statistics=False,
        )
        try:
            # Ranks and places are ints (`key_places`).
            reader = cur.sql(
                f"SELECT val, rid, pos, (CASE rank {place_sql} END)::{place_type} AS t "  # noqa: S608
                "FROM ids ORDER BY t, val, rid, pos"
            ).to_arrow_reader(BATCH)
            for batch in reader:
                k = batch.num_rows
                if not k:
                    continue
                vals = batch.column(0)
                t = batch.column(3).to_numpy()
                new = np.empty(k, bool)
                new[0] = last is None or last != (int(t[0]), vals[0].as_py())
                if k > 1:
                    new[1:] = pc.not_equal(vals.slice(1), vals.slice(0, k - 1)).to_numpy(
                        zero_copy_only=False
                    )
                    new[1:] |= t[1:] != t[:-1]
                nodes = np.cumsum(new, dtype=np.int64) + (n_nodes - 1)
                node_col[at : at + k] = nodes
                rids = batch.column(1)
                slot_col[at : at + k] = self._slot(rids.to_numpy())
                first = np.flatnonzero(new)
                starts = pa.array(first)
                rank = rank_at[t[first]]
                keys = spelt_keys(names, rank, vals.take(starts))
                out.write_table(pa.Table.from_arrays([
                    pa.array(nodes[new].astype(np.int32)), keys, pa.array(rank),
                    rids.take(starts), batch.column(2).take(starts)], schema=schema))  # fmt: skip
                ranks.append(rank)
                n_nodes += len(first)
                at += k
                last = (int(t[k - 1]), vals[k - 1].as_py())
        finally:
            cur.close()
            out.close()
        if at != n_ids:
            raise BuildFailed(f"build engine lost identifiers: {at} of {n_ids} read")
        node_rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int32)
        self.has_rec = np.zeros(n_slots, bool)
        self.has_rec[slot_col] = True
        self._measure()
        self._release()
        # The graph of the nodes alone: a record joins its identifiers, so an edge from each
        # of them to one of them (the record's anchor here: any will do) links what the
        # record links, and the record is in its anchor's component. A graph of nodes and
        # records had 1.7 × the vertices and an edge more per record, and scipy copies a
        # graph twice (float64 weights, the transpose): labelling this one takes ~0.7 GB at
        # 10 M people (measured).
        anchor = np.zeros(n_slots, np.int32)  # 0 for lines that are no record: never read
        anchor[slot_col] = node_col
        np.take(anchor, slot_col, out=slot_col)
        link = node_col != slot_col
        src = node_col[link]
        del node_col
        dst = slot_col[link]
        del slot_col, link
        graph = coo_matrix(
            (np.ones(len(src), np.int8), (src, dst)), shape=(n_nodes, n_nodes)
        ).tocsr()
        del src, dst
        n_comp, labels = connected_components(graph, directed=False)
        del graph
        slot_labels = labels[anchor] if n_nodes else anchor
        self._tick("stitch", n_nodes, n_nodes)
        return n_nodes, int(n_comp), labels, slot_labels, node_rank

    def _stitch(self) -> tuple[int, int, int, list[str], list[str]]:
        """Give every node and record its person number: the component's label, or fresh
        numbers past the labels for the persons `split_component` makes of a component whose
        guards fire; each person's best node. Return link counts and examples."""
        import numpy as np
        import pyarrow as pa

        n_nodes, n_comp, node_labels, slot_labels, node_rank = self._components()
        con = self.con
        cap = self.cfg.max_cluster_size
        rank = node_rank.astype(np.int64)
        del node_rank
        comp = node_labels
        size = np.bincount(comp, minlength=n_comp)
        dirty = size > cap
        for r in self.rules.unique_ranks:
            dirty |= np.bincount(comp[rank == r], minlength=n_comp) > 1
        clean = (size > 0) & ~dirty
        links = int(size[clean].sum()) - int(np.count_nonzero(clean))
        # Best key = smallest (rank, key) = smallest (rank, node).
        best = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(best, comp, (rank << 32) | np.arange(n_nodes, dtype=np.int64))
        del rank
        person_best = np.where(clean, best & 0xFFFFFFFF, -1).astype(np.int32)
        del best, size
        node_person, slot_person = comp, slot_labels
        del node_labels, slot_labels, comp
        conflicts = capped = 0
        conflict_ex: list[tuple[int, int, str]] = []
        capped_ex: list[tuple[int, int, str]] = []
        fresh_best: list[int] = []
        if dirty.any():
            dirty_nodes = np.flatnonzero(dirty[node_person]).astype(np.int32)
            cur = con.cursor()
            cur.register("dirty_nodes", pa.table({"node": dirty_nodes}))
            # Their keys' values: past `type:` (a substring counts characters, as len() does).
            start = " ".join(f"WHEN {r} THEN {len(t) + 2}" for r, t in enumerate(self.rules.order))
            rows = cur.execute(
                f"""SELECT i.rid, list(n.key ORDER BY i.pos), list(n.node ORDER BY i.pos)
                   FROM ids i JOIN (
                       SELECT node, key, rank, substr(key, CASE rank {start} END) AS val
                       FROM {self._nodes_sql()}
                       WHERE node IN (SELECT node FROM dirty_nodes)
                   ) n ON i.rank = n.rank AND i.val = n.val
                   GROUP BY i.rid"""  # noqa: S608
            ).fetchall()
            cur.close()
            # A record's identifiers are all in its component; components in label order,
            # each one's records in input order (split_component's contract).
            rows.sort(key=lambda r: (int(node_person[r[2][0]]), r[0]))
            unique, by_type = self.rules.unique, self.rules.rank
            node_fix: list[int] = []
            node_to: list[int] = []
            rec_fix: list[int] = []
            rec_to: list[int] = []
            nxt = n_comp
            i = 0
            while i < len(rows):
                c = node_person[rows[i][2][0]]
                j = i
                while j < len(rows) and node_person[rows[j][2][0]] == c:
                    j += 1
                group = rows[i:j]
                node_of = {
                    k: n for _, keys, nodes in group for k, n in zip(keys, nodes, strict=True)
                }
                split = split_component(
                    ((rid, keys) for rid, keys, _ in group), by_type, unique, cap
                )
                links += split.links
                conflicts += split.conflicts
                capped += split.capped
                conflict_ex.extend(split.conflict_examples)
                capped_ex.extend(split.capped_examples)
                person_of: dict[str, int] = {}
                for key, bkey in split.node_best.items():
                    q = person_of.get(bkey)
                    if q is None:
                        q = person_of[bkey] = nxt
                        nxt += 1
                        fresh_best.append(node_of[bkey])
                    node_fix.append(node_of[key])
                    node_to.append(q)
                for rid, bkey in split.record_best.items():
                    rec_fix.append(rid)
                    rec_to.append(person_of[bkey])
                i = j
            # Fixed after the loop: the loop groups rows by the labels it reads.
            node_person[np.array(node_fix, np.int64)] = node_to
            slot_person[self._slot(np.array(rec_fix, np.int64))] = rec_to
        person_best = np.concatenate([person_best, np.array(fresh_best, np.int32)])
        # A person is one with records. A split can leave identifiers whose every link was
        # refused and on which no record is anchored: like the original builder, they get
        # neither a profile nor an alias.
        has_person = np.zeros(len(person_best), bool)
        has_person[slot_person[self.has_rec]] = True
        self.node_person, self.slot_person = node_person, slot_person
        self.person_best, self.has_person = person_best, has_person
        con.execute("DROP TABLE ids")
        self._measure()
        return (
            links,
            conflicts,
            capped,
            first_examples(conflict_ex),
            first_examples(capped_ex),
        )

    def _best_keys(self, best_of: Any, idx: list[Any]) -> Iterator[Any]:
        """The best keys in node order, a batch at a time; appends to `idx` the person each
        one is best of (`best_of`: that person by node, -1 for the other nodes)."""
        import pyarrow as pa

        for batch in self._node_batches(["node", "key"]):
            i = best_of[batch.column(0).to_numpy()]
            best = i >= 0
            idx.append(i[best])
            yield batch.column(1).filter(pa.array(best))

    def _cids(self) -> int:
        """Canonical ids, once per person from its best key (blake2b in Python, in batches,
        by the merge workers when there are some); then persons are renumbered in canonical-id
        order (`self.order`), the order of the profiles in the snapshot. Return the number of
        persons."""
        import numpy as np

        persons = np.flatnonzero(self.has_person)
        # Each person's best node, and the person (index into `persons`) it is best of.
        best_of = np.full(len(self.node_person), -1, np.int32)
        best_of[self.person_best[persons]] = np.arange(len(persons), dtype=np.int32)
        idx: list[Any] = []
        assert self.pool is not None
        digests = list(self.pool.digests(self._best_keys(best_of, idx)))
        del best_of
        n = len(persons)
        at = np.concatenate(idx) if idx else np.zeros(0, np.int32)
        if len(at) != n:
            raise BuildFailed(f"build engine lost persons: {len(at)} of {n} best keys found")
        d = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, CID_DIGEST_BYTES)
        del digests
        # The ids in their order (bytewise, as the snapshot's keys are): the digests'.
        sort = digest_order(d)
        d = d[sort]
        # The ids' text, "p_" + hex, made in bulk: one fixed-width row of bytes per person.
        text = np.empty((n, CID_WIDTH), np.uint8)
        text[:, 0], text[:, 1] = ord("p"), ord("_")
        hexd = np.frombuffer(b"0123456789abcdef", np.uint8)
        text[:, 2::2] = hexd[d >> 4]
        text[:, 3::2] = hexd[d & 15]
        del d
        self.cids = text
        order = np.full(len(self.person_best), -1, np.int32)
        order[persons[at[sort]]] = np.arange(n, dtype=np.int32)
        self.order = order
        del self.person_best, self.has_person
        self._release()
        return n

    # ---- merge + write -------------------------------------------------------------------

    def _profiles(self, n_profiles: int) -> Iterator[tuple[bytes, bytes]]:
        import numpy as np
        import pyarrow as pa

        from snapshots.persons_file import person_groups

        con = self.con
        # The merge phase starts here: the two sorts below (records with their payloads, and
        # keys) run before the first group is cut, and are the merge's input, not stitching.
        self._tick("merge", 0, n_profiles)
        # Records sorted by (person, input order) as one int: person << 32 | slot.
        slots = np.flatnonzero(self.has_rec)
        key = (self.order[self.slot_person[slots]].astype(np.int64) << 32) | slots
        rc = con.cursor()
        rc.register("rec_order", pa.table({"rid": self._rid(slots), "k": key}))
        del slots, key, self.slot_person, self.has_rec
        records = rc.sql(
            "SELECT (o.k >> 32)::INTEGER AS p, r.payload FROM recs r "
            "JOIN rec_order o USING (rid) ORDER BY o.k"
        ).to_arrow_reader(min(BATCH, PERSON_GROUP))
        node_p = self.order[self.node_person]
        kept = np.flatnonzero(node_p >= 0)
        kc = con.cursor()
        kc.register("node_order", pa.table({"node": kept.astype(np.int32), "p": node_p[kept]}))
        del node_p, kept
        keys = kc.sql(
            f"SELECT o.p, n.key FROM {self._nodes_sql()} n JOIN node_order o USING (node) "  # noqa: S608
            "ORDER BY o.p, n.first_rid, n.first_pos"
        ).to_arrow_reader(BATCH)
        self._measure()
        self._release()
        assert self.pool is not None
        done = 0
        try:
            groups = person_groups(self.cids, records, keys, PERSON_GROUP)
            for pairs in self.pool.merged_groups(groups):
                yield from pairs
                done += len(pairs)
                self._measure()
                self._tick("merge", done, n_profiles)
        finally:
            rc.close()
            kc.close()
        self.con.execute("DROP TABLE recs")
        self._release()

    def _aliases(self, n_aliases: int) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """The alias index's keys and values, a batch of each at a time (for
        `EnvWriter.put_sorted_columns`)."""
        import pyarrow as pa

        # Node order is key order; each node's canonical id is its person's.
        node_p = self.order[self.node_person]
        cids = self.cids.view(f"S{CID_WIDTH}").ravel()
        done = 0
        for batch in self._node_batches(["node", "key"]):
            p = node_p[batch.column(0).to_numpy()]
            keys = batch.column(1).cast(pa.binary())  # bytes for LMDB, no encode per alias
            kept = p >= 0
            if not kept.all():
                keys = keys.filter(pa.array(kept))
                p = p[kept]
            yield keys.to_pylist(), cids[p].tolist()
            done += len(p)
            self._tick("aliases", done, n_aliases)

    def run(
        self,
        inputs: list[Path | str],
        out: Path,
        skip_invalid: bool,
        signing_key: bytes | None,
        force: bool,
    ) -> BuildSummary:
        t0 = time.perf_counter()
        downloads = self.work / "inputs"
        downloads.mkdir()
        files = resolve_inputs(inputs, downloads, self.format)
        self._connect(estimate_records(files), any(f.format == "ndjson" for f in files))
        valid = self._ingest(files)
        self._stop_scanners()
        self._measure()
        problems = self.problems
        invalid = [t for _, t in problems.kept]  # already in input order
        if problems.count and not skip_invalid:
            raise InputInvalid(invalid, problems.count)
        links, conflicts, capped, conflict_ex, capped_ex = self._stitch()
        n_profiles = self._cids()
        n_aliases = int((self.order[self.node_person] >= 0).sum())
        size_hint = sum(f.size for f in files) * 2 + n_aliases * 64
        with staging_dir(out, force=force) as tmp:
            w = EnvWriter(tmp, size_hint)
            try:
                written = w.put_sorted(PROFILES_DB, self._profiles(n_profiles))
                aliases = w.put_sorted_columns(ALIAS_DB, self._aliases(n_aliases))
            finally:
                w.close()
            manifest = finalize(
                tmp,
                kind="profiles",
                counts={"profiles": written, "aliases": aliases, "records": valid},
                sources=source_digests(files),
                params={"id_priority": self.rules.order},
                signing_key=signing_key,
            )
        self.close()
        self._measure()
        return BuildSummary(
            kind="profiles",
            out=str(out),
            version=manifest.version,
            records_read=self.read,
            records_invalid=problems.count,
            written=written,
            seconds=time.perf_counter() - t0,
            aliases=aliases,
            merges=valid - written,
            links=links,
            conflicts=conflicts,
            conflict_examples=conflict_ex,
            capped=capped,
            capped_examples=capped_ex,
            blocked=problems.blocked,
            blocked_examples=[t for _, t in problems.blocked_examples],
            invalid=invalid,
            engine="duckdb",
            # The build's own peak plus its merge workers'.
            peak_rss_mb=round(peak_rss_mb() + self.workers_rss_mb, 1),
            temp_disk_mb=round(self.temp_mb, 1),
        )


__all__ = ["RID_FILE_SHIFT", "EngineOptions", "build_profiles"]
