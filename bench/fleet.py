"""The fleet on one machine: N edgeside nodes, one nats-server, one S3-compatible server.

    python -m bench.fleet [--nodes 20] [--samples 20] [--outage 10] [--rate 100] [--no-inline]

Starts `nats-server -js`, moto's S3 server and `--nodes` edgeside processes (one worker each, each
its own data directory, all following the same broker and bucket, signing key on), then, with a
steady `/v1/edge` load spread over every node the whole time (`--rate` requests/s in total):

1. publishes a new signed rules snapshot (`snapshot publish` to S3 + announcement) and measures
   `converge_s_max`: from the start of the upload until the last node switched to the version —
   each node's own switch time (its `edgeside_snapshot_loaded_timestamp_seconds` for rules, read
   once all serve the version), so how often the bench looks at 50 nodes neither adds to the
   figure nor takes much of their CPU (once a second, in order, up to the first node not on it
   yet); `converge_s_p50` the median
   node; `activation_cpu_ms_per_node` the CPU one activation cost a node (all nodes' CPU during
   convergence, less their rate serving the same load just before, over the nodes);
   `s3_archive_gets_per_node` the archives the nodes downloaded from object storage meanwhile
   (0 when the archive rode in the announcement, `inline`; `--no-inline` announces the pointer
   only, as for a snapshot over 128 KiB, and each node GETs the archive);
2. posts `--samples` cart events, each on one node, and measures until another node's next
   `/v1/decide` changes (`event_to_decision_s_p99`; the samples move over source and target nodes);
3. stops the broker for `--outage` seconds under the same load, posts events on one node meanwhile,
   restarts the broker and measures `catch_up_s`: from the restart until three other nodes decide
   with every one of those events; `outage_failed_requests` counts failures during the outage.

`failed_requests`: load requests that were not a 204 (or failed at the socket) over the whole run.
`load_avg`: the machine's 1-minute load average before the nodes started and at the end (the
figures are CPU-bound on a machine shared by every node: read them with it). Loopback only;
bounded in time (about 1 + nodes × 0.1 minutes on an idle 2-core machine). Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from server.offline.demo import DEMO_DIR, ensure_demo
from server.offline.rules_snapshot import build_rules_snapshot
from snapshots import objstore

from .brokers import Nats, nats_binary, s3_server
from .procs import cpu_seconds, free_port, process, wait_http

KEY = "bench-fleet-signing-key"
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "s3://edgeside-bench/fleet"
SITE_DECIDE = {"context": {"site": "shop-fr"}, "placements": ["cart_upsell"]}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Load:
    """A steady, paced `/v1/edge` load over every node, in a process of its own (in a thread it
    would share the GIL with the measuring loops and fall far below its rate). Each result is
    kept with its (system-wide monotonic) time, so failures can be told apart by phase."""

    def __init__(self, urls: list[str], rate: float, out: Path) -> None:
        self.urls = urls
        self.rate = rate
        self.out = out
        self.results: list[tuple[float, bool]] = []
        self.reasons: dict[str, int] = {}  # what the failures were
        self.started = self.stopped = 0.0
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_load_main, args=(urls, rate, str(out), self._stop))

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        if self._proc.pid is None or self.started:
            return
        self._stop.set()
        self._proc.join(timeout=60)
        body = json.loads(self.out.read_text())
        self.started, self.stopped = body["started"], body["stopped"]
        self.results = [(t, ok) for t, ok in body["results"]]
        self.reasons = body["reasons"]

    def failed(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for t, ok in self.results if since <= t <= until and not ok)


def _load_main(urls: list[str], rate: float, out: str, stop: Any) -> None:
    results: list[tuple[float, bool]] = []
    reasons: dict[str, int] = {}

    async def one(client: httpx.AsyncClient, url: str, n: int) -> None:
        headers = {"X-Placements": "home_hero,cart_upsell", "X-Site": "shop-fr"}
        headers["Cookie"] = f"edgeside_id=load-{n % 500}"
        sent = time.monotonic()
        try:
            answer = await client.get(url + "/v1/edge", headers=headers)
            ok = answer.status_code == 204
            why = f"status {answer.status_code}"
        except httpx.HTTPError as exc:
            ok = False
            why = type(exc).__name__
        if not ok:
            reasons[why] = reasons.get(why, 0) + 1
        results.append((sent, ok))

    async def paced() -> None:
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: with
        # httpx's default (also 5 s) a request races the server's close and fails unsent
        # (RemoteProtocolError) — seen at 50 nodes, where each node got a request every ~10 s.
        # A proxy in front of a node does the same (idle timeout below the origin's).
        limits = httpx.Limits(
            max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0
        )
        async with httpx.AsyncClient(timeout=5.0, limits=limits) as client:
            n = 0
            pending: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            while not stop.is_set():
                task = asyncio.create_task(one(client, urls[n % len(urls)], n))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                # Paced, not closed-loop: a slow node does not slow the offered load.
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            await asyncio.gather(*pending, return_exceptions=True)

    started = time.monotonic()
    asyncio.run(paced())
    body = {"started": started, "stopped": time.monotonic(), "results": results, "reasons": reasons}
    Path(out).write_text(json.dumps(body))


def decide_variant(client: httpx.Client, url: str, cookie: str) -> str:
    body = dict(SITE_DECIDE, visitor={"ids": {"cookie": cookie}})
    answer = client.post(url + "/v1/decide", json=body)
    return str(answer.json()["placements"][0]["variant"])


def post_cart(client: httpx.Client, url: str, cookie: str) -> None:
    event = {
        "type": "add_to_cart",
        "visitor": {"ids": {"cookie": cookie}},
        "content_id": "p-tent-1",
        "category": "camping",
    }
    answer = client.post(url + "/v1/events", json={"events": [event]})
    if answer.status_code != 202:
        raise RuntimeError(f"event refused: {answer.status_code} {answer.text}")


def rules_version(client: httpx.Client, url: str) -> str | None:
    """The rules version a node serves (None while it does not answer)."""
    try:
        body = client.get(url + "/readyz").json()
    except (httpx.HTTPError, ValueError):
        return None
    rules = next(s for s in body["snapshots"] if s["kind"] == "rules")
    return str(rules["version"]) if rules["version"] else None


def rules_loaded_at(client: httpx.Client, url: str) -> tuple[float, float]:
    """When the node switched to the rules it serves: its own wall-clock stamp (one machine, one
    clock), read from /metrics — exact, whatever the time a look at the node takes; and how many
    archives it has downloaded from object storage so far."""
    loaded: float | None = None
    gets = 0.0
    for line in client.get(url + "/metrics").text.splitlines():
        if line.startswith('edgeside_snapshot_loaded_timestamp_seconds{kind="rules"}'):
            loaded = float(line.rsplit(" ", 1)[1])
        elif line.startswith('edgeside_fleet_s3_requests_total{request="archive"}'):
            gets = float(line.rsplit(" ", 1)[1])
    if loaded is None:
        raise RuntimeError(f"{url}: no rules load time in /metrics")
    return loaded, gets


def converge(
    urls: list[str], tar_dir: Path, s3_url: str, broker: str, timeout: float, inline: bool
) -> tuple[list[float], float, float]:
    """Publish a new rules snapshot: (seconds until each node served it, of which publishing,
    archives the nodes have downloaded from object storage by then, in all). `inline`: the
    archive travels in the announcement as `snapshot publish` sends it (else only the pointer:
    each node GETs it)."""
    src = tar_dir / "rules.yaml"
    src.write_text((DEMO_DIR / "rules.yaml").read_text() + f"\n# bench {time.time()}\n")
    out = tar_dir / f"rules-{time.time_ns()}"
    if build_rules_snapshot(src, out, KEY.encode()) != 0:
        raise RuntimeError("rules did not build")
    # Set-up of the publishing process, not publishing: botocore loads its service models,
    # nats-py takes ~0.5 s to import.
    s3 = objstore.client(s3_url)
    import nats  # noqa: F401

    t0 = time.time()  # wall clock: the nodes' switch times are on it (one machine, one clock)
    pointer, archive = objstore.publish_inline(out, BUCKET, s3)
    log(f"uploaded in {time.time() - t0:.3f}s")
    asyncio.run(objstore.announce(broker, "edgeside", pointer, archive=archive if inline else None))
    published = time.time() - t0
    switched: set[str] = set()
    with httpx.Client(timeout=5.0) as client:
        while len(switched) < len(urls):
            if time.time() - t0 > timeout:
                missing = len(urls) - len(switched)
                raise TimeoutError(f"{missing} nodes not on {pointer.version}")
            # Only to know when all are done: the figure is each node's own switch time, so a
            # look every second is enough, and 50 nodes are not asked 200 times a second while
            # they activate (the looks took CPU from them). Each second the nodes are looked at
            # in order up to the first that does not serve the version yet: while they activate
            # that is one look, not one per node.
            time.sleep(1.0)
            for u in urls:
                if u in switched:
                    continue
                if rules_version(client, u) != pointer.version:
                    break
                switched.add(u)
        looks = [rules_loaded_at(client, u) for u in urls]
    took = sorted(loaded - t0 for loaded, _ in looks)
    return took, published, sum(gets for _, gets in looks)


def archive_gets(urls: list[str]) -> float:
    """Archives the nodes have downloaded from object storage so far, in all."""
    with httpx.Client(timeout=5.0) as client:
        return sum(rules_loaded_at(client, u)[1] for u in urls)


def nodes_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def idle_cpu_rate(pids: list[int], window: float) -> float:
    """CPU seconds per second the nodes use serving the load, with nothing being activated."""
    before, t = nodes_cpu(pids), time.monotonic()
    time.sleep(window)
    return (nodes_cpu(pids) - before) / (time.monotonic() - t)


def settle(urls: list[str], timeout: float) -> None:
    """Until every node is connected and has polled the pointers once: a node's first poll builds
    its S3 client (botocore's models, ~0.3 s of CPU), and 50 nodes doing that while the snapshot
    is published would be start-up measured as convergence."""
    waiting = set(urls)
    t0 = time.monotonic()
    with httpx.Client(timeout=10.0) as client:
        while waiting:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{len(waiting)} nodes not settled after {timeout}s")
            for u in sorted(waiting):
                text = client.get(u + "/metrics").text
                up = "edgeside_fleet_broker_up 1" in text
                polled = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("edgeside_fleet_snapshots_total{")
                )
                if up and polled >= 3:
                    waiting.discard(u)
            time.sleep(0.5)
    time.sleep(1.0)  # the last one's poll is over, not just counted


def event_latencies(urls: list[str], samples: int, timeout: float) -> list[float]:
    out: list[float] = []
    n = len(urls)
    with httpx.Client(timeout=5.0) as client:
        for i in range(samples):
            src, dst = urls[i % n], urls[(i + max(1, n // 2)) % n]
            cookie = f"bench-{time.time_ns()}-{i}"
            if decide_variant(client, dst, cookie) != "none":
                raise RuntimeError("a fresh visitor already has a cart")
            post_cart(client, src, cookie)
            t0 = time.monotonic()
            while decide_variant(client, dst, cookie) == "none":
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"event on {src} not seen on {dst} after {timeout}s")
                time.sleep(0.005)
            out.append(time.monotonic() - t0)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Node:
    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self.pid = pid


def start_nodes(stack: ExitStack, n: int, work: Path, broker: str, s3_url: str) -> list[Node]:
    base = work / "demo"
    ensure_demo(base, KEY.encode())
    env = {"EDGESIDE_SIGNING_KEY": KEY, "EDGESIDE_LOG_LEVEL": "warning", **AWS}

    def start(i: int) -> tuple[str, Any, Path]:
        data = work / f"node-{i:03d}"
        port = free_port()
        argv = [sys.executable, "-m", "server.cli", "serve", "--data", str(data)]
        argv += ["--port", str(port), "--workers", "1", "--config", str(data / "fleet.yaml")]
        log_path = data / f"edgeside-{port}.log"
        proc = stack.enter_context(process(argv, log=log_path, env=env))
        return f"http://127.0.0.1:{port}", proc, log_path

    starting: list[tuple[str, Any, Path]] = []
    for i in range(n):
        data = work / f"node-{i:03d}"
        shutil.copytree(base, data, symlinks=True)
        (data / "fleet.yaml").write_text(
            "fleet:\n"
            f"  broker: {broker!r}\n  node: 'n{i:03d}'\n  snapshots_from: {BUCKET!r}\n"
            f"  s3_endpoint: {s3_url!r}\n  poll_interval_s: 30.0\n"
        )
        starting.append(start(i))
    nodes: list[Node] = []
    for i, (url, proc, log_path) in enumerate(starting):
        for attempt in range(1, 4):
            try:
                wait_http(url + "/readyz", timeout=120.0, proc=proc, log=log_path)
                break
            except RuntimeError as exc:
                # The port was free when chosen and taken before the node bound it (another
                # process on the machine): start this node again on another port.
                if "address already in use" not in str(exc).lower() or attempt == 3:
                    raise
                log(f"node {i}: {url} was taken meanwhile; starting it on another port")
                url, proc, log_path = start(i)
        nodes.append(Node(url, proc.pid))
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="load requests/s in total")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--no-inline",
        action="store_true",
        help="announce the pointer only, so every node downloads the archive from object storage "
        "(as for a snapshot over 128 KiB; by default a rules snapshot rides in the announcement)",
    )
    args = parser.parse_args(argv)
    binary = nats_binary()
    if binary is None:
        print("nats-server is not installed (apt-get install nats-server)", file=sys.stderr)
        return 2
    os.environ.update(AWS)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgeside-fleet-"))
    result: dict[str, Any] = {"nodes": args.nodes}
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        with ExitStack() as stack:
            s3 = stack.enter_context(s3_server(work / "s3"))
            objstore.client(s3.url).create_bucket(Bucket=objstore.parse_url(BUCKET)[0])
            broker = Nats(binary, work / "nats")
            broker.start()
            stack.callback(broker.stop)
            t = time.monotonic()
            nodes = start_nodes(stack, args.nodes, work, broker.url, s3.url)
            urls = [node.url for node in nodes]
            log(f"{len(urls)} nodes ready in {time.monotonic() - t:.1f}s")
            settle(urls, 180.0)
            log(f"{len(urls)} nodes connected and past their first poll")
            load = Load(urls, args.rate, work / "load.json")
            load.start()
            stack.callback(load.stop)

            pids = [node.pid for node in nodes]
            gets_before = archive_gets(urls)  # before the CPU is measured: 50 looks cost some
            idle = idle_cpu_rate(pids, 2.0)
            cpu0, w0 = nodes_cpu(pids), time.monotonic()
            inline = not args.no_inline
            took, published, gets = converge(urls, work, s3.url, broker.url, 60.0, inline)
            cpu = nodes_cpu(pids) - cpu0 - idle * (time.monotonic() - w0)
            result["converge_s_max"] = round(took[-1], 3)
            result["converge_s_p50"] = round(statistics.median(took), 3)
            result["publish_s"] = round(published, 3)
            result["inline"] = inline
            result["s3_archive_gets_per_node"] = round((gets - gets_before) / len(nodes), 2)
            # What one activation costs a node in CPU (beyond what serving the load costs it):
            # the lever at 50 nodes on 2 cores, and steadier than the time on a shared machine.
            result["activation_cpu_ms_per_node"] = round(cpu / len(nodes) * 1000, 1)
            log(f"converged in {result['converge_s_max']}s")

            lat = event_latencies(urls, args.samples, 10.0)
            result["event_to_decision_s_p99"] = round(percentile(lat, 0.99), 3)
            result["event_to_decision_s_p50"] = round(statistics.median(lat), 3)
            log(f"event to decision: p50 {result['event_to_decision_s_p50']}s")

            outage_start = time.monotonic()
            broker.stop()
            cookies = [f"outage-{time.time_ns()}-{i}" for i in range(5)]
            with httpx.Client(timeout=5.0) as client:
                for cookie in cookies:
                    post_cart(client, urls[0], cookie)
                    time.sleep(args.outage / (len(cookies) + 1))
                time.sleep(max(0.0, outage_start + args.outage - time.monotonic()))
                outage_end = time.monotonic()
                broker.start()
                restarted = time.monotonic()
                watchers = sorted({urls[1 % len(urls)], urls[len(urls) // 2], urls[-1]})
                waiting = {(u, c) for u in watchers for c in cookies}
                while waiting:
                    if time.monotonic() - restarted > 60.0:
                        raise TimeoutError(f"{len(waiting)} events not caught up")
                    waiting = {(u, c) for u, c in waiting if decide_variant(client, u, c) == "none"}
                    time.sleep(0.02)
            result["catch_up_s"] = round(time.monotonic() - restarted, 3)
            log(f"caught up {result['catch_up_s']}s after the broker restarted")
            time.sleep(1.0)
            load.stop()
            result["outage_failed_requests"] = load.failed(outage_start, outage_end)
            result["failed_requests"] = load.failed()
            result["load_requests"] = len(load.results)
            # What the load generator achieved (it shares the machine with every node).
            result["load_rps"] = round(len(load.results) / (load.stopped - load.started), 1)
            result["failed_reasons"] = load.reasons
            result["load_avg"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            result["bench_s"] = round(time.monotonic() - began, 1)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
