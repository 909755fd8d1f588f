"""Every manifest field, fuzzed, pushed to a real signing server (issue 14, defects 1 and 2).

Each case takes a sound snapshot (rules or content), replaces one manifest field — or one key or
value inside it — with something hostile (path traversal, absolute paths, CR/LF and other control
bytes, invalid text, huge strings and numbers, wrong types), signs the result with the server's
key whenever it is still a manifest at all (so the server gets past the signature and has to
judge the content), and pushes it, with a file of each crafted name in the archive. Proven after
each push: never a 5xx, no response header with a control byte; after the run: nothing outside
the store directory changed (the tmp tree scanned before and after, every ancestor directory's
entries searched for the payloads' marker), nothing left in staging, and the server still decides.

On the code before defects 1 and 2 were fixed (the parent of 992b144) it fails at case 10: a
signed manifest whose version holds a NUL byte made the push a 500.

Bounded: `EDGESIDE_FUZZ_EXAMPLES` cases (200 by default, a few seconds), one seeded generator.
"""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from bench.procs import edgeside
from server.offline.demo import ensure_demo
from snapshots import store
from snapshots.manifest import Manifest, encode_manifest, read_manifest
from snapshots.signing import sign_manifest
from tests.provekit import ADMIN_TOKEN, bounded
from tests.server.lifecycle.kit import (
    content_snapshot,
    member,
    rules_snapshot,
    tar_members,
)

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

KEY = "fuzz-manifest-signing-key"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MARK = "fuzzmark"  # in every name-like payload: searched for outside the store afterwards
FIELDS = [f.name for f in msgspec.structs.fields(Manifest)]

NAMES = [
    f"../../../{MARK}-up3",
    f"../../../../../../../../{MARK}-root",
    f"/tmp/{MARK}-abs",
    f"..\\..\\{MARK}-win",
    f"%2e%2e%2f{MARK}-pct",
    f"{MARK}/../../../x",
    f"./{MARK}-dot",
    f".{MARK}-hidden",
    "..",
    ".",
    "",
    " ",
    f"{MARK}\x00nul",
    f"{MARK}\r\nSet-Cookie: {MARK}=1",
    f"{MARK}\n",
    f"{MARK}\x7f",
    f"{MARK}\x1b[31m",
    f"{MARK}\u2028sep",
    f"{MARK}\ud800",  # a lone surrogate: not encodable as UTF-8
    MARK + "é" * 40,
    MARK + "a" * 300,
    MARK + "b" * 70_000,
]
NUMBERS: list[Any] = [-1, 0, 1, -(2**63), 2**63, 2**64, 10**40, 1e308, -1e308, 0.5, 1e-300]
OTHERS: list[Any] = [None, True, False, [], {}, [1, "a"], {"a": {"b": [None]}}, "x", 7]


def hostile(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.55:
        value = rng.choice(NAMES)
    elif pick < 0.75:
        return rng.choice(NUMBERS)
    elif pick < 0.9:
        return rng.choice(OTHERS)
    else:  # random bytes as text (latin-1: every byte a character, control bytes included)
        value = MARK + rng.randbytes(rng.randrange(1, 64)).decode("latin-1")
    return value


def mutate(base: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any], list[str]]:
    """One field of `base` made hostile: (what was done, the manifest, names of extra members)."""
    m = json.loads(json.dumps(base))
    field = rng.choice([*FIELDS, "unknown_field"])
    value = hostile(rng)
    extra: list[str] = []
    current = m.get(field)
    how = "replace"
    if isinstance(current, dict) and current and rng.random() < 0.7:
        key = rng.choice(sorted(current))
        if rng.random() < 0.5:  # a hostile key (a file name for files/sizes), its value kept
            how = "key"
            name = value if isinstance(value, str) else rng.choice(NAMES)
            current[name] = current.pop(key)
            if field in ("files", "sizes"):
                other = "sizes" if field == "files" else "files"
                if key in m.get(other, {}):
                    m[other][name] = m[other].pop(key)
                extra.append(name)
        else:
            how = "value"
            current[key] = value
    elif field == "signature" and isinstance(current, dict) and rng.random() < 0.5:
        how = "value"
        current[rng.choice(sorted(current))] = value
    else:
        m[field] = value
    return f"{field}:{how}:{value!r:.60}", m, extra


def encoded(m: dict[str, Any]) -> bytes:
    """Signed with the server's key when it is still a manifest; else the raw JSON."""
    try:
        typed = msgspec.convert({**m, "signature": None}, Manifest)
        return encode_manifest(sign_manifest(typed, KEY.encode()))
    except (msgspec.ValidationError, TypeError, ValueError, UnicodeEncodeError):
        return json.dumps(m).encode("utf-8", "surrogatepass")


def archive_of(snapshot: Path, manifest: bytes, extra: list[str]) -> bytes:
    files = [member("manifest.json", manifest)]
    files += [
        member(p.name, p.read_bytes())
        for p in sorted(snapshot.iterdir())
        if p.is_file() and p.name != "manifest.json"
    ]
    for name in extra:
        try:
            if name and len(name) < 1000 and "\x00" not in name:
                name.encode("utf-8")
                files.append(member(name, b"fuzz payload"))
        except UnicodeEncodeError:
            continue
    return tar_members(files)


def tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in [*filenames, *dirnames]:
            st = (here / name).lstat()
            out[str(here / name)] = (st.st_size, st.st_mtime_ns)
    return out


def marked_outside(data: Path, kinds: list[str]) -> list[str]:
    """Entries named with the marker in any directory above a kind's `versions/` — in the store
    (a climb of a few levels lands there) and every ancestor up to `/`."""
    dirs: set[Path] = set()
    for kind in kinds:
        dirs.update(store.versions_dir(data, kind).parents)
    found = []
    for parent in sorted(dirs):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        found += [str(parent / n) for n in names if MARK in n]
    return found


def control_in_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    bad = set(range(0x20)) - {0x09} | {0x7F}
    return [(n, v) for n, v in raw if any(b in bad for b in n + v)]


def raw_edge_headers(url: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    request = (
        b"GET /v1/edge?p=home_hero&site=shop-fr HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\r\n\r\n", 1)[0]


def test_every_manifest_field_fuzzed_touches_nothing_outside_the_store(tmp_path: Path) -> None:
    rng = random.Random(14)
    prove_copy = tmp_path / "data"
    ensure_demo(prove_copy, KEY.encode())  # signed: the server checks signatures
    work = tmp_path / "work"
    work.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    bases = {"rules": rules_snapshot(work, key=KEY), "content": content_snapshot(work, key=KEY)}
    manifests = {k: msgspec.to_builtins(read_manifest(p)) for k, p in bases.items()}
    skip = (prove_copy, logs)
    before = tree(tmp_path, skip)
    assert not marked_outside(prove_copy, list(bases))
    count = bounded("EDGESIDE_FUZZ_EXAMPLES", 200)
    statuses: dict[int, int] = {}
    env = {"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN, "EDGESIDE_SIGNING_KEY": KEY}
    with edgeside(prove_copy, workers=1, env=env, log_dir=logs) as server:
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
            for i in range(count):
                kind = "rules" if i % 3 else "content"
                what, m, extra = mutate(manifests[kind], rng)
                body = archive_of(bases[kind], encoded(m), extra)
                r = client.put(f"/v1/admin/snapshots/{kind}", content=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, (i, what, r.status_code, r.text)
                assert not control_in_headers(r.headers.raw), (i, what, r.headers.raw)
                if r.status_code != 200:
                    assert r.json()["error"]["code"], (i, what, r.text)
                edge = raw_edge_headers(server.url)
                assert edge.startswith(b"HTTP/1.1 204"), (i, what, edge)
                lines = edge.split(b"\r\n")[1:]
                assert all(b":" in line for line in lines), (i, what, edge)
                assert not control_in_headers([(b"", line) for line in lines]), (i, what, edge)
            status = client.get("/v1/admin/snapshots")
            assert status.status_code == 200 and not control_in_headers(status.headers.raw)
            ready = client.get("/readyz")
        log = server.output()
    print(f"manifest field fuzz: {count} pushes, statuses {statuses}")
    assert ready.status_code == 200
    assert "Traceback" not in log, log[-4000:]
    assert tree(tmp_path, skip) == before
    assert not marked_outside(prove_copy, list(bases))
    for kind in bases:
        staging = store.versions_dir(prove_copy, kind) / store.STAGING
        leftovers = list(staging.iterdir()) if staging.exists() else []
        assert not leftovers, leftovers
