"""`PUT /v1/admin/snapshots/{kind}` with mutated, truncated and random archives, against a real
two-worker server: every answer is a 4xx with the error shape (or, for the rare mutation that
leaves a sound snapshot, a 200), never a 5xx; afterwards nothing is left in staging, the active
versions are the ones a 200 made, and the server is alive with no traceback logged.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from bench.procs import edgeside
from snapshots import store
from tests.provekit import ADMIN_TOKEN, bounded, prove_copy, prove_data
from tests.server.lifecycle.kit import content_snapshot, rules_snapshot, tar_of

# In the second test stream (tests/run-streams), which balances the two.
pytestmark = pytest.mark.slow

__all__ = ["prove_copy", "prove_data"]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def mutations(tar: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        raw = bytearray(tar)
        how = i % 5
        if how == 0:  # flip bytes, biased to the headers and the manifest at the front
            for _ in range(rng.randrange(1, 8)):
                pos = rng.randrange(min(len(raw), 4096) if rng.random() < 0.7 else len(raw))
                raw[pos] = rng.randrange(256)
        elif how == 1:  # truncate
            raw = raw[: rng.randrange(1, len(raw))]
        elif how == 2:  # random bytes
            raw = bytearray(rng.randbytes(rng.randrange(1, 3000)))
        elif how == 3:  # a block repeated or dropped
            block = rng.randrange(len(raw) // 512) * 512
            raw = raw[:block] + raw[block : block + 512] * rng.choice((0, 2)) + raw[block + 512 :]
        else:  # the manifest's JSON damaged in place
            start = raw.find(b'{\n  "counts"')
            if start < 0:
                start = 512
            for _ in range(rng.randrange(1, 4)):
                raw[start + rng.randrange(600)] = rng.choice(b'{}[]",:0x\x00\xff')
        out.append(bytes(raw))
    return out


def test_mutated_pushes_are_refused_cleanly(prove_copy: Path, tmp_path: Path) -> None:
    rng = random.Random(5)
    tars = {
        "rules": tar_of(rules_snapshot(tmp_path, key=None)),
        "content": tar_of(content_snapshot(tmp_path, key=None)),
    }
    count = bounded("EDGESIDE_FUZZ_EXAMPLES", 200) // 2
    statuses: dict[int, int] = {}
    accepted: dict[str, int] = {}
    env = {"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}
    with edgeside(prove_copy, workers=2, env=env, log_dir=tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
            for kind, tar in tars.items():
                for body in mutations(tar, rng, count):
                    r = client.put(f"/v1/admin/snapshots/{kind}", content=body)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    assert r.status_code < 500, (kind, r.status_code, r.text)
                    if r.status_code == 200:
                        accepted[kind] = accepted.get(kind, 0) + 1
                    else:
                        error = r.json()["error"]
                        assert error["code"] and error["message"], r.text
            edge = client.get("/v1/edge?p=home_hero&site=shop-fr")
            ready = client.get("/readyz")
        log = server.output()
    print(f"admin push fuzz: {2 * count} pushes, statuses {statuses}, accepted {accepted}")
    assert edge.status_code == 204 and ready.status_code == 200
    assert "Traceback" not in log, log[-4000:]
    for kind in tars:
        staging = store.versions_dir(prove_copy, kind) / store.STAGING
        leftovers = list(staging.iterdir()) if staging.exists() else []
        assert not leftovers, leftovers
