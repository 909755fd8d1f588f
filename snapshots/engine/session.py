"""One build's machinery, shared by every phase: the DuckDB connection, the merge workers and
NDJSON scanners, the temp dir its spill files live in, progress ticks, the temp disk measured,
memory handed back between steps, and what the read found wrong (`Problems`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.errors import BuildFailed
from snapshots.identity import IdRules
from snapshots.inputs import Format
from snapshots.merge_pool import MergePool
from snapshots.progress import Progress, children_peak_rss_mb, dir_mb
from snapshots.stitching import MAX_EXAMPLES
from snapshots.summary import MAX_INVALID_KEPT

# Rows per batch of every stream a phase cuts (a session reads it when it starts: a test that
# sets it smaller cuts every phase's streams there).
BATCH = 100_000
# Below this many input records, starting worker processes costs more than merging in this one.
PARALLEL_MERGE_MIN_RECORDS = 150_000
DEFAULT_MEMORY_LIMIT = "2GB"

# How a reader hands over a record it read one at a time (record id, payload, keys), and has
# what it handed over inserted: the read phase's batch (`read.read_inputs`).
Accept = Callable[[int, bytes, list[tuple[str, int]]], None]
Flush = Callable[[], None]


class EngineOptions(msgspec.Struct, frozen=True):
    """How the embedded engine may use the machine."""

    memory_limit: str = DEFAULT_MEMORY_LIMIT  # DuckDB's buffer pool; spills beyond it
    threads: int = 0  # 0: every core
    temp_dir: str | None = None  # default: beside the output
    input_format: Format | None = None  # default: by file extension
    # Processes merging persons into profiles: 0 = one per thread for large inputs, 1 = none.
    merge_workers: int = 0


def require() -> tuple[Any, Any]:
    try:
        import duckdb
        import pyarrow
    except ImportError as exc:
        raise BuildFailed(
            f"the build engine needs the [builds] extra ({exc.name} is missing): "
            "pip install 'edgeside[builds]'"
        ) from None
    return duckdb, pyarrow


class Problems:
    """Invalid records (counted, the first ones kept) and blocked identifiers (counted, the first
    ones kept as examples), each with its record id."""

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


class Session:
    """One build's shared state: every phase takes it as its first argument."""

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
        self.batch = BATCH
        self.con: Any = None
        self.pool: MergePool | None = None
        self.scanners: MergePool | None = None  # NDJSON block scanners, while reading
        self.workers_rss_mb = 0.0
        self.problems = Problems()
        self.records_read = 0

    def connect(self, est_records: int, ndjson: bool = False) -> None:
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
        self.stop_scanners()
        if self.pool is not None:
            self.pool.close()
            if self.pool.workers > 1:
                # Each worker's peak is at most the largest one's: an upper bound of theirs.
                self.workers_rss_mb = self.pool.workers * children_peak_rss_mb()
            self.pool = None
        if self.con is not None:
            self.con.close()
            self.con = None

    def stop_scanners(self) -> None:
        if self.scanners is not None:
            self.scanners.close()
            self.scanners = None

    def tick(self, stage: str, n: int, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(stage, n, total)

    def measure(self) -> None:
        self.temp_mb = max(self.temp_mb, dir_mb(self.work))

    @staticmethod
    def release() -> None:
        """Give the memory Arrow's allocator holds freed back to the system, between steps.
        The allocator (mimalloc) keeps what a step freed for its reuse: after the canonical
        ids' pass over the nodes file that was 1.26 GB at 10 M people (measured, the file
        then read pre-buffered), held into the persons' sorts, where the engine takes
        its whole memory limit on top (issue 17)."""
        import pyarrow as pa

        pa.default_memory_pool().release_unused()


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
