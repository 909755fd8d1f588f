"""Crash safety (SPEC §7): SIGKILL a 2-worker server at defined phases of pushes — mid-upload,
mid-check (unpack, hashing, scan, validation), just after the activation — restart it, and check
each time that it serves a complete, verified version and that the version active before the
push is still intact.

The kill points are found by watching the store's own files, not by sleeping: a kill chosen by
the clock fell in whichever phase the machine's speed put there (under load, every kill could land
after the activations, or all before), so whether the test covered both sides of an activation
depended on the load. Here each phase is waited for, so every run kills in every phase."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.gen import generate
from bench.procs import edgeside
from server.cli import main as cli_main
from snapshots.manifest import read_manifest
from snapshots.store import STAGING, active_version, list_staging, versions_dir
from snapshots.verify import verify_snapshot
from tests.server.lifecycle.kit import ADMIN, AUTH, EDGE, TOKEN, rules_snapshot, tar_of

pytestmark = pytest.mark.slow

KINDS = ("profiles", "content", "rules")
# The phases of the profiles push each round kills in; two rounds of each.
PHASES = ("mid-upload", "mid-check", "activated") * 2
# A bound on a hang (a push that never reaches the phase), not a measure of speed.
PHASE_WAIT_S = 120.0


@pytest.fixture(scope="module")
def big_profiles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two versions of ~20 k generated people: tars of several MB, so their checks take a while.
    Two, so that every round has one that is not active yet to push."""
    snaps = []
    for seed in (3, 4):
        out = tmp_path_factory.mktemp("gen")
        cmds = generate(20_000, 50, seed, out)
        assert cli_main(cmds["profiles"]) == 0
        snaps.append(out / "snap-profiles")
    assert read_manifest(snaps[0]).version != read_manifest(snaps[1]).version
    return snaps


def held(raw: bytes, release: threading.Event) -> Iterator[bytes]:
    """The first half of `raw`, then nothing until `release`: the server cannot have the whole
    archive, so it cannot have activated it."""
    half = len(raw) // 2
    yield raw[:half]
    release.wait(PHASE_WAIT_S)
    yield raw[half:]


def wait_for(phase: str, data: Path, before: str | None) -> None:
    end = time.monotonic() + PHASE_WAIT_S
    while not reached(phase, data, before):
        if time.monotonic() > end:
            raise AssertionError(f"the profiles push never reached {phase}")
        time.sleep(0.001)


def staged(data: Path, kind: str, name: str) -> list[Path]:
    """`name` inside the kind's upload staging directories (upload.tar, or `upload` once the
    archive is being unpacked)."""
    root = versions_dir(data, kind) / STAGING
    try:
        return [p / name for p in root.iterdir() if (p / name).exists()]
    except FileNotFoundError:
        return []


def moved(data: Path, kind: str, before: str | None) -> bool:
    return active_version(data, kind) != before


def reached(phase: str, data: Path, before: str | None) -> bool:
    """Whether the profiles push has reached `phase`, seen in the store's files."""
    if phase == "mid-upload":  # its upload.tar is being written
        return bool(staged(data, "profiles", "upload.tar"))
    if phase == "mid-check":  # the archive is being unpacked, hashed, scanned, validated
        return bool(staged(data, "profiles", "upload")) or moved(data, "profiles", before)
    return moved(data, "profiles", before)


def check_node(data: Path, url: str, before: dict[str, str | None], pushed: set[str]) -> None:
    for kind in KINDS:
        now = active_version(data, kind)
        assert now is not None, f"{kind}: no active version after a crash"
        assert now == before[kind] or now in pushed, (kind, now)
        assert verify_snapshot(versions_dir(data, kind) / now) == [], (kind, now)
        old = before[kind]
        assert old is not None
        assert verify_snapshot(versions_dir(data, kind) / old) == [], f"{kind} {old} damaged"
        assert list_staging(data, kind) == [], "start-up did not sweep staging"
    with httpx.Client(base_url=url) as c:
        r = c.get(EDGE)
        assert r.status_code == 204
        header = r.headers["x-edge-snapshot"]
        for kind in KINDS:
            assert f"{kind}={active_version(data, kind)}" in header


def test_sigkill_during_push_leaves_a_complete_version(
    demo_copy: Path, big_profiles: list[Path], tmp_path: Path
) -> None:
    profiles_tars = {read_manifest(p).version: tar_of(p) for p in big_profiles}
    pushed_versions: set[str] = set()
    env = {"EDGESIDE_ADMIN_TOKEN": TOKEN, "EDGESIDE_KEEP_VERSIONS": "2"}
    prev_before: dict[str, str | None] = {}
    killed_in: list[str] = []
    for i, phase in enumerate(PHASES):
        rules_tar = tar_of(rules_snapshot(tmp_path, key=None))
        release = threading.Event()
        with edgeside(demo_copy, workers=2, env=env, log_dir=tmp_path) as node:
            before = {k: active_version(demo_copy, k) for k in KINDS}
            if i:
                check_node(demo_copy, node.url, prev_before, pushed_versions)

            def push_one(kind: str, body: bytes | Iterator[bytes], url: str = node.url) -> None:
                try:
                    with httpx.Client(base_url=url, timeout=PHASE_WAIT_S) as c:
                        c.put(f"{ADMIN}/{kind}", content=body, headers=AUTH)
                except httpx.HTTPError:
                    pass  # killed under us

            # One not active yet, so that this push activates something.
            profiles_tar = next(t for v, t in profiles_tars.items() if v != before["profiles"])
            body = held(profiles_tar, release) if phase == "mid-upload" else profiles_tar
            threads = [
                threading.Thread(target=push_one, args=("profiles", body)),
                # A rules push alongside, left to run free: its own phase is whatever it is.
                threading.Thread(target=push_one, args=("rules", rules_tar)),
            ]
            for t in threads:
                t.start()
            wait_for(phase, demo_copy, before["profiles"])
            # What the store showed at the kill: the symlink had moved or not.
            was_moved = moved(demo_copy, "profiles", before["profiles"])
            killed_in.append("activated" if was_moved else phase)
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait()
            release.set()
            for t in threads:
                t.join()
        for raw_kind in ("profiles", "rules"):
            pushed_versions |= {
                v for v in os.listdir(versions_dir(demo_copy, raw_kind)) if not v.startswith(".")
            }
        after = active_version(demo_copy, "profiles")
        if phase == "mid-upload":  # half an archive can never be activated
            assert after == before["profiles"], (phase, before["profiles"], after)
        if killed_in[-1] == "activated":  # a moved symlink stays moved
            assert after != before["profiles"], (phase, after)
        prev_before = before
    with edgeside(demo_copy, workers=2, env=env, log_dir=tmp_path) as node:
        check_node(demo_copy, node.url, prev_before, pushed_versions)
    print(f"killed in: {killed_in}")
    # Kills fell both before and after an activation, whatever the machine's load.
    assert killed_in.count("mid-upload") == 2 and killed_in.count("activated") >= 2, killed_in
