"""`actions:` — next-best actions: a condition, a priority, an optional webhook, the sites."""

from __future__ import annotations

from collections.abc import Collection

from rules import types as T
from rules.diagnostics import suggestion_for
from rules.loader import Node
from rules.model import Action
from rules.read.base import Reader

WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH")


def read_actions(r: Reader, node: Node | None, sites: Collection[str]) -> list[Action]:
    out: list[Action] = []
    ids: dict[str, Node] = {}
    for item in r.sequence(node, "`actions`"):
        m = r.mapping(item, "an action")
        if m is None:
            continue
        r.keys(m, ("id", "when", "priority", "webhook", "sites"), "an action")
        aid = r.string(m.get("id"), "the action's `id`", required=True, parent=m)
        if aid is not None and aid in ids:
            r.err(
                m.entries["id"][1],
                "duplicate-id",
                f"action id `{aid}` is used twice (first at line {ids[aid].line})",
            )
            continue
        when = r.expression(m.get("when"), f"`when` of action `{aid}`", T.BOOL)
        if m.get("when") is not None and when is None:
            continue
        priority = r.number(m.get("priority"), "`priority`", -1e9, 1e9) or 0.0
        url = method = None
        wnode = r.mapping(m.get("webhook"), "`webhook`")
        if wnode is not None:
            r.keys(wnode, ("url", "method"), "`webhook`")
            url = r.string(wnode.get("url"), "`url`", required=True, parent=wnode)
            if url is not None and not url.startswith(("https://", "http://")):
                r.err(
                    wnode.get("url") or wnode,
                    "bad-value",
                    "a webhook `url` must start with https:// or http://",
                )
                url = None
            method = (r.string(wnode.get("method"), "`method`") or "POST").upper()
            if method not in WEBHOOK_METHODS:
                r.err(
                    wnode.get("method") or wnode,
                    "bad-value",
                    f"unsupported method `{method}`",
                    suggestion_for(method, WEBHOOK_METHODS),
                )
                method = "POST"
        site_names = r.strings(m.get("sites"), "`sites`")
        for s in site_names:
            if s not in sites:
                r.err(
                    m.get("sites") or m,
                    "unknown-site",
                    f"unknown site `{s}`",
                    suggestion_for(s, sites),
                )
        if aid is None:
            continue
        ids[aid] = m
        out.append(
            Action(
                aid,
                when,
                priority,
                url,
                method if url else None,
                frozenset(site_names) or None,
                m.line,
            )
        )
    return out
