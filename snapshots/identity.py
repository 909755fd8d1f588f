"""The per-record and per-cluster steps every profile engine shares (embedded DuckDB and Spark).

What stays in Python here is what must be exactly the rules of the original builder: which
identifiers of a record count (priority order, blocklist, unique types), how a component whose
guards fire is split (the sequential union-find, in record order), and how one person's records
merge into a profile. Everything between — reading, grouping, joining, sorting, connected
components — is done by an engine on columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from snapshots.config import ProfilesConfig
from snapshots.flat import FlatDecoder, FlatRecord, from_record
from snapshots.merge import Merger
from snapshots.model import ProfileRecord
from snapshots.stitching import MAX_EXAMPLES, Stitcher, canonical_id

# A record id is (file index << RID_FILE_SHIFT) | line-or-row: sortable into input order by any
# engine, and `file:line` can be recovered from it without a lookup table.
RID_FILE_SHIFT = 40


def make_rid(file_index: int, line: int) -> int:
    return (file_index << RID_FILE_SHIFT) | line


class KeyedIds(msgspec.Struct, frozen=True):
    """A record's usable identifiers (`type:value`, type rank) in priority order, or why the
    record is refused; `blocked` lists the `type:value` junk it carried either way."""

    keys: list[tuple[str, int]]
    problem: str | None
    blocked: list[str]


class IdRules:
    """Which identifiers of a record link, exactly as the configuration says."""

    def __init__(self, cfg: ProfilesConfig) -> None:
        self.order = cfg.id_priority()
        self.rank = {t: i for i, t in enumerate(self.order)}
        self.unique = frozenset(t for t, c in cfg.id_types.items() if c.unique)
        self.unique_ranks = sorted(self.rank[t] for t in self.unique)
        any_block = frozenset(cfg.blocklist.get("*", ()))
        self.tinfo: list[tuple[str, int, frozenset[str] | None, bool]] = []
        for t in self.order:
            junk = frozenset(cfg.blocklist.get(t, ())) | any_block
            self.tinfo.append((t, self.rank[t], junk or None, t in self.unique))

    def keyed(self, ids: Mapping[str, str | Sequence[str] | None]) -> KeyedIds:
        """`ids` as a record carries them (a null value means absent, as in a Parquet struct)."""
        keys: list[tuple[str, int]] = []
        blocked: list[str] = []
        problem = None
        matched = 0
        present = 0
        for v in ids.values():
            if v is not None:
                present += 1
        for t, rank, junk, is_unique in self.tinfo:
            v = ids.get(t)
            if v is None:
                continue
            matched += 1
            if isinstance(v, str):
                values: Sequence[str] = (v,)
            else:
                values = v
                if is_unique and len(set(v)) > 1:
                    problem = f"id type `{t}` is unique but has {len(set(v))} values"
                    break
            for value in values:
                if not value:
                    continue
                if junk is not None and value in junk:
                    blocked.append(f"{t}:{value}")
                    continue
                keys.append((f"{t}:{value}", rank))
        if matched != present:
            # Any unknown type is the problem to report, even after a unique type's conflict
            # stopped the walk (the original builder crashed there: StopIteration).
            odd = next((t for t, v in ids.items() if v is not None and t not in self.rank), None)
            if odd is not None:
                problem = f"unknown id type `{odd}` at `$.ids.{odd}`; configured: {self.order}"
        elif problem is None and not keys:
            problem = "no usable identifier (all blocklisted)" if present else "no identifiers"
        return KeyedIds(keys, problem, blocked)


class ComponentSplit(msgspec.Struct):
    """A component whose guards fired, resolved by the sequential union-find."""

    node_best: dict[str, str]  # identifier key -> best key of its cluster
    record_best: dict[int, str]  # record id -> best key of its cluster
    links: int
    conflicts: int
    capped: int
    # (record id, order within the record, text): merged across components by position.
    conflict_examples: list[tuple[int, int, str]]
    capped_examples: list[tuple[int, int, str]]


def split_component(
    records: Iterable[tuple[int, Sequence[str]]],
    rank: Mapping[str, int],
    unique: frozenset[str],
    cap: int,
) -> ComponentSplit:
    """Run the original union-find over one component's records, in record-id order (the
    caller sorts): union-find on disjoint components is independent, so this equals the
    sequential build restricted to the component, links refused and all."""
    s = Stitcher(unique, cap)
    rep = s.report
    anchors: list[tuple[int, int]] = []
    conflicts: list[tuple[int, int, str]] = []
    capped: list[tuple[int, int, str]] = []
    for rid, keys in records:
        nc, nk = len(rep.conflict_examples), len(rep.capped_examples)
        anchors.append((rid, s.add([(k, k.partition(":")[0]) for k in keys])))
        conflicts.extend((rid, i, e) for i, e in enumerate(rep.conflict_examples[nc:]))
        capped.extend((rid, i, e) for i, e in enumerate(rep.capped_examples[nk:]))
        # Stitcher keeps MAX_EXAMPLES of its own; ours are cut after the global merge.
        rep.conflict_examples.clear()
        rep.capped_examples.clear()
    best: dict[int, str] = {}
    root_of: dict[str, int] = {}
    for n, key in enumerate(s.keys):
        r = s.find(n)
        root_of[key] = r
        cur = best.get(r)
        if cur is None or (rank[key.partition(":")[0]], key) < (rank[cur.partition(":")[0]], cur):
            best[r] = key
    return ComponentSplit(
        node_best={k: best[r] for k, r in root_of.items()},
        record_best={rid: best[s.find(a)] for rid, a in anchors},
        links=rep.links,
        conflicts=rep.conflicts,
        capped=rep.capped,
        conflict_examples=conflicts[:MAX_EXAMPLES],
        capped_examples=capped[:MAX_EXAMPLES],
    )


def first_examples(found: Iterable[tuple[int, int, str]]) -> list[str]:
    return [e for _, _, e in sorted(found)[:MAX_EXAMPLES]]


class Assembler:
    """One person's records (in input order: NDJSON-shaped JSON, or `flat.TYPED` payloads from
    Parquet) and identifiers (in first-seen order) → the msgpack value of their profile."""

    def __init__(self, cfg: ProfilesConfig) -> None:
        self._merger = Merger(cfg)
        self._decode = FlatDecoder().decode
        self._encode = msgspec.msgpack.Encoder().encode

    def profile(self, best: str, keys: Sequence[str], payloads: Sequence[bytes | str]) -> bytes:
        return self.value(canonical_id(best), keys, payloads)

    def value(self, cid: str, keys: Sequence[str], payloads: Sequence[bytes | str]) -> bytes:
        """Like `profile`, for a caller that already has the canonical id."""
        ids_by_type: dict[str, list[str]] = {}
        for key in keys:
            t, _, v = key.partition(":")
            lst = ids_by_type.get(t)
            if lst is None:
                ids_by_type[t] = [v]
            else:
                lst.append(v)
        decode = self._decode
        recs = [decode(p) for p in payloads]
        # NDJSON records merge as they are; with any Parquet row beside them, all flat.
        if len(recs) == 1:
            r = recs[0]
            if isinstance(r, FlatRecord):
                profile = self._merger.merge_flat(cid, ids_by_type, [r])
            else:
                profile = self._merger.merge(cid, ids_by_type, [r])
        elif all(type(r) is FlatRecord for r in recs):
            profile = self._merger.merge_flat(cid, ids_by_type, recs)  # type: ignore[arg-type]
        elif all(type(r) is ProfileRecord for r in recs):
            profile = self._merger.merge(cid, ids_by_type, recs)  # type: ignore[arg-type]
        else:
            flat = [r if isinstance(r, FlatRecord) else from_record(r) for r in recs]
            profile = self._merger.merge_flat(cid, ids_by_type, flat)
        return self._encode(profile)
