"""HTTP throughput of `/v1/edge` against a bare ASGI app, same server, same load, same run.

    python -m bench.http [--duration 10] [--connections 64] [--workers 1] [--rounds 2]

Starts edgeside on the demo snapshots and `bench.bare_app` (a constant 204) under the same uvicorn
settings (uvloop, httptools, no access log), loads each in turn with wrk and a Lua script that
varies visitors, sites and placements, rounds interleaved so drift hits both alike. Also measures
`/v1/decide` on the realistic population (`decide_real_*`: first questions) and on the demo's
visitors (`decide_*`: mostly repeats, answered from its memo), and, when granian is installed,
the same two apps under granian (the edgeside app through its ASGI factory: `edgeside serve`
does not offer granian, which does not pay). Last
line: one JSON object (SPEC §9 asks `ratio` ≥ 0.8).

edgeside serves with its own HTTP protocol (server/edge/protocol.py), which answers a request whose
answer is already known without making an ASGI request; `edge_asgi` is the same load on the same
edgeside with that shortcut off (`protocol_memo: false`: uvicorn's own protocol, every answer
through the ASGI app), reported as `ratio_asgi` so that the two are never confused.

`edge_pages` and `bare_pages` are the same load with what deploy/nginx forwards on every page
view besides (the page, one of 5 000; the referrer; the browser; its language): `ratio_pages`.

Two more runs show where the ceiling is: the bare app sending the same five headers `/v1/edge`
sends (`ratio_bare_edge_headers`: what uvicorn charges for the headers alone), and `/v1/edge` asked
one known visitor's question over and over (`ratio_edge_repeat`: every answer a memo hit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from server.offline.demo import DEMO_DIR, ensure_demo

from .procs import ROOT, cpu_seconds, edgeside, free_port, process, wait_http

LUA = Path(__file__).with_name("wrk_edge.lua")


def demo_cookies() -> list[str]:
    """Every `cookie` identifier in the demo profile exports: the visitors wrk plays."""
    cookies: list[str] = []
    for path in sorted((DEMO_DIR / "profiles").glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            value = record.get("ids", {}).get("cookie")
            if isinstance(value, str):
                cookies.append(value)
    return sorted(set(cookies))


def wrk(
    url: str,
    seconds: int,
    connections: int,
    cookie_file: Path,
    mode: str,
    pid: int | None = None,
    *extra: str,
) -> dict[str, Any]:
    """One wrk run; given the server's process `pid`, also the CPU time the server (and its
    workers) spent per request."""
    import subprocess

    cpu_before = cpu_seconds(pid) if pid is not None else 0.0

    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(LUA),
            url,
            "--",
            str(cookie_file),
            mode,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if pid is not None:
        result["cpu_us"] = (cpu_seconds(pid) - cpu_before) / max(result["requests"], 1) * 1e6
    return result


def bare_argv(port: int, workers: int, server: str, app: str = "app") -> list[str]:
    if server == "granian":
        return granian_argv(port, workers, f"bench.bare_app:{app}")
    return [
        sys.executable, "-m", "uvicorn", f"bench.bare_app:{app}", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http",
        "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def granian_argv(port: int, workers: int, target: str, factory: bool = False) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        *(["--factory"] if factory else []), target,
    ]  # fmt: skip


def measure_bare(
    workers: int,
    server: str,
    seconds: int,
    connections: int,
    cookies: Path,
    log_dir: Path,
    app: str = "app",
    mode: str = "edge",
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    port = free_port()
    log = log_dir / f"bare-{server}-{port}.log"
    with process(bare_argv(port, workers, server, app), log=log, cwd=ROOT) as proc:
        wait_http(f"http://127.0.0.1:{port}/", ok=(204,), proc=proc, log=log)
        url = f"http://127.0.0.1:{port}"
        return wrk(url, seconds, connections, cookies, mode, proc.pid, *extra)


def measure_edge_granian(
    data: Path, workers: int, seconds: int, connections: int, cookies: Path, log_dir: Path
) -> dict[str, Any]:
    """The edgeside app itself (its ASGI factory) under granian instead of uvicorn."""
    port = free_port()
    log = log_dir / f"edge-granian-{port}.log"
    argv = granian_argv(port, workers, "server.app:create_app", factory=True)
    env = {"EDGESIDE_DATA": str(data), "EDGESIDE_LOG_LEVEL": "warning"}
    with process(argv, log=log, env=env, cwd=ROOT) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", proc=proc, log=log)
        wrk(url, 2, connections, cookies, "edge")  # warm-up
        return wrk(url, seconds, connections, cookies, "edge", proc.pid)


def realistic_store(profiles: int, seed: int, cache: Path) -> Path:
    """The demo store with its profiles replaced by `profiles` people from bench.gen, built once
    and kept under `cache` (rebuilt when the demo changes: `ensure_demo` checks its digest)."""
    import snapshots
    from bench.gen import PROFILES_CONFIG, SOURCES, gen_profiles
    from snapshots import store

    data = cache / f"realistic-{profiles}-{seed}"
    ensure_demo(data)  # demo content and rules; a changed demo is rebuilt, profiles too
    stamp = data / "gen-profiles"

    def active() -> str:
        path = store.active_path(data, "profiles")
        return "" if path is None else path.name

    if stamp.exists() and stamp.read_text() == active():
        return data
    with tempfile.TemporaryDirectory(dir=data) as tmp_name:
        tmp = Path(tmp_name)
        gen_profiles(profiles, seed, tmp)
        (tmp / "profiles.yaml").write_text(PROFILES_CONFIG)
        cfg = snapshots.load_config(tmp / "profiles.yaml", snapshots.ProfilesConfig)
        snapshots.build_profiles([tmp / f"{s}.ndjson" for s in SOURCES], cfg, tmp / "snap")
        version = store.install(data, tmp / "snap")
        store.activate(data, "profiles", version)
    stamp.write_text(active())
    return data


def scrape(url: str) -> dict[str, float]:
    """The server's counters and gauges (one worker's view), by their full sample name."""
    import httpx

    samples: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def scheduling(pid: int) -> dict[str, float]:
    """What the kernel says about the server process so far (its threads together): CPU time on
    a core, time runnable but waiting for one (run-queue delay), context switches it made
    (voluntary: it waited — I/O, a page read, the GIL) or suffered (involuntary: preempted), and
    page faults that had to read a page in (major: the loop waits for the disk)."""
    root = Path(f"/proc/{pid}")
    try:
        fields = (root / "stat").read_text().rsplit(")", 1)[1].split()
        run_ns, wait_ns = (int(x) for x in (root / "schedstat").read_text().split()[:2])
        status = (root / "status").read_text()
    except (OSError, ValueError):
        return {}

    def count(name: str) -> float:
        return float(status.split(name + ":", 1)[1].split()[0])

    return {
        "run_ms": run_ns / 1e6,
        "runq_ms": wait_ns / 1e6,
        "voluntary_switches": count("voluntary_ctxt_switches"),
        "involuntary_switches": count("nonvoluntary_ctxt_switches"),
        "major_faults": float(fields[9]),
    }


def run_observed(
    url: str, pid: int, seconds: int, connections: int, cookies: Path, mode: str, *extra: str
) -> dict[str, Any]:
    """One measured wrk run, plus what the server saw during it: each memo's hit ratio, the share
    of answers the protocol wrote, (with the loop probe on) the longest loop stall and GC, and
    what the kernel saw of the server process (`scheduling`): a stall where the loop ran is its
    own work; one where it waited for a core, a page read or the GIL shows in these counts."""
    before = scrape(url)  # also starts a fresh stall window
    kernel_before = scheduling(pid)
    result = wrk(url, seconds, connections, cookies, mode, pid, *extra)
    kernel_after = scheduling(pid)
    after = scrape(url)
    result["server_kernel"] = {
        name: round(kernel_after[name] - kernel_before[name], 1)
        for name in kernel_after
        if name in kernel_before
    }

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    memos: dict[str, float] = {}
    for memo in ("edge", "decision", "fragment"):
        hit = delta(f'edgeside_memo_lookups_total{{memo="{memo}",result="hit"}}')
        miss = delta(f'edgeside_memo_lookups_total{{memo="{memo}",result="miss"}}')
        if hit + miss:
            memos[memo] = round(hit / (hit + miss), 3)
    answered = sum(
        delta(name) for name in after if name.startswith('edgeside_responses_total{route="edge",')
    )
    by_protocol = delta('edgeside_protocol_answers_total{route="edge"}')
    result["memo_hit_ratio"] = memos
    result["protocol_share"] = round(by_protocol / answered, 3) if answered else None
    loop = after.get('edgeside_loop_stall_max_seconds{source="loop"}')
    loop_cpu = after.get('edgeside_loop_stall_max_seconds{source="loop_cpu"}')
    collection = after.get('edgeside_loop_stall_max_seconds{source="gc"}')
    result["max_stall_ms"] = None if loop is None else round(loop * 1000, 2)
    # The most CPU the loop's thread spent between two probe wake-ups: the loop's own work; a
    # stall well above it was mostly waiting (a core, the GIL, a page).
    result["max_stall_cpu_ms"] = None if loop_cpu is None else round(loop_cpu * 1000, 2)
    result["max_gc_ms"] = None if collection is None else round(collection * 1000, 2)
    # Which generation's collections were the long ones (young: objects kept a few requests;
    # full: many long-lived tracked objects).
    result["max_gc_ms_by_generation"] = [
        round(after.get(f'edgeside_loop_stall_max_seconds{{source="gc{g}"}}', 0.0) * 1000, 2)
        for g in range(3)
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--profiles", type=int, default=200_000, help="population of the realistic load"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "edgeside-bench",
        help="where the realistic store is built once and kept",
    )
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also the demo-visitor variants: pages, one repeated question, the bare app with "
        "edgeside's headers, granian",
    )
    parser.add_argument(
        "--data", help="snapshot store for the repeats load (default: demo, built in a tmp dir)"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.http needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    granian = args.extra and (shutil.which("granian") is not None or _importable("granian"))
    real_data = realistic_store(args.profiles, args.seed, args.cache)
    real = ("real", str(args.profiles), str(args.seed))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = Path(args.data) if args.data else tmp / "data"
        if not args.data:
            ensure_demo(data)
        cookie_file = tmp / "cookies.txt"
        cookie_file.write_text("\n".join(demo_cookies()) + "\n")
        probed = tmp / "probed.json"
        probed.write_text('{"loop_probe_ms": 1}')
        asgi_only = tmp / "asgi-only.json"
        asgi_only.write_text('{"protocol_memo": false, "loop_probe_ms": 1}')
        runs: dict[str, list[dict[str, Any]]] = {
            "edge": [],
            "edge_asgi": [],
            "bare": [],
            "edge_repeats": [],
            "bare_repeats": [],
            "decide": [],
            "decide_real": [],
        }
        if args.extra:
            runs |= {"edge_pages": [], "bare_pages": [], "edge_repeat": [], "bare_edge_headers": []}
        if granian:
            runs |= {"edge_granian": [], "bare_granian": []}
        common = (args.duration, args.connections, cookie_file)
        for round_no in range(args.rounds):
            # The realistic load, the headline.
            runs["bare"].append(
                measure_bare(args.workers, "uvicorn", *common, tmp, mode="real", extra=real[1:])
            )
            for name, config in (("edge", probed), ("edge_asgi", asgi_only)):
                with edgeside(
                    real_data, workers=args.workers, log_dir=tmp, args=["--config", str(config)]
                ) as server:
                    wrk(server.url, 2, args.connections, cookie_file, real[0], None, *real[1:])
                    runs[name].append(run_observed(server.url, server.proc.pid, *common, *real))
                    if name == "edge":  # `/v1/decide` on the same population: first questions
                        decide = wrk(server.url, *common, "realdecide", server.proc.pid, *real[1:])
                        runs["decide_real"].append(decide)
            # The demo's 350 visitors: mostly repeats, answered from the memos.
            runs["bare_repeats"].append(measure_bare(args.workers, "uvicorn", *common, tmp))
            if args.extra:
                runs["bare_pages"].append(
                    measure_bare(args.workers, "uvicorn", *common, tmp, mode="pages")
                )
                runs["bare_edge_headers"].append(
                    measure_bare(args.workers, "uvicorn", *common, tmp, app="app_edge_headers")
                )
            with edgeside(
                data, workers=args.workers, log_dir=tmp, args=["--config", str(probed)]
            ) as server:
                wrk(server.url, 2, args.connections, cookie_file, "edge")  # warm-up
                pid = server.proc.pid
                runs["edge_repeats"].append(run_observed(server.url, pid, *common, "edge"))
                runs["decide"].append(wrk(server.url, *common, "decide", pid))
                if args.extra:
                    runs["edge_repeat"].append(wrk(server.url, *common, "repeat", pid))
                    runs["edge_pages"].append(wrk(server.url, *common, "pages", pid))
            if granian:
                runs["bare_granian"].append(measure_bare(args.workers, "granian", *common, tmp))
                runs["edge_granian"].append(measure_edge_granian(data, args.workers, *common, tmp))
            print(
                f"round {round_no + 1}: "
                + ", ".join(f"{k} {v[-1]['rps']:.0f} rps" for k, v in runs.items() if v),
                flush=True,
            )

    def rps(name: str) -> float:
        return float(statistics.mean(r["rps"] for r in runs[name]))

    def pct(name: str, key: str) -> float:
        return round(float(statistics.mean(r[key] for r in runs[name])) / 1000.0, 3)

    def cpu(name: str) -> float:
        return round(float(statistics.mean(r["cpu_us"] for r in runs[name])), 2)

    def worst(name: str, key: str) -> float | None:
        values = [r[key] for r in runs[name] if r.get(key) is not None]
        return max(values) if values else None

    errors = sum(r["errors"] + r["status_errors"] for rs in runs.values() for r in rs)
    cpu_us = {name: cpu(name) for name in runs if runs[name]}
    result: dict[str, Any] = {
        "load": f"realistic: {args.profiles} profiles, long tail, 30% never seen, 20k pages",
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "edge_rps": round(rps("edge")),
        "bare_rps": round(rps("bare")),
        "ratio": round(rps("edge") / rps("bare"), 3),
        "cpu_ratio": round(cpu_us["edge"] / cpu_us["bare"], 3),
        "edge_p50_ms": pct("edge", "p50_us"),
        "edge_p99_ms": pct("edge", "p99_us"),
        "edge_p999_ms": pct("edge", "p999_us"),
        "edge_max_stall_ms": worst("edge", "max_stall_ms"),
        # Per measured realistic run: the longest stall, the most loop CPU between two probe
        # wake-ups (the loop's own work; the rest of a stall was waiting), and p99 (ms).
        "edge_max_stall_ms_by_run": [r["max_stall_ms"] for r in runs["edge"]],
        "edge_max_stall_cpu_ms_by_run": [r["max_stall_cpu_ms"] for r in runs["edge"]],
        "edge_p99_ms_by_run": [round(r["p99_us"] / 1000.0, 3) for r in runs["edge"]],
        "edge_max_gc_ms": worst("edge", "max_gc_ms"),
        "edge_max_gc_ms_by_generation": [
            max(r["max_gc_ms_by_generation"][g] for r in runs["edge"]) for g in range(3)
        ],
        # What the kernel saw of the server during each measured realistic run (`scheduling`):
        # run-queue delay (runnable, no core: contention), major faults (the loop waiting for a
        # page of a snapshot to be read in), voluntary switches (waits: I/O, the GIL).
        "edge_server_kernel": [r["server_kernel"] for r in runs["edge"]],
        # Of the last round's measured realistic run.
        "memo_hit_ratio": runs["edge"][-1]["memo_hit_ratio"],
        "edge_protocol_answer_share": runs["edge"][-1]["protocol_share"],
        # The same load with every answer made through the ASGI app (no protocol shortcut).
        "edge_asgi_rps": round(rps("edge_asgi")),
        "ratio_asgi": round(rps("edge_asgi") / rps("bare"), 3),
        "edge_asgi_p99_ms": pct("edge_asgi", "p99_us"),
        # Repeats: the demo's 350 visitors Zipf-style plus 20 % never-seen cookies; most answers
        # come from the memos. Not the headline.
        "repeats_edge_rps": round(rps("edge_repeats")),
        "repeats_bare_rps": round(rps("bare_repeats")),
        "repeats_ratio": round(rps("edge_repeats") / rps("bare_repeats"), 3),
        "repeats_edge_p99_ms": pct("edge_repeats", "p99_us"),
        "repeats_memo_hit_ratio": runs["edge_repeats"][-1]["memo_hit_ratio"],
        "repeats_max_stall_ms": worst("edge_repeats", "max_stall_ms"),
        "repeats_max_stall_cpu_ms": worst("edge_repeats", "max_stall_cpu_ms"),
        "decide_real_rps": round(rps("decide_real")),
        "decide_real_p99_ms": pct("decide_real", "p99_us"),
        # (the demo's 350 visitors: mostly repeats, answered from the decide memo)
        "decide_rps": round(rps("decide")),
        "decide_p99_ms": pct("decide", "p99_us"),
        "errors": errors,
        # Server CPU time per request (µs): steadier than throughput on a shared machine.
        "cpu_us_per_request": cpu_us,
    }
    if args.extra:
        result |= {
            "ratio_pages": round(rps("edge_pages") / rps("bare_pages"), 3),
            "ratio_bare_edge_headers": round(rps("bare_edge_headers") / rps("bare_repeats"), 3),
            "ratio_edge_repeat": round(rps("edge_repeat") / rps("bare_repeats"), 3),
        }
    if granian:
        result |= {
            "edge_granian_rps": round(rps("edge_granian")),
            "bare_granian_rps": round(rps("bare_granian")),
            "ratio_granian": round(rps("edge_granian") / rps("bare_granian"), 3),
        }
    print(json.dumps(result))
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
