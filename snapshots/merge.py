"""Merging the records of one person into one profile, field by field, by declared policy.

Policies: `newest` (latest `updated_at` wins), `source_priority` (the most trusted source wins,
newest breaks ties), `sum` (counters), `max` (scores, timestamps). `sum`/`max` on a non-numeric
attribute fall back to `newest` for that key. Segments are always the union.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, TypeVar

from snapshots.config import MERGE_GROUPS, Policy, ProfilesConfig
from snapshots.flat import FlatRecord
from snapshots.model import Profile, ProfileRecord

R = TypeVar("R", ProfileRecord, FlatRecord)

# `FlatMerger` unpacks its merged groups in this order (Profile's).
assert MERGE_GROUPS == ("attributes", "interests", "counters", "last_seen")

# Groups whose values the decoder already guarantees to be numbers (no per-value type check).
NUMERIC_GROUPS = frozenset({"interests", "counters", "last_seen"})


def _numeric(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def combine(
    policy: Policy, ordered: Sequence[Mapping[str, Any]], *, numeric: bool = False
) -> dict[str, Any]:
    """Merge mappings given oldest→newest (least→most trusted for `source_priority`)."""
    out: dict[str, Any] = {}
    if policy == "newest" or policy == "source_priority":
        for d in ordered:
            out.update(d)
        return out
    get = out.get
    if numeric:
        if policy == "sum":
            for d in ordered:
                for k, v in d.items():
                    out[k] = get(k, 0.0) + v
        else:
            for d in ordered:
                for k, v in d.items():
                    cur = get(k)
                    if cur is None or v > cur:
                        out[k] = v
        return out
    for d in ordered:
        for k, v in d.items():
            cur = get(k)
            if cur is None or not (_numeric(v) and _numeric(cur)):
                out[k] = v
            elif policy == "sum":
                out[k] = cur + v
            elif v > cur:
                out[k] = v
    return out


def _last_seen(r: ProfileRecord) -> dict[str, float]:
    return {k: v.timestamp() for k, v in r.last_seen.items()}


def _stamp(r: ProfileRecord) -> float:
    return r.updated_at.timestamp()


_by_time = attrgetter("updated_at")
_flat_seen: Callable[[FlatRecord], dict[str, float]] = attrgetter("last_seen")
_flat_stamp: Callable[[FlatRecord], float] = attrgetter("updated_at")


def _one(
    cid: str,
    ids: dict[str, list[str]],
    r: ProfileRecord | FlatRecord,
    last_seen: dict[str, float],
    updated_at: float,
) -> Profile:
    # With one record every policy yields the record's own values.
    return Profile(
        id=cid,
        ids=ids,
        attributes=r.attributes,
        interests=r.interests,
        segments=sorted(set(r.segments)) if len(r.segments) > 1 else r.segments,
        counters=r.counters,
        last_seen=last_seen,
        updated_at=updated_at,
        sources=[r.source],
    )


class Merger:
    def __init__(self, cfg: ProfilesConfig) -> None:
        fields = cfg.merge.fields
        self._group: dict[str, Policy] = {g: fields.get(g, cfg.merge.default) for g in MERGE_GROUPS}
        self._keys: dict[str, dict[str, Policy]] = {g: {} for g in MERGE_GROUPS}
        for name, policy in fields.items():
            group, _, key = name.partition(".")
            if key:
                self._keys[group][key] = policy
        self._needs_trust = "source_priority" in {*self._group.values(), *fields.values()}
        n = len(cfg.source_priority)
        rank = {s: i for i, s in enumerate(cfg.source_priority)}
        # Sorted ascending, the most trusted source comes last, so "last write wins" applies it.
        self._trust_key = lambda r: (-rank.get(r.source, n), r.updated_at)

    def merge(self, cid: str, ids: dict[str, list[str]], recs: list[ProfileRecord]) -> Profile:
        if len(recs) == 1:
            r = recs[0]
            return _one(cid, ids, r, _last_seen(r) if r.last_seen else {}, r.updated_at.timestamp())
        return self._many(cid, ids, recs, _last_seen, _stamp)

    def merge_flat(self, cid: str, ids: dict[str, list[str]], recs: list[FlatRecord]) -> Profile:
        """`merge` for records whose times are already epoch seconds (the same instants sort
        the same way, so every policy picks what `merge` picks)."""
        if len(recs) == 1:
            r = recs[0]
            return _one(cid, ids, r, r.last_seen, r.updated_at)
        return self._many(cid, ids, recs, _flat_seen, _flat_stamp)

    def _many(
        self,
        cid: str,
        ids: dict[str, list[str]],
        recs: list[R],
        seen: Callable[[R], dict[str, float]],
        stamp: Callable[[R], float],
    ) -> Profile:
        by_time = sorted(recs, key=_by_time)
        by_trust = sorted(recs, key=self._trust_key) if self._needs_trust else by_time
        seen_time = [seen(r) for r in by_time]
        seen_trust = [seen(r) for r in by_trust] if by_trust is not by_time else seen_time
        merged: dict[str, dict[str, Any]] = {}
        for g in MERGE_GROUPS:
            numeric = g in NUMERIC_GROUPS
            policy = self._group[g]
            trust = policy == "source_priority"
            if g == "last_seen":
                maps: Sequence[Mapping[str, Any]] = seen_trust if trust else seen_time
            else:
                maps = [getattr(r, g) for r in (by_trust if trust else by_time)]
            out = merged[g] = combine(policy, maps, numeric=numeric)
            group_maps = maps
            for key, kp in self._keys[g].items():
                if kp == policy:
                    continue
                # Each key in its own policy's order: trust order for `source_priority`, time
                # order for every other policy, whatever the key before it was read in.
                key_trust = kp == "source_priority"
                if key_trust == trust:
                    maps = group_maps
                elif g == "last_seen":
                    maps = seen_trust if key_trust else seen_time
                else:
                    maps = [getattr(r, g) for r in (by_trust if key_trust else by_time)]
                if kp == "newest" or kp == "source_priority":
                    # Last write wins: the last map holding the key (combine's own rule).
                    for m in reversed(maps):
                        if key in m:
                            out[key] = m[key]
                            break
                    continue
                one = combine(kp, [{key: m[key]} for m in maps if key in m], numeric=numeric)
                if key in one:
                    out[key] = one[key]
        segments: set[str] = set()
        for r in recs:
            segments.update(r.segments)
        return Profile(
            id=cid,
            ids=ids,
            attributes=merged["attributes"],
            interests=merged["interests"],
            segments=sorted(segments),
            counters=merged["counters"],
            last_seen=merged["last_seen"],
            updated_at=stamp(by_time[-1]),
            sources=sorted({r.source for r in recs}),
        )


class FlatMerger:
    """`Merger.merge_flat` for two or more records, compiled once per configuration into one
    Python function (as cel-python compiles an expression): one pass over the records in time
    order (and one in trust order if a group's policy needs it) updates every group at once,
    with the policies' arithmetic written inline, and a key of its own policy is found by one
    scan. Same orders, same operations in the same order, same key order in every map — so
    the same bytes — at about half the cost of walking the configuration per person (the
    build merges millions; `Merger` stays the readable reference, and
    tests/snapshots/test_merge_fast.py holds the two equal)."""

    def __init__(self, cfg: ProfilesConfig) -> None:
        ref = Merger(cfg)
        rank = {s: i for i, s in enumerate(cfg.source_priority)}
        consts: dict[str, Any] = {
            "Profile": Profile,
            "_by_time": _by_time,
            "_trust_key": ref._trust_key,
            "_combine": combine,
            # The trust key, inline: (-rank, time), as `Merger._trust_key` builds it.
            "_neg": {s: -i for s, i in rank.items()}.get,
            "_unranked": -len(cfg.source_priority),
        }

        def const(v: object) -> str:
            # User strings (keys, policies) enter the code as names bound to values, never as
            # source text.
            name = f"_c{len(consts)}"
            consts[name] = v
            return name

        loops: dict[str, tuple[list[str], list[str]]] = {"bt": ([], []), "bs": ([], [])}
        after: list[str] = []
        by_trust = False  # whether `bs`, the records in trust order, is read
        loops["bt"][0].extend(["segments = set(r.segments)", "sources = {r.source}"])
        loops["bt"][1].extend(["segments.update(r.segments)", "sources.add(r.source)"])
        for g in MERGE_GROUPS:
            policy = ref._group[g]
            numeric = g in NUMERIC_GROUPS
            order = "bs" if policy == "source_priority" else "bt"
            by_trust |= order == "bs"
            init, step = loops[order]
            if policy == "newest" or policy == "source_priority":
                init.append(f"{g} = r.{g}.copy()")
                step.append(f"{g}.update(r.{g})")
            elif numeric and policy == "max":
                # The first map's keys are all new; a numeric group holds no None, so "absent"
                # is `combine`'s `cur is None`.
                init.append(f"{g} = r.{g}.copy()")
                step += [
                    f"for k, v in r.{g}.items():",
                    f"    if k not in {g} or v > {g}[k]:",
                    f"        {g}[k] = v",
                ]
            elif numeric:  # sum; `0.0 + v` for a first value too: -0.0 becomes 0.0
                init.append(f"{g} = {{k: 0.0 + v for k, v in r.{g}.items()}}")
                step += [
                    f"for k, v in r.{g}.items():",
                    f"    {g}[k] = {g}[k] + v if k in {g} else 0.0 + v",
                ]
            else:
                after.append(f"{g} = _combine({const(policy)}, [r.{g} for r in {order}])")
            for key, kp in ref._keys[g].items():
                if kp == policy:
                    continue
                korder = "bs" if kp == "source_priority" else "bt"
                k = const(key)
                if kp == "newest":
                    # The last record holding the key in time order: the latest in input
                    # order of those with the greatest time — what a stable sort puts last.
                    after += [
                        "best = None",
                        "for r in recs:",
                        f"    m = r.{g}",
                        f"    if {k} in m:",
                        "        t = r.updated_at",
                        "        if best is None or t >= best:",
                        "            best = t",
                        f"            v = m[{k}]",
                        "if best is not None:",
                        f"    {g}[{k}] = v",
                    ]
                elif kp == "source_priority":
                    # Likewise in trust order: `t >= best` on the trust key (-rank, time),
                    # compared a part at a time (no tuple per record).
                    after += [
                        "best = None",
                        "for r in recs:",
                        f"    m = r.{g}",
                        f"    if {k} in m:",
                        "        rank = _neg(r.source, _unranked)",
                        "        if best is None or rank > best or (",
                        "            rank == best and r.updated_at >= best_time",
                        "        ):",
                        "            best = rank",
                        "            best_time = r.updated_at",
                        f"            v = m[{k}]",
                        "if best is not None:",
                        f"    {g}[{k}] = v",
                    ]
                else:
                    by_trust |= korder == "bs"
                    after += [
                        f"one = _combine({const(kp)}, [{{{k}: r.{g}[{k}]}} for r in {korder}"
                        f" if {k} in r.{g}], numeric={numeric})",
                        f"if {k} in one:",
                        f"    {g}[{k}] = one[{k}]",
                    ]
        body = ["bt = sorted(recs, key=_by_time)"]
        if by_trust:
            body.append("bs = sorted(recs, key=_trust_key)")
        for order, (init, step) in loops.items():
            if init:
                body += [f"it = iter({order})", "r = next(it)", *init, "for r in it:"]
                body += ["    " + line for line in step]
        body += after
        body.append(
            "return Profile(cid, ids, attributes, interests, sorted(segments), counters, "
            "last_seen, bt[-1].updated_at, sorted(sources))"
        )
        self.source = "def merge(cid, ids, recs):\n" + "".join(f"    {x}\n" for x in body)
        exec(compile(self.source, "<merge plan>", "exec"), consts)  # noqa: S102
        self.merge: Callable[[str, dict[str, list[str]], list[FlatRecord]], Profile] = consts[
            "merge"
        ]
