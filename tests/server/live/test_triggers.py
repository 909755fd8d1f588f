"""Webhook triggers against a real HTTP server on 127.0.0.1: once per visitor and window across
workers, retried on failure, and never in the way of a decision."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rules import ActionDecision, Webhook
from server.config import LiveSettings
from server.live.store import LiveStore
from server.live.triggers import Triggers


class Hook:
    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict[str, object]] = []
        self.fail_first = fail_first
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if hook.fail_first > 0:
                    hook.fail_first -= 1
                    self.send_response(503)
                else:
                    hook.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"


@pytest.fixture()
def hook() -> Iterator[Hook]:
    h = Hook(fail_first=1)
    thread = threading.Thread(target=h.httpd.serve_forever, daemon=True)
    thread.start()
    yield h
    h.httpd.shutdown()
    h.httpd.server_close()


SETTINGS = LiveSettings(webhook_hosts=["127.0.0.1"], trigger_retries=2, trigger_timeout_s=1.0)


async def _settle(*workers: Triggers, seconds: float = 3.0) -> None:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        done = sum(sum(w.counts.values()) for w in workers)
        if all(not w.queue for w in workers) and done >= 3:
            break
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_once_per_visitor_across_workers_with_a_retry(hook: Hook, tmp_path: Path) -> None:
    store = LiveStore(tmp_path / "live", 16 << 20)
    action = ActionDecision("winback", 10, Webhook(hook.url))
    silent = ActionDecision("newsletter", 1, None)
    a, b = Triggers(store, SETTINGS), Triggers(store, SETTINGS)  # two workers, one node store

    async def run() -> None:
        started = time.perf_counter()
        for _ in range(5):
            a.offer([action, silent], "p:alice", 1000.0)
            b.offer([action], "p:alice", 1000.5)
        a.offer([action], "p:bruno", 1001.0)
        # Offering is a queue append: far below a millisecond even with the hook failing.
        assert time.perf_counter() - started < 0.01
        await _settle(a, b)

    try:
        asyncio.run(run())
    finally:
        store.close()
    visitors = sorted(str(r["visitor"]) for r in hook.received)
    assert visitors == ["p:alice", "p:bruno"]  # alice once, despite two workers and 6 offers
    assert a.counts["sent"] + b.counts["sent"] == 2
    assert a.counts["deduplicated"] + b.counts["deduplicated"] == 1
    assert hook.fail_first == 0  # the first attempt got a 503 and was retried


def test_a_dead_hook_is_counted_and_hosts_are_allowlisted(tmp_path: Path) -> None:
    store = LiveStore(tmp_path / "live", 16 << 20)
    settings = LiveSettings(webhook_hosts=["127.0.0.1"], trigger_retries=1, trigger_timeout_s=0.5)
    t = Triggers(store, settings)
    dead = ActionDecision("x", 1, Webhook("http://127.0.0.1:9/nothing"))
    elsewhere = ActionDecision("y", 1, Webhook("https://hooks.example.com/winback"))

    async def run() -> None:
        t.offer([dead, elsewhere], "p:c", 1.0)
        assert len(t.queue) == 1  # example.com is not allowed: never queued
        task = asyncio.create_task(t.run())
        deadline = time.monotonic() + 3.0
        while not t.counts["failed"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        store.close()
    assert t.counts["failed"] == 1


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    store = LiveStore(tmp_path / "live", 16 << 20)
    t = Triggers(store, LiveSettings(webhook_hosts=["*"], trigger_queue_max=3))
    try:
        action = ActionDecision("z", 1, Webhook("http://127.0.0.1:9/"))
        for i in range(10):
            t.offer([action], f"p:{i}", 0.0)
        assert len(t.queue) == 3 and t.counts["dropped"] == 7
    finally:
        store.close()
