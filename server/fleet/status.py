"""Fleet status: every node's heartbeat in a JetStream key-value bucket, and the table read from it.

A node puts its `Heartbeat` under its name every `heartbeat_s`; the bucket keeps one value per key
and forgets keys untouched for 30 × `stale_after_s` (nodes that went away for good). A reader —
`edgeside fleet status`, `GET /v1/admin/fleet` — lists the nodes × kinds × versions × age and flags
kinds on which nodes diverge and nodes not heard from for `stale_after_s`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from .messages import KINDS, Heartbeat, Malformed, decode_heartbeat

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("edgeside.fleet")

MAX_NODES = 10_000
HEARTBEAT_BYTES = 16 * 1024


def bucket_name(subject: str) -> str:
    return f"{subject}_nodes".replace(".", "_")


async def nodes_bucket(js: JetStreamContext, subject: str, stale_after_s: float) -> KeyValue:
    from nats.js.errors import BucketNotFoundError

    name = bucket_name(subject)
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        from nats.js.api import KeyValueConfig

        return await js.create_key_value(
            KeyValueConfig(bucket=name, history=1, ttl=max(60.0, stale_after_s * 30))
        )


class NodeRow(msgspec.Struct):
    node: str
    ready: bool
    versions: dict[str, str]
    age_s: float  # since its last heartbeat
    up_s: float
    live_lag_s: float | None
    broker: str
    stale: bool
    notes: list[str]


class FleetReport(msgspec.Struct):
    at: float
    nodes: list[NodeRow]
    # kind → version → how many fresh nodes run it
    versions: dict[str, dict[str, int]]
    divergent: list[str]
    stale: list[str]
    ok: bool


def report(beats: list[Heartbeat], now: float, stale_after_s: float) -> FleetReport:
    rows: list[NodeRow] = []
    versions: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    for b in sorted(beats, key=lambda b: b.node):
        age = max(0.0, now - b.at)
        stale = age > stale_after_s
        rows.append(
            NodeRow(
                b.node,
                b.ready,
                dict(b.versions),
                round(age, 1),
                round(now - b.started_at, 1),
                b.live_lag_s,
                b.broker,
                stale,
                list(b.notes),
            )
        )
        if stale:
            continue  # a node not heard from says nothing about what the fleet runs now
        for kind in KINDS:
            v = b.versions.get(kind, "-")
            versions[kind][v] = versions[kind].get(v, 0) + 1
    divergent = [k for k, seen in versions.items() if len(seen) > 1]
    stale_nodes = [r.node for r in rows if r.stale]
    return FleetReport(
        now, rows, versions, divergent, stale_nodes, not divergent and not stale_nodes
    )


async def read_beats(kv: KeyValue, limit: int = HEARTBEAT_BYTES) -> list[Heartbeat]:
    """Every node's last heartbeat; malformed values are skipped (and logged), never trusted."""
    from nats.js.errors import KeyNotFoundError, NoKeysError

    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    beats: list[Heartbeat] = []
    for key in keys[:MAX_NODES]:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue  # expired between the listing and the read
        try:
            beats.append(decode_heartbeat(entry.value or b"", limit))
        except Malformed as exc:
            log.warning("fleet: heartbeat under %r ignored: %s", key[:64], exc)
    return beats


def render(rep: FleetReport) -> str:
    """nodes × kinds × versions × age, then what is wrong."""
    head = ["node", "ready", *KINDS, "heard_s", "lag_s", "broker"]
    lines = [head]
    for r in rep.nodes:
        lag = "-" if r.live_lag_s is None else f"{r.live_lag_s:g}"
        mark = " STALE" if r.stale else ""
        lines.append(
            [
                r.node + mark,
                "yes" if r.ready else "NO",
                *(r.versions.get(k, "-") for k in KINDS),
                f"{r.age_s:g}",
                lag,
                r.broker,
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    ]
    out.append("")
    for kind in KINDS:
        seen = rep.versions[kind]
        flag = "  DIVERGENT" if kind in rep.divergent else ""
        shown = ", ".join(f"{v} on {n}" for v, n in sorted(seen.items())) or "no fresh node"
        out.append(f"{kind}: {shown}{flag}")
    if rep.stale:
        out.append(f"stale (not heard from): {', '.join(rep.stale)}")
    out.append(f"{len(rep.nodes)} nodes; " + ("converged" if rep.ok else "NOT converged"))
    return "\n".join(out)
