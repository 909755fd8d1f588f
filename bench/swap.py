"""Snapshot swaps under load: push and activate snapshots while wrk hammers `/v1/edge`.

    python -m bench.swap [--swaps 10] [--profiles 1000000] [--workers 2] [--phase 5]

Starts edgeside (`--workers 2`) on the demo store, measures `/v1/edge` with wrk before, during and
after a series of pushes — `--swaps` rules snapshots, one content snapshot, and one large profiles
snapshot generated with `bench.gen` (`--profiles`, built once and cached in `--workdir`) — through
the real admin API with the real push client. After every push it measures staleness: the time
until every worker process (found under the server in /proc) answers, on fresh connections, with
the new version. Loopback only; bounded in time. Last line: one JSON object with
`failed_requests` (non-2xx + socket errors over all phases; must be 0), `p99_ms_before`,
`p99_ms_during`, `p99_ms_after`, `staleness_s` (worst), and the large push's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from server.offline.demo import DEMO_DIR, ensure_demo
from server.offline.rules_snapshot import build_rules_snapshot
from snapshots import push as push_client

from .http import LUA, demo_cookies, wrk
from .procs import edgeside

TOKEN = secrets.token_hex(16)  # a fresh admin token per run
ADMIN = "/v1/admin/snapshots"


def worker_pids(server_pid: int) -> list[int]:
    pids: list[int] = []
    for task in os.listdir(f"/proc/{server_pid}/task"):
        pids += [
            int(p) for p in Path(f"/proc/{server_pid}/task/{task}/children").read_text().split()
        ]
    return sorted(
        p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
    )


def staleness(url: str, pids: list[int], kind: str, version: str, timeout: float = 30.0) -> float:
    """Seconds until every worker reports `version`, probing over fresh connections, 8 at once
    so the kernel spreads them over the workers; then `/v1/edge` must name it too."""
    t0 = time.monotonic()
    done: set[int] = set()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def probe(_: int) -> tuple[int, str | None]:
        with httpx.Client(base_url=url, timeout=10) as c:
            w = c.get(ADMIN, headers=auth).json()["worker"]
            return int(w["pid"]), w["versions"].get(kind)

    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() - t0 < timeout:
            done |= {pid for pid, v in pool.map(probe, range(8)) if v == version}
            if set(pids) <= done:
                elapsed = time.monotonic() - t0
                with httpx.Client(base_url=url) as c:
                    header = c.get("/v1/edge?p=home_hero&site=shop-fr").headers["x-edge-snapshot"]
                if f"{kind}={version}" not in header:
                    raise RuntimeError(f"/v1/edge still names {header}")
                return elapsed
    raise TimeoutError(f"workers {sorted(set(pids) - done)} never switched to {kind} {version}")


def build_large_profiles(n: int, workdir: Path) -> Path:
    """bench.gen data for `n` people, built once; reused while the generator's output holds."""
    from bench.gen import generate
    from server.cli import main as cli_main

    out = workdir / f"gen-{n}"
    snap = out / "snap-profiles"
    if (snap / "manifest.json").is_file():
        return snap
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    cmds = generate(n, 200, 1, out)
    print(f"generated {n:,} people in {time.perf_counter() - t0:.0f}s", flush=True)
    t0 = time.perf_counter()
    if cli_main(cmds["profiles"]) != 0:
        raise RuntimeError("large profiles snapshot did not build")
    print(f"built {n:,}-person snapshot in {time.perf_counter() - t0:.0f}s", flush=True)
    for f in out.glob("*.ndjson"):
        f.unlink()  # the exports are large and no longer needed
    return snap


def start_wrk(url: str, seconds: int, connections: int, cookies: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url,
         "--", str(cookies), "edge"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish_wrk(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop wrk early (SIGINT makes it print its summary) and parse the WRKJSON line."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--swaps", type=int, default=10, help="rules snapshots pushed under load")
    parser.add_argument("--profiles", type=int, default=1_000_000, help="0 skips the large push")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--phase", type=int, default=5, help="seconds of load before and after")
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/swap"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.swap needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    args.workdir = args.workdir.resolve()  # servers run with another working directory
    args.workdir.mkdir(parents=True, exist_ok=True)
    large = build_large_profiles(args.profiles, args.workdir) if args.profiles else None
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        ensure_demo(data)
        cookies = tmp / "cookies.txt"
        cookies.write_text("\n".join(demo_cookies()) + "\n")
        rules_snaps = []
        for i in range(args.swaps):
            src = tmp / f"rules-{i}.yaml"
            src.write_text((DEMO_DIR / "rules.yaml").read_text() + f"\n# swap {i}\n")
            build_rules_snapshot(src, tmp / f"rules-{i}")
            rules_snaps.append(tmp / f"rules-{i}")
        env = {"EDGESIDE_ADMIN_TOKEN": TOKEN}
        with edgeside(data, workers=args.workers, env=env, log_dir=tmp) as server:
            pids = worker_pids(server.proc.pid)
            wrk(server.url, 2, args.connections, cookies, "edge")  # warm-up
            before = wrk(server.url, args.phase, args.connections, cookies, "edge")
            during_proc = start_wrk(server.url, 3600, args.connections, cookies)
            time.sleep(1.0)
            stale: list[float] = []
            pushes: list[dict[str, Any]] = []

            def do_push(snap: Path, label: str) -> None:
                t0 = time.perf_counter()
                (result,) = push_client.push(snap, [server.url], TOKEN)
                if not result.ok:
                    raise RuntimeError(f"push {label} refused: {result.line()}")
                took = time.perf_counter() - t0
                body = result.body
                s = staleness(server.url, pids, body["kind"], body["version"])
                stale.append(s)
                pushes.append(
                    {"what": label, "push_s": round(took, 3), "staleness_s": round(s, 3),
                     "timings_ms": body["timings_ms"], "bytes": body["bytes"]}
                )  # fmt: skip
                print(
                    f"{label}: pushed in {took:.2f}s, all workers on it after {s:.3f}s", flush=True
                )
                time.sleep(0.3)

            for i, snap in enumerate(rules_snaps):
                do_push(snap, f"rules #{i + 1}")
            content = tmp / "content"
            subprocess.run(
                [sys.executable, "-m", "server.cli", "snapshot", "build", "--kind", "content",
                 "--input", *map(str, sorted((DEMO_DIR / "content").glob("*.ndjson"))),
                 "--config", str(DEMO_DIR / "content.yaml"), "--out", str(content)],
                check=True, capture_output=True,
            )  # fmt: skip
            do_push(content, "content")
            if large is not None:
                do_push(large, f"profiles ({args.profiles:,} people)")
            time.sleep(1.0)
            during = finish_wrk(during_proc)
            after = wrk(server.url, args.phase, args.connections, cookies, "edge")
    phases = (before, during, after)
    failed = sum(r["errors"] + r["status_errors"] for r in phases)
    large_push = next((p for p in pushes if p["what"].startswith("profiles")), None)
    result = {
        "workers": args.workers,
        "connections": args.connections,
        "swaps": len(pushes),
        "profiles": args.profiles,
        "requests": sum(r["requests"] for r in phases),
        "failed_requests": failed,
        "p99_ms_before": round(before["p99_us"] / 1000, 3),
        "p99_ms_during": round(during["p99_us"] / 1000, 3),
        "p99_ms_after": round(after["p99_us"] / 1000, 3),
        "staleness_s": round(max(stale), 3),
        "staleness_s_median": round(sorted(stale)[len(stale) // 2], 3),
        "large_push": large_push,
    }
    print(json.dumps(result))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
