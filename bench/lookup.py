"""Profile look-up latency at sizes the builder cannot reach on this machine (issue 15, item 6).

`python -m bench.lookup --profiles 10000,1000000,10000000` writes, once per size, a synthetic
profiles snapshot straight through the snapshot writer (`EnvWriter` + `finalize`, the engine's
key layout: `profiles` by canonical id, `alias` by `type:value`), cached under
.data/bench/lookup/, then measures reads in a fresh process per size with `bench.snapshots.probe`
(get by canonical id cold and warm, alias look-up, alias look-up decoding only the demo rules'
fields). Values are msgpack `Profile`s shaped like a build of bench.gen's exports (canonical ids
are blake2b hashes, so profile keys are in random order relative to cookies, as in a build; ids
of 1–3 types; attributes, interests, counters, last_seen and sources as bench.gen writes them).
Cookies are `k{seed}-{i:x}`, what `probe` looks up. Human lines first; the last line is JSON.
Writing is not a build figure: it is timed and printed so the cost of a size is known.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.gen import COUNTRIES, INTERESTS, SOURCES, TIERS
from bench.snapshots import run_probe

ID_PRIORITY = ["customer_id", "email_sha256", "cookie", "device_id"]
POOL = 4096  # distinct profile bodies; each profile gets its own id and ids


def _cid(i: int) -> bytes:
    # As snapshots.stitching.canonical_id of the person's best key (customer_id here).
    return (
        b"p_" + hashlib.blake2b(f"customer_id:C{i}".encode(), digest_size=10).hexdigest().encode()
    )


def _email(seed: int, i: int) -> str:
    return hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=32).hexdigest()


def _has_email(i: int) -> bool:
    return i % 5 != 0  # 80 %, as bench.gen


def _has_customer(i: int) -> bool:
    return i % 10 < 7  # 70 %


def _bodies(seed: int) -> list[dict[str, Any]]:
    """A pool of merged-profile bodies (everything but id and ids), as a build of bench.gen's
    records would make them: 1–4 sources, bench.gen's attributes, interests and counters."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(POOL):
        activity = min(500, int(rng.paretovariate(1.2)) - 1)
        k = 1 + min(3, int(rng.random() ** 2 * 4))
        out.append(
            {
                "attributes": {
                    "tier": TIERS[min(3, activity // 10)],
                    "ltv": round(activity * 37.5 + rng.random() * 20, 2),
                    "country": COUNTRIES[rng.randrange(len(COUNTRIES))],
                    "birth_year": 1950 + rng.randrange(55),
                    "newsletter": rng.random() < 0.4,
                },
                "interests": {
                    INTERESTS[rng.randrange(7)]: round(rng.random(), 2) for _ in range(2 * k)
                },
                "segments": ["newsletter"] if rng.random() < 0.3 else [],
                "counters": {"orders": float(activity * k), "returns": float(activity // 7)},
                "last_seen": {
                    f"category:{INTERESTS[rng.randrange(7)]}": 1.7637e9 + rng.randrange(2_000_000)
                    for _ in range(k)
                },
                "updated_at": 1.7637e9 + rng.randrange(2_000_000),
                "sources": list(SOURCES[:k]),
            }
        )
    return out


def write_snapshot(n: int, seed: int, out: Path) -> dict[str, float]:
    """Write the n-person snapshot at `out`; seconds per phase."""
    import msgspec

    from snapshots.model import Profile
    from snapshots.writer import EnvWriter, finalize, staging_dir

    t0 = time.perf_counter()
    cids = [_cid(i) for i in range(n)]
    order = sorted(range(n), key=cids.__getitem__)
    t_ids = time.perf_counter()
    bodies = _bodies(seed)
    enc = msgspec.msgpack.Encoder().encode

    def profiles() -> Iterator[tuple[bytes, bytes]]:
        for i in order:
            ids: dict[str, list[str]] = {"cookie": [f"k{seed}-{i:x}"]}
            if _has_customer(i):
                ids["customer_id"] = [f"C{i}"]
            if _has_email(i):
                ids["email_sha256"] = [_email(seed, i)]
            cid = cids[i]
            yield cid, enc(Profile(id=cid.decode(), ids=ids, **bodies[(i * 2654435761) % POOL]))

    def aliases(kind: str) -> list[tuple[bytes, bytes]]:
        if kind == "cookie":
            pairs = [(f"cookie:k{seed}-{i:x}".encode(), cids[i]) for i in range(n)]
        elif kind == "customer_id":
            pairs = [(f"customer_id:C{i}".encode(), cids[i]) for i in range(n) if _has_customer(i)]
        else:
            pairs = [
                (f"{kind}:{_email(seed, i)}".encode(), cids[i]) for i in range(n) if _has_email(i)
            ]
        pairs.sort()
        return pairs

    times: dict[str, float] = {"ids_s": t_ids - t0}
    with staging_dir(out, force=True) as tmp:
        w = EnvWriter(tmp, n * 900)
        try:
            t = time.perf_counter()
            written = w.put_sorted("profiles", profiles())
            times["profiles_s"] = time.perf_counter() - t
            t = time.perf_counter()
            n_alias = 0

            def all_aliases() -> Iterator[tuple[bytes, bytes]]:
                # Types are key prefixes, ascending: one type sorted at a time keeps memory to
                # one type's pairs and the whole stream in key order.
                for kind in sorted(("cookie", "customer_id", "email_sha256")):
                    yield from aliases(kind)

            n_alias = w.put_sorted("alias", all_aliases())
            times["aliases_s"] = time.perf_counter() - t
        finally:
            w.close()
        t = time.perf_counter()
        finalize(
            tmp,
            kind="profiles",
            counts={"profiles": written, "aliases": n_alias},
            sources={},
            params={"id_priority": ID_PRIORITY},
        )
        times["finalize_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0
    return {k: round(v, 1) for k, v in times.items()}


def ensure_snapshot(n: int, seed: int, workdir: Path) -> tuple[Path, dict[str, float] | None]:
    out = workdir / f"p{n}-s{seed}"
    if (out / "manifest.json").exists():
        return out, None
    shutil.rmtree(out, ignore_errors=True)
    times = write_snapshot(n, seed, out)
    mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"[{n:,}] wrote a synthetic snapshot ({mb:,.0f} MB) in {times['total_s']}s: {times}")
    return out, times


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lookup", description=__doc__)
    p.add_argument("--profiles", default="10000,1000000,10000000", help="comma-separated sizes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lookups", type=int, default=50_000)
    p.add_argument("--workdir", type=Path, default=Path(".data/bench/lookup"))
    p.add_argument("--write-only", action="store_true", help="write the snapshots, measure nothing")
    args = p.parse_args(argv)
    sizes = [int(s) for s in str(args.profiles).split(",") if s]
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    results: list[dict[str, Any]] = []
    for n in sizes:
        snap, times = ensure_snapshot(n, args.seed, args.workdir)
        if args.write_only:
            continue
        res = run_probe(n, args.seed, snap, args.lookups)
        row = {
            "profiles": n,
            "snapshot_mb": res["snapshot_mb"],
            "get_p50_us": res["lookup_p50_us"],
            "get_p99_us": res["lookup_p99_us"],
            "get_cold_p50_us": res["lookup_cold_p50_us"],
            "get_cold_p99_us": res["lookup_cold_p99_us"],
            "alias_p50_us": res["alias_lookup_p50_us"],
            "alias_p99_us": res["alias_lookup_p99_us"],
            "alias_rules_fields_p50_us": res["alias_lookup_rules_fields_p50_us"],
            "alias_rules_fields_p99_us": res["alias_lookup_rules_fields_p99_us"],
            "found_ratio": res["found_ratio"],
            "rss_private_mb": res["rss_private_mb"],
        }
        if times is not None:
            row["write_s"] = times["total_s"]
        print(
            f"[{n:,}] get p50 {row['get_p50_us']} µs p99 {row['get_p99_us']} µs "
            f"(cold p50 {row['get_cold_p50_us']}), alias p50 {row['alias_p50_us']} µs, "
            f"rules' fields p50 {row['alias_rules_fields_p50_us']} µs "
            f"p99 {row['alias_rules_fields_p99_us']} µs"
        )
        results.append(row)
    out = {
        "bench": "lookup",
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": _load(),
        "lookups": args.lookups,
        "sizes": results,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
