"""The demo shop: build its snapshots from `demo/` into a data directory, once."""

from __future__ import annotations

import tempfile
from pathlib import Path

from snapshots import store

from .rules_snapshot import build_rules_snapshot

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


def ensure_demo(data_dir: Path, signing_key: bytes | None = None, *, force: bool = False) -> None:
    """Build and activate the demo snapshots unless every kind already has an active version."""
    if not force and all(
        store.active_path(data_dir, kind) for kind in ("profiles", "content", "rules")
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
