"""The `read` stage: a rules file's tree of positioned values → the data model, one reader per
section (`schema`, `segments`, `sites` with their placements and picks, `experiments`,
`actions`). Expressions are found, not parsed: that is the next stage's (`rules.pipeline`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rules.diagnostics import Diagnostic
from rules.loader import Node
from rules.model import DEFAULT_TTL, Action, Expr, Site
from rules.read.actions import read_actions
from rules.read.base import Reader
from rules.read.experiments import ExperimentRead, read_experiments
from rules.read.placements import read_sites
from rules.read.schema import read_schema
from rules.read.segments import Segments, read_segments
from rules.schema import ProfileSchema
from rules.source import Source

_SECTIONS = ("version", "defaults", "schema", "segments", "sites", "experiments", "actions")


@dataclass(slots=True)
class Draft:
    """A rules file as read: every section, every expression found (unparsed), every problem."""

    source: Source
    diagnostics: list[Diagnostic]
    exprs: list[Expr] = field(default_factory=list)
    default_ttl: int = DEFAULT_TTL
    schema: ProfileSchema = field(default_factory=ProfileSchema)
    segments: Segments = field(default_factory=Segments)
    sites: dict[str, Site] = field(default_factory=dict)
    experiments: list[ExperimentRead] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    complete: bool = True  # False when the file is not even a mapping of sections


def read(root: Node, source: Source) -> Draft:
    r = Reader(source)
    draft = Draft(source, r.diags, r.exprs)
    if root.kind != "map":
        r.err(root, "bad-value", "a rules file is a mapping with `schema`, `segments`, `sites`, …")
        draft.complete = False
        return draft
    r.keys(root, _SECTIONS, "the rules file")
    dm = r.mapping(root.get("defaults"), "`defaults`")
    if dm is not None:
        r.keys(dm, ("ttl",), "`defaults`")
        ttl = r.integer(dm.get("ttl"), "`ttl`", 0, 86400 * 365)
        draft.default_ttl = ttl if ttl is not None else DEFAULT_TTL
    draft.schema = read_schema(r, root.get("schema"))
    draft.segments = read_segments(r, root.get("segments"))
    draft.sites = read_sites(r, root.get("sites"), root)
    draft.experiments = read_experiments(r, root.get("experiments"), draft.sites)
    draft.actions = read_actions(r, root.get("actions"), draft.sites)
    return draft
