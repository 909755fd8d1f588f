"""Snapshots published to a real S3-compatible server and announced on a real nats-server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.brokers import S3, Nats
from bench.procs import Edgeside, free_port
from server.offline.demo import ensure_demo
from snapshots import objstore, store
from tests.server.lifecycle.kit import KEY, rules_snapshot

from .fleetkit import ADMIN_TOKEN, HTTP, metric, metric_line, start_all, wait_for

pytestmark = pytest.mark.integration

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def signed_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("signed-demo")
    ensure_demo(data, KEY.encode())
    return data


@pytest.fixture()
def bucket(s3: S3, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    name = "fleet-" + request.node.name.replace("_", "-")[:40].lower()
    objstore.client(s3.url).create_bucket(Bucket=name)
    return f"s3://{name}/snapshots"


def rules_version(node: Edgeside) -> str | None:
    body = HTTP.get(node.url + "/readyz", timeout=5.0).json()
    found: str | None = next(s["version"] for s in body["snapshots"] if s["kind"] == "rules")
    return found


def start_nodes(
    stack: ExitStack, data: Path, tmp: Path, names: list[str], **fleet: object
) -> list[Edgeside]:
    specs = []
    for name in names:
        copy = tmp / "nodes" / name
        shutil.copytree(data, copy, symlinks=True)
        lines = "".join(f"  {k}: {v!r}\n" for k, v in {"node": name, **fleet}.items())
        config = copy / "fleet.yaml"
        config.write_text("fleet:\n" + lines)
        env = {"EDGESIDE_SIGNING_KEY": KEY, "EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN, **AWS}
        specs.append((copy, ["--config", str(config)], env))
    return start_all(stack, specs)


def publish(snapshot: Path, to: str, s3: S3, broker: str = "") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "server.cli", "snapshot", "publish", str(snapshot)]
    argv += ["--to", to, "--endpoint", s3.url, "--broker", broker]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_published_snapshot_reaches_every_node_and_a_forged_one_none(
    broker: Nats, s3: S3, bucket: str, signed_demo: Path, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        # Announcements only: the pointer poll is too slow to explain what the test sees.
        nodes = start_nodes(
            stack,
            signed_demo,
            tmp_path,
            ["a", "b"],
            broker=broker.url,
            snapshots_from=bucket,
            s3_endpoint=s3.url,
            poll_interval_s=600.0,
        )
        before = {rules_version(n) for n in nodes}
        new = rules_snapshot(tmp_path, key=KEY)
        wait_for(lambda: _subscribed(nodes), timeout=10.0)
        done = publish(new, bucket, s3, broker.url)
        assert done.returncode == 0, done.stderr
        assert "announced" in done.stdout
        version = objstore.decode_pointer(_pointer_bytes(s3, bucket, "rules")).version
        took = wait_for(lambda: all(rules_version(n) == version for n in nodes), timeout=10.0)
        assert took < 5.0, took  # the goal (2 s) is bench.fleet's to measure
        assert version not in before

        # Signed with another key: every node fetches it, and refuses it as a push is refused.
        forged = rules_snapshot(tmp_path, key="not-the-fleet-key")
        pointer = objstore.publish(forged, bucket, objstore.client(s3.url))
        asyncio.run(objstore.announce(broker.url, "edgeside", pointer))
        for n in nodes:
            wait_for(
                lambda n=n: (
                    metric_line(n.url, "edgeside_fleet_snapshots_total", 'result="refused"') >= 1
                ),
                timeout=10.0,
            )
            assert rules_version(n) == version
            warnings = HTTP.get(n.url + "/readyz", timeout=5.0).json()["warnings"]
            assert any("refused" in w and "signed with key" in w for w in warnings), warnings

        # A node that heard no announcement finds the pointer by polling; the forged archive
        # is what the pointer names now, so it is refused there too.
        (late,) = start_nodes(
            stack,
            signed_demo,
            tmp_path,
            ["late"],
            snapshots_from=bucket,
            s3_endpoint=s3.url,
            poll_interval_s=0.5,
        )
        wait_for(
            lambda: (
                metric_line(late.url, "edgeside_fleet_snapshots_total", 'result="refused"') >= 1
            ),
            timeout=10.0,
        )
        assert rules_version(late) in before
        good = rules_snapshot(tmp_path, key=KEY)
        # No announcement: the poll finds it.
        good_version = objstore.publish(good, bucket, objstore.client(s3.url)).version
        wait_for(lambda: rules_version(late) == good_version, timeout=10.0)


def test_object_storage_down_keeps_the_last_good_snapshot(
    signed_demo: Path, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        (node,) = start_nodes(
            stack,
            signed_demo,
            tmp_path,
            ["alone"],
            snapshots_from="s3://gone/x",
            s3_endpoint=dead,
            poll_interval_s=0.3,
        )
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


def _pointer_bytes(s3: S3, bucket: str, kind: str) -> bytes:
    name, prefix = objstore.parse_url(bucket)
    raw, _ = objstore.read_pointer(objstore.client(s3.url), name, prefix, kind, None)
    assert raw is not None
    return raw


def _subscribed(nodes: list[Edgeside]) -> bool:
    """Connected (the announcement subscription follows the connection within milliseconds)."""
    return all(metric(n.url, "edgeside_fleet_broker_up") == 1.0 for n in nodes)


def test_a_node_killed_mid_activation_restarts_whole_and_catches_up(
    s3: S3, bucket: str, signed_demo: Path, tmp_path: Path
) -> None:
    """SIGKILL while the announced archive is being fetched or activated: the node restarts on a
    complete version (the old or the new, never a mix or nothing) and then takes the pointer."""
    copy = tmp_path / "nodes" / "victim"
    shutil.copytree(signed_demo, copy, symlinks=True)
    config = copy / "fleet.yaml"
    config.write_text(
        f"fleet:\n  node: victim\n  snapshots_from: {bucket!r}\n  s3_endpoint: {s3.url!r}\n"
        "  poll_interval_s: 0.2\n"
    )
    env = {"EDGESIDE_SIGNING_KEY": KEY, **AWS}
    spec = [(copy, ["--config", str(config)], env)]
    staging = store.versions_dir(copy, "rules") / store.STAGING
    with ExitStack() as stack:
        (node,) = start_all(stack, spec)
        before = rules_version(node)
        new = objstore.publish(rules_snapshot(tmp_path, key=KEY), bucket, objstore.client(s3.url))
        # Kill as soon as the node has begun to take it (its staging directory appears).
        wait_for(lambda: staging.is_dir() and any(staging.iterdir()), timeout=10.0, step=0.005)
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
    assert store.active_version(copy, "rules") in (before, new.version)
    with ExitStack() as stack:
        (node,) = start_all(stack, spec)
        assert rules_version(node) in (before, new.version)
        wait_for(lambda: rules_version(node) == new.version, timeout=10.0)
        assert not any(p.name.startswith("fleet-") for p in staging.iterdir())
