"""The data model of a rules file: what the readers (`rules.read`) build and the engine compiles.

Inheritance: placements under the site `default` apply to every site; a site (and a locale of a
site, under `locales:`) overrides a placement field by field — `strategy`, `default`, `ttl` and
`rules` replace what they inherit, `prepend`/`append` add rules before/after the inherited ones.
`PlacementDef` is one layer as written; `Placement` is what a request at (site, locale) sees, the
layers applied (`rules.resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rules import ast
from rules import types as T
from rules.diagnostics import Diagnostic
from rules.loader import Node, ScalarOrigin
from rules.schema import ProfileSchema
from rules.source import Source

DEFAULT_TTL = 300


def _unparsed() -> ast.Node:
    return ast.Literal(0, 0, None)


@dataclass(slots=True, eq=False)
class Expr:
    """An expression as written, and what the stages (`rules.pipeline`) make of it: `read` finds
    the text, `parse` sets ``tree`` to its syntax tree, `check` to the checked tree (names
    resolved) and ``type``. An expression that fails a stage is ``failed`` and goes no further;
    `resolve` drops what holds one, so only checked trees reach the compiler."""

    text: str
    origin: ScalarOrigin
    line: int
    what: str  # how messages name it: "`when` of rule `r`"
    want: T.Type | None  # conditions must be bool, scores numbers
    tree: ast.Node = field(default_factory=_unparsed)
    type: T.Type = T.ANY
    stage: Literal["read", "parsed", "checked", "failed"] = "read"

    @property
    def ok(self) -> bool:
        return self.stage == "checked"


@dataclass(slots=True, eq=False)
class PickSpec:
    """A content pick: a query over the content indexes (never a scan)."""

    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    any_tags: tuple[str, ...] = ()
    type: str | None = None
    placement: str | None = None  # "" means "the placement being decided"
    locale: str = "ctx"  # "ctx": the request's locale (or items without one); "any"; or a locale
    rank: tuple[tuple[str, float], ...] = (("priority", 1.0),)
    # Nothing by default: excluding what a visitor saw makes a pick one answer per visitor (one
    # cache copy each), which an author asks for with `exclude:` — never gets by omission.
    exclude: tuple[str, ...] = ()
    limit: int = 1

    def per_visitor(self) -> bool:
        """Whether the picked ids can differ between visitors at the same time and place."""
        if self.ids or not (self.tags or self.any_tags or self.type or self.placement is not None):
            return False
        return bool(self.exclude) or any(k == "affinity" and w != 0 for k, w in self.rank)

    def identity(self) -> tuple[object, ...]:
        return (
            self.ids,
            self.tags,
            self.any_tags,
            self.type,
            self.placement,
            self.locale,
            self.rank,
            self.exclude,
            self.limit,
        )


@dataclass(slots=True, eq=False)
class Outcome:
    variant: str
    content: PickSpec | None = None
    ttl: int | None = None


@dataclass(slots=True, eq=False)
class Rule:
    id: str
    when: Expr | None
    then: Outcome
    score: Expr | None
    line: int
    col: int
    always: bool | None = None  # True/False when `when` is constant (folded once), else None


@dataclass(slots=True, eq=False)
class PlacementDef:
    name: str
    node: Node
    strategy: str | None = None
    default: Outcome | None = None
    ttl: int | None = None
    rules: list[Rule] | None = None
    prepend: list[Rule] = field(default_factory=list)
    append: list[Rule] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Arm:
    name: str
    weight: float
    variant: str | None = None
    content: PickSpec | None = None


@dataclass(slots=True, eq=False)
class Experiment:
    id: str
    salt: str
    placement: str
    rule: str | None
    holdout: float
    arms: list[Arm]
    sites: frozenset[str] | None
    line: int
    # "fixed": the declared weights; "thompson": weights from live click/conversion counts.
    strategy: str = "fixed"
    # thompson only: each arm keeps at least this share of traffic.
    exploration: float = 0.05


@dataclass(slots=True, eq=False)
class Action:
    id: str
    when: Expr | None
    priority: float
    webhook_url: str | None
    webhook_method: str | None
    sites: frozenset[str] | None
    line: int


@dataclass(slots=True, eq=False)
class Placement:
    """One placement as a request at (site, locale) sees it, inheritance applied."""

    name: str
    site: str
    locale: str | None
    strategy: str
    default: Outcome
    rules: list[Rule]
    ttl: int
    experiments: list[Experiment]
    line: int


@dataclass(slots=True, eq=False)
class PageDef:
    """One entry of a site's `pages:`: a URL path pattern and the page's placements. ``parts``
    are the pattern's path segments: a literal, or ``{name}`` (any one segment, its value in
    ``params``); ``prefix`` when the pattern ends in ``/*`` (the path and anything below it)."""

    pattern: str
    parts: tuple[str, ...]
    params: tuple[str, ...]  # the `{name}` segments, in order
    prefix: bool
    placements: tuple[str, ...]
    type: str | None
    site: str
    node: Node
    line: int
    col: int


@dataclass(slots=True, eq=False)
class Site:
    name: str
    node: Node
    placements: dict[str, PlacementDef] = field(default_factory=dict)
    pages: list[PageDef] = field(default_factory=list)
    locales: dict[str, dict[str, PlacementDef]] = field(default_factory=dict)
    locale: str | None = None  # the site's language, for content picks when the request has none


@dataclass(slots=True, eq=False)
class RuleSet:
    """A checked rules file, ready for `compile_ruleset`."""

    source: Source
    schema: ProfileSchema
    segments: dict[str, Expr]  # in dependency order: a segment comes after those it uses
    sites: dict[str, Site]
    table: dict[tuple[str, str | None], dict[str, Placement]]
    experiments: list[Experiment]
    actions: list[Action]
    default_ttl: int
    warnings: list[Diagnostic] = field(default_factory=list)
    # Per site, its pages in matching order: its own, then those of `default` (`rules.resolve`).
    pages: dict[str, list[PageDef]] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return self.source.filename

    def placement_names(self) -> set[str]:
        return {name for per in self.table.values() for name in per}
