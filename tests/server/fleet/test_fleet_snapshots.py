"""Snapshots published to a real S3-compatible server and announced on a real nats-server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import pytest

from bench.brokers import S3, Nats
from bench.procs import Edgeside, free_port
from snapshots import objstore, store
from snapshots.archive import pack
from snapshots.manifest import read_manifest
from tests.server.lifecycle.kit import KEY, rules_snapshot

from .fleetkit import ADMIN_TOKEN, HTTP, metric, metric_line, start_all, wait_for

pytestmark = pytest.mark.integration

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def bucket(s3: S3) -> Iterator[str]:
    """One bucket for the module; each test publishes under its own prefix."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS.items():
            mp.setenv(k, v)
        objstore.client(s3.url).create_bucket(Bucket="fleet-snapshots")
        yield "s3://fleet-snapshots"


def rules_version(node: Edgeside) -> str | None:
    body = HTTP.get(node.url + "/readyz", timeout=5.0).json()
    found: str | None = next(s["version"] for s in body["snapshots"] if s["kind"] == "rules")
    return found


class Node(NamedTuple):
    edgeside: Edgeside
    spec: tuple[Path, list[str], dict[str, str]]  # to start it again

    @property
    def url(self) -> str:
        return self.edgeside.url


@pytest.fixture(scope="module")
def nodes(
    module_broker: Nats,
    s3: S3,
    bucket: str,
    fleet_demo: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Node]]:
    """Every node of the module, started side by side once (each test uses its own)."""
    tmp = tmp_path_factory.mktemp("snapshot-nodes")
    fleet = {"snapshots_from": f"{bucket}/fleet", "s3_endpoint": s3.url}
    plan: dict[str, dict[str, object]] = {
        # Announcements only: the pointer poll is too slow to explain what the test sees.
        "a": {"broker": module_broker.url, **fleet, "poll_interval_s": 600.0},
        "b": {"broker": module_broker.url, **fleet, "poll_interval_s": 600.0},
        # Without a signing key (it serves the signed demo all the same): only the bucket vouches
        # for what it takes, so it ignores archives that come inline.
        "nokey": {"broker": module_broker.url, **fleet, "poll_interval_s": 600.0},
        # No broker: it hears no announcement and finds what is published by polling.
        "late": {"snapshots_from": f"{bucket}/late", "s3_endpoint": s3.url, "poll_interval_s": 0.5},
        "alone": {
            "snapshots_from": "s3://gone/x",
            "s3_endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens
            "poll_interval_s": 0.3,
        },
        "victim": {
            "snapshots_from": f"{bucket}/victim",
            "s3_endpoint": s3.url,
            "poll_interval_s": 0.2,
        },
    }
    specs = []
    for name, settings in plan.items():
        copy = tmp / name
        shutil.copytree(fleet_demo, copy, symlinks=True)
        lines = "".join(f"  {k}: {v!r}\n" for k, v in {"node": name, **settings}.items())
        config = copy / "fleet.yaml"
        config.write_text("fleet:\n" + lines)
        env = {"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN, **AWS}
        if name != "nokey":
            env["EDGESIDE_SIGNING_KEY"] = KEY
        specs.append((copy, ["--config", str(config)], env))
    with ExitStack() as stack:
        started = start_all(stack, specs)
        yield {name: Node(e, spec) for name, e, spec in zip(plan, started, specs, strict=True)}


def publish(snapshot: Path, to: str, s3: S3, broker: str = "") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "server.cli", "snapshot", "publish", str(snapshot)]
    argv += ["--to", to, "--endpoint", s3.url, "--broker", broker]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_published_snapshot_reaches_every_node_and_a_forged_one_none(
    module_broker: Nats, s3: S3, bucket: str, nodes: dict[str, Node], tmp_path: Path
) -> None:
    a, b, late = nodes["a"], nodes["b"], nodes["late"]
    fleet = [a.edgeside, b.edgeside]
    to = f"{bucket}/fleet"
    before = {rules_version(n) for n in fleet}
    new = rules_snapshot(tmp_path, key=KEY)
    wait_for(lambda: _subscribed(fleet), timeout=10.0)
    gets = {n.url: _archive_gets(n.url) for n in fleet}
    done = publish(new, to, s3, module_broker.url)
    assert done.returncode == 0, done.stderr
    assert "announced" in done.stdout
    version = objstore.decode_pointer(_pointer_bytes(s3, to, "rules")).version
    took = wait_for(lambda: all(rules_version(n) == version for n in fleet), timeout=10.0)
    assert took < 5.0, took  # the goal (2 s) is bench.fleet's to measure
    assert version not in before
    # A rules snapshot rides in the announcement: no node downloaded it.
    assert {n.url: _archive_gets(n.url) for n in fleet} == gets

    # Signed with another key, announced without the archive: every node fetches it, once, and
    # refuses it as a push is refused.
    forged = rules_snapshot(tmp_path, key="not-the-fleet-key")
    pointer = objstore.publish(forged, to, objstore.client(s3.url))
    asyncio.run(objstore.announce(module_broker.url, "edgeside", pointer))
    for n in fleet:
        wait_for(lambda n=n: _refused(n.url) >= 1, timeout=10.0)  # type: ignore[misc]
        assert rules_version(n) == version
        assert _archive_gets(n.url) == gets[n.url] + 1
        warnings = HTTP.get(n.url + "/readyz", timeout=5.0).json()["warnings"]
        assert any("refused" in w and "signed with key" in w for w in warnings), warnings

    # A node that hears no announcement finds the pointer by polling; a forged archive is refused
    # there too, and the next good one taken.
    late_before = rules_version(late.edgeside)
    objstore.publish(forged, f"{bucket}/late", objstore.client(s3.url))
    wait_for(lambda: _refused(late.url) >= 1, timeout=10.0)
    assert rules_version(late.edgeside) == late_before
    good = rules_snapshot(tmp_path, key=KEY)
    good_version = objstore.publish(good, f"{bucket}/late", objstore.client(s3.url)).version
    wait_for(lambda: rules_version(late.edgeside) == good_version, timeout=10.0)


def _refused(url: str) -> float:
    return metric_line(url, "edgeside_fleet_snapshots_total", 'result="refused"')


def _failed(url: str) -> float:
    return metric_line(url, "edgeside_fleet_snapshots_total", 'result="failed"')


def _archive_gets(url: str) -> float:
    return metric_line(url, "edgeside_fleet_s3_requests_total", 'request="archive"')


def _inline(snapshot: Path, prefix: str, tmp_path: Path) -> tuple[objstore.Pointer, bytes]:
    """A pointer and archive as `publish_inline` makes them, without uploading anything."""
    tar = pack(snapshot, tmp_path / f"{snapshot.name}.tar")
    data = tar.read_bytes()
    version = read_manifest(snapshot).version
    pointer = objstore.Pointer(
        kind="rules",
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        key=f"{prefix}/rules/{version}.tar",
        size=len(data),
        published_at=time.time(),
    )
    return pointer, data


def test_an_inline_archive_is_taken_without_a_download_and_verified_as_a_push(
    module_broker: Nats, s3: S3, bucket: str, nodes: dict[str, Node], tmp_path: Path
) -> None:
    keyed, nokey = nodes["a"], nodes["nokey"]
    both = [keyed, nokey]
    wait_for(lambda: _subscribed([n.edgeside for n in both]), timeout=10.0)
    gets = {n.url: _archive_gets(n.url) for n in both}
    failed = _failed(nokey.url)
    unsigned_before = rules_version(nokey.edgeside)

    # Signed with the fleet's key and never uploaded: the node with the key takes it from the
    # announcement alone. The node without a key does not (unsigned, only the bucket vouches for
    # an archive): it follows the plain announcement to the bucket, finds nothing, keeps its own.
    good = rules_snapshot(tmp_path, key=KEY)
    pointer, data = _inline(good, "fleet", tmp_path)
    asyncio.run(objstore.announce(module_broker.url, "edgeside", pointer, archive=data))
    wait_for(lambda: rules_version(keyed.edgeside) == pointer.version, timeout=10.0)
    wait_for(lambda: _failed(nokey.url) >= failed + 1, timeout=10.0)
    assert _archive_gets(keyed.url) == gets[keyed.url]
    assert _archive_gets(nokey.url) == gets[nokey.url] + 1
    assert rules_version(nokey.edgeside) == unsigned_before

    # Forged (signed with another key), inline: refused as a push is refused, and not fetched
    # from the bucket either.
    refused = _refused(keyed.url)
    forged, forged_data = _inline(rules_snapshot(tmp_path, key="other-key"), "fleet", tmp_path)
    asyncio.run(objstore.announce(module_broker.url, "edgeside", forged, archive=forged_data))
    wait_for(lambda: _refused(keyed.url) >= refused + 1, timeout=10.0)
    assert rules_version(keyed.edgeside) == pointer.version
    assert _archive_gets(keyed.url) == gets[keyed.url]

    # Inline bytes that are not what the pointer says (one bit flipped in transit): not taken;
    # the archive the pointer names is fetched from the bucket, verified and activated.
    published, archive = objstore.publish_inline(
        rules_snapshot(tmp_path, key=KEY), f"{bucket}/fleet", objstore.client(s3.url)
    )
    assert archive is not None
    flipped = archive[:-1] + bytes([archive[-1] ^ 1])
    asyncio.run(objstore.announce(module_broker.url, "edgeside", published, archive=flipped))
    wait_for(lambda: rules_version(keyed.edgeside) == published.version, timeout=10.0)
    assert _archive_gets(keyed.url) == gets[keyed.url] + 1


def test_object_storage_down_keeps_the_last_good_snapshot(nodes: dict[str, Node]) -> None:
    node = nodes["alone"].edgeside
    before = rules_version(node)
    wait_for(
        lambda: metric_line(node.url, "edgeside_fleet_snapshots_total", 'result="failed"') >= 1,
        timeout=20.0,
    )
    ready = HTTP.get(node.url + "/readyz", timeout=5.0)
    assert ready.status_code == 200
    assert any("snapshots from s3://gone/x" in w for w in ready.json()["warnings"])
    assert rules_version(node) == before
    edge = HTTP.get(node.url + "/v1/edge?p=home_hero&site=shop-fr", timeout=5.0)
    assert edge.status_code == 204 and "x-edge-fallback" not in edge.headers


def _pointer_bytes(s3: S3, to: str, kind: str) -> bytes:
    name, prefix = objstore.parse_url(to)
    raw, _ = objstore.read_pointer(objstore.client(s3.url), name, prefix, kind, None)
    assert raw is not None
    return raw


def _subscribed(nodes: list[Edgeside]) -> bool:
    """Connected (the announcement subscription follows the connection within milliseconds)."""
    return all(metric(n.url, "edgeside_fleet_broker_up") == 1.0 for n in nodes)


def test_a_node_killed_mid_activation_restarts_whole_and_catches_up(
    s3: S3, bucket: str, nodes: dict[str, Node], tmp_path: Path
) -> None:
    """SIGKILL while the announced archive is being fetched or activated: the node restarts on a
    complete version (the old or the new, never a mix or nothing) and then takes the pointer."""
    victim = nodes["victim"]
    copy = victim.spec[0]
    staging = store.versions_dir(copy, "rules") / store.STAGING
    before = rules_version(victim.edgeside)
    to = f"{bucket}/victim"
    new = objstore.publish(rules_snapshot(tmp_path, key=KEY), to, objstore.client(s3.url))
    # Kill as soon as the node has begun to take it (its staging directory appears).
    wait_for(lambda: staging.is_dir() and any(staging.iterdir()), timeout=10.0, step=0.005)
    os.killpg(victim.edgeside.proc.pid, signal.SIGKILL)
    victim.edgeside.proc.wait()
    assert store.active_version(copy, "rules") in (before, new.version)
    with ExitStack() as stack:
        (node,) = start_all(stack, [victim.spec])
        assert rules_version(node) in (before, new.version)
        wait_for(lambda: rules_version(node) == new.version, timeout=10.0)
        assert not any(p.name.startswith("fleet-") for p in staging.iterdir())
