"""Load at several rates, the knee of the curve, and a soak with each worker's memory sampled.

    python -m bench.load [--workers 2] [--rates 250,500,1000,2000,4000,max] [--step-s 10]
                         [--soak-s 60] [--locust-users 10,50] [--data DIR]

Starts `edgeside serve` (demo snapshots unless --data) and drives `/v1/edge` with wrk and the
traffic mix of `wrk_edge.lua`. wrk2 (constant-rate) is not packaged, so each rate step paces every
connection with wrk's `delay()` hook (`wrk_rate.lua`): C connections waiting D ms offer about
C*1000/D requests a second; the *achieved* rate is what is reported. `max` runs 64 unpaced
connections. The knee is the highest paced step still served within the latency objective (p99 ≤
--slo-ms, default 10 ms, and no errors): past it, queueing dominates. (A shape-only rule — "p99 4x
the lightest step's" — moved with every neighbour's load on a shared 2-core machine; an objective
in milliseconds is what an operator sizes against.) The soak holds half the
knee's rate (or half of `max`) for --soak-s seconds and reads VmRSS and RssAnon of every worker each
second from /proc; memory is flat when the last tenth's mean is within a bound of the mean just
after warm-up. Optional locust steps run the project's locustfile headless. Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from server.offline.demo import ensure_demo

from .http import demo_cookies
from .procs import ROOT, Edgeside, edgeside

BENCH = Path(__file__).resolve().parent
WARMUP_FRACTION = 0.2


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn's workers: the supervisor's multiprocessing-spawn children."""
    try:
        kids = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        return []
    found = []
    for pid in map(int, kids):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return sorted(found)


def memory_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0])
    return out


def wrk_paced(
    url: str, seconds: float, connections: int, delay_ms: int, cookies: Path
) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["-s", "wrk_rate.lua", url, "--", str(cookies), "edge", str(delay_ms)]
    out = subprocess.run(
        argv, cwd=BENCH, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    return result


def pacing(rate: float) -> tuple[int, int]:
    """(connections, delay ms) offering about `rate` requests a second, delays of 4-20 ms."""
    connections = max(1, min(256, round(rate * 0.008)))
    delay = max(1, round(connections * 1000 / rate))
    return connections, delay


def rate_step(url: str, rate: str, seconds: float, cookies: Path) -> dict[str, Any]:
    if rate == "max":
        connections, delay, offered = 64, 0, None
    else:
        connections, delay = pacing(float(rate))
        offered = round(connections * 1000 / delay)
    r = wrk_paced(url, seconds, connections, delay, cookies)
    return {
        "offered_rps": offered,
        "achieved_rps": r["rps"],
        "connections": connections,
        "delay_ms": delay,
        "requests": r["requests"],
        "errors": r["errors"] + r["status_errors"],
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "p999_ms": r["p999_us"] / 1000,
    }


SLO_MS = 10.0


def knee(steps: list[dict[str, Any]], slo_ms: float = SLO_MS) -> dict[str, Any] | None:
    """The highest paced step served within the objective (see the module doc); None when even
    the lightest step misses it."""
    found = None
    for step in sorted((s for s in steps if s["offered_rps"]), key=lambda s: s["offered_rps"]):
        if step["p99_ms"] > slo_ms or step["errors"]:
            break
        found = step
    return found


def soak(server: Edgeside, seconds: float, rate: float, cookies: Path) -> dict[str, Any]:
    """Hold `rate` for `seconds`, sampling every worker's memory once a second."""
    workers = worker_pids(server.proc.pid)
    samples: dict[int, list[dict[str, int]]] = {pid: [] for pid in workers}
    connections, delay = pacing(rate)
    result: dict[str, Any] = {}

    def drive() -> None:
        result.update(wrk_paced(server.url, seconds, connections, delay, cookies))

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    while thread.is_alive():
        for pid in workers:
            reading = memory_kb(pid)
            if reading:
                samples[pid].append(reading)
        thread.join(1.0)
    per_worker = {}
    for pid, series in samples.items():
        anon = [s["RssAnon"] for s in series]
        rss = [s["VmRSS"] for s in series]
        if len(anon) < 5:
            continue
        start = int(len(anon) * WARMUP_FRACTION)
        tail = max(1, len(anon) // 10)
        per_worker[str(pid)] = {
            "samples": len(anon),
            "rss_kb_first": rss[0],
            "rss_kb_after_warmup": rss[start],
            "rss_kb_last": rss[-1],
            "rss_kb_max": max(rss),
            "anon_kb_after_warmup": round(statistics.mean(anon[start : start + tail])),
            "anon_kb_last": round(statistics.mean(anon[-tail:])),
            "anon_growth_kb": round(
                statistics.mean(anon[-tail:]) - statistics.mean(anon[start : start + tail])
            ),
            "anon_series_kb": anon,
        }
    return {
        "seconds": seconds,
        "offered_rps": round(connections * 1000 / delay),
        "achieved_rps": round(result.get("requests", 0) / max(seconds, 1e-9), 1),
        "requests": result.get("requests", 0),
        "errors": result.get("errors", 0) + result.get("status_errors", 0),
        "p99_ms": result.get("p99_us", 0) / 1000,
        "workers_alive": worker_pids(server.proc.pid) == workers,
        "workers": per_worker,
    }


class LocustError(Exception):
    """A locust step that measured nothing: its message says why, for the person running it."""


def locust_stats(prefix: Path, users: int, seconds: int, output: str = "") -> dict[str, Any]:
    """The numbers of one locust run from its `PREFIX_stats.csv`, Aggregated row.

    Locust writes "N/A" for percentiles when no request completed (the host never answered, the
    run was too short) and no CSV at all when it failed to start: both are a `LocustError` naming
    the step, not a `ValueError` from `float("N/A")`."""
    where = f"locust at {users} users for {seconds} s"
    tail = output.strip()[-800:]
    said = f"; locust said: {tail}" if tail else ""
    try:
        with open(f"{prefix}_stats.csv", newline="") as f:
            rows = {row["Name"]: row for row in csv.DictReader(f)}
    except OSError as exc:
        raise LocustError(f"{where}: no statistics written ({exc.strerror}){said}") from None
    agg = rows.get("Aggregated")
    if agg is None:
        raise LocustError(f"{where}: its statistics have no Aggregated row{said}")
    try:
        requests = int(agg["Request Count"])
        if requests == 0:
            raise LocustError(f"{where}: no request completed, so there is no latency{said}")
        return {
            "users": users,
            "seconds": seconds,
            "requests": requests,
            "failures": int(agg["Failure Count"]),
            "rps": round(float(agg["Requests/s"]), 1),
            "p50_ms": float(agg["50%"]),
            "p95_ms": float(agg["95%"]),
            "p99_ms": float(agg["99%"]),
            "by_route": {
                name: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"])}
                for name, r in rows.items()
                if name != "Aggregated"
            },
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise LocustError(f"{where}: unreadable statistics ({exc!r}){said}") from None


def locust_step(url: str, users: int, seconds: int, out_dir: Path) -> dict[str, Any]:
    """One headless locust run of bench/locustfile.py; numbers from its CSV's Aggregated row.
    Raises `LocustError` when the run measured nothing."""
    prefix = out_dir / f"locust-{users}"
    argv = [
        str(Path(sys.executable).with_name("locust")),
        "-f", str(BENCH / "locustfile.py"), "--headless", "--host", url,
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--csv", str(prefix),
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "2",
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    return locust_stats(prefix, users, seconds, done.stderr)


def locust_steps(url: str, users: list[int], seconds: int, out_dir: Path) -> list[dict[str, Any]]:
    """Every locust step; one that measured nothing is kept as {"users", "error"} and said on
    stderr, so the other steps' figures still reach the JSON."""
    out: list[dict[str, Any]] = []
    for u in users:
        try:
            out.append(locust_step(url, u, seconds, out_dir))
        except LocustError as exc:
            print(f"bench.load: error: {exc}", file=sys.stderr, flush=True)
            out.append({"users": u, "seconds": seconds, "error": str(exc)})
    return out


def run(
    data: Path,
    *,
    workers: int,
    rates: list[str],
    step_s: float,
    soak_s: float,
    locust_users: list[int],
    locust_s: int,
    work: Path,
    slo_ms: float = SLO_MS,
) -> dict[str, Any]:
    cookies = work / "cookies.txt"
    cookies.write_text("\n".join(demo_cookies()) + "\n")
    with edgeside(data, workers=workers, log_dir=work) as server:
        wrk_paced(server.url, 1, 16, 0, cookies)  # warm-up: imports, caches, memos
        steps = [rate_step(server.url, rate, step_s, cookies) for rate in rates]
        for step in steps:
            print(
                f"rate {step['offered_rps'] or 'max'}: {step['achieved_rps']} rps, "
                f"p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms, errors {step['errors']}",
                file=sys.stderr,
                flush=True,
            )
        found = knee(steps, slo_ms)
        top = max(s["achieved_rps"] for s in steps)
        soak_rate = 0.5 * (found["offered_rps"] if found else top)
        locust = locust_steps(server.url, locust_users, locust_s, work)
        soaked = soak(server, soak_s, soak_rate, cookies) if soak_s > 0 else None
        alive = server.proc.poll() is None
    return {
        "workers": workers,
        "cpus": os.cpu_count(),
        "step_s": step_s,
        "steps": steps,
        "max_rps": top,
        "knee": found,
        "knee_rule": f"highest paced step with p99 <= {slo_ms} ms and no errors",
        "locust": locust,
        "soak": soaked,
        "errors": sum(s["errors"] for s in steps)
        + sum(s.get("failures", 0) for s in locust)
        + (soaked["errors"] if soaked else 0),
        "server_alive": alive,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rates", default="250,500,1000,2000,3000,4000,6000,8000,max")
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--soak-s", type=float, default=60.0)
    parser.add_argument("--locust-users", default="10,50", help="comma list; empty for none")
    parser.add_argument("--locust-s", type=int, default=10)
    parser.add_argument("--data", help="snapshot store (default: demo, built in a tmp dir)")
    parser.add_argument("--slo-ms", type=float, default=SLO_MS, help="p99 objective for the knee")
    parser.add_argument("--out", help="also write the JSON result here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.load needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_name:
        work = Path(tmp_name)
        data = Path(args.data) if args.data else work / "data"
        if not args.data:
            ensure_demo(data)
        result = run(
            data,
            workers=args.workers,
            rates=[r.strip() for r in args.rates.split(",") if r.strip()],
            step_s=args.step_s,
            soak_s=args.soak_s,
            locust_users=[int(u) for u in args.locust_users.split(",") if u.strip()],
            locust_s=args.locust_s,
            work=work,
            slo_ms=args.slo_ms,
        )
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    # A locust step that measured nothing was said on stderr; the run did not do its job.
    return 1 if any("error" in s for s in result["locust"]) else 0


if __name__ == "__main__":
    sys.exit(main())
