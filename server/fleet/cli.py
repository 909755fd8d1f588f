"""`edgeside fleet status`: which node runs what, read from the heartbeats on the broker."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from .link import BrokerAuthError, broker_auth, connect_once, explain, shown
from .messages import encode_json
from .status import FleetReport, nodes_bucket, read_beats, render, report


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("fleet", help="the fleet of nodes sharing a broker")
    sub = group.add_subparsers(dest="fleet_command", required=True)
    st = sub.add_parser(
        "status",
        help="nodes × kinds × versions × age; flags divergence and stale nodes",
        description="Exit status: 0 converged, 1 divergent or stale nodes, 2 broker unreachable.",
    )
    st.add_argument(
        "--broker",
        default=os.environ.get("EDGESIDE_FLEET_BROKER", ""),
        help="NATS URL (default: $EDGESIDE_FLEET_BROKER); credentials as for a node "
        "(EDGESIDE_FLEET_BROKER_USER/_PASSWORD or _TOKEN[_FILE], or in the URL)",
    )
    st.add_argument("--subject", default="edgeside", help="the fleet's subject prefix")
    st.add_argument(
        "--stale-after",
        type=float,
        default=10.0,
        metavar="S",
        help="a node whose last heartbeat is older than this is stale (default 10 s)",
    )
    st.add_argument("--json", action="store_true", help="the report as JSON")
    st.set_defaults(func=_status)


async def fetch_report(broker: str, subject: str, stale_after_s: float) -> FleetReport:
    nc = await connect_once(broker)  # credentials from the environment, as a node takes them
    try:
        kv = await nodes_bucket(nc.jetstream(timeout=5.0), subject, stale_after_s)
        beats = await read_beats(kv)
    finally:
        await nc.close()
    return report(beats, time.time(), stale_after_s)


def _status(args: argparse.Namespace) -> int:
    if not args.broker:
        print("error: give --broker or set EDGESIDE_FLEET_BROKER", file=sys.stderr)
        return 2
    try:
        auth = broker_auth()
    except BrokerAuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        rep = asyncio.run(fetch_report(args.broker, args.subject, args.stale_after))
    except Exception as exc:  # unreachable broker, refused credentials, no JetStream: exit 2
        print(f"error: {shown(args.broker)}: {explain(exc, auth)}", file=sys.stderr)
        return 2
    print(encode_json(rep).decode() if args.json else render(rep))
    return 0 if rep.ok else 1
