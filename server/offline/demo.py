"""The demo shop: build its snapshots from its exports into a data directory, again when they
change.

The exports, build configs and rules live in the package (`server/offline/demo_data/`, shipped as
package data), so `edgeside serve` with no `--data` works from an installed wheel as it does from
a checkout: one copy, read by both.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import snapshots
from snapshots import store

from ..config import load_secrets
from .rules_snapshot import build_rules_snapshot

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"


def default_demo_data() -> Path:
    """Where `edgeside serve` without --data (and `edgeside demo build`) keeps the demo snapshots:
    `.data/demo` in a checkout (beside the Makefile's `make serve`), else the user's data
    directory (`$XDG_DATA_HOME/edgeside/demo`, `~/.local/share/edgeside/demo`) — never inside an
    installed package, which may be read-only and is replaced by the next install."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "server" / "offline").is_dir():
        return root / ".data" / "demo"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgeside" / "demo"


DEFAULT_DEMO_DATA = default_demo_data()


DIGEST_FILE = ".demo-digest"


def demo_digest() -> str:
    """sha256 over every file the demo snapshots are built from."""
    h = hashlib.sha256()
    for path in sorted(p for p in DEMO_DIR.rglob("*") if p.suffix in (".yaml", ".ndjson")):
        h.update(str(path.relative_to(DEMO_DIR)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_demo(data_dir: Path, signing_key: bytes | None = None, *, force: bool = False) -> None:
    """Build and activate the demo snapshots unless every kind is active and built from the
    demo files as they are now (a change to `demo_data/` rebuilds on the next start)."""
    digest = demo_digest()
    stamp = data_dir / DIGEST_FILE
    current = stamp.read_text().strip() if stamp.exists() else ""
    if (
        not force
        and current == digest
        and all(store.active_path(data_dir, kind) for kind in ("profiles", "content", "rules"))
    ):
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        inputs = {
            kind: sorted((DEMO_DIR / kind).glob("*.ndjson")) for kind in ("profiles", "content")
        }
        profiles = Path(tmp) / "profiles"
        snapshots.build_profiles(
            inputs["profiles"],
            snapshots.load_config(DEMO_DIR / "profiles.yaml", snapshots.ProfilesConfig),
            profiles,
            signing_key=signing_key,
        )
        content = Path(tmp) / "content"
        snapshots.build_content(
            inputs["content"],
            snapshots.load_config(DEMO_DIR / "content.yaml", snapshots.ContentConfig),
            content,
            signing_key=signing_key,
        )
        for kind, out in (("profiles", profiles), ("content", content)):
            store.activate(data_dir, kind, store.install(data_dir, out))
        out = Path(tmp) / "rules"
        if build_rules_snapshot(DEMO_DIR / "rules.yaml", out, signing_key) != 0:
            raise RuntimeError("demo rules do not check")
        store.activate(data_dir, "rules", store.install(data_dir, out))
    stamp.write_text(digest + "\n")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="the demo shop")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    build = demo_sub.add_parser("build", help="build and activate the demo snapshots")
    build.add_argument(
        "--data", default=str(DEFAULT_DEMO_DATA), help="data directory (default %(default)s)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(func=run_demo_build)


def run_demo_build(args: argparse.Namespace) -> int:
    secrets = load_secrets()
    key = secrets.signing_key.encode() if secrets.signing_key else None
    ensure_demo(Path(args.data), key, force=args.force)
    print(f"demo snapshots active in {args.data}")
    return 0
