"""What no profile build can go below on this machine: the parts every build must do, each done
the fastest way we know, timed on the same exports and the snapshot built from them.

`python -m bench.build_floor --data DIR --format parquet --snapshot SNAP` (bench.snapshots runs
it after each build, so build and floor are measured side by side in one run). The parts:

- **read**: every record parsed. Parquet: pyarrow's reader, all columns, batch by batch.
  NDJSON: the cheaper (in CPU) of msgspec validating each line as the `ProfileRecord` the SPEC
  defines and pyarrow's multi-threaded JSON reader (which validates less).
- **stitch**: each identifier column factorized by pyarrow's hash table and scipy's connected
  components over the record–identifier graph: the vectorised prototype issue 17 names, with
  no guards, no canonical ids, no order kept. Its input is read again, untimed.
- **objects** and **encode**: the snapshot's profiles made as the `Profile` structs the engine
  encodes, and encoded to msgpack by msgspec (SPEC §4: "values are msgpack via msgspec";
  msgspec encodes only Python objects). Making them is timed as msgspec's C decoder making them
  from the built values (byte-identical when encoded again): the cheapest way we know to make
  a million nested objects. No merge policy is run.
- **write**: the snapshot's (key, value) pairs, bytes in hand, appended into a fresh LMDB
  environment in sorted order (`putmulti(append=True)`), one writer thread as LMDB allows.
- **sha256**: the finished data.mdb hashed, as the manifest requires (SPEC §4).

The floor is the larger of two bounds: all the CPU seconds spread perfectly over every core,
and the chain no core can shorten: reading and stitching (on every core) before the first
profile is known, then the one LMDB writer, then the hash of its finished file. Merge policies,
guards, aliases' making, the manifest, spilling and Python's glue all cost on top of it, so a
real build is slower than this floor, never faster. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.gen import SOURCES

CHUNK = 50_000


def _cpu() -> float:
    return time.process_time()


def _parquet_read(files: list[Path]) -> float:
    import pyarrow.parquet as pq

    c0 = _cpu()
    for f in files:
        for _ in pq.ParquetFile(f).iter_batches(batch_size=CHUNK):
            pass
    return _cpu() - c0


def _ndjson_read(files: list[Path]) -> tuple[float, float]:
    """CPU seconds of msgspec and of pyarrow parsing every line."""
    import msgspec
    import pyarrow.json as pj

    from snapshots.model import ProfileRecord

    lines = msgspec.json.Decoder(ProfileRecord)
    c0 = _cpu()
    for f in files:
        with f.open("rb") as fh:
            while block := fh.read(8 << 20):
                lines.decode_lines(block + fh.readline())
    by_msgspec = _cpu() - c0
    c0 = _cpu()
    for f in files:
        for _ in pj.open_json(f):
            pass
    return by_msgspec, _cpu() - c0


def _id_columns(files: list[Path], fmt: str) -> Iterator[Any]:
    """Each file's `ids` struct column (untimed: the read is counted once, above)."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    for f in files:
        if fmt == "parquet":
            yield pq.read_table(f, columns=["ids"]).column("ids").combine_chunks()
        else:
            batches = [b.column(b.schema.get_field_index("ids")) for b in pj.open_json(f)]
            yield pa.chunked_array(batches).combine_chunks()


def _stitch(files: list[Path], fmt: str, id_types: list[str]) -> tuple[float, int]:
    """CPU seconds of the cheapest stitch we know; the number of records."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    columns = list(_id_columns(files, fmt))
    c0 = _cpu()
    n_records = sum(len(c) for c in columns)
    rec_ids, node_ids = [], []
    first_node = n_records  # records are nodes 0..n-1, identifiers the nodes after them
    for t in id_types:
        # Position i of `values` is record i: a file without this type adds its nulls.
        values = pa.chunked_array(
            [
                c.field(t) if c.type.get_field_index(t) >= 0 else pa.nulls(len(c), pa.string())
                for c in columns
            ],
            pa.string(),
        )
        codes = pc.dictionary_encode(values).combine_chunks()
        seen = np.asarray(codes.indices.is_valid())
        idx = codes.indices.fill_null(0).to_numpy()
        rec_ids.append(np.flatnonzero(seen))
        node_ids.append(idx[seen].astype(np.int64) + first_node)
        first_node += len(codes.dictionary)
    src, dst = np.concatenate(rec_ids), np.concatenate(node_ids)
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(first_node, first_node))
    connected_components(graph.tocsr(), directed=False)
    return _cpu() - c0, n_records


def _values(snapshot: Path, out: Path) -> dict[str, float]:
    """Objects, encode, write and sha256, over the snapshot's own pairs a chunk at a time."""
    import lmdb
    import msgspec

    src = lmdb.open(str(snapshot), readonly=True, lock=False, max_dbs=8, create=False)
    size = (snapshot / "data.mdb").stat().st_size
    dst = lmdb.open(
        str(out), map_size=size * 2, subdir=True, max_dbs=8, sync=False, metasync=False,
        readahead=False,
    )  # fmt: skip
    from snapshots.model import Profile

    decode = msgspec.msgpack.Decoder(Profile).decode
    encode = msgspec.msgpack.Encoder().encode
    spent = {"objects": 0.0, "encode": 0.0, "write": 0.0, "write_cpu": 0.0, "pairs": 0.0}
    clock = time.perf_counter
    try:
        with src.begin() as txn:
            names = [k for k, _ in txn.cursor()]
        for name in names:
            sdb, ddb = src.open_db(name, create=False), dst.open_db(name)
            with src.begin(db=sdb) as txn:
                it = txn.cursor().iternext()
                while chunk := [p for _, p in zip(range(CHUNK), it, strict=False)]:
                    if name == b"profiles":
                        c0 = _cpu()
                        objs = [decode(v) for _, v in chunk]
                        c1 = _cpu()
                        [encode(o) for o in objs]
                        spent["objects"] += c1 - c0
                        spent["encode"] += _cpu() - c1
                    t0, c0 = clock(), _cpu()
                    with dst.begin(write=True, db=ddb) as w:
                        w.cursor().putmulti(chunk, append=True)
                    spent["write"] += clock() - t0
                    spent["write_cpu"] += _cpu() - c0
                    spent["pairs"] += len(chunk)
        t0 = clock()
        dst.sync(True)
        spent["write"] += clock() - t0
    finally:
        src.close()
        dst.close()
    t0 = clock()
    h = hashlib.sha256()
    with (out / "data.mdb").open("rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    spent["sha256"] = clock() - t0
    return spent


def floor(data: Path, fmt: str, snapshot: Path) -> dict[str, Any]:
    # As the engine's readers and merge workers do: the cyclic collector, walking every live
    # object as millions are made, would cost more than making them (8.7 against 2.4 µs a
    # profile decoded with it on).
    gc.disable()
    files = [data / f"{s}.{fmt}" for s in SOURCES]
    cpus = os.cpu_count() or 1
    readers = (
        {"pyarrow": _parquet_read(files)}
        if fmt == "parquet"
        else dict(zip(("msgspec", "pyarrow"), _ndjson_read(files), strict=True))
    )
    read = min(readers.values())
    from snapshots.config import ProfilesConfig, load_config

    cfg = load_config(data / "profiles.yaml", ProfilesConfig)
    stitch, records = _stitch(files, fmt, cfg.id_priority())
    work = Path(tempfile.mkdtemp(prefix="edgeside-floor-"))
    try:
        v = _values(snapshot, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    parts = {
        "read": read,
        "stitch": stitch,
        "objects": v["objects"],
        "encode": v["encode"],
        "write": v["write_cpu"],
        "sha256": v["sha256"],
    }
    spread = sum(parts.values()) / cpus
    chain = (read + stitch) / cpus + v["write"] + v["sha256"]
    floor_s = max(spread, chain)
    return {
        "format": fmt,
        "records": records,
        "cpus": cpus,
        "floor_cpu_s": {k: round(x, 2) for k, x in parts.items()},
        "floor_read_cpu_s_by_reader": {k: round(x, 2) for k, x in readers.items()},
        "floor_write_wall_s": round(v["write"], 2),
        "floor_spread_s": round(spread, 2),
        "floor_chain_s": round(chain, 2),
        "floor_s": round(floor_s, 2),
        "floor_records_per_s": round(records / floor_s),
        "floor_pairs_written": int(v["pairs"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.build_floor", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="bench.gen's exports (one dir)")
    p.add_argument("--format", choices=("parquet", "ndjson"), required=True)
    p.add_argument("--snapshot", type=Path, required=True, help="the snapshot built from them")
    args = p.parse_args(argv)
    res = floor(args.data, args.format, args.snapshot)
    print(
        f"[{res['records']:,} records {args.format}] floor {res['floor_s']} s = "
        f"{res['floor_records_per_s']:,} records/s (CPU s by part {res['floor_cpu_s']}; "
        f"spread over {res['cpus']} cores {res['floor_spread_s']} s, "
        f"chain {res['floor_chain_s']} s)"
    )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
