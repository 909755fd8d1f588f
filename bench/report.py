"""Run the benchmark suite; write one results file and one chart (the README's figures, reproduced).

    python -m bench.report            # quick: bounded (a few minutes on 2 cores)
    python -m bench.report --full     # the full runs (long soak, 1 M profiles; tens of minutes)
    python -m bench.report --only load,http --publish
    python -m bench.report --load-from docs/load.json --publish   # reuse a long load run

Each benchmark runs as its own process (`python -m bench.<name> …`) and is read from the JSON
object on its last line; one that fails is recorded with its error and the others still run.
Writes `bench/results/latest.json` and `bench/results/latest.svg` (a self-contained chart: the
latency/throughput curve of `/v1/edge` with the knee, and the soak's memory per worker);
`--publish` also copies both to `docs/results.json` and `docs/results.svg`, which are versioned.
Last line: one JSON object with the headline figures and the paths written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Any

from .procs import ROOT

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"

QUICK: dict[str, list[str]] = {
    "rules": ["--iterations", "3000", "--no-peers"],
    "http": ["--duration", "3", "--rounds", "1", "--workers", "2"],
    "load": [
        "--rates", "250,1000,2000,4000,6000,max", "--step-s", "3", "--soak-s", "15",
        "--locust-users", "10", "--locust-s", "5",
    ],
    "snapshots": ["--profiles", "10000,100000", "--lookups", "5000"],
    "swap": ["--swaps", "2", "--profiles", "0", "--phase", "2"],
}  # fmt: skip
FULL: dict[str, list[str]] = {
    "rules": [],
    "http": ["--duration", "10", "--rounds", "2", "--workers", "2"],
    "load": ["--step-s", "10", "--soak-s", "600", "--locust-users", "10,50,100"],
    "snapshots": ["--profiles", "10000,1000000"],
    "swap": [],
}
TIMEOUT_S = {"quick": 600, "full": 7200}


def run_bench(name: str, args: list[str], timeout: float, work: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", f"bench.{name}", *args]
    if name in ("snapshots", "swap"):
        argv += ["--workdir", str(work / name)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "argv": argv[1:]}
    seconds = round(time.monotonic() - started, 1)
    lines = [x for x in done.stdout.splitlines() if x.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stdout + done.stderr)[-1500:]
        return {"error": f"exit {done.returncode}, no JSON last line", "tail": tail}
    return {"seconds": seconds, "argv": argv[1:], "result": result}


def headline(benches: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures the README quotes, picked from each benchmark's result."""

    def get(name: str, *path: str) -> Any:
        node: Any = benches.get(name, {}).get("result")
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    soak = get("load", "soak") or {}
    growth = [w.get("anon_growth_kb") for w in (soak.get("workers") or {}).values()]
    knee = get("load", "knee") or {}
    return {
        "rule_eval_p50_us": get("rules", "placement50_p50_us"),
        "decision3_p50_us": get("rules", "decision3_p50_us"),
        "decision3_p99_us": get("rules", "decision3_p99_us"),
        "edge_rps": get("http", "edge_rps"),
        "edge_vs_bare_ratio": get("http", "ratio"),
        "edge_p99_ms": get("http", "edge_p99_ms"),
        "load_max_rps": get("load", "max_rps"),
        "load_knee_offered_rps": knee.get("offered_rps"),
        "load_errors": get("load", "errors"),
        "soak_s": soak.get("seconds"),
        "soak_requests": soak.get("requests"),
        "soak_anon_growth_kb_max": max(growth) if growth else None,
        "build_records_per_s": get("snapshots", "build_records_per_s"),
        "lookup_ratio_largest_smallest": get("snapshots", "lookup_ratio_largest_smallest"),
        "swap_failed_requests": get("swap", "failed_requests"),
        "swap_staleness_s": get("swap", "staleness_s"),
    }


# -- the chart ------------------------------------------------------------------------------------

W, H = 880, 380
PANEL = 400


def _polyline(points: list[tuple[float, float]], color: str, width: float = 2) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{pts}"/>'


def _axes(x0: float, y0: float, w: float, h: float, xlabel: str, ylabel: str, title: str) -> str:
    return (
        f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fafafa" stroke="#999"/>'
        f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle">{escape(xlabel)}</text>'
        f'<text x="{x0 - 44}" y="{y0 + h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 - 44} {y0 + h / 2})">{escape(ylabel)}</text>'
        f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="bold">'
        f"{escape(title)}</text>"
    )


def _ticks(x0: float, y0: float, w: float, h: float, xmax: float, ymax: float) -> str:
    out = []
    for i in range(5):
        fx, fy = i / 4, i / 4
        out.append(
            f'<text x="{x0 + fx * w:.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="10">'
            f"{xmax * fx:.0f}</text>"
            f'<text x="{x0 - 6}" y="{y0 + h - fy * h + 3:.1f}" text-anchor="end" font-size="10">'
            f"{ymax * fy:.1f}</text>"
        )
    return "".join(out)


def chart(results: dict[str, Any]) -> str:
    """Left: /v1/edge p50 and p99 against achieved rate, the knee marked. Right: each worker's
    private memory (RssAnon) over the soak."""
    load = results["benches"].get("load", {}).get("result") or {}
    steps = load.get("steps") or []
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    x0, y0, w, h = 70.0, 40.0, 320.0, 270.0
    parts.append(_axes(x0, y0, w, h, "achieved requests/s", "latency (ms)", "/v1/edge under load"))
    if steps:
        xmax = max(s["achieved_rps"] for s in steps) * 1.05 or 1
        ymax = max(s["p99_ms"] for s in steps) * 1.1 or 1
        parts.append(_ticks(x0, y0, w, h, xmax, ymax))

        def xy(s: dict[str, Any], key: str) -> tuple[float, float]:
            return x0 + s["achieved_rps"] / xmax * w, y0 + h - s[key] / ymax * h

        ordered = sorted(steps, key=lambda s: s["achieved_rps"])
        parts.append(_polyline([xy(s, "p50_ms") for s in ordered], "#1f77b4"))
        parts.append(_polyline([xy(s, "p99_ms") for s in ordered], "#d62728"))
        knee = load.get("knee")
        if knee:
            kx, ky = xy(knee, "p99_ms")
            parts.append(f'<circle cx="{kx:.1f}" cy="{ky:.1f}" r="6" fill="none" stroke="black"/>')
            parts.append(f'<text x="{kx + 8:.1f}" y="{ky - 8:.1f}">knee</text>')
        parts.append(
            f'<text x="{x0 + 8}" y="{y0 + 16}" fill="#1f77b4">p50</text>'
            f'<text x="{x0 + 40}" y="{y0 + 16}" fill="#d62728">p99</text>'
        )
    x0 = 70.0 + PANEL + 40
    soak = load.get("soak") or {}
    title = f"soak: worker private memory ({soak.get('seconds', 0):.0f} s)"
    parts.append(_axes(x0, y0, w, h, "seconds", "RssAnon (MB)", title))
    workers = soak.get("workers") or {}
    series = [w_["anon_series_kb"] for w_ in workers.values() if w_.get("anon_series_kb")]
    if series:
        n = max(len(s) for s in series)
        ymax = max(max(s) for s in series) / 1024 * 1.2
        parts.append(_ticks(x0, y0, w, h, n, ymax))
        for color, s in zip(("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"), series, strict=False):
            pts = [
                (x0 + i / max(n - 1, 1) * w, y0 + h - v / 1024 / ymax * h) for i, v in enumerate(s)
            ]
            parts.append(_polyline(pts, color))
    stamp = escape(f"{results['mode']} run, {results['finished_at']}, {results['machine']['cpus']}"
                   f" CPUs, python {results['machine']['python']}")  # fmt: skip
    parts.append(f'<text x="10" y="{H - 8}" font-size="10" fill="#555">{stamp}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the long runs instead of quick ones")
    parser.add_argument("--only", default="", help="comma list of: " + ",".join(QUICK))
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--publish", action="store_true", help="also write docs/results.*")
    parser.add_argument(
        "--load-from",
        type=Path,
        help="take bench.load's result from this JSON file (e.g. docs/load.json, a long run) "
        "instead of running it",
    )
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    plan = FULL if args.full else QUICK
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(plan)
    unknown = sorted(set(names) - set(plan))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {sorted(plan)}")
    benches: dict[str, dict[str, Any]] = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name == "load" and args.load_from:
                result = json.loads(args.load_from.read_text())
                benches[name] = {"seconds": 0, "reused": str(args.load_from), "result": result}
                continue
            print(f"bench.{name} {' '.join(plan[name])} …", file=sys.stderr, flush=True)
            benches[name] = run_bench(name, plan[name], TIMEOUT_S[mode], Path(tmp))
            state = benches[name].get("error") or f"{benches[name]['seconds']} s"
            print(f"  {state}", file=sys.stderr, flush=True)
    results: dict[str, Any] = {
        "mode": mode,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "headline": headline(benches),
        "benches": benches,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    svg = args.out.with_suffix(".svg")
    svg.write_text(chart(results))
    written = [str(args.out), str(svg)]
    if args.publish:
        shutil.copyfile(args.out, DOCS / "results.json")
        shutil.copyfile(svg, DOCS / "results.svg")
        written += [str(DOCS / "results.json"), str(DOCS / "results.svg")]
    failed = sorted(n for n, b in benches.items() if "error" in b)
    print(json.dumps({"mode": mode, "headline": results["headline"], "failed": failed,
                      "written": written}))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
