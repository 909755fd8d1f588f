"""Merging the records of one person into one profile, field by field, by declared policy.

Policies: `newest` (latest `updated_at` wins), `source_priority` (the most trusted source wins,
newest breaks ties), `sum` (counters), `max` (scores, timestamps). `sum`/`max` on a non-numeric
value fall back to `newest` for that key. Segments are always the union.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from snapshots.config import MERGE_GROUPS, Policy, ProfilesConfig
from snapshots.model import Profile, ProfileRecord


def _numeric(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def combine(policy: Policy, newest_first: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Merge mappings given oldest→newest (or least→most trusted for `source_priority`)."""
    out: dict[str, object] = {}
    if policy in ("newest", "source_priority"):
        for d in newest_first:
            out.update(d)
        return out
    for d in newest_first:
        for k, v in d.items():
            cur = out.get(k)
            if cur is None or not (_numeric(v) and _numeric(cur)):
                out[k] = v
            elif policy == "sum":
                out[k] = cur + v  # type: ignore[operator]
            elif v > cur:  # type: ignore[operator]
                out[k] = v
    return out


class Merger:
    def __init__(self, cfg: ProfilesConfig) -> None:
        fields = cfg.merge.fields
        self._group: dict[str, Policy] = {g: fields.get(g, cfg.merge.default) for g in MERGE_GROUPS}
        self._keys: dict[str, dict[str, Policy]] = {g: {} for g in MERGE_GROUPS}
        for name, policy in fields.items():
            group, _, key = name.partition(".")
            if key:
                self._keys[group][key] = policy
        n = len(cfg.source_priority)
        rank = {s: i for i, s in enumerate(cfg.source_priority)}
        # Sorted ascending, the most trusted source comes last, so "last write wins" applies it.
        self._trust_key = lambda r: (-rank.get(r.source, n), r.updated_at)

    def merge(self, cid: str, ids: dict[str, list[str]], recs: list[ProfileRecord]) -> Profile:
        if len(recs) == 1:
            r = recs[0]
            # With one record every policy yields the record's own values.
            return Profile(
                id=cid,
                ids=ids,
                attributes=r.attributes,
                interests=r.interests,
                segments=sorted(set(r.segments)),
                counters=r.counters,
                last_seen={k: v.timestamp() for k, v in r.last_seen.items()},
                updated_at=r.updated_at.timestamp(),
                sources=[r.source],
            )
        by_time = sorted(recs, key=lambda r: r.updated_at)
        by_trust = sorted(recs, key=self._trust_key)
        merged: dict[str, dict[str, object]] = {}
        for g in MERGE_GROUPS:
            policy = self._group[g]
            order = by_trust if policy == "source_priority" else by_time
            if g == "last_seen":
                maps: list[Mapping[str, object]] = [
                    {k: v.timestamp() for k, v in r.last_seen.items()} for r in order
                ]
            else:
                maps = [getattr(r, g) for r in order]
            merged[g] = combine(policy, maps)
            for key, kp in self._keys[g].items():
                if kp == policy:
                    continue
                korder = by_trust if kp == "source_priority" else by_time
                if korder is not order:
                    if g == "last_seen":
                        maps = [{k: v.timestamp() for k, v in r.last_seen.items()} for r in korder]
                    else:
                        maps = [getattr(r, g) for r in korder]
                one = combine(kp, [{key: m[key]} for m in maps if key in m])
                if key in one:
                    merged[g][key] = one[key]
        segments: set[str] = set()
        for r in recs:
            segments.update(r.segments)
        return Profile(
            id=cid,
            ids=ids,
            attributes=merged["attributes"],  # type: ignore[arg-type]
            interests=merged["interests"],  # type: ignore[arg-type]
            segments=sorted(segments),
            counters=merged["counters"],  # type: ignore[arg-type]
            last_seen=merged["last_seen"],  # type: ignore[arg-type]
            updated_at=max(r.updated_at for r in recs).timestamp(),
            sources=sorted({r.source for r in recs}),
        )
