"""Matching a request's path to a site's page, compiled once per rules snapshot.

A trie over path segments: a literal child per segment text, one child for a template segment,
and at each node the page that ends there (exact) and the page that covers everything below it
(prefix). A look-up walks the path once, following the literal and the template child where both
exist, so its cost depends on the path's depth and the patterns' shape, not on how many pages a
site has. Where several patterns match, the one written first wins (the order of `pages:`, the
site's own before those it inherits)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rules.model import PageDef

# Longer paths are not page URLs a proxy forwards (and would cost a walk to reject).
MAX_PATH = 2048
# What a request target in origin form may hold (RFC 3986: unreserved, reserved, `%` escapes):
# anything else — spaces, control characters, bytes beyond ASCII — is not a URI a proxy sends.
_URI = re.compile(r"/[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


@dataclass(slots=True, frozen=True)
class Page:
    """A matched page: its placements, type, and the template segments' values."""

    pattern: str
    placements: tuple[str, ...]
    type: str | None
    params: dict[str, str]


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    exact: tuple[int, PageDef] | None = None
    prefix: tuple[int, PageDef] | None = None


def _insert(root: _Node, slot: tuple[int, PageDef]) -> None:
    """Put a page (with its place in the file) in the trie at `root`: template segments share one
    `param` branch; at its node, the first page written of each kind (exact, prefix) is kept."""
    page = slot[1]
    node = root
    for part in page.parts:
        if part.startswith("{"):
            if node.param is None:
                node.param = _Node()
            node = node.param
        else:
            node = node.literal.setdefault(part, _Node())
    if page.prefix:
        if node.prefix is None:
            node.prefix = slot
    elif node.exact is None:
        node.exact = slot


def split_path(path: str) -> list[str] | None:
    """The segments of a URL path (query and fragment dropped), or None for what is not a path."""
    if len(path) > MAX_PATH or _URI.fullmatch(path) is None:
        return None
    cut = len(path)
    for ch in "?#":
        i = path.find(ch)
        if i != -1 and i < cut:
            cut = i
    return [s for s in path[:cut].split("/") if s]


class PageMatcher:
    def __init__(self, pages: list[PageDef]) -> None:
        self.pages = tuple(pages)
        self._root = _Node()
        for slot in enumerate(pages):
            _insert(self._root, slot)

    def match(self, path: str) -> Page | None:
        segs = split_path(path)
        if segs is None:
            return None
        best: tuple[int, PageDef] | None = None
        # (node, depth): the live branches of the walk; at most one per template choice.
        frontier = [self._root]
        for depth in range(len(segs) + 1):
            nxt: list[_Node] = []
            for node in frontier:
                if node.prefix is not None and (best is None or node.prefix[0] < best[0]):
                    best = node.prefix
                if depth == len(segs):
                    if node.exact is not None and (best is None or node.exact[0] < best[0]):
                        best = node.exact
                    continue
                child = node.literal.get(segs[depth])
                if child is not None:
                    nxt.append(child)
                if node.param is not None:
                    nxt.append(node.param)
            frontier = nxt
            if not frontier:
                break
        if best is None:
            return None
        page = best[1]
        params: dict[str, str] = {}
        if page.params:
            k = 0
            for part, seg in zip(page.parts, segs, strict=False):
                if part.startswith("{"):
                    params[page.params[k]] = seg
                    k += 1
        return Page(page.pattern, page.placements, page.type, params)


def covers(a: PageDef, b: PageDef) -> bool:
    """Whether every path `b` matches is matched by `a` too (so `a`, written first, shadows it)."""
    if a.prefix:
        if len(a.parts) > len(b.parts):
            return False
    elif b.prefix or len(a.parts) != len(b.parts):
        return False
    for pa, pb in zip(a.parts, b.parts, strict=False):
        if pa.startswith("{"):
            continue
        if pb.startswith("{") or pa != pb:
            return False
    return True


class ShadowIndex:
    """The pages of a site so far, as a trie, answering `covers` for all of them at once: which
    earlier page (the first written) matches every path a new one does. Checking each page against
    every earlier one was quadratic — 200 pages × 22 sites took seconds of `rules check`."""

    def __init__(self) -> None:
        self._root = _Node()
        self._n = 0

    def add(self, page: PageDef) -> None:
        _insert(self._root, (self._n, page))
        self._n += 1

    def covering(self, page: PageDef) -> PageDef | None:
        """The first page added that `covers` `page`, or None."""
        best: tuple[int, PageDef] | None = None
        frontier = [self._root]
        parts = page.parts
        for depth in range(len(parts) + 1):
            nxt: list[_Node] = []
            for node in frontier:
                # A prefix pattern this deep covers whatever `page` is below it.
                if node.prefix is not None and (best is None or node.prefix[0] < best[0]):
                    best = node.prefix
                if depth == len(parts):
                    # An exact pattern covers only an exact page of the same length.
                    exact = None if page.prefix else node.exact
                    if exact is not None and (best is None or exact[0] < best[0]):
                        best = exact
                    continue
                part = parts[depth]
                if not part.startswith("{"):
                    child = node.literal.get(part)
                    if child is not None:
                        nxt.append(child)
                # A template segment covers a literal or a template one; a literal only itself.
                if node.param is not None:
                    nxt.append(node.param)
            frontier = nxt
            if not frontier:
                break
        return None if best is None else best[1]
