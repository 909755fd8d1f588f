"""The lifecycle tests' kit: snapshot variants, hand-made bad archives, worker probes."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec

from server.offline.demo import DEMO_DIR
from server.offline.rules_snapshot import build_rules_snapshot
from snapshots import archive
from snapshots.config import ContentConfig, ProfilesConfig, load_config
from snapshots.content_build import build_content
from snapshots.manifest import Manifest, encode_manifest, read_manifest
from snapshots.profiles_build import build_profiles
from snapshots.signing import sign_manifest

TOKEN = "lifecycle-admin-token-42"
KEY = "lifecycle-signing-key"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = "/v1/admin/snapshots"
EDGE = "/v1/edge?p=home_hero,home_recs&site=shop-fr"

_counter = iter(range(1_000_000))


def rules_snapshot(tmp: Path, key: str | None = KEY, extra: str = "") -> Path:
    """The demo rules with a unique comment: a new version every call."""
    n = next(_counter)
    src = tmp / f"rules-{n}.yaml"
    src.write_text(
        (DEMO_DIR / "rules.yaml").read_text() + f"\n# variant {n} {time.time()}\n{extra}"
    )
    out = tmp / f"rules-snap-{n}"
    code = build_rules_snapshot(src, out, key.encode() if key else None)
    if code != 0:
        raise RuntimeError("rules did not build")
    return out


def profiles_snapshot(tmp: Path, key: str | None = KEY, extra: list[bytes] | None = None) -> Path:
    n = next(_counter)
    inputs = sorted((DEMO_DIR / "profiles").glob("*.ndjson"))
    if extra:
        more = tmp / f"extra-{n}.ndjson"
        more.write_bytes(b"\n".join(extra) + b"\n")
        inputs.append(more)
    out = tmp / f"profiles-snap-{n}"
    cfg = load_config(DEMO_DIR / "profiles.yaml", ProfilesConfig)
    build_profiles(inputs, cfg, out, signing_key=key.encode() if key else None)
    return out


def content_snapshot(tmp: Path, key: str | None = KEY) -> Path:
    n = next(_counter)
    out = tmp / f"content-snap-{n}"
    cfg = load_config(DEMO_DIR / "content.yaml", ContentConfig)
    inputs = sorted((DEMO_DIR / "content").glob("*.ndjson"))
    build_content(inputs, cfg, out, signing_key=key.encode() if key else None)
    return out


def tar_of(snapshot: Path) -> bytes:
    out = snapshot.with_name(snapshot.name + ".tar")
    archive.pack(snapshot, out)
    return out.read_bytes()


def tar_members(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def resigned(snapshot: Path, key: str, **changes: object) -> bytes:
    """A tar of `snapshot` whose manifest is changed and signed again with `key`."""
    m = msgspec.structs.replace(read_manifest(snapshot), signature=None, **changes)
    m = sign_manifest(m, key.encode())
    return manifest_tar(snapshot, m)


def manifest_tar(snapshot: Path, m: Manifest) -> bytes:
    files = [member("manifest.json", encode_manifest(m))]
    files += [member(name, (snapshot / name).read_bytes()) for name in sorted(m.files)]
    return tar_members(files)


def push(client: httpx.Client, kind: str, body: bytes) -> httpx.Response:
    return client.put(f"{ADMIN}/{kind}", content=body, headers=AUTH, timeout=60)


def status(client: httpx.Client) -> dict[str, object]:
    r = client.get(ADMIN, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def active(client: httpx.Client, kind: str) -> str | None:
    kinds = status(client)["kinds"]
    assert isinstance(kinds, list)
    return next(k["active"] for k in kinds if k["kind"] == kind)


def worker_pids(server_pid: int) -> list[int]:
    """uvicorn's worker processes: the children of the supervisor (the `edgeside` process)."""
    pids: list[int] = []
    for task in os.listdir(f"/proc/{server_pid}/task"):
        raw = Path(f"/proc/{server_pid}/task/{task}/children").read_text().split()
        pids.extend(int(p) for p in raw)
    workers = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in cmd:
            workers.append(pid)
    return sorted(workers)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class WorkerReport(msgspec.Struct):
    """What one worker process says of itself in `GET /v1/admin/snapshots`: the versions of the
    world it serves and how many times it has switched worlds."""

    pid: int
    versions: dict[str, str]
    swaps: int


# How long to wait for the workers before calling it a hang. A bound on a broken server, not a
# measure of speed: how fast workers switch is measured by `python -m bench.swap` (staleness_s).
HANG_S = 60.0


def worker_reports(
    url: str, pids: list[int], done: Callable[[WorkerReport], bool], timeout: float = HANG_S
) -> dict[int, WorkerReport]:
    """Each worker's own report, the first one for which `done` holds, probed over fresh
    connections (several at once, so the kernel spreads them over the workers)."""
    t0 = time.monotonic()
    found: dict[int, WorkerReport] = {}
    # One client, no keep-alive: each probe is still a fresh connection, without building a
    # client (and its TLS context, ~15 ms of CPU) per probe, 8 per round, in a tight loop that
    # took CPU from the workers being waited for.
    fresh = httpx.Limits(max_keepalive_connections=0)

    with (
        httpx.Client(base_url=url, timeout=timeout, limits=fresh) as client,
        ThreadPoolExecutor(8) as pool,
    ):

        def probe(_: int) -> WorkerReport:
            return msgspec.convert(client.get(ADMIN, headers=AUTH).json()["worker"], WorkerReport)

        while time.monotonic() - t0 < timeout:
            for report in pool.map(probe, range(8)):
                if report.pid not in found and done(report):
                    found[report.pid] = report
            if set(pids) <= set(found):
                return found
    missing = sorted(set(pids) - set(found))
    raise TimeoutError(f"workers {missing} never answered as asked within {timeout:.0f}s")


def wait_all_workers(
    url: str, pids: list[int], kind: str, version: str, timeout: float = HANG_S
) -> dict[int, WorkerReport]:
    """Every worker's own report once it serves `version` of `kind`."""
    return worker_reports(url, pids, lambda r: r.versions.get(kind) == version, timeout)
