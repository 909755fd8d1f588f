"""The demo store: built from `server/offline/demo_data/`, signed with the key it is given."""

from __future__ import annotations

from pathlib import Path

import snapshots
from server.offline.demo import ensure_demo
from snapshots import store


def test_every_demo_snapshot_is_signed_with_the_given_key(tmp_path: Path) -> None:
    key = b"demo-signing-key"
    ensure_demo(tmp_path, key)
    for kind in ("profiles", "content", "rules"):
        path = store.active_path(tmp_path, kind)
        assert path is not None
        assert snapshots.verify_snapshot(path, signing_key=key) == []
        assert snapshots.verify_snapshot(path, signing_key=b"another key") != []
