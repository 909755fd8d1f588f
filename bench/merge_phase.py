"""Merge phase benchmark (issue 17): where a build's merge phase spends its time.

`python -m bench.merge_phase DATA --format parquet --persons FILE` builds DATA's exports (as
bench.gen writes them, with their profiles.yaml) with the engine as far as the sorted persons,
writes the groups the engine hands to the merge pool to FILE (Parquet, a row group each) and
stops; later runs with an existing FILE skip the build. Then it runs the merge phase alone on
FILE as the engine does — `MergePool(workers)` → LMDB appends in key order — and reports wall
seconds, the parent's CPU seconds (reading FILE's row groups, handing them over, receiving the
pairs, writing LMDB), the workers' CPU seconds and both peaks. To
compare two checkouts on one persons file, run it again with `--code OTHER_CHECKOUT` (whose
`snapshots` package is then the one measured). Human lines first; the last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.gen import SOURCES


class _Kept(Exception):
    pass


def keep_persons(data: Path, fmt: str, persons: Path) -> None:
    """Run the engine on `data` until it hands the persons to the merge pool; write them."""
    import pyarrow.parquet as pq

    from snapshots import merge_pool
    from snapshots.config import ProfilesConfig, load_config
    from snapshots.engine import EngineOptions, build_profiles
    from snapshots.persons_file import SCHEMA

    def kept(self: Any, groups: Iterable[Any]) -> Iterator[Any]:
        with pq.ParquetWriter(persons, SCHEMA, compression="lz4", use_dictionary=False) as w:
            for t in groups:
                w.write_table(t, row_group_size=t.num_rows)
        raise _Kept
        yield  # a generator, as the engine expects

    cfg = load_config(data / "profiles.yaml", ProfilesConfig)
    real = merge_pool.MergePool.merged_groups
    merge_pool.MergePool.merged_groups = kept  # type: ignore[method-assign]
    out = Path(tempfile.mkdtemp(prefix=".merge-phase-", dir=persons.parent))
    try:
        build_profiles(
            [data / f"{s}.{fmt}" for s in SOURCES],
            cfg,
            out / "snap",
            options=EngineOptions(merge_workers=1),
        )
    except _Kept:
        pass
    finally:
        merge_pool.MergePool.merged_groups = real  # type: ignore[method-assign]
        shutil.rmtree(out, ignore_errors=True)


def merge_phase(data: Path, persons: Path, workers: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from snapshots.config import ProfilesConfig, load_config
    from snapshots.merge_pool import MergePool
    from snapshots.writer import EnvWriter

    def cpu(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    cfg = load_config(data / "profiles.yaml", ProfilesConfig)
    groups = pq.ParquetFile(persons).metadata.num_row_groups
    pool = MergePool(cfg, workers)
    out = Path(tempfile.mkdtemp(prefix=".merge-phase-", dir=persons.parent))
    try:
        t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF)

        f = pq.ParquetFile(persons)

        def pairs() -> Iterator[tuple[bytes, bytes]]:
            for ps in pool.merged_groups(f.read_row_group(g) for g in range(groups)):
                yield from ps

        w = EnvWriter(out, persons.stat().st_size * 4)
        written = w.put_sorted("profiles", pairs())
        w.close()
        wall, parent = time.perf_counter() - t0, cpu(resource.RUSAGE_SELF) - c0
    finally:
        pool.close()
        shutil.rmtree(out, ignore_errors=True)
    own = resource.RUSAGE_SELF if workers <= 1 else resource.RUSAGE_CHILDREN
    return {
        "profiles": written,
        "workers": workers,
        "wall_s": round(wall, 2),
        # With one worker the merge runs in this process: its CPU is the parent's.
        "parent_cpu_s": round(parent, 2),
        "workers_cpu_s": round(cpu(resource.RUSAGE_CHILDREN), 2) if workers > 1 else 0.0,
        "us_per_profile_cpu": round((parent + cpu(resource.RUSAGE_CHILDREN)) / written * 1e6, 2),
        "parent_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_rss_mb": round(resource.getrusage(own).ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.merge_phase", description=__doc__)
    p.add_argument("data", type=Path, help="a bench.gen export directory")
    p.add_argument("--format", default="parquet", choices=["parquet", "ndjson"])
    p.add_argument("--persons", type=Path, required=True, help="the persons file (kept)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--code", type=Path, help="a checkout whose snapshots package to measure")
    args = p.parse_args(argv)
    if args.code is not None:
        if "snapshots" in sys.modules:
            p.error("--code: snapshots is already imported")
        sys.path.insert(0, str(args.code.resolve()))
    if not args.persons.exists():
        t = time.perf_counter()
        keep_persons(args.data, args.format, args.persons)
        print(f"persons file {args.persons} in {time.perf_counter() - t:.1f}s")
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    import snapshots

    res = {
        "bench": "merge_phase",
        "format": args.format,
        "code": str(Path(snapshots.__file__).parent.parent),
        "load_avg_before": load,
    }
    res |= merge_phase(args.data, args.persons, args.workers)
    print(
        f"merged {res['profiles']:,} profiles with {res['workers']} workers in "
        f"{res['wall_s']}s: parent CPU {res['parent_cpu_s']}s, workers CPU "
        f"{res['workers_cpu_s']}s, peaks {res['parent_peak_rss_mb']} / "
        f"{res['worker_peak_rss_mb']} MB"
    )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
