"""The embedded build engine: DuckDB (spilling to disk under a memory limit) + connected components.

Phases, each reported to `progress`, each in a module of this package:

1. **read** (`read`, `read_ndjson`, `read_parquet`) — NDJSON lines are decoded and validated by
   msgspec (the same `file:line` errors as ever), a block of lines at a time, keys made on
   Arrow columns (`ndjson_blocks`); Parquet is read by DuckDB, which renders each plain row as
   a typed payload (its columns as JSON, times as epoch seconds: `flat`) and emits its keys one
   id type at a time. Either way two tables fill: `recs(rid, payload)` and
   `ids(rid, pos, val, rank)` (the key `type:val`, its type said by the rank).
2. **stitch** (`components`, `persons`, `canonical`) — one sorted pass over the identifiers
   numbers their keys (`nodes`, in key order, so a person's best key is its smallest
   (rank, node) and the alias index is in node order; sorted as (the type's place in that
   order, value): `stitching.key_places`) and yields, as int arrays, an edge from each
   identifier's node to its record's anchor node; scipy's connected components labels that
   graph of nodes in C (a record is in its anchor's component). A component with at most one
   value of each unique type and no more identifiers than the cap is a person as it stands;
   the rare others (the guards fire) are split by the original sequential union-find
   (`identity.split_component`), so links refused, conflict reports and the cluster cap are
   exactly what the old builder did. Persons are numbers from here on (no key text is a join,
   group or sort key again): canonical ids are hashed once per person, and persons renumbered
   in canonical-id order.
3. **merge** (`emit.profiles`) — the persons, one row per person in canonical-id order, are cut
   a group at a time from two streams DuckDB sorts by (person, input order) and (person, first
   seen): records and identifiers (`persons_file`); each group goes straight to a worker
   process for large builds (`merge_pool`), which merges each person by policy and encodes the
   profile (`identity.Assembler`'s bytes) while the next groups are cut.
4. **write** (`emit.aliases`, `run` below) — profiles and then aliases stream into LMDB in key
   order with `append=True`.

Every phase takes the build's `session.Session`: the connection, the worker pools, the temp dir,
progress. Everything larger than a batch lives in DuckDB's database file and spill files inside
one temp dir, removed whatever happens.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import time
from pathlib import Path

from snapshots.config import ProfilesConfig
from snapshots.engine.canonical import canonical_ids
from snapshots.engine.emit import aliases, profiles
from snapshots.engine.persons import stitch
from snapshots.engine.read import estimate_records, read_inputs
from snapshots.engine.session import (
    DEFAULT_MEMORY_LIMIT,
    EngineOptions,
    Session,
    engine_failure,
    require,
    sql_literal,
)
from snapshots.errors import BuildFailed, InputInvalid, OutputExists
from snapshots.identity import RID_FILE_SHIFT
from snapshots.inputs import resolve_inputs, source_digests
from snapshots.progress import Progress, peak_rss_mb
from snapshots.summary import BuildSummary
from snapshots.writer import EnvWriter, finalize, staging_dir

PROFILES_DB = "profiles"
ALIAS_DB = "alias"


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
    duckdb, _ = require()
    opts = options or EngineOptions()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExists(f"{out}: already exists and is not empty; snapshots are immutable")
    base = Path(opts.temp_dir) if opts.temp_dir else out.parent
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgeside-build-", dir=base))
    try:
        session = Session(cfg, opts, work, progress, duckdb)
        try:
            return run(session, list(inputs), out, skip_invalid, signing_key, force)
        finally:
            session.close()
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


def run(
    session: Session,
    inputs: list[Path | str],
    out: Path,
    skip_invalid: bool,
    signing_key: bytes | None,
    force: bool,
) -> BuildSummary:
    """The phases in order, then the summary."""
    t0 = time.perf_counter()
    downloads = session.work / "inputs"
    downloads.mkdir()
    files = resolve_inputs(inputs, downloads, session.opts.input_format)
    session.connect(estimate_records(files), any(f.format == "ndjson" for f in files))
    valid = read_inputs(session, files)
    session.stop_scanners()
    session.measure()
    problems = session.problems
    invalid = [t for _, t in problems.kept]  # already in input order
    if problems.count and not skip_invalid:
        raise InputInvalid(invalid, problems.count)
    persons, links = stitch(session)
    canon = canonical_ids(session, persons)
    n_profiles = len(canon.cids)
    n_aliases = int((canon.order[persons.node_person] >= 0).sum())
    size_hint = sum(f.size for f in files) * 2 + n_aliases * 64
    with staging_dir(out, force=force) as tmp:
        w = EnvWriter(tmp, size_hint)
        try:
            written = w.put_sorted(PROFILES_DB, profiles(session, persons, canon, n_profiles))
            alias_count = w.put_sorted_columns(
                ALIAS_DB, aliases(session, persons, canon, n_aliases)
            )
        finally:
            w.close()
        manifest = finalize(
            tmp,
            kind="profiles",
            counts={"profiles": written, "aliases": alias_count, "records": valid},
            sources=source_digests(files),
            params={"id_priority": session.rules.order},
            signing_key=signing_key,
        )
    session.close()
    session.measure()
    return BuildSummary(
        kind="profiles",
        out=str(out),
        version=manifest.version,
        records_read=session.records_read,
        records_invalid=problems.count,
        written=written,
        seconds=time.perf_counter() - t0,
        aliases=alias_count,
        merges=valid - written,
        links=links.links,
        conflicts=links.conflicts,
        conflict_examples=links.conflict_examples,
        capped=links.capped,
        capped_examples=links.capped_examples,
        blocked=problems.blocked,
        blocked_examples=[t for _, t in problems.blocked_examples],
        invalid=invalid,
        engine="duckdb",
        # The build's own peak plus its merge workers'.
        peak_rss_mb=round(peak_rss_mb() + session.workers_rss_mb, 1),
        temp_disk_mb=round(session.temp_mb, 1),
    )


__all__ = [
    "ALIAS_DB",
    "DEFAULT_MEMORY_LIMIT",
    "PROFILES_DB",
    "RID_FILE_SHIFT",
    "EngineOptions",
    "build_profiles",
    "sql_literal",
]
