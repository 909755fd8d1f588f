"""`edgeside snapshot …` subcommands: build, inspect, verify, pack, delta, and the admin client:
push, status, rollback, activate."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import msgspec

from snapshots import push as push_client
from snapshots.archive import pack
from snapshots.config import ContentConfig, ProfilesConfig, load_config
from snapshots.content_build import build_content
from snapshots.delta import diff_profiles
from snapshots.errors import SnapshotError
from snapshots.manifest import encode_manifest, read_manifest
from snapshots.profiles_build import DEFAULT_MEMORY_LIMIT, EngineOptions, build_profiles
from snapshots.progress import Reporter
from snapshots.push import NodeResult
from snapshots.reader import open_content, open_profiles
from snapshots.verify import verify_snapshot

DEFAULT_KEY_ENV = "EDGESIDE_SIGNING_KEY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `snapshot` command group."""
    group = subparsers.add_parser("snapshot", help="build, inspect, verify and pack snapshots")
    group.set_defaults(func=lambda _args: _usage(group))
    sub = group.add_subparsers(dest="snapshot_command")

    b = sub.add_parser("build", help="build a snapshot from NDJSON or Parquet exports")
    b.add_argument("--kind", choices=("profiles", "content"), required=True, help="what to build")
    b.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="FILE",
        help="paths, globs (quote them) or s3://bucket/key URLs; a directory means every "
        "export file below it",
    )
    b.add_argument(
        "--format", choices=("ndjson", "parquet"), help="default: by extension of each input"
    )
    b.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="duckdb (embedded, default) or spark (pyspark; local[*] unless --spark-master)",
    )
    b.add_argument("--spark-master", help="Spark master URL for --engine spark")
    b.add_argument(
        "--memory-limit",
        default=DEFAULT_MEMORY_LIMIT,
        help=f"engine memory before it spills to disk (default {DEFAULT_MEMORY_LIMIT})",
    )
    b.add_argument("--threads", type=int, default=0, help="engine threads (default: all cores)")
    b.add_argument("--temp-dir", help="where the engine spills (default: beside --out)")
    b.add_argument(
        "--config", type=Path, required=True, help="build config (YAML): ids, merge, enrichment"
    )
    b.add_argument("--out", type=Path, required=True, help="snapshot directory to write")
    b.add_argument("--skip-invalid", action="store_true", help="build from the valid records")
    b.add_argument("--force", action="store_true", help="replace an existing --out directory")
    b.add_argument(
        "--signing-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the HMAC key (default {DEFAULT_KEY_ENV})",
    )
    b.set_defaults(func=_build)

    i = sub.add_parser("inspect", help="show manifest, counts and a sample record")
    i.add_argument("dir", type=Path, help="snapshot directory")
    i.set_defaults(func=_inspect)

    v = sub.add_parser("verify", help="check checksums and signature; non-zero exit on mismatch")
    v.add_argument("dir", type=Path, help="snapshot directory")
    v.add_argument(
        "--signing-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the key to check with (default {DEFAULT_KEY_ENV})",
    )
    v.set_defaults(func=_verify)

    p = sub.add_parser("pack", help="pack a snapshot directory into a .tar for transport")
    p.add_argument("dir", type=Path, help="snapshot directory")
    p.add_argument("--out", type=Path, required=True, help="the .tar to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_pack)

    d = sub.add_parser(
        "delta",
        help="build a profiles-delta: the changes from a base profiles snapshot to a new one",
        description="The new state is --target (a built profiles snapshot) or --input/--config "
        "(built here first). Only upserts and deletions are written; the node applies them to "
        "the base version without a rebuild.",
    )
    d.add_argument("--base", type=Path, required=True, help="the profiles snapshot nodes run")
    d.add_argument("--target", type=Path, help="a built profiles snapshot (the new state)")
    d.add_argument("--input", nargs="+", type=Path, metavar="FILE", help="NDJSON exports")
    d.add_argument("--config", type=Path, help="build config for --input")
    d.add_argument("--out", type=Path, required=True, help="delta directory to write")
    d.add_argument(
        "--signing-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the HMAC key (default {DEFAULT_KEY_ENV})",
    )
    d.set_defaults(func=_delta)

    def nodes(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--to", action="append", required=True, metavar="URL", help="a node (repeatable)"
        )
        cmd.add_argument("--token", help="admin bearer token (default: $EDGESIDE_ADMIN_TOKEN)")

    u = sub.add_parser("push", help="upload a snapshot (dir or .tar) to one or many nodes")
    u.add_argument("dir", type=Path, help="snapshot directory or .tar")
    nodes(u)
    u.set_defaults(func=_push)

    pub = sub.add_parser(
        "publish",
        help="upload a snapshot (dir or .tar) to object storage and announce it to the fleet",
        description="Uploads <prefix>/<kind>/<version>.tar, then the pointer "
        "<prefix>/<kind>/latest.json, then announces it on the broker (docs/fleet.md); an "
        "archive of at most 128 KiB travels in the announcement too.",
    )
    pub.add_argument("dir", type=Path, help="the built snapshot directory to publish")
    pub.add_argument(
        "--to",
        required=True,
        metavar="s3://BUCKET/PREFIX",
        help="where the tar and its pointer go",
    )
    pub.add_argument(
        "--endpoint",
        default=os.environ.get("EDGESIDE_FLEET_S3_ENDPOINT", ""),
        help="an S3-compatible server's URL (default: $EDGESIDE_FLEET_S3_ENDPOINT, else AWS)",
    )
    pub.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION", "us-east-1"),
        help="S3 region (default: $AWS_REGION or us-east-1)",
    )
    pub.add_argument(
        "--broker",
        default=os.environ.get("EDGESIDE_FLEET_BROKER", ""),
        help="NATS URL to announce on (default: $EDGESIDE_FLEET_BROKER; none: nodes find it "
        "at their next poll)",
    )
    pub.add_argument("--subject", default="edgeside", help="the fleet's subject prefix")
    pub.set_defaults(func=_publish)

    st = sub.add_parser("status", help="versions, states and ages on each node")
    nodes(st)
    st.set_defaults(func=_status)

    r = sub.add_parser("rollback", help="re-activate the previous version of a kind")
    r.add_argument(
        "--kind", choices=("profiles", "content", "rules"), required=True, help="which kind"
    )
    nodes(r)
    r.set_defaults(func=_rollback)

    a = sub.add_parser("activate", help="activate a version kept on the nodes")
    a.add_argument(
        "--kind", choices=("profiles", "content", "rules"), required=True, help="which kind"
    )
    a.add_argument("version", help="a version kept on the nodes (see `snapshot status`)")
    nodes(a)
    a.set_defaults(func=_activate)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _key(var: str) -> bytes | None:
    value = os.environ.get(var)
    return value.encode() if value else None


def _build(args: argparse.Namespace) -> int:
    key = _key(args.signing_key_env)
    reporter = Reporter()
    options = EngineOptions(
        memory_limit=args.memory_limit,
        threads=args.threads,
        temp_dir=args.temp_dir,
        input_format=args.format,
    )
    try:
        if args.kind == "profiles" and args.engine == "spark":
            from snapshots.spark_job import build_profiles_spark

            summary = build_profiles_spark(
                args.input,
                load_config(args.config, ProfilesConfig),
                args.out,
                skip_invalid=args.skip_invalid,
                signing_key=key,
                force=args.force,
                master=args.spark_master,
                options=options,
            )
        elif args.kind == "profiles":
            summary = build_profiles(
                args.input,
                load_config(args.config, ProfilesConfig),
                args.out,
                skip_invalid=args.skip_invalid,
                signing_key=key,
                progress=reporter,
                force=args.force,
                options=options,
            )
        else:
            summary = build_content(
                args.input,
                load_config(args.config, ContentConfig),
                args.out,
                skip_invalid=args.skip_invalid,
                signing_key=key,
                progress=reporter,
                force=args.force,
                options=options,
            )
    except SnapshotError as exc:
        reporter.done()
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"edgeside: error: {exc.filename}: no such file", file=sys.stderr)
        return 1
    reporter.done()
    print("\n".join(summary.lines()))
    if key is None:
        print(f"  unsigned: set {args.signing_key_env} to sign snapshots")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    try:
        manifest = read_manifest(args.dir)
        print(encode_manifest(manifest).decode(), end="")
        sample: list[object] = []
        if manifest.kind == "profiles":
            with open_profiles(args.dir, verify=False) as r:
                sample = list(r.sample(1))
        elif manifest.kind == "content":
            with open_content(args.dir, verify=False) as c:
                sample = [c.get(i) for i in c.all_ids()[:1]]
    except SnapshotError as exc:
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 1
    for s in sample:
        print("sample:", msgspec.json.format(msgspec.json.encode(s), indent=2).decode())
    return 0


def _verify(args: argparse.Namespace) -> int:
    key = _key(args.signing_key_env)
    problems = verify_snapshot(args.dir, signing_key=key)
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        return 1
    manifest = read_manifest(args.dir)
    signed = "signature ok" if key else "signature not checked (no key)"
    if manifest.signature is None:
        signed = "unsigned"
    print(
        f"ok {args.dir}: {manifest.kind} {manifest.version}, "
        f"{len(manifest.files)} file(s), {signed}"
    )
    return 0


def _pack(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        print(f"edgeside: error: {args.out} exists; --force replaces it", file=sys.stderr)
        return 2
    try:
        out = pack(args.dir, args.out)
    except SnapshotError as exc:
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 1
    print(f"packed {args.dir} -> {out} ({out.stat().st_size:,} bytes)")
    return 0


def _token(args: argparse.Namespace) -> str | None:
    token: str | None = args.token or os.environ.get("EDGESIDE_ADMIN_TOKEN")
    if not token:
        print("edgeside: error: give --token or set EDGESIDE_ADMIN_TOKEN", file=sys.stderr)
    return token


def _report(results: list[NodeResult]) -> int:
    for r in results:
        print(r.line(), flush=True)
    failed = sum(not r.ok for r in results)
    if len(results) > 1:
        print(f"{len(results) - failed}/{len(results)} node(s) ok")
    return 1 if failed else 0


def _push(args: argparse.Namespace) -> int:
    token = _token(args)
    if token is None:
        return 2
    try:
        results = push_client.push(args.dir, args.to, token)
    except (SnapshotError, OSError, ValueError) as exc:
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 1
    return _report(results)


def _publish(args: argparse.Namespace) -> int:
    import asyncio

    from snapshots import objstore

    try:
        s3 = objstore.client(args.endpoint, args.region)
        pointer, inline = objstore.publish_inline(args.dir, args.to, s3)
    except (SnapshotError, objstore.ObjectStoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"published {pointer.kind} {pointer.version} ({pointer.size:,} bytes) to {args.to}")
    if args.broker:
        try:
            asyncio.run(objstore.announce(args.broker, args.subject, pointer, archive=inline))
        except Exception as exc:  # published all the same: nodes find it at their next poll
            print(f"warning: not announced on {args.broker}: {exc}", file=sys.stderr)
            return 0
        print(f"announced on {args.broker}")
    return 0


def _status(args: argparse.Namespace) -> int:
    token = _token(args)
    if token is None:
        return 2
    results = push_client.status(args.to, token)
    for r in results:
        if not r.ok:
            print(r.line())
            continue
        print(f"{r.node}  (signed: {r.body.get('signed')}, keep {r.body.get('keep_versions')})")
        for k in r.body.get("kinds", []):
            print(f"  {k['kind']}: active {k['active']}")
            for v in k["versions"]:
                size = v["size_bytes"] / 1e6
                print(f"    {v['state']:<8} {v['version']:<40} {v['age_s']:>9}s {size:>10.2f} MB")
        for p in r.body.get("pull", []):
            err = f", last error: {p['last_error']}" if p.get("last_error") else ""
            print(f"  pull {p['kind']} <- {p['url']}: {p.get('version')}{err}")
    return 1 if any(not r.ok for r in results) else 0


def _rollback(args: argparse.Namespace) -> int:
    token = _token(args)
    if token is None:
        return 2
    return _report(push_client.rollback(args.kind, args.to, token))


def _activate(args: argparse.Namespace) -> int:
    token = _token(args)
    if token is None:
        return 2
    return _report(push_client.activate(args.kind, args.version, args.to, token))


def _delta(args: argparse.Namespace) -> int:
    key = _key(args.signing_key_env)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            target = args.target
            if target is None:
                if not args.input or args.config is None:
                    print(
                        "error: give --target DIR, or --input FILE… --config FILE", file=sys.stderr
                    )
                    return 2
                target = Path(tmp) / "target"
                build_profiles(
                    args.input, load_config(args.config, ProfilesConfig), target, signing_key=key
                )
            manifest = diff_profiles(args.base, target, args.out, signing_key=key)
    except SnapshotError as exc:
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 1
    c = manifest.counts
    print(
        f"profiles-delta {manifest.version} -> {args.out}: base {manifest.params['base'][0]}, "
        f"{c['upserts']} upsert(s), {c['deletes']} deletion(s), {c['alias_upserts']} alias "
        f"upsert(s), {c['alias_deletes']} alias deletion(s)"
    )
    return 0
