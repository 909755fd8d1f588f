"""`pages:` of a site — URL path patterns naming a page's placements, so a proxy can ask
`/v1/edge` with nothing but the page's URI (SPEC §5 "Pages").

    pages:
      - {path: /, placements: [hero]}                      # exact
      - {path: /blog/*, placements: [sidebar]}             # prefix: /blog and all below it
      - {path: "/product/{sku}", placements: [recs], type: product}   # template

Patterns are checked here, one at a time (shape, a segment named twice); how they relate to each
other (shadowing) and to the placements is `rules.resolve`'s, once inheritance is known."""

from __future__ import annotations

import re

from rules.loader import Node
from rules.model import PageDef
from rules.read.base import Reader

MAX_PATTERN = 512
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
# A literal segment: what a URL path segment holds, less what would make a pattern ambiguous.
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@%-]+")


def parse_pattern(text: str) -> tuple[tuple[str, ...], tuple[str, ...], bool] | str:
    """(parts, params, prefix), or what is wrong with the pattern (a message)."""
    if not text.startswith("/"):
        return "a page pattern is a URL path: it starts with `/`"
    if len(text) > MAX_PATTERN:
        return f"a page pattern is at most {MAX_PATTERN} characters"
    if "?" in text or "#" in text:
        return "a page pattern is a path only: the query (`?…`) and fragment (`#…`) are not matched"
    prefix = text.endswith("/*") or text == "/*"
    body = text[:-2] if prefix else text
    segs = [s for s in body.split("/") if s]
    parts: list[str] = []
    params: list[str] = []
    for seg in segs:
        m = _PARAM.fullmatch(seg)
        if m is not None:
            name = m.group(1)
            if name in params:
                return f"the segment `{{{name}}}` is used twice in one pattern"
            params.append(name)
            parts.append("{" + name + "}")
        elif "*" in seg:
            return "`*` may only end a pattern, as `/…/*` (this path and everything below it)"
        elif "{" in seg or "}" in seg:
            return f"`{seg}` is not a template segment: write `{{name}}` as a whole segment"
        elif not _LITERAL.fullmatch(seg):
            return f"`{seg}` holds characters a URL path segment cannot"
        else:
            parts.append(seg)
    return tuple(parts), tuple(params), prefix


def read_pages(
    r: Reader, node: Node | None, site: str, placements: set[str] | None = None
) -> list[PageDef]:
    out: list[PageDef] = []
    seen: dict[str, PageDef] = {}
    for item in r.sequence(node, f"the pages of site `{site}`"):
        m = r.mapping(item, "a page")
        if m is None:
            continue
        r.keys(m, ("path", "placements", "type"), "a page")
        pnode = m.get("path")
        pattern = r.string(pnode, "the page's `path`", required=True, parent=m)
        names = r.strings(m.get("placements"), "`placements`")
        ptype = r.string(m.get("type"), "`type`")
        if pattern is None or pnode is None:
            continue
        parsed = parse_pattern(pattern)
        if isinstance(parsed, str):
            r.err(
                pnode,
                "bad-pattern",
                parsed,
                "e.g. `/about` (exact), `/blog/*` (prefix) or `/product/{sku}` (template)",
            )
            continue
        parts, params, prefix = parsed
        shape = _shape(parts, prefix)
        earlier = seen.get(shape)
        if earlier is not None:
            r.err(
                pnode,
                "duplicate-page",
                f"`{pattern}` matches the same paths as `{earlier.pattern}` (line {earlier.line})",
                "merge the two pages, or remove one",
            )
            continue
        page = PageDef(pattern, parts, params, prefix, names, ptype, site, m, pnode.line, pnode.col)
        seen[shape] = page
        out.append(page)
    return out


def _shape(parts: tuple[str, ...], prefix: bool) -> str:
    """What a pattern matches, names of template segments aside: `/p/{a}` and `/p/{b}` overlap
    completely."""
    return "/".join("{}" if p.startswith("{") else p for p in parts) + ("/*" if prefix else "")
