"""The original profile builder (pure Python, everything in memory), kept only as the oracle of
the property test that shows the engine builds the same profiles (test_engine_equivalence.py)."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.errors import InputInvalid
from snapshots.merge import Merger
from snapshots.model import ProfileRecord
from snapshots.ndjson import LineError, read_ndjson_lines, source_digests
from snapshots.stitching import MAX_EXAMPLES, Stitcher, canonical_id
from snapshots.summary import MAX_INVALID_KEPT, BuildSummary, Progress
from snapshots.writer import write_snapshot

PROFILES_DB = "profiles"
ALIAS_DB = "alias"
PROGRESS_EVERY = 100_000


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The build allocates millions of long-lived objects and frees none until the end; the
    cyclic GC would rescan them again and again (measured: ~20 % of build time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build_profiles(
    inputs: list[Path],
    cfg: ProfilesConfig,
    out: Path,
    *,
    skip_invalid: bool = False,
    signing_key: bytes | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> BuildSummary:
    """Build a profiles snapshot in `out`; raise `InputInvalid` (writing nothing) on bad input
    unless `skip_invalid`."""
    with _gc_paused():
        return _build(inputs, cfg, out, skip_invalid, signing_key, progress, force)


def _build(
    inputs: list[Path],
    cfg: ProfilesConfig,
    out: Path,
    skip_invalid: bool,
    signing_key: bytes | None,
    progress: Progress | None,
    force: bool,
) -> BuildSummary:
    """The build in its stages: read and stitch every record, refuse bad input, merge each
    cluster into a profile, write the snapshot. Each stage keeps its own loop whole: the per-record
    work is what the §9 build rate measures."""
    t0 = time.perf_counter()
    order = cfg.id_priority()
    rank = {t: i for i, t in enumerate(order)}
    stitcher = Stitcher(
        frozenset(t for t, c in cfg.id_types.items() if c.unique), cfg.max_cluster_size
    )
    decoder = msgspec.json.Decoder(ProfileRecord)
    got = _read_and_stitch(inputs, cfg, stitcher, decoder, progress)
    records, read, n_invalid, invalid = got.records, got.read, got.n_invalid, got.invalid
    if n_invalid and not skip_invalid:
        raise InputInvalid(invalid, n_invalid)
    if progress is not None:
        progress("stitched", read)
    profile_pairs, alias_pairs, size = _merge_clusters(cfg, stitcher, got, decoder, rank)
    if progress is not None:
        progress("merged", read)
    profile_pairs.sort()  # keys are unique, so tuples compare by key alone
    alias_pairs.sort()

    manifest = write_snapshot(
        out,
        {PROFILES_DB: profile_pairs, ALIAS_DB: alias_pairs},
        kind="profiles",
        counts={
            "profiles": len(profile_pairs),
            "aliases": len(alias_pairs),
            "records": len(records),
        },
        sources=source_digests(list(inputs)),
        params={"id_priority": order},
        signing_key=signing_key,
        force=force,
        size_hint=size,  # counted while the pairs were made, so not summed again
    )
    rep = stitcher.report
    return BuildSummary(
        kind="profiles",
        out=str(out),
        version=manifest.version,
        records_read=read,
        records_invalid=n_invalid,
        written=len(profile_pairs),
        seconds=time.perf_counter() - t0,
        aliases=len(alias_pairs),
        merges=len(records) - len(profile_pairs),
        links=rep.links,
        conflicts=rep.conflicts,
        conflict_examples=rep.conflict_examples,
        capped=rep.capped,
        capped_examples=rep.capped_examples,
        blocked=got.blocked,
        blocked_examples=got.blocked_examples,
        invalid=invalid,
    )


class _Read(NamedTuple):
    """What reading and stitching the inputs gives: raw lines with their cluster anchors, and
    what was refused."""

    records: list[bytes]
    anchors: list[int]
    read: int
    n_invalid: int
    invalid: list[str]
    blocked: int
    blocked_examples: list[str]


def _read_and_stitch(
    inputs: list[Path],
    cfg: ProfilesConfig,
    stitcher: Stitcher,
    decoder: msgspec.json.Decoder[ProfileRecord],
    progress: Progress | None,
) -> _Read:
    """Every line of every input checked and its identifiers linked in `stitcher`."""
    order = cfg.id_priority()
    rank = {t: i for i, t in enumerate(order)}
    unique = frozenset(t for t, c in cfg.id_types.items() if c.unique)
    any_block = frozenset(cfg.blocklist.get("*", ()))
    # Per id type, in priority order: ("type:" prefix, junk values or None, unique?). Walking the
    # configured types (a handful) yields a record's ids already sorted by priority.
    tinfo: list[tuple[str, str, frozenset[str] | None, bool]] = []
    for t in order:
        junk_values = frozenset(cfg.blocklist.get(t, ())) | any_block
        tinfo.append((t, t + ":", junk_values or None, t in unique))

    # Raw lines, not decoded records: ~400 bytes each instead of ~2 KB of objects, which is what
    # makes 10 M profiles fit in memory; records are decoded again, one cluster at a time.
    records: list[bytes] = []
    anchors: list[int] = []
    invalid: list[str] = []
    n_invalid = 0
    blocked = 0
    blocked_examples: list[str] = []
    read = 0
    add = stitcher.add

    for path in inputs:
        name = str(path)
        for lineno, line, rec in read_ndjson_lines(path, decoder):
            read += 1
            if progress is not None and read % PROGRESS_EVERY == 0:
                progress("read", read)
            if isinstance(rec, LineError):
                n_invalid += 1
                if len(invalid) < MAX_INVALID_KEPT:
                    invalid.append(str(rec))
                continue
            ids = rec.ids
            keyed: list[tuple[str, str]] = []
            problem = None
            matched = 0
            for t, prefix, junk, is_unique in tinfo:
                v = ids.get(t)
                if v is None:
                    continue
                matched += 1
                if isinstance(v, str):
                    values: list[str] | tuple[str] = (v,)
                else:
                    values = v
                    if is_unique and len(set(v)) > 1:
                        problem = f"id type `{t}` is unique but has {len(set(v))} values"
                        break
                for value in values:
                    if not value:
                        continue
                    if junk is not None and value in junk:
                        blocked += 1
                        if len(blocked_examples) < MAX_EXAMPLES:
                            blocked_examples.append(f"{name}:{lineno}: {t}:{value}")
                        continue
                    keyed.append((prefix + value, t))
            if matched != len(ids):
                # Fixed here too (found by the equivalence test): after a unique type's
                # conflict broke the walk, every type may be known, and next() raised.
                t = next((t for t in ids if t not in rank), None)
                if t is not None:
                    problem = f"unknown id type `{t}` at `$.ids.{t}`; configured: {order}"
            elif problem is None and not keyed:
                problem = "no usable identifier (all blocklisted)" if ids else "no identifiers"
            if problem is not None:
                n_invalid += 1
                if len(invalid) < MAX_INVALID_KEPT:
                    invalid.append(f"{name}:{lineno}: {problem}")
                continue
            anchors.append(add(keyed))
            records.append(line)
    return _Read(records, anchors, read, n_invalid, invalid, blocked, blocked_examples)


def _merge_clusters(
    cfg: ProfilesConfig,
    stitcher: Stitcher,
    got: _Read,
    decoder: msgspec.json.Decoder[ProfileRecord],
    rank: dict[str, int],
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], int]:
    """One profile per cluster (its records merged) and its aliases, as LMDB pairs, with their
    size."""
    # Group records by cluster; records keep input order inside a cluster.
    find = stitcher.find
    by_root: dict[int, list[bytes]] = {}
    for raw, anchor in zip(got.records, got.anchors, strict=True):
        root = find(anchor)
        group = by_root.get(root)
        if group is None:
            by_root[root] = [raw]
        else:
            group.append(raw)

    merger = Merger(cfg)
    encode = msgspec.msgpack.Encoder().encode
    decode = decoder.decode
    keys = stitcher.keys
    profile_pairs: list[tuple[bytes, bytes]] = []
    alias_pairs: list[tuple[bytes, bytes]] = []
    size = 0
    for root, members in stitcher.clusters().items():
        recs = by_root.get(root)
        if recs is None:
            continue  # ids whose only link was refused; they are reported, not a person
        ids_by_type: dict[str, list[str]] = {}
        best: tuple[int, str] | None = None
        for n in members:
            key = keys[n]
            t, _, v = key.partition(":")
            lst = ids_by_type.get(t)
            if lst is None:
                ids_by_type[t] = [v]
            else:
                lst.append(v)
            cand = (rank[t], key)
            if best is None or cand < best:
                best = cand
        if best is None:
            continue
        cid = canonical_id(best[1])
        cid_b = cid.encode()
        blob = encode(merger.merge(cid, ids_by_type, [decode(r) for r in recs]))
        size += len(blob) + len(cid_b) + 16
        profile_pairs.append((cid_b, blob))
        for n in members:
            kb = keys[n].encode()
            alias_pairs.append((kb, cid_b))
            size += len(kb) + len(cid_b) + 16
    return profile_pairs, alias_pairs, size
