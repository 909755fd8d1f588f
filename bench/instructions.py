"""Instructions per realistic `/v1/edge` request, counted by valgrind: a figure the machine's load
does not move.

    python -m bench.instructions [--tree DIR ...] [--small 500] [--large 2500] [-- ARGS...]

CPU time per request drifts by ±25 % on a shared VM between runs, and a change worth 3 % cannot be
told from that without many interleaved pairs. The instructions a request executes hardly depend
on neighbours: this runs `bench.edge_inprocess` (ARGS are passed on, e.g. `--wire`) under
`valgrind --tool=cachegrind` at two sizes and divides the difference in instructions by the
difference in requests, so start-up (building the app, opening the store) cancels out; the same
with `--make-only` (in this checkout) is what making the requests costs, subtracted. Each `--tree`
is another checkout of the code (its own `bench/`, `server/`, …) counted the same way with this
interpreter: old and new side by side, as `ratio` (each tree's count over the first's). Needs
valgrind (`apt-get install valgrind`); ~2 minutes per tree. Instructions are not time — a cache
miss or a system call costs no more of them — so pair this with the CPU figures of `bench.http`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .procs import ROOT

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(output: str) -> int:
    """The total of `I refs` in valgrind's (cachegrind's) report."""
    found = _REFS.search(output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{output[-2000:]}")
    return int(found.group(1).replace(",", ""))


def count(tree: Path, requests: int, args: list[str]) -> int:
    """Instructions of one `bench.edge_inprocess` run in `tree`: a warm-up and one batch, each
    of `requests`."""
    argv = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "bench.edge_inprocess",
        "--batches", "1", "--requests", str(requests), *args,
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {tree}:\n{done.stderr[-2000:]}")
    return instructions(done.stderr)


def per_request(tree: Path, small: int, large: int, args: list[str]) -> float:
    """Instructions per request in `tree`: the two sizes' difference over their requests'."""
    return (count(tree, large, args) - count(tree, small, args)) / (2 * (large - small))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout (default: this)")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeside-bench"
    )
    parser.add_argument("rest", nargs="*", help="passed on to bench.edge_inprocess (after --)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    if not args.small < args.large:
        parser.error("--small must be less than --large")
    trees: list[Path] = args.tree or [ROOT]
    passed = ["--cache", str(args.cache), *args.rest]
    # Making the requests is the same work in every tree: counted once, in this one.
    making = per_request(ROOT, args.small, args.large, [*passed, "--make-only"])
    counts = {
        str(tree): round(per_request(tree, args.small, args.large, passed) - making)
        for tree in trees
    }
    first = counts[str(trees[0])]
    print(
        json.dumps(
            {
                "instructions_per_request": counts,
                "ratio": {tree: round(n / first, 4) for tree, n in counts.items()},
                "making_a_request": round(making),
                "args": args.rest,
                "sizes": [args.small, args.large],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
