"""Helpers of the fleet tests: nodes as real `edgeside serve` processes joined by one broker."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Edgeside, free_port, process, wait_http

ADMIN_TOKEN = "fleet-admin-token"
# One client for every request of the tests: a client per request builds an SSL context each
# time (~0.2 s of CPU), which made polling loops slower than what they measure.
HTTP = httpx.Client(timeout=15.0)  # generous: a node on a loaded 2-core machine can stall
CART_DECIDE = {
    "visitor": {"ids": {"cookie": "c-alice"}},
    "context": {"site": "shop-fr"},
    "placements": ["cart_upsell"],
}


def node_config(path: Path, broker: str, node: str, **fleet: Any) -> Path:
    extra = "".join(f"  {k}: {v!r}\n" for k, v in fleet.items())
    path.write_text(
        f"fleet:\n  broker: {broker!r}\n  node: {node!r}\n  heartbeat_s: 0.5\n"
        f"  stale_after_s: 5.0\n{extra}"
    )
    return path


def start_all(
    stack: ExitStack, specs: list[tuple[Path, list[str], dict[str, str]]], ready: bool = True
) -> list[Edgeside]:
    """Start `edgeside serve` for every (data, args, env) at once, then wait for each: nodes start
    side by side, as a fleet does (one after the other costs a start-up each)."""
    starting = []
    for data, args, env in specs:
        port = free_port()
        argv = [sys.executable, "-m", "server.cli", "serve", "--data", str(data)]
        argv += ["--port", str(port), "--workers", "1", *args]
        log = data / f"edgeside-{port}.log"
        full_env = {"EDGESIDE_LOG_LEVEL": "warning", **env}
        proc = stack.enter_context(process(argv, log=log, env=full_env))
        starting.append(Edgeside(proc, f"http://127.0.0.1:{port}", log))
    for node in starting:
        path = "/readyz" if ready else "/healthz"
        wait_http(node.url + path, timeout=60.0, proc=node.proc, log=node.log)
    return starting


@contextmanager
def fleet_nodes(
    broker: str,
    make_data: Callable[[str], Path],
    names: list[str],
    workers: int = 1,
    ready: bool = True,
    **fleet: Any,
) -> Iterator[list[Edgeside]]:
    with ExitStack() as stack:
        specs = []
        for name in names:
            data = make_data(name)
            config = node_config(data / "fleet.yaml", broker, name, **fleet)
            args = ["--config", str(config), "--workers", str(workers)]
            specs.append((data, args, {"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}))
        yield start_all(stack, specs, ready)


def variant(url: str, body: dict[str, Any] = CART_DECIDE) -> str:
    answer = HTTP.post(url + "/v1/decide", json=body).json()
    return str(answer["placements"][0]["variant"])


def post_events(url: str, events: list[dict[str, Any]]) -> httpx.Response:
    return HTTP.post(url + "/v1/events", json={"events": events})


def cart_event(cookie: str = "c-alice", **extra: Any) -> dict[str, Any]:
    return {
        "type": "add_to_cart",
        "visitor": {"ids": {"cookie": cookie}},
        "content_id": "p-tent-1",
        "category": "camping",
        **extra,
    }


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until `check()` held; AssertionError after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true after {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def metric(url: str, name: str) -> float:
    text = HTTP.get(url + "/metrics", timeout=5.0).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric_line(url: str, name: str, labels: str) -> float:
    text = HTTP.get(url + "/metrics", timeout=5.0).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
