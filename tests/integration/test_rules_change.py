"""A new rules snapshot, activated while nginx serves, changes the decision and so the cache key."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from bench.procs import edgeside
from bench.proxies import Running, nginx
from server.offline.demo import DEMO_DIR, build_rules_snapshot
from snapshots import store

from .helpers import decide, demo_cookies, keys_by_cookie, page, render_number, renders, variants

pytestmark = pytest.mark.integration


def test_new_rules_snapshot_changes_the_decision_and_the_cache_key(
    nginx_bin: str, cdn_data: Path, tmp_path: Path, origin: Running
) -> None:
    data = tmp_path / "data"
    shutil.copytree(cdn_data, data, symlinks=True)
    path = "/rules/change"
    with (
        edgeside(data, log_dir=tmp_path) as decider,
        nginx(
            nginx_bin,
            tmp_path / "nginx",
            edgeside=decider.url.removeprefix("http://"),
            origin=f"127.0.0.1:{origin.port}",
        ) as (proxy, _),
    ):
        # Two visitors with the same decision: one seen before the change, one only after.
        rules_text = (DEMO_DIR / "rules.yaml").read_text(encoding="utf-8")
        old_key, (seen, unseen) = _pair(decider.url, path, rules_text)
        before = page(proxy.url, path, seen)
        assert before.headers["x-edge-key"] == old_key
        variant = variants(before)["home_hero"]

        changed = rules_text.replace(f"variant: {variant}\n", f"variant: {variant}_v2\n")
        assert changed != rules_text
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(changed, encoding="utf-8")
        assert build_rules_snapshot(rules_file, tmp_path / "rules-snapshot") == 0
        store.activate(data, "rules", store.install(data, tmp_path / "rules-snapshot"))

        # edgeside picks the version up within ~0.25 s; a visitor with no cached callout gets it on
        # the very next request.
        time.sleep(0.6)
        after = page(proxy.url, path, unseen)
        assert variants(after)["home_hero"] == f"{variant}_v2"
        new_key = after.headers["x-edge-key"]
        assert new_key not in (old_key, "fallback")
        assert after.headers["x-cache-status"] == "MISS"
        assert render_number(after) != render_number(before)
        # The visitor seen before may keep the old decision for the callout TTL (1 s, counted by
        # nginx in whole seconds), then moves too.
        deadline = time.monotonic() + 5
        while page(proxy.url, path, seen).headers["x-edge-key"] != new_key:
            assert time.monotonic() < deadline, "the seen visitor never got the new decision"
            time.sleep(0.2)
        assert decide(decider.url, path, seen)["x-edge-key"] == new_key
    keys = {entry["headers"]["x-edge-key"] for entry in renders(origin.url, path)}
    assert keys == {old_key, new_key}


def _pair(edgeside_url: str, path: str, rules_text: str) -> tuple[str, tuple[str, str]]:
    """A decision key shared by two demo visitors whose hero is set by a rule (not the default,
    not an experiment arm), so renaming that rule's variant changes their decision."""
    for key, members in keys_by_cookie(edgeside_url, path, demo_cookies()[:150]).items():
        hero = decide(edgeside_url, path, members[0])["x-edge-decision"].split("=", 1)[1]
        if len(members) >= 2 and hero != "default" and f"variant: {hero}\n" in rules_text:
            return key, (members[0], members[1])
    raise AssertionError("no two demo visitors share a personalised hero")
