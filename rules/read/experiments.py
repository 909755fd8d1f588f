"""`experiments:` — weighted arms on a placement (or on one rule of it), a salt and a holdout.

Read here; whether the placement and rule they name exist is known once placements are resolved
(`rules.resolve.link_experiments`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from rules.diagnostics import suggestion_for
from rules.loader import Node
from rules.model import Arm, Experiment
from rules.read.base import Reader
from rules.read.picks import read_pick

EXPERIMENT_STRATEGIES = ("fixed", "thompson")
_FIELDS = (
    "id",
    "salt",
    "placement",
    "rule",
    "holdout",
    "arms",
    "sites",
    "strategy",
    "exploration",
)


@dataclass(slots=True)
class ExperimentRead:
    """One experiment as read, with the names it references and where they are written.
    ``experiment`` is None when the experiment has errors of its own (its references are still
    checked, so every mistake is reported at once)."""

    experiment: Experiment | None
    placement: str | None
    placement_node: Node | None
    rule: str | None
    rule_node: Node | None


def read_experiments(r: Reader, node: Node | None, sites: Collection[str]) -> list[ExperimentRead]:
    out: list[ExperimentRead] = []
    ids: dict[str, Node] = {}
    for item in r.sequence(node, "`experiments`"):
        m = r.mapping(item, "an experiment")
        if m is None:
            continue
        r.keys(m, _FIELDS, "an experiment")
        eid = r.string(m.get("id"), "the experiment's `id`", required=True, parent=m)
        if eid is not None and eid in ids:
            r.err(
                m.entries["id"][1],
                "duplicate-id",
                f"experiment id `{eid}` is used twice (first at line {ids[eid].line})",
            )
            continue
        if eid is not None:
            ids[eid] = m
        out.append(_read_one(r, m, eid, sites))
    return out


def _read_one(r: Reader, m: Node, eid: str | None, sites: Collection[str]) -> ExperimentRead:
    salt = r.string(m.get("salt"), "`salt`", required=True, parent=m)
    pname = r.string(m.get("placement"), "`placement`", required=True, parent=m)
    rule = r.string(m.get("rule"), "`rule`")
    holdout = r.number(m.get("holdout"), "`holdout`", 0.0, 0.99) or 0.0
    strategy = r.string(m.get("strategy"), "`strategy`") or "fixed"
    if strategy not in EXPERIMENT_STRATEGIES:
        r.err(
            m.get("strategy") or m,
            "bad-value",
            f"unknown experiment strategy `{strategy}`",
            suggestion_for(strategy, EXPERIMENT_STRATEGIES),
        )
        strategy = "fixed"
    exploration = r.number(m.get("exploration"), "`exploration`", 0.0, 0.5)
    site_names = r.strings(m.get("sites"), "`sites`")
    for s in site_names:
        if s not in sites:
            r.err(
                m.get("sites") or m, "unknown-site", f"unknown site `{s}`", suggestion_for(s, sites)
            )
    arms = _read_arms(r, m, eid)
    refs = ExperimentRead(None, pname, m.get("placement"), rule, m.get("rule"))
    if eid is None or salt is None or pname is None or arms is None or len(arms) < 2:
        return refs
    refs.experiment = Experiment(
        eid,
        salt,
        pname,
        rule,
        holdout,
        arms,
        frozenset(site_names) or None,
        m.line,
        strategy,
        0.05 if exploration is None else exploration,
    )
    return refs


def _read_arms(r: Reader, m: Node, eid: str | None) -> list[Arm] | None:
    """The arms, or None when their weights do not sum to 1 (reported)."""
    arms: list[Arm] = []
    arm_names: set[str] = set()
    arms_node = m.get("arms")
    for a in r.sequence(arms_node, "`arms`"):
        am = r.mapping(a, "an arm")
        if am is None:
            continue
        r.keys(am, ("name", "weight", "variant", "content"), "an arm")
        aname = r.string(am.get("name"), "the arm's `name`", required=True, parent=am)
        weight = r.number(am.get("weight"), "`weight`", 0.0, 1.0)
        if am.get("weight") is None:
            r.err(am, "missing-field", "an arm needs a `weight` (a share between 0 and 1)")
        if aname is not None and aname in arm_names:
            r.err(am, "duplicate-id", f"arm `{aname}` is declared twice")
            continue
        if aname is None or weight is None:
            continue
        arm_names.add(aname)
        variant = r.string(am.get("variant"), "`variant`")
        content = read_pick(r, am.get("content"), f"the content of arm `{aname}`")
        arms.append(Arm(aname, weight, variant, content))
    written = len(r.sequence(arms_node, "`arms`"))
    if arms_node is None:
        r.err(m, "missing-field", "an experiment needs `arms`")
    elif len(arms) < 2 and written < 2:
        r.err(arms_node, "bad-value", "an experiment needs at least two arms")
    total = sum(a.weight for a in arms)
    if arms and abs(total - 1.0) > 1e-6 and len(arms) == written:
        r.err(
            arms_node if arms_node is not None else m,
            "weights",
            f"arm weights of `{eid}` sum to {total:g}; they must sum to 1",
            "weights are shares: e.g. 0.5 and 0.5, or 0.2, 0.3 and 0.5",
        )
        return None
    return arms
