"""HTTP throughput of `/v1/edge` against a bare ASGI app, same server, same load, same run.

    python -m bench.http [--duration 10] [--connections 64] [--workers 1] [--rounds 2]

Starts edgeside on the demo snapshots and `bench.bare_app` (a constant 204) under the same uvicorn
settings (uvloop, httptools, no access log), loads each in turn with wrk and a Lua script that
varies visitors, sites and placements, rounds interleaved so drift hits both alike. Also measures
`/v1/decide`, and, when granian is installed, the same two apps under granian (the edgeside app
through its ASGI factory: `edgeside serve` does not offer granian, which does not pay). Last
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
    url: str, seconds: int, connections: int, cookie_file: Path, mode: str, pid: int | None = None
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


def memo_hit_ratios(url: str) -> dict[str, float]:
    """Hit ratio of each memo, from the server's /metrics (one worker's view)."""
    import httpx

    counts: dict[str, dict[str, float]] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("edgeside_memo_lookups_total{"):
            labels, value = line[len("edgeside_memo_lookups_total{") :].split("} ")
            fields = dict(part.split("=") for part in labels.split(","))
            memo, result = fields["memo"].strip('"'), fields["result"].strip('"')
            counts.setdefault(memo, {})[result] = float(value)
    return {
        memo: round(c.get("hit", 0) / total, 3)
        for memo, c in counts.items()
        if (total := c.get("hit", 0) + c.get("miss", 0))
    }


def protocol_share(url: str) -> float | None:
    """Of the `/v1/edge` answers so far, the share the HTTP protocol wrote from a memo."""
    import httpx

    by_protocol = answered = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('edgeside_protocol_answers_total{route="edge"}'):
            by_protocol = float(line.split()[-1])
        elif line.startswith('edgeside_responses_total{route="edge",'):
            answered += float(line.split()[-1])
    return round(by_protocol / answered, 3) if answered else None


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
) -> dict[str, Any]:
    port = free_port()
    log = log_dir / f"bare-{server}-{port}.log"
    with process(bare_argv(port, workers, server, app), log=log, cwd=ROOT) as proc:
        wait_http(f"http://127.0.0.1:{port}/", ok=(204,), proc=proc, log=log)
        return wrk(f"http://127.0.0.1:{port}", seconds, connections, cookies, mode, proc.pid)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--data", help="snapshot store to serve (default: demo, built in a tmp dir)"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.http needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    granian = shutil.which("granian") is not None or _importable("granian")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = Path(args.data) if args.data else tmp / "data"
        if not args.data:
            ensure_demo(data)
        cookie_file = tmp / "cookies.txt"
        cookie_file.write_text("\n".join(demo_cookies()) + "\n")
        asgi_only = tmp / "asgi-only.json"
        asgi_only.write_text('{"protocol_memo": false}')
        runs: dict[str, list[dict[str, Any]]] = {
            "edge": [],
            "edge_asgi": [],
            "bare": [],
            "edge_pages": [],
            "bare_pages": [],
            "decide": [],
            "edge_repeat": [],
            "bare_edge_headers": [],
        }
        memo: dict[str, float] = {}
        share: float | None = None
        if granian:
            runs |= {"edge_granian": [], "bare_granian": []}
        common = (args.duration, args.connections, cookie_file)
        for round_no in range(args.rounds):
            runs["bare"].append(measure_bare(args.workers, "uvicorn", *common, tmp))
            runs["bare_pages"].append(
                measure_bare(args.workers, "uvicorn", *common, tmp, mode="pages")
            )
            runs["bare_edge_headers"].append(
                measure_bare(args.workers, "uvicorn", *common, tmp, app="app_edge_headers")
            )
            with edgeside(data, workers=args.workers, log_dir=tmp) as server:
                wrk(server.url, 2, args.connections, cookie_file, "edge")  # warm-up
                runs["edge"].append(wrk(server.url, *common, "edge", server.proc.pid))
                memo = memo_hit_ratios(server.url)
                share = protocol_share(server.url)
                runs["decide"].append(wrk(server.url, *common, "decide", server.proc.pid))
                runs["edge_repeat"].append(wrk(server.url, *common, "repeat", server.proc.pid))
                runs["edge_pages"].append(wrk(server.url, *common, "pages", server.proc.pid))
            with edgeside(
                data, workers=args.workers, log_dir=tmp, args=["--config", str(asgi_only)]
            ) as server:
                wrk(server.url, 2, args.connections, cookie_file, "edge")  # warm-up
                runs["edge_asgi"].append(wrk(server.url, *common, "edge", server.proc.pid))
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

    errors = sum(r["errors"] + r["status_errors"] for rs in runs.values() for r in rs)
    result: dict[str, Any] = {
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "edge_rps": round(rps("edge")),
        "bare_rps": round(rps("bare")),
        "ratio": round(rps("edge") / rps("bare"), 3),
        "edge_p50_ms": pct("edge", "p50_us"),
        "edge_p99_ms": pct("edge", "p99_us"),
        "edge_p999_ms": pct("edge", "p999_us"),
        # Every page view a proxy forwards: page, referrer, browser, language.
        "edge_pages_rps": round(rps("edge_pages")),
        "bare_pages_rps": round(rps("bare_pages")),
        "ratio_pages": round(rps("edge_pages") / rps("bare_pages"), 3),
        "edge_pages_p99_ms": pct("edge_pages", "p99_us"),
        # The same load with every answer made through the ASGI app (no protocol shortcut).
        "edge_asgi_rps": round(rps("edge_asgi")),
        "ratio_asgi": round(rps("edge_asgi") / rps("bare"), 3),
        "edge_asgi_p99_ms": pct("edge_asgi", "p99_us"),
        "decide_rps": round(rps("decide")),
        "decide_p99_ms": pct("decide", "p99_us"),
        "errors": errors,
        # Where the ceiling is: the bare app sending the five headers /v1/edge sends, and
        # /v1/edge asked one question over and over (every answer a memo hit).
        "bare_edge_headers_rps": round(rps("bare_edge_headers")),
        "ratio_bare_edge_headers": round(rps("bare_edge_headers") / rps("bare"), 3),
        "edge_repeat_rps": round(rps("edge_repeat")),
        "ratio_edge_repeat": round(rps("edge_repeat") / rps("bare"), 3),
        # Server CPU time per request (µs), the same comparison with less noise from neighbours.
        "cpu_us_per_request": {name: cpu(name) for name in runs if runs[name]},
        # Of the last round's edge run, warm-up included: the very same request answered again,
        # and the same decision shared by another request.
        "edge_memo_hit_ratio": memo.get("edge"),
        "decision_memo_hit_ratio": memo.get("decision"),
        "stranger_memo_hit_ratio": memo.get("stranger"),
        # …and of its answers, those the HTTP protocol wrote before any ASGI request.
        "edge_protocol_answer_share": share,
    }
    if granian:
        result |= {
            "edge_granian_rps": round(rps("edge_granian")),
            "bare_granian_rps": round(rps("bare_granian")),
            "ratio_granian": round(rps("edge_granian") / rps("bare_granian"), 3),
        }
    else:
        result["granian"] = "not installed (pip install granian to compare)"
    print(json.dumps(result))
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
