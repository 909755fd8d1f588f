"""The demo shop: build its snapshots from `demo/` into a data directory, again when it changes."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from snapshots import store

from .rules_snapshot import build_rules_snapshot

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


DIGEST_FILE = ".demo-digest"


def demo_digest() -> str:
    """sha256 over every file the demo snapshots are built from."""
    h = hashlib.sha256()
    for path in sorted(p for p in DEMO_DIR.rglob("*") if p.is_file() and p.suffix != ".py"):
        h.update(str(path.relative_to(DEMO_DIR)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_demo(data_dir: Path, signing_key: bytes | None = None, *, force: bool = False) -> None:
    """Build and activate the demo snapshots unless every kind is active and built from the
    demo files as they are now (a checkout that changed `demo/` rebuilds on the next start)."""
    digest = demo_digest()
    stamp = data_dir / DIGEST_FILE
    current = stamp.read_text().strip() if stamp.exists() else ""
    if (
        not force
        and current == digest
        and all(store.active_path(data_dir, kind) for kind in ("profiles", "content", "rules"))
    ):
        return
    # Imported here: the CLI composes the parts, and building is the snapshots part's CLI.
    from .cli import main as cli_main

    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        for kind in ("profiles", "content"):
            out = Path(tmp) / kind
            inputs = sorted(str(p) for p in (DEMO_DIR / kind).glob("*.ndjson"))
            code = cli_main(
                [
                    "snapshot",
                    "build",
                    "--kind",
                    kind,
                    "--input",
                    *inputs,
                    "--config",
                    str(DEMO_DIR / f"{kind}.yaml"),
                    "--out",
                    str(out),
                ]
            )
            if code != 0:
                raise RuntimeError(f"demo {kind} snapshot did not build (exit {code})")
            store.activate(data_dir, kind, store.install(data_dir, out))
        out = Path(tmp) / "rules"
        if build_rules_snapshot(DEMO_DIR / "rules.yaml", out, signing_key) != 0:
            raise RuntimeError("demo rules do not check")
        store.activate(data_dir, "rules", store.install(data_dir, out))
    stamp.write_text(digest + "\n")
