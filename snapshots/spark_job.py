"""The profile build on Apache Spark, for exports one machine cannot stitch (issue 17).

The same steps as the embedded engine (`snapshots.engine`), distributed:

1. every input line or row becomes `(rid, payload, keys)` on the executors, through the same
   `decode_line` / `IdRules` as the embedded engine (so errors and junk handling are identical);
2. connected components over the identifier graph by iterated min-label propagation with
   pointer jumping (each round is a join and a group-by; identity graphs are shallow, so a
   handful of rounds);
3. components whose guards fire are split, one per task, by the same sequential union-find
   (`identity.split_component`, `groupBy(comp).applyInPandas`);
4. each person's records and identifiers are cogrouped by canonical id and merged by the same
   `identity.Assembler` (`cogroup().applyInPandas`);
5. canonical profiles `(cid, value)` and aliases `(key, cid)` are written as Parquet under a
   stage directory, which the LMDB writer (here, or on another machine) sorts and streams into a
   snapshot (`write_stage`).

On a cluster, run `build_profiles_spark` from a driver with `master` set (or inside
`spark-submit`), with inputs every executor can read; see docs/snapshots.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.engine import sql_literal
from snapshots.errors import BuildFailed, InputInvalid, OutputExists
from snapshots.identity import (
    Assembler,
    IdRules,
    first_examples,
    make_rid,
    split_component,
)
from snapshots.inputs import InputFile, resolve_inputs, source_digests
from snapshots.model import ProfileRecord
from snapshots.ndjson import MAX_LINE_BYTES, LineError, decode_line, line_too_long
from snapshots.progress import dir_mb, peak_rss_mb
from snapshots.stitching import MAX_EXAMPLES, canonical_id
from snapshots.summary import MAX_INVALID_KEPT, BuildSummary
from snapshots.writer import EnvWriter, finalize, staging_dir

# Rows per row group of the sorted staging files: DuckDB's writer buffers one group per thread,
# and a group of 100 k payloads is ~40 MB; 16 k keeps that small beside the memory limit.
ROW_GROUP = 16_384

PARSED_SCHEMA = (
    "kind string, rid long, seq long, payload binary, keys array<string>, ranks array<int>, "
    "text string"
)
SPLIT_SCHEMA = "kind string, key string, rid long, seq long, best string, n long"
# Spark's datetime pattern: microseconds, then `XXX`, the ISO 8601 offset ("Z" for UTC, else
# "+01:00"), as the embedded engine prints times.
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
MAX_ROUNDS = 200


class StageReport(msgspec.Struct):
    """What the Spark job tells the writer besides the Parquet it wrote."""

    records_read: int
    records_valid: int
    invalid_count: int
    invalid: list[str]
    blocked: int
    blocked_examples: list[str]
    links: int
    conflicts: int
    conflict_examples: list[str]
    capped: int
    capped_examples: list[str]
    rounds: int


def spark_session(
    master: str | None = None, app: str = "edgeside-profiles", conf: dict[str, str] | None = None
) -> Any:
    """A session for the job; `conf` adds or overrides settings (JVM options among them, so only
    before the first session of the process starts its JVM)."""
    from pyspark.sql import SparkSession

    # Local workers run this interpreter (the one with msgspec and edgeside); a cluster's
    # executors need the same packages installed (docs/snapshots.md).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        **(conf or {}),
    }
    builder = SparkSession.builder.master(master or "local[2]").appName(app)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _parse_partition(cfg_json: bytes, names: list[str]) -> Any:
    """The executor-side parser: (file index, line number, raw bytes) → parsed rows."""

    def parse(rows: Iterator[tuple[int, int, bytes]]) -> Iterator[tuple[Any, ...]]:
        cfg = msgspec.json.decode(cfg_json, type=ProfilesConfig)
        rules = IdRules(cfg)
        decoder = msgspec.json.Decoder(ProfileRecord)
        for fi, lineno, line in rows:
            rid = make_rid(fi, lineno)
            name = names[fi]
            row = name.endswith("|row")
            if not row and len(line) > MAX_LINE_BYTES:
                # As the embedded engine's readers refuse it, even a blank one (Spark has read
                # it whole already: textFile has no bound of its own).
                yield ("bad", rid, 0, None, None, None, str(line_too_long(name, lineno, len(line))))
                continue
            if not line.strip():
                continue
            where = f"{name}:{lineno}" if not row else None
            if where is None:
                name = name[: -len("|row")]
                where = f"{name}:row {lineno}"
            rec = decode_line(decoder, name, lineno, line)
            if isinstance(rec, LineError):
                text = str(rec) if not names[fi].endswith("|row") else f"{where}: {rec.reason}"
                yield ("bad", rid, 0, None, None, None, text)
                continue
            k = rules.keyed(rec.ids)
            for i, b in enumerate(k.blocked):
                yield ("blocked", rid, i, None, None, None, f"{where}: {b}")
            if k.problem is not None:
                yield ("bad", rid, 0, None, None, None, f"{where}: {k.problem}")
                continue
            yield (
                "ok",
                rid,
                0,
                bytes(line),
                [key for key, _ in k.keys],
                [r for _, r in k.keys],
                None,
            )

    return parse


def _lines(spark: Any, files: list[InputFile]) -> Any:
    """One RDD of (file index, line or row number, bytes) over every input, in any order."""
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    parts = []
    for fi, f in enumerate(files):
        if f.format == "ndjson":
            # Bytes, not text: invalid UTF-8 must reach msgspec to be reported with its offset.
            rdd = sc.textFile(f.local, use_unicode=False).zipWithIndex()
            parts.append(rdd.map(lambda x, fi=fi: (fi, x[1] + 1, x[0])))
        else:
            df = spark.read.parquet(f.local)
            # A row becomes the NDJSON line it would have been (nulls in structs dropped, times
            # as RFC 3339 UTC), then takes the same path as a line.
            js = df.select(
                F.to_json(F.struct(*df.columns), {"timestampFormat": TS_FORMAT}).alias("j")
            )
            parts.append(
                js.rdd.zipWithIndex().map(lambda x, fi=fi: (fi, x[1] + 1, x[0][0].encode()))
            )
    return sc.union(parts)


def _components(spark: Any, edges: Any, nodes: Any) -> tuple[Any, int]:
    """node key → component label (the least key of its component), by min-label propagation
    with pointer jumping; returns the labels and the number of rounds."""
    from pyspark.sql import functions as F

    both = edges.select(F.col("a").alias("v"), F.col("b").alias("u")).unionByName(
        edges.select(F.col("b").alias("v"), F.col("a").alias("u"))
    )
    both = both.localCheckpoint()
    labels = nodes.select(F.col("key").alias("v"), F.col("key").alias("label")).localCheckpoint()
    for rounds in range(1, MAX_ROUNDS + 1):
        nbr = (
            both.join(labels.withColumnRenamed("v", "u"), "u")
            .groupBy("v")
            .agg(F.min("label").alias("nl"))
        )
        step = labels.join(nbr, "v", "left").select(
            "v", F.least("label", F.coalesce("nl", "label")).alias("label")
        )
        # Pointer jumping: a node takes its label's label, which halves long chains.
        jump = (
            step.alias("s")
            .join(
                step.select(F.col("v").alias("lv"), F.col("label").alias("ll")),
                F.col("s.label") == F.col("lv"),
                "left",
            )
            .select(
                F.col("s.v").alias("v"),
                F.least("s.label", F.coalesce("ll", "s.label")).alias("label"),
            )
        )
        jump = jump.localCheckpoint()
        changed = (
            jump.join(labels.withColumnRenamed("label", "old"), "v")
            .where(F.col("label") != F.col("old"))
            .limit(1)
            .count()
        )
        labels = jump
        if changed == 0:
            return labels, rounds
    raise BuildFailed(f"connected components did not converge in {MAX_ROUNDS} rounds")


def run_stage(spark: Any, files: list[InputFile], cfg: ProfilesConfig, stage: Path) -> StageReport:
    """The Spark job: inputs → stage/profiles, stage/aliases (Parquet) + the report."""
    import pandas as pd
    from pyspark.sql import functions as F

    rules = IdRules(cfg)
    names = [f.name + ("|row" if f.format == "parquet" else "") for f in files]
    parsed_rdd = _lines(spark, files).mapPartitions(
        _parse_partition(msgspec.json.encode(cfg), names)
    )
    parsed = spark.createDataFrame(parsed_rdd, PARSED_SCHEMA).localCheckpoint()
    counts = {
        r["kind"]: r["n"] for r in parsed.groupBy("kind").agg(F.count("*").alias("n")).collect()
    }
    bad_rows = parsed.where("kind = 'bad'").orderBy("rid").limit(MAX_INVALID_KEPT).collect()
    blocked_rows = parsed.where("kind = 'blocked'").orderBy("rid", "seq").limit(MAX_EXAMPLES)
    blocked_ex = [r["text"] for r in blocked_rows.collect()]
    ok = parsed.where("kind = 'ok'")
    n_bad = counts.get("bad", 0)
    n_ok = counts.get("ok", 0)
    report = StageReport(
        records_read=n_ok + n_bad,
        records_valid=n_ok,
        invalid_count=n_bad,
        invalid=[r["text"] for r in bad_rows],
        blocked=counts.get("blocked", 0),
        blocked_examples=blocked_ex,
        links=0,
        conflicts=0,
        conflict_examples=[],
        capped=0,
        capped_examples=[],
        rounds=0,
    )
    if n_ok == 0:
        return report

    recs = ok.select("rid", "payload")
    ids = ok.select("rid", F.posexplode(F.arrays_zip("keys", "ranks")).alias("pos", "kr")).select(
        "rid", "pos", F.col("kr.keys").alias("key"), F.col("kr.ranks").alias("rank")
    )
    ids = ids.localCheckpoint()
    nodes = (
        ids.groupBy("key")
        .agg(F.min("rank").alias("rank"), F.min(F.struct("rid", "pos")).alias("first"))
        .localCheckpoint()
    )
    anchors = ids.where("pos = 0").select("rid", F.col("key").alias("anchor"))
    edges = (
        ids.where("pos > 0")
        .join(anchors, "rid")
        .select(F.col("anchor").alias("a"), F.col("key").alias("b"))
    )
    labels, rounds = _components(spark, edges, nodes)
    report.rounds = rounds
    labelled = nodes.join(labels.withColumnRenamed("v", "key"), "key").withColumnRenamed(
        "label", "comp"
    )
    cap = cfg.max_cluster_size
    guard = F.count("*") > cap
    for r in rules.unique_ranks:
        guard = guard | (F.sum(F.when(F.col("rank") == r, 1).otherwise(0)) > 1)
    info = (
        labelled.groupBy("comp")
        .agg(
            guard.alias("dirty"),
            F.min(F.struct("rank", "key")).getField("key").alias("best"),
            F.count("*").alias("size"),
        )
        .localCheckpoint()
    )
    clean = (
        info.where(~F.col("dirty"))
        .agg(F.coalesce(F.sum("size"), F.lit(0)).alias("n"), F.count("*").alias("c"))
        .collect()[0]
    )
    links = int(clean["n"]) - int(clean["c"])

    rank = rules.rank
    unique = rules.unique

    def split(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("rid")
        res = split_component(
            zip(pdf["rid"].tolist(), [list(k) for k in pdf["keys"]], strict=True),
            rank,
            unique,
            cap,
        )
        rows: list[tuple[str, str | None, int | None, int | None, str | None, int | None]] = []
        rows += [("node", k, None, None, b, None) for k, b in res.node_best.items()]
        rows += [("rec", None, r, None, b, None) for r, b in res.record_best.items()]
        rows += [("conflict", None, r, s, t, None) for r, s, t in res.conflict_examples]
        rows += [("capped", None, r, s, t, None) for r, s, t in res.capped_examples]
        rows.append(("counts", None, None, None, None, res.links))
        rows.append(("conflicts", None, None, None, None, res.conflicts))
        rows.append(("capn", None, None, None, None, res.capped))
        return pd.DataFrame(rows, columns=["kind", "key", "rid", "seq", "best", "n"])

    dirty_ids = (
        ids.join(labelled.select("key", "comp"), "key")
        .join(info.where("dirty").select("comp"), "comp")
        .groupBy("comp", "rid")
        .agg(F.sort_array(F.collect_list(F.struct("pos", "key"))).getField("key").alias("keys"))
    )
    splits = (
        dirty_ids.groupBy("comp")
        .applyInPandas(lambda pdf: split(pdf), SPLIT_SCHEMA)
        .localCheckpoint()
    )
    for r in (
        splits.where("kind IN ('counts', 'conflicts', 'capn')")
        .groupBy("kind")
        .agg(F.sum("n").alias("n"))
        .collect()
    ):
        if r["kind"] == "counts":
            links += int(r["n"])
        elif r["kind"] == "conflicts":
            report.conflicts = int(r["n"])
        else:
            report.capped = int(r["n"])
    report.links = links
    for kind, target in (
        ("conflict", report.conflict_examples),
        ("capped", report.capped_examples),
    ):
        found = [
            (r["rid"], r["seq"], r["best"])
            for r in splits.where(F.col("kind") == kind)
            .orderBy("rid", "seq")
            .limit(MAX_EXAMPLES)
            .collect()
        ]
        target.extend(first_examples(found))

    over_nodes = splits.where("kind = 'node'").select("key", F.col("best").alias("obest"))
    over_recs = splits.where("kind = 'rec'").select("rid", F.col("best").alias("obest"))
    node_best = (
        labelled.join(info.select("comp", "best"), "comp")
        .join(over_nodes, "key", "left")
        .select("key", "first", F.coalesce("obest", "best").alias("best"))
    )
    rec_best = (
        anchors.join(labelled.select(F.col("key").alias("anchor"), "comp"), "anchor")
        .join(info.select("comp", "best"), "comp")
        .join(over_recs, "rid", "left")
        .select("rid", F.coalesce("obest", "best").alias("best"))
    )
    # Lambdas, not the typed functions: pyspark would try to read their (string) annotations.
    cid_of = F.udf(lambda b: canonical_id(b), "string")
    bests = rec_best.select("best").distinct().withColumn("cid", cid_of("best")).localCheckpoint()

    assembler_cfg = msgspec.json.encode(cfg)

    def assemble(keys: pd.DataFrame, recs_pdf: pd.DataFrame) -> pd.DataFrame:
        if recs_pdf.empty:
            return pd.DataFrame({"cid": [], "value": []})
        a = Assembler(msgspec.json.decode(assembler_cfg, type=ProfilesConfig))
        keys = keys.sort_values(["first_rid", "first_pos"])
        recs_pdf = recs_pdf.sort_values("rid")
        best = recs_pdf["best"].iloc[0]
        value = a.profile(best, keys["key"].tolist(), recs_pdf["payload"].tolist())
        return pd.DataFrame({"cid": [canonical_id(best)], "value": [value]})

    keyed_nodes = node_best.join(bests, "best").select(
        "cid",
        "key",
        F.col("first.rid").alias("first_rid"),
        F.col("first.pos").alias("first_pos"),
    )
    keyed_recs = (
        recs.join(rec_best, "rid").join(bests, "best").select("cid", "best", "rid", "payload")
    )
    profiles = (
        keyed_nodes.groupBy("cid")
        .cogroup(keyed_recs.groupBy("cid"))
        .applyInPandas(lambda k, r: assemble(k, r), "cid string, value binary")
    )
    profiles.write.mode("overwrite").parquet(str(stage / "profiles"))
    keyed_nodes.select("key", "cid").write.mode("overwrite").parquet(str(stage / "aliases"))
    (stage / "report.json").write_bytes(msgspec.json.encode(report))
    return report


def write_stage(
    stage: Path,
    out: Path,
    *,
    counts_records: int,
    sources: dict[str, str],
    id_priority: list[str],
    signing_key: bytes | None,
    force: bool,
    work: Path,
) -> tuple[Any, int, int]:
    """Sort the stage's Parquet with DuckDB and stream it into a snapshot: (manifest, profiles,
    aliases). This is the only step that needs the LMDB writer's machine."""
    import duckdb
    import pyarrow.parquet as pq

    con = duckdb.connect(config={"temp_directory": str(work / "spill")})
    con.execute("SET enable_progress_bar = false")

    def sorted_pairs(src: str, k: str, v: str, name: str) -> Iterator[tuple[bytes, bytes]]:
        path = work / f"{name}.parquet"
        con.execute(
            f"COPY (SELECT {k}, {v} FROM read_parquet({sql_literal(stage / src / '*.parquet')}) "  # noqa: S608
            f"ORDER BY {k}) TO {sql_literal(path)} (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})"
        )
        # Not pre-buffered: pyarrow would read the whole file ahead (see engine.components.Nodes).
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=100_000):
            keys = batch.column(0).to_pylist()
            vals = batch.column(1).to_pylist()
            for a, b in zip(keys, vals, strict=True):
                yield a.encode(), b if isinstance(b, bytes) else b.encode()
        path.unlink()

    size_hint = int(dir_mb(stage) * 2**20 * 2) + (64 << 20)
    try:
        with staging_dir(out, force=force) as tmp:
            w = EnvWriter(tmp, size_hint)
            try:
                written = w.put_sorted("profiles", sorted_pairs("profiles", "cid", "value", "p"))
                aliases = w.put_sorted("alias", sorted_pairs("aliases", "key", "cid", "a"))
            finally:
                w.close()
            manifest = finalize(
                tmp,
                kind="profiles",
                counts={"profiles": written, "aliases": aliases, "records": counts_records},
                sources=sources,
                params={"id_priority": id_priority},
                signing_key=signing_key,
            )
    finally:
        con.close()
    return manifest, written, aliases


def build_profiles_spark(
    inputs: list[Path] | list[str] | list[Path | str],
    cfg: ProfilesConfig,
    out: Path,
    *,
    skip_invalid: bool = False,
    signing_key: bytes | None = None,
    force: bool = False,
    master: str | None = None,
    options: Any = None,
    spark: Any = None,
) -> BuildSummary:
    """The profiles build on Spark, then the snapshot written here."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExists(f"{out}: already exists and is not empty; snapshots are immutable")
    temp = getattr(options, "temp_dir", None)
    base = Path(temp) if temp else out.parent
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgeside-spark-", dir=base))
    own = spark is None
    try:
        (work / "inputs").mkdir()
        (work / "spill").mkdir()
        files = resolve_inputs(
            list(inputs), work / "inputs", getattr(options, "input_format", None)
        )
        session = spark_session(master) if own else spark
        try:
            report = run_stage(session, files, cfg, work / "stage")
        finally:
            if own:
                session.stop()
        if report.invalid_count and not skip_invalid:
            raise InputInvalid(report.invalid, report.invalid_count)
        if report.records_valid:
            manifest, written, aliases = write_stage(
                work / "stage",
                out,
                counts_records=report.records_valid,
                sources=source_digests(files),
                id_priority=IdRules(cfg).order,
                signing_key=signing_key,
                force=force,
                work=work,
            )
        else:
            raise InputInvalid(report.invalid or ["no valid records"], report.invalid_count)
        temp_mb = dir_mb(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildSummary(
        kind="profiles",
        out=str(out),
        version=manifest.version,
        records_read=report.records_read,
        records_invalid=report.invalid_count,
        written=written,
        seconds=time.perf_counter() - t0,
        aliases=aliases,
        merges=report.records_valid - written,
        links=report.links,
        conflicts=report.conflicts,
        conflict_examples=report.conflict_examples,
        capped=report.capped,
        capped_examples=report.capped_examples,
        blocked=report.blocked,
        blocked_examples=report.blocked_examples,
        invalid=report.invalid,
        engine="spark",
        peak_rss_mb=round(peak_rss_mb(), 1),
        temp_disk_mb=round(temp_mb, 1),
    )
