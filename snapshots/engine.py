"""The embedded build engine: DuckDB (spilling to disk under a memory limit) + connected components.

Phases, each reported to `progress`:

1. **read** — NDJSON lines are decoded and validated by msgspec (the same `file:line` errors as
   ever); Parquet is read by DuckDB, which renders each plain row as a typed payload (its
   columns as JSON, times as epoch seconds: `flat`) and emits its keys one id type at a
   time. Either way two tables fill: `recs(rid, payload)` and `ids(rid, pos, key, rank)`.
2. **stitch** — DuckDB factorises identifier keys into dense node numbers (a hash aggregate),
   builds the record edges (anchor → every other id of the record), and scipy's connected
   components labels them in C. A component with at most one value of each unique type and no
   more identifiers than the cap is a person as it stands; the rare others (the guards fire)
   are split by the original sequential union-find (`identity.split_component`), so links
   refused, conflict reports and the cluster cap are exactly what the old builder did.
3. **merge** — DuckDB writes one row per person, sorted by canonical id: records (input order)
   and identifiers (first-seen order) as lists; `identity.Assembler` merges them by policy and
   encodes the profile, in worker processes for large builds (`merge_pool`).
4. **write** — profiles and then aliases stream into LMDB in key order with `append=True`.

Everything larger than a batch lives in DuckDB's database file and spill files inside one temp
dir, removed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
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
from snapshots.ndjson import LineError, read_ndjson_lines
from snapshots.parquet_schema import (
    check_profiles_schema,
    key_rows_sql,
    keys_sql,
    payload_expr,
    typed_payload_expr,
)
from snapshots.progress import Progress, children_peak_rss_mb, dir_mb, peak_rss_mb
from snapshots.stitching import MAX_EXAMPLES, canonical_id
from snapshots.summary import MAX_INVALID_KEPT, BuildSummary
from snapshots.writer import EnvWriter, finalize, staging_dir

PROFILES_DB = "profiles"
ALIAS_DB = "alias"
BATCH = 100_000
# Rows per row group of the temp Parquet files: the writer buffers one group per thread, and
# a group of 100 k payloads is ~40 MB; 16 k keeps that small beside the memory limit.
ROW_GROUP = 16_384
# Persons per row group of the sorted persons file: one merge task (~10 MB of JSON).
PERSON_GROUP = 16_384
# Below this many input records, starting worker processes costs more than merging in this one.
PARALLEL_MERGE_MIN_RECORDS = 150_000
NDJSON_RECORD_BYTES = 400  # a typical export line, to estimate records before reading
DEFAULT_MEMORY_LIMIT = "2GB"


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
        self.workers_rss_mb = 0.0
        self.format = opts.input_format
        self.problems = _Problems()
        self.read = 0

    def _connect(self, est_records: int) -> None:
        """Start the merge workers (if the build is large enough to need them), then DuckDB:
        in this order, so the workers fork from a process without engine threads."""
        workers = self.opts.merge_workers
        if workers == 0:
            workers = self.threads if est_records >= PARALLEL_MERGE_MIN_RECORDS else 1
        self.pool = MergePool(self.cfg, workers)
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

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            if self.pool.workers > 1:
                # Each worker's peak is at most the largest one's: an upper bound of theirs.
                self.workers_rss_mb = self.pool.workers * children_peak_rss_mb()
            self.pool = None
        if self.con is not None:
            self.con.close()
            self.con = None

    def _tick(self, stage: str, n: int, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(stage, n, total)

    def _measure(self) -> None:
        self.temp_mb = max(self.temp_mb, dir_mb(self.work))

    # ---- read ----------------------------------------------------------------------------

    def _ingest(self, files: list[InputFile]) -> int:
        import pyarrow as pa

        con = self.con
        con.execute("CREATE TABLE recs (rid BIGINT, payload BLOB)")
        con.execute("CREATE TABLE ids (rid BIGINT, pos BIGINT, key VARCHAR, rank INTEGER)")
        total_bytes = sum(f.size for f in files) or 1
        done_bytes = 0
        valid = 0
        rid_l: list[int] = []
        pay_l: list[bytes] = []
        id_rid: list[int] = []
        id_pos: list[int] = []
        id_key: list[str] = []
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
                               "key": pa.array(id_key, pa.string()),
                               "rank": pa.array(id_rank, pa.int32())})  # fmt: skip
                con.register("batch_ids", ib)
                con.execute("INSERT INTO ids SELECT * FROM batch_ids")
                con.unregister("batch_ids")
            for lst in (rid_l, pay_l, id_rid, id_pos, id_key, id_rank):
                lst.clear()

        def accept(rid: int, payload: bytes, keys: list[tuple[str, int]]) -> None:
            rid_l.append(rid)
            pay_l.append(payload)
            for pos, (key, rank) in enumerate(keys):
                id_rid.append(rid)
                id_pos.append(pos)
                id_key.append(key)
                id_rank.append(rank)

        # The phase starts now, not at the first batch (a large first Parquet file is read in
        # one statement, which was counted as setup).
        self._tick("read", 0, None)
        decoder = msgspec.json.Decoder(ProfileRecord)
        keyed = self.rules.keyed
        problems = self.problems
        for fi, f in enumerate(files):
            if f.format == "ndjson":
                fbytes = 0
                for lineno, line, rec in read_ndjson_lines(f.local, decoder, name=f.name):
                    self.read += 1
                    fbytes += len(line)
                    rid = make_rid(fi, lineno)
                    if isinstance(rec, LineError):
                        problems.bad(rid, str(rec))
                        continue
                    k = keyed(rec.ids)
                    if k.blocked:
                        problems.block(rid, f"{f.name}:{lineno}", k.blocked)
                    if k.problem is not None:
                        problems.bad(rid, f"{f.name}:{lineno}: {k.problem}")
                        continue
                    accept(rid, line, k.keys)
                    valid += 1
                    if len(rid_l) >= BATCH:
                        flush()
                        est = int(self.read * total_bytes / max(1, done_bytes + fbytes))
                        self._tick("read", self.read, est)
                done_bytes += f.size
            else:
                valid += self._ingest_parquet(fi, f, accept, flush)
                done_bytes += f.size
            flush()
            self._tick("read", self.read, int(self.read * total_bytes / max(1, done_bytes)))
        flush()
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
            # The others take the original per-record path, in row order, so problems and
            # blocked examples are reported as ever.
            sql = (
                "SELECT file_row_number, source IS NULL, updated_at IS NULL, to_json(ids), "  # noqa: S608
                f"{payload} FROM {src} WHERE NOT ({plain}) ORDER BY file_row_number"
            )
            reader = cur.sql(sql, params=[f.local]).to_arrow_reader(BATCH)
            for batch in reader:
                rows = batch.column(0).to_pylist()
                bad_src = batch.column(1).to_pylist()
                bad_ts = batch.column(2).to_pylist()
                ids_json = batch.column(3).to_pylist()
                payloads = batch.column(4).to_pylist()
                for row, no_src, no_ts, ij, pl in zip(
                    rows, bad_src, bad_ts, ids_json, payloads, strict=True
                ):
                    self.read += 1
                    rid_n = make_rid(fi, row + 1)
                    where = f"{f.name}:row {row + 1}"
                    if no_src or no_ts:
                        col = "source" if no_src else "updated_at"
                        problems.bad(rid_n, f"{where}: `{col}` is null")
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

    def _components(self) -> None:
        """Tables `nodes` (dense node numbers, first-seen order), `rid_node` and `node_comp`
        (each node's connected component, computed by scipy on the integer edge list)."""
        import numpy as np
        import pyarrow as pa
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        con = self.con
        self._tick("stitch", 0, None)
        # Node number = any dense integer; `first` (record id, position) is the first-seen
        # order the profile lists its identifiers in, as the sequential builder did.
        con.execute(
            """CREATE TABLE nodes AS
               SELECT (row_number() OVER () - 1)::INTEGER AS node, key, rank,
                      f.r AS first_rid, f.p AS first_pos
               FROM (SELECT key, min(rank) AS rank, min({'r': rid, 'p': pos}) AS f
                     FROM ids GROUP BY key)"""
        )
        n_nodes = con.execute("SELECT count(*) FROM nodes").fetchone()[0]
        con.execute(
            "CREATE TABLE rid_node AS "
            "SELECT i.rid, i.pos, n.node FROM ids i JOIN nodes n USING (key)"
        )
        # A record's anchor is its first key (smallest position); it links to the others.
        con.execute(
            "CREATE TABLE anchors AS SELECT rid, arg_min(node, pos) AS node "
            "FROM rid_node GROUP BY rid"
        )
        edges = con.execute(
            """SELECT a.node AS a, b.node AS b FROM anchors a JOIN rid_node b
               ON a.rid = b.rid AND a.node <> b.node"""
        ).fetchnumpy()
        self._measure()
        a, b = edges["a"].astype(np.int32), edges["b"].astype(np.int32)
        graph = coo_matrix(
            (np.ones(len(a), dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes)
        ).tocsr()
        del a, b, edges
        _, labels = connected_components(graph, directed=False)
        del graph
        con.register("labels", pa.table({"node": np.arange(n_nodes, dtype=np.int32),
                                         "comp": labels.astype(np.int32)}))  # fmt: skip
        con.execute("CREATE TABLE node_comp AS SELECT * FROM labels")
        con.unregister("labels")
        del labels
        self._tick("stitch", n_nodes, n_nodes)

    def _stitch(self) -> tuple[int, int, int, list[str], list[str]]:
        """Label every node and record with its person's best key; return link counts."""
        import pyarrow as pa

        self._components()
        con = self.con
        cap = self.cfg.max_cluster_size
        guards = [f"count(*) > {int(cap)}"] + [
            f"count(*) FILTER (WHERE n.rank = {int(r)}) > 1" for r in self.rules.unique_ranks
        ]
        # Only ints from the config are formatted into this statement.
        con.execute(
            f"""CREATE TABLE comp_info AS
                SELECT c.comp, ({" OR ".join(guards)}) AS dirty,
                       min({{'r': n.rank, 'k': n.key}}).k AS best, count(*) AS size
                FROM node_comp c JOIN nodes n USING (node) GROUP BY c.comp"""  # noqa: S608
        )
        clean_nodes, clean_comps = con.execute(
            "SELECT coalesce(sum(size), 0), count(*) FROM comp_info WHERE NOT dirty"
        ).fetchone()
        links = int(clean_nodes) - int(clean_comps)
        conflicts = capped = 0
        conflict_ex: list[tuple[int, int, str]] = []
        capped_ex: list[tuple[int, int, str]] = []
        over_nodes: list[tuple[str, str]] = []
        over_recs: list[tuple[int, str]] = []
        rows = con.execute(
            """SELECT c.comp, r.rid, list(n.key ORDER BY r.pos) AS keys
               FROM rid_node r JOIN node_comp c USING (node) JOIN nodes n USING (node)
               WHERE c.comp IN (SELECT comp FROM comp_info WHERE dirty)
               GROUP BY c.comp, r.rid ORDER BY c.comp, r.rid"""
        ).fetchall()
        unique = self.rules.unique
        rank = self.rules.rank
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and rows[j][0] == rows[i][0]:
                j += 1
            split = split_component(((rid, keys) for _, rid, keys in rows[i:j]), rank, unique, cap)
            links += split.links
            conflicts += split.conflicts
            capped += split.capped
            conflict_ex.extend(split.conflict_examples)
            capped_ex.extend(split.capped_examples)
            over_nodes.extend(split.node_best.items())
            over_recs.extend(split.record_best.items())
            i = j
        con.register("over_nodes", pa.table({"key": [k for k, _ in over_nodes],
                                             "best": [v for _, v in over_nodes]},
                                            schema=pa.schema([("key", pa.string()),
                                                              ("best", pa.string())])))  # fmt: skip
        con.register("over_recs", pa.table({"rid": [k for k, _ in over_recs],
                                            "best": [v for _, v in over_recs]},
                                           schema=pa.schema([("rid", pa.int64()),
                                                             ("best", pa.string())])))  # fmt: skip
        # Every node and record labelled with its person's best key.
        con.execute(
            """CREATE TABLE node_best AS
               SELECT n.node, n.key, n.first_rid, n.first_pos, coalesce(o.best, ci.best) AS best
               FROM nodes n JOIN node_comp c USING (node) JOIN comp_info ci USING (comp)
               LEFT JOIN over_nodes o ON o.key = n.key"""
        )
        con.execute(
            """CREATE TABLE rec_best AS
               SELECT r.rid, coalesce(o.best, ci.best) AS best
               FROM anchors r JOIN node_comp c USING (node) JOIN comp_info ci USING (comp)
               LEFT JOIN over_recs o ON o.rid = r.rid"""
        )
        con.unregister("over_nodes")
        con.unregister("over_recs")
        for t in ("rid_node", "anchors", "node_comp", "ids"):
            con.execute(f"DROP TABLE {t}")
        self._measure()
        return (
            links,
            conflicts,
            capped,
            first_examples(conflict_ex),
            first_examples(capped_ex),
        )

    def _cids(self) -> int:
        """Canonical ids: blake2b of each person's best key (Python's hashlib, in batches)."""
        import pyarrow as pa

        con = self.con
        con.execute("CREATE TABLE best_cid (best VARCHAR, cid VARCHAR)")
        cur = con.cursor()
        reader = cur.sql("SELECT DISTINCT best FROM rec_best").to_arrow_reader(BATCH)
        n = 0
        for batch in reader:
            bests = batch.column(0).to_pylist()
            cids = [canonical_id(b) for b in bests]
            t = pa.table({"best": pa.array(bests, pa.string()), "cid": pa.array(cids, pa.string())})
            con.register("cid_batch", t)
            con.execute("INSERT INTO best_cid SELECT * FROM cid_batch")
            con.unregister("cid_batch")
            n += len(bests)
        cur.close()
        return n

    # ---- merge + write -------------------------------------------------------------------

    def _profiles(self, n_profiles: int) -> Iterator[tuple[bytes, bytes]]:
        import pyarrow.parquet as pq

        path = self.work / "persons.parquet"
        # One row per person, sorted by canonical id: records in input order, identifiers in
        # first-seen order. One statement, so DuckDB's aggregate and sort may spill.
        self.con.execute(
            f"""COPY (
                 WITH r AS (SELECT rb.best, list_transform(list_sort(list({{'r': r.rid,
                                   'p': r.payload}})), lambda x: x.p) AS payloads
                            FROM recs r JOIN rec_best rb USING (rid) GROUP BY rb.best),
                      k AS (SELECT best, list_transform(list_sort(list({{'r': first_rid,
                                   'p': first_pos, 'k': key}})), lambda x: x.k) AS keys
                            FROM node_best GROUP BY best)
                 SELECT c.cid, r.payloads, k.keys FROM best_cid c JOIN r USING (best)
                 JOIN k USING (best) ORDER BY c.cid
               ) TO {sql_literal(path)} (FORMAT parquet, ROW_GROUP_SIZE {PERSON_GROUP})"""  # noqa: S608
        )
        self._measure()
        self._tick("merge", 0, n_profiles)
        groups = pq.ParquetFile(path).metadata.num_row_groups
        assert self.pool is not None
        done = 0
        for pairs in self.pool.merged_groups(str(path), groups):
            yield from pairs
            done += len(pairs)
            self._measure()
            self._tick("merge", done, n_profiles)
        path.unlink()

    def _aliases(self, n_aliases: int) -> Iterator[tuple[bytes, bytes]]:
        import pyarrow.parquet as pq

        path = self.work / "sorted_aliases.parquet"
        # As BLOBs, so Arrow hands back bytes: no Python encode per alias.
        self.con.execute(
            "COPY (SELECT encode(n.key) AS k, encode(c.cid) AS c FROM node_best n "  # noqa: S608
            f"JOIN best_cid c USING (best) ORDER BY n.key) TO {sql_literal(path)} "
            f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})"
        )
        self._measure()
        done = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
            keys = batch.column(0).to_pylist()
            yield from zip(keys, batch.column(1).to_pylist(), strict=True)
            done += len(keys)
            self._tick("aliases", done, n_aliases)
        path.unlink()

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
        self._connect(estimate_records(files))
        valid = self._ingest(files)
        self._measure()
        problems = self.problems
        invalid = [t for _, t in problems.kept]  # already in input order
        if problems.count and not skip_invalid:
            raise InputInvalid(invalid, problems.count)
        links, conflicts, capped, conflict_ex, capped_ex = self._stitch()
        n_profiles = self._cids()
        n_aliases = self.con.execute(
            "SELECT count(*) FROM node_best n JOIN best_cid c USING (best)"
        ).fetchone()[0]
        size_hint = sum(f.size for f in files) * 2 + n_aliases * 64
        with staging_dir(out, force=force) as tmp:
            w = EnvWriter(tmp, size_hint)
            try:
                written = w.put_sorted(PROFILES_DB, self._profiles(n_profiles))
                aliases = w.put_sorted(ALIAS_DB, self._aliases(n_aliases))
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
