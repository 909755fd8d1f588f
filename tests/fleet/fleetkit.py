"""Helpers of the fleet tests: nodes as real `edgeside serve` processes joined by one broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Edgeside, edgeside

ADMIN_TOKEN = "fleet-admin-token"
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
        nodes = []
        for name in names:
            data = make_data(name)
            config = node_config(data / "fleet.yaml", broker, name, **fleet)
            nodes.append(
                stack.enter_context(
                    edgeside(
                        data,
                        workers=workers,
                        args=["--config", str(config)],
                        env={"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN},
                        ready=ready,
                    )
                )
            )
        yield nodes


def variant(url: str, body: dict[str, Any] = CART_DECIDE) -> str:
    with httpx.Client(base_url=url, timeout=5.0) as client:
        answer = client.post("/v1/decide", json=body).json()
    return str(answer["placements"][0]["variant"])


def post_events(url: str, events: list[dict[str, Any]]) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=5.0) as client:
        return client.post("/v1/events", json={"events": events})


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
    text = httpx.get(url + "/metrics", timeout=5.0).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric_line(url: str, name: str, labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5.0).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
