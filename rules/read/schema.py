"""`schema:` — what the profile holds that rules may use."""

from __future__ import annotations

from rules import types as T
from rules.diagnostics import suggestion_for
from rules.loader import Node
from rules.read.base import Reader
from rules.schema import Attribute, ProfileSchema


def read_schema(r: Reader, node: Node | None) -> ProfileSchema:
    """`schema:` — the profile attributes (with types and optional values) the file uses."""
    schema = ProfileSchema()
    m = r.mapping(node, "`schema`")
    if m is None:
        return schema
    r.keys(m, ("attributes", "interests", "counters", "segments"), "`schema`")
    attrs = r.mapping(m.get("attributes"), "`schema.attributes`")
    if attrs is not None:
        for name, (key, spec) in attrs.entries.items():
            if not name.isidentifier():
                r.err(key, "bad-value", f"attribute name `{name}` must be a plain name")
                continue
            type_node = spec
            values: tuple[str | int | float, ...] | None = None
            if spec.kind == "map":
                r.keys(spec, ("type", "values"), f"attribute `{name}`")
                given = spec.get("type")
                if given is None:
                    r.err(spec, "missing-field", f"attribute `{name}` needs a `type`")
                    continue
                type_node = given
                vnode = spec.get("values")
                if vnode is not None:
                    vals: list[str | int | float] = []
                    for item in r.sequence(vnode, "`values`"):
                        v = item.value
                        if isinstance(v, bool) or v is None or not isinstance(v, int | float):
                            text = r.string(item, "an enum value")
                            if text is not None:
                                vals.append(text)
                        else:
                            vals.append(v)
                    values = tuple(vals)
            tname = type_node.text if type_node.kind == "scalar" else ""
            typ = T.DECLARABLE.get(tname)
            if typ is None:
                r.err(
                    type_node,
                    "bad-value",
                    f"unknown type `{tname}` for attribute `{name}`",
                    suggestion_for(tname, T.DECLARABLE)
                    or "types: string, int, number, bool, list, timestamp",
                )
                continue
            schema.attributes[name] = Attribute(name, typ, values)
    for section in ("interests", "counters", "segments"):
        sub = m.get(section)
        if sub is not None:
            names = frozenset(r.strings(sub, f"`schema.{section}`"))
            if section == "interests":
                schema.interests = names
            elif section == "counters":
                schema.counters = names
            else:
                schema.upstream_segments = names
    return schema
