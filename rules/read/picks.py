"""Content picks (`content:` of an outcome or an arm): a query over the content indexes."""

from __future__ import annotations

from rules.diagnostics import suggestion_for
from rules.loader import Node
from rules.model import PickSpec
from rules.read.base import Reader

RANK_KEYS = ("priority", "affinity", "recency")
EXCLUDE_KEYS = ("views", "purchases", "cart")
MAX_PICK = 100


def read_pick(r: Reader, node: Node | None, what: str) -> PickSpec | None:
    if node is None:
        return None
    if node.kind == "list":
        return PickSpec(ids=r.strings(node, f"{what} ids"), limit=len(node.items) or 1)
    m = r.mapping(node, what)
    if m is None:
        return None
    r.keys(
        m,
        ("ids", "tags", "any_tags", "type", "placement", "locale", "rank", "exclude", "limit"),
        what,
    )
    spec = PickSpec()
    spec.ids = r.strings(m.get("ids"), "`ids`")
    spec.tags = r.strings(m.get("tags"), "`tags`")
    spec.any_tags = r.strings(m.get("any_tags"), "`any_tags`")
    spec.type = r.string(m.get("type"), "`type`")
    pnode = m.get("placement")
    if pnode is not None:
        if pnode.value is True:
            spec.placement = ""
        else:
            spec.placement = r.string(pnode, "`placement`")
    lnode = m.get("locale")
    if lnode is not None:
        spec.locale = r.string(lnode, "`locale`") or "ctx"
    limit = r.integer(m.get("limit"), "`limit`", 1, MAX_PICK)
    spec.limit = limit if limit is not None else (len(spec.ids) or 1)
    rnode = m.get("rank")
    if rnode is not None:
        rank: list[tuple[str, float]] = []
        if rnode.kind == "map":
            for key, (knode, wnode) in rnode.entries.items():
                w = r.number(wnode, f"weight of `{key}`", -1e6, 1e6)
                if key not in RANK_KEYS:
                    r.err(
                        knode,
                        "unknown-field",
                        f"unknown ranking `{key}`",
                        suggestion_for(key, RANK_KEYS),
                    )
                elif w is not None:
                    rank.append((key, w))
        else:
            for item in r.sequence(rnode, "`rank`"):
                key_s = r.string(item, "a ranking")
                if key_s is not None and key_s not in RANK_KEYS:
                    r.err(
                        item,
                        "unknown-field",
                        f"unknown ranking `{key_s}`",
                        suggestion_for(key_s, RANK_KEYS),
                    )
                elif key_s is not None:
                    rank.append((key_s, 1.0))
        spec.rank = tuple(rank)
    enode = m.get("exclude")
    if enode is not None:
        nodes = [enode] if enode.kind == "scalar" and enode.text else r.sequence(enode, "`exclude`")
        excl: list[str] = []
        for item_node in nodes:
            name = r.string(item_node, "each of `exclude`")
            if name is None:
                continue
            if name not in EXCLUDE_KEYS:
                r.err(
                    item_node,
                    "unknown-field",
                    f"cannot exclude `{name}`",
                    suggestion_for(name, EXCLUDE_KEYS) or f"one of {', '.join(EXCLUDE_KEYS)}",
                )
            else:
                excl.append(name)
        spec.exclude = tuple(excl)
    if not (spec.ids or spec.tags or spec.any_tags or spec.type or spec.placement is not None):
        r.err(
            m,
            "bad-pick",
            f"{what} needs `ids`, or at least one of `tags`, `any_tags`, `type`, `placement`",
            "a pick filters the content indexes; it never scans the whole catalogue",
        )
        return None
    return spec
