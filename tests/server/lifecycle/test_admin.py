"""The admin API of the snapshot lifecycle against a real server with 2 workers and a signing key:
push -> verify -> validate -> activate -> every worker switches; every bad upload refused with a
reason, the active version untouched and staging cleaned; rollback, activate, status, auth."""

from __future__ import annotations

import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bench.procs import Edgeside, edgeside
from server.offline.demo import ensure_demo
from snapshots import write_blob_snapshot
from snapshots.delta import diff_profiles
from snapshots.ndjson import file_sha256
from snapshots.store import active_path, active_version, list_staging
from snapshots.store import locked as store_locked
from snapshots.verify import verify_snapshot
from tests.server.lifecycle.kit import (
    ADMIN,
    AUTH,
    EDGE,
    KEY,
    TOKEN,
    active,
    content_snapshot,
    member,
    profiles_snapshot,
    push,
    resigned,
    rss_kib,
    rules_snapshot,
    status,
    tar_members,
    tar_of,
    wait_all_workers,
    worker_pids,
    worker_reports,
)
from tests.snapshots.kit import damage_until_a_reader_crashes

MAX_UPLOAD = 3_000_000


@pytest.fixture(scope="module")
def signed_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("signed-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESIDE_SIGNING_KEY", KEY)
        ensure_demo(data, KEY.encode())
    return data


@pytest.fixture(scope="module")
def node(signed_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edgeside]:
    env = {
        "EDGESIDE_ADMIN_TOKEN": TOKEN,
        "EDGESIDE_SIGNING_KEY": KEY,
        "EDGESIDE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "EDGESIDE_KEEP_VERSIONS": "2",
        "EDGESIDE_UPLOAD_TIMEOUT_S": "4",
    }
    logs = tmp_path_factory.mktemp("admin-logs")
    with edgeside(signed_data, workers=2, env=env, log_dir=logs) as proc:
        yield proc


@pytest.fixture()
def client(node: Edgeside) -> Iterator[httpx.Client]:
    with node.client() as c:
        yield c


def assert_untouched(client: httpx.Client, data: Path, before: dict[str, str | None]) -> None:
    for kind, version in before.items():
        assert active(client, kind) == version
        path = active_path(data, kind)
        assert path is not None and verify_snapshot(path, signing_key=KEY.encode()) == []
        assert list_staging(data, kind) == [], f"staging of {kind} not cleaned"


def actives(client: httpx.Client) -> dict[str, str | None]:
    return {k: active(client, k) for k in ("profiles", "content", "rules")}


def test_push_activates_and_every_worker_switches(
    node: Edgeside, client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    """What a push's 200 promises (SPEC §7, server/lifecycle/pipeline.py): the version is
    installed and the kind's active pointer names it. Every worker then switches on its own next
    look (the pushing one at once, the others within `reload_interval_s`), each seen here in its
    own report: the new version and one more switch. How fast is a benchmark's question
    (`python -m bench.swap`, staleness_s), not a test's: under load a timed bound here failed at
    1.37 s against 1.0 s with nothing broken."""
    pids = worker_pids(node.proc.pid)
    assert len(pids) == 2
    snap = rules_snapshot(tmp_path)
    before = active(client, "rules")
    was = worker_reports(node.url, pids, lambda r: r.versions.get("rules") == before)
    r = push(client, "rules", tar_of(snap))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["activated"] and body["previous"] == before and body["signature"] == "verified"
    assert body["decisions_checked"] > 0
    assert set(body["timings_ms"]) >= {"receive_ms", "unpack_ms", "verify_ms", "validate_ms"}
    # The 200 comes after the activation, not before: the store already names the version.
    assert active_version(signed_data, "rules") == body["version"]
    now = wait_all_workers(node.url, pids, "rules", body["version"])
    for pid in pids:
        # Each worker switched its own world; the other kinds it serves did not move.
        assert now[pid].swaps > was[pid].swaps, (pid, was[pid], now[pid])
        assert {k: v for k, v in now[pid].versions.items() if k != "rules"} == {
            k: v for k, v in was[pid].versions.items() if k != "rules"
        }
    # Pages now name the new version, on fresh connections whichever worker answers.
    for _ in range(10):
        with httpx.Client(base_url=node.url) as c:
            assert f"rules={body['version']}" in c.get(EDGE).headers["x-edge-snapshot"]


def test_pushing_the_active_version_again_changes_nothing(
    client: httpx.Client, tmp_path: Path
) -> None:
    snap = rules_snapshot(tmp_path)
    first = push(client, "rules", tar_of(snap)).json()
    again = push(client, "rules", tar_of(snap))
    assert again.status_code == 200
    assert again.json()["activated"] is False and again.json()["version"] == first["version"]


BAD: list[tuple[str, str, int, str]] = [
    # (case, kind pushed, status, error code)
    ("truncated", "rules", 400, "unsafe_archive"),
    ("corrupt_data", "rules", 422, "checksum_mismatch"),
    ("unsigned", "rules", 422, "signature_missing"),
    ("other_key", "rules", 422, "signature_invalid"),
    ("tampered_manifest", "rules", 422, "signature_invalid"),
    ("wrong_kind", "content", 422, "kind_mismatch"),
    ("schema", "rules", 422, "schema_mismatch"),
    ("traversal", "rules", 400, "unsafe_archive"),
    ("symlink", "rules", 400, "unsafe_archive"),
    ("absolute", "rules", 400, "unsafe_archive"),
    ("no_manifest", "rules", 400, "unsafe_archive"),
    ("not_a_tar", "rules", 400, "unsafe_archive"),
    ("empty", "rules", 400, "empty_upload"),
    ("bad_rules", "rules", 422, "validation_failed"),
    ("empty_profiles", "profiles", 422, "validation_failed"),
]


def bad_body(case: str, tmp: Path) -> bytes:
    good = rules_snapshot(tmp)
    raw = tar_of(good)
    if case == "truncated":
        return raw[: len(raw) // 2]
    if case == "corrupt_data":
        data = bytearray((good / "data.mdb").read_bytes())
        data[len(data) // 2] ^= 0xFF
        return tar_members(
            [
                member("manifest.json", (good / "manifest.json").read_bytes()),
                member("data.mdb", bytes(data)),
            ]
        )
    if case == "unsigned":
        return tar_of(rules_snapshot(tmp, key=None))
    if case == "other_key":
        return tar_of(rules_snapshot(tmp, key="another-key"))
    if case == "tampered_manifest":
        m = orjson.loads((good / "manifest.json").read_bytes())
        m["counts"]["files"] = 7
        files = [
            member("manifest.json", orjson.dumps(m)),
            member("data.mdb", (good / "data.mdb").read_bytes()),
        ]
        return tar_members(files)
    if case == "wrong_kind":
        return raw
    if case == "schema":
        return resigned(good, KEY, schema_version=99)
    if case == "traversal":
        return tar_members([member("../../evil", b"x"), member("manifest.json", b"{}")])
    if case == "symlink":
        link = tarfile.TarInfo("data.mdb")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        return tar_members(
            [member("manifest.json", (good / "manifest.json").read_bytes()), (link, None)]
        )
    if case == "absolute":
        return tar_members([member("/tmp/evil-edgeside", b"x")])
    if case == "no_manifest":
        return tar_members([member("data.mdb", b"x")])
    if case == "not_a_tar":
        return b"this is not a tar archive at all" * 100
    if case == "empty":
        return b""
    if case == "bad_rules":
        out = tmp / "bad-rules"
        write_blob_snapshot(
            out, kind="rules", files={"rules.yaml": b"sites: 12\n"}, signing_key=KEY.encode()
        )
        return tar_of(out)
    if case == "empty_profiles":
        snap = profiles_snapshot(tmp)
        m = read_manifest_of(snap)
        return resigned(snap, KEY, counts={**m["counts"], "profiles": 0})
    raise AssertionError(case)


def crashing_content(tmp: Path) -> bytes:
    """A content snapshot with damaged pages that make LMDB crash a reader, hashed and signed
    after the damage (a broken builder): only reading every page finds it."""
    snap = content_snapshot(tmp)
    damage_until_a_reader_crashes(snap, seed=7)
    files = {"data.mdb": file_sha256(snap / "data.mdb")}
    sizes = {"data.mdb": (snap / "data.mdb").stat().st_size}
    return resigned(snap, KEY, files=files, sizes=sizes)


def test_pages_that_crash_a_reader_are_refused_before_any_worker_reads_them(
    client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    before = actives(client)
    r = push(client, "content", crashing_content(tmp_path))
    assert r.status_code == 422, r.text
    assert "crashed the reading process" in r.json()["error"]["message"]
    assert_untouched(client, signed_data, before)


def read_manifest_of(snap: Path) -> dict[str, dict[str, int]]:
    value: dict[str, dict[str, int]] = orjson.loads((snap / "manifest.json").read_bytes())
    return value


@pytest.mark.parametrize(("case", "kind", "code", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_are_refused_and_change_nothing(
    case: str,
    kind: str,
    code: int,
    error: str,
    client: httpx.Client,
    signed_data: Path,
    tmp_path: Path,
) -> None:
    before = actives(client)
    r = push(client, kind, bad_body(case, tmp_path))
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert err["code"] == error, err
    assert len(err["message"]) > 20
    assert_untouched(client, signed_data, before)


def test_messages_say_why(client: httpx.Client, tmp_path: Path) -> None:
    r = push(client, "content", tar_of(rules_snapshot(tmp_path)))
    assert "is a rules snapshot" in r.json()["error"]["message"]
    r = push(client, "rules", tar_of(rules_snapshot(tmp_path, key=None)))
    assert "unsigned" in r.json()["error"]["message"]
    r = push(client, "rules", bad_body("traversal", tmp_path))
    assert "escapes" in r.json()["error"]["message"]


def test_oversized_uploads_are_refused(
    client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    before = actives(client)
    big = b"\0" * (MAX_UPLOAD + 1)
    r = push(client, "rules", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_UPLOAD // 65536 + 2):
            yield b"\0" * 65536

    # No Content-Length (chunked): the limit is enforced while streaming.
    try:
        r = client.put(f"{ADMIN}/rules", content=chunks(), headers=AUTH)
        assert r.status_code == 413
    except httpx.HTTPError:
        pass  # the server may close before the client finished sending: refused either way
    assert_untouched(client, signed_data, before)


def test_concurrent_pushes_of_one_kind_are_refused_other_kinds_proceed(
    node: Edgeside, client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    raw = tar_of(rules_snapshot(tmp_path))
    started = threading.Event()
    results: list[httpx.Response] = []

    def slow() -> Iterator[bytes]:
        started.set()
        step = len(raw) // 30 + 1  # about 1.5 s in all
        for i in range(0, len(raw), step):
            time.sleep(0.05)
            yield raw[i : i + step]

    def slow_push() -> None:
        with httpx.Client(base_url=node.url, timeout=60) as c:
            results.append(c.put(f"{ADMIN}/rules", content=slow(), headers=AUTH))

    t = threading.Thread(target=slow_push)
    t.start()
    started.wait()
    time.sleep(0.2)
    listing = status(client)["kinds"]
    assert isinstance(listing, list)
    rules_versions = next(k for k in listing if k["kind"] == "rules")["versions"]
    assert any(v["state"] == "staging" for v in rules_versions), rules_versions
    second = push(client, "rules", tar_of(rules_snapshot(tmp_path)))
    other = push(client, "content", tar_of(content_snapshot(tmp_path)))
    t.join()
    assert second.status_code == 409 and second.json()["error"]["code"] == "store_busy"
    assert "in progress" in second.json()["error"]["message"]
    assert other.status_code == 200, other.text
    assert results[0].status_code == 200, results[0].text
    assert active(client, "rules") == results[0].json()["version"]


def test_a_push_waits_out_a_lock_held_for_a_moment(
    client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    """What a worker's start-up sweep did while the other worker served (the flaky disk-full
    fault test): it held the kind's lock for an instant, and a push arriving then got 409."""
    raw = tar_of(rules_snapshot(tmp_path))
    held = threading.Event()

    def briefly() -> None:
        with store_locked(signed_data, "rules"):
            held.set()
            time.sleep(0.1)  # well under the server's wait (LOCK_WAIT_S)

    t = threading.Thread(target=briefly)
    t.start()
    held.wait()
    answer = push(client, "rules", raw)
    t.join()
    assert answer.status_code == 200, answer.text
    assert active(client, "rules") == answer.json()["version"]


def test_rollback_activate_and_status(
    client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    v1 = push(client, "rules", tar_of(rules_snapshot(tmp_path))).json()["version"]
    v2 = push(client, "rules", tar_of(rules_snapshot(tmp_path))).json()["version"]
    listing = status(client)
    rules_status = next(k for k in listing["kinds"] if k["kind"] == "rules")  # type: ignore[union-attr]
    states = {v["version"]: v["state"] for v in rules_status["versions"]}
    assert states[v2] == "active" and states[v1] == "kept"
    assert all(v["age_s"] >= 0 and v["size_bytes"] > 0 for v in rules_status["versions"])
    # keep_versions=2: the active plus two before it, no more.
    assert len(rules_status["versions"]) <= 3

    r = client.post(f"{ADMIN}/rules/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == v1 and r.json()["previous"] == v2
    assert active(client, "rules") == v1
    r = client.post(f"{ADMIN}/rules/activate/{v2}", headers=AUTH)
    assert r.status_code == 200 and active(client, "rules") == v2
    r = client.post(f"{ADMIN}/rules/activate/20200101T000000Z-deadbeef", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_version"
    r = client.post(f"{ADMIN}/rules/activate/.staging", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_version"
    r = client.post(f"{ADMIN}/nope/rollback", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_kind"


def test_profile_delta_applies_and_a_wrong_base_is_refused(
    node: Edgeside, client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    base = active_path(signed_data, "profiles")
    assert base is not None
    newcomer = orjson.dumps(
        {
            "source": "crm",
            "ids": {"customer_id": "DELTA-1", "cookie": "c-delta"},
            "updated_at": "2026-11-21T10:00:00Z",
            "attributes": {"tier": "gold", "country": "FR"},
        }
    )
    target = profiles_snapshot(tmp_path, extra=[newcomer])
    delta = tmp_path / "delta"
    m = diff_profiles(base, target, delta, signing_key=KEY.encode())
    assert m.counts["upserts"] >= 1 and m.counts["alias_upserts"] >= 2
    r = push(client, "profiles-delta", tar_of(delta))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["base"] == base.name and body["kind"] == "profiles"
    assert body["counts"]["profiles"] == read_manifest_of(base)["counts"]["profiles"] + 1
    wait_all_workers(node.url, worker_pids(node.proc.pid), "profiles", body["version"])
    found = client.get("/v1/profiles/cookie:c-delta", headers=AUTH)
    assert found.status_code == 200 and found.json()["attributes"]["tier"] == "gold"
    # The same delta again: its base is no longer active.
    again = push(client, "profiles-delta", tar_of(delta))
    assert again.status_code == 409 and again.json()["error"]["code"] == "wrong_base"
    assert base.name in again.json()["error"]["message"]
    assert active(client, "profiles") == body["version"]
    assert list_staging(signed_data, "profiles") == []


def test_every_admin_route_needs_the_token(client: httpx.Client) -> None:
    routes = [
        ("GET", ADMIN),
        ("PUT", f"{ADMIN}/rules"),
        ("POST", f"{ADMIN}/rules/rollback"),
        ("POST", f"{ADMIN}/rules/activate/x"),
    ]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = client.request(method, path, headers=headers, content=b"x" * 10)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["code"] == "unauthorized"


def test_memory_does_not_grow_across_swaps(
    node: Edgeside, client: httpx.Client, tmp_path: Path
) -> None:
    """30 swaps between two profiles versions (LMDB environments opened and closed) and two
    rules versions (engines compiled and dropped); worker RSS stays bounded."""
    a = push(client, "profiles", tar_of(profiles_snapshot(tmp_path))).json()["version"]
    b = push(
        client,
        "profiles",
        tar_of(
            profiles_snapshot(
                tmp_path,
                extra=[
                    b'{"source":"crm","ids":{"cookie":"c-mem"},"updated_at":"2026-11-21T10:00:00Z"}'
                ],
            )
        ),
    ).json()["version"]
    pids = worker_pids(node.proc.pid)
    samples: list[int] = []
    for i in range(30):
        version = a if i % 2 == 0 else b
        r = client.post(f"{ADMIN}/profiles/activate/{version}", headers=AUTH)
        assert r.status_code == 200, r.text
        wait_all_workers(node.url, pids, "profiles", version)
        for _ in range(20):
            client.get(EDGE, headers={"Cookie": "edgeside_id=c-alice"})
        if i == 5:
            samples = [rss_kib(p) for p in pids]
    after = [rss_kib(p) for p in pids]
    growth = [(b2 - a2) / 1024 for a2, b2 in zip(samples, after, strict=True)]
    print(f"worker RSS growth over 25 swaps: {growth} MiB; after: {after} KiB")
    assert max(growth) < 16, f"worker RSS grew by {growth} MiB over 25 swaps"


def test_a_stalled_upload_times_out_and_releases_the_lock(
    node: Edgeside, client: httpx.Client, signed_data: Path, tmp_path: Path
) -> None:
    before = actives(client)
    raw = tar_of(rules_snapshot(tmp_path))

    def stalled() -> Iterator[bytes]:
        yield raw[:1000]
        time.sleep(5.5)  # longer than EDGESIDE_UPLOAD_TIMEOUT_S
        yield raw[1000:]

    try:
        with httpx.Client(base_url=node.url, timeout=30) as c:
            r = c.put(f"{ADMIN}/rules", content=stalled(), headers=AUTH)
        assert r.status_code == 408 and r.json()["error"]["code"] == "upload_timeout"
    except httpx.HTTPError:
        pass  # the server answered and closed while the client was still sending
    assert_untouched(client, signed_data, before)
    assert push(client, "rules", raw).status_code == 200  # the kind's lock is free again
