"""The Impact page's replay as one streamed answer: progress lines, then the report.

A replay over the last 100 000 logged decisions takes seconds to minutes, and the page should say
how far it got and how long is left (issue 19). The answer is NDJSON — one JSON object a line —
on the request that asked for it, not a job polled by id: a node runs several worker processes,
and a poll could land on a worker that never saw the job. Lines, in order:

    {"progress": {"phase": "read", "done": n, "total": N, "elapsed_s": s, "eta_s": null}}
    {"progress": {"phase": "replay", "done": n, "total": N, "elapsed_s": s, "eta_s": s}}  (about
        `impact.PROGRESS_STEPS` of them, the last with done == total)
    {"result": ImpactReport}                    the last line when the replay finished
    {"error": {"code": …, "message": …}}        the last line when it failed after the answer began

The work runs in a thread. A browser that goes away stops it at its next progress report, so a
closed page does not leave a replay running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

log = logging.getLogger("edgeside.console")

MEDIA_TYPE = "application/x-ndjson"

# (phase, done, total): what the work calls to report; it raises `Stopped` once nobody listens.
Report = Callable[[str, int, int], None]


class ProgressLine(msgspec.Struct):
    phase: str  # "read": the log's newest files are read; "replay": decisions are decided again
    done: int
    total: int
    elapsed_s: float  # since the answer began
    eta_s: float | None  # the replay's remaining time at its rate so far; None while unknown


class Stopped(Exception):
    """The client went away: the work stops where it reports next."""


_encode = msgspec.json.Encoder().encode


def _line(obj: Any) -> bytes:
    return _encode(obj) + b"\n"


def wants_stream(accept: str) -> bool:
    """Whether a request's `Accept` asks for the streamed form (the JSON form stays the default)."""
    return MEDIA_TYPE in accept


async def stream(
    work: Callable[[Report], Any], hold: Callable[[], Callable[[], None]]
) -> AsyncIterator[bytes]:
    """Run `work(report)` in a thread and yield its progress lines, then its result's line.

    `hold()` is called when the answer begins and returns its release, called once the thread is
    done (on the event loop) whether the work finished, failed or was stopped: the console holds
    the worker's current world so a rules activation mid-replay cannot close what it reads."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    stop = threading.Event()
    started = time.monotonic()
    replay_started: list[float] = []

    def put(item: bytes | None) -> None:
        try:
            loop.call_soon_threadsafe(lines.put_nowait, item)
        except RuntimeError:  # the loop closed (the server is stopping): nobody reads any more
            stop.set()

    def report(phase: str, done: int, total: int) -> None:
        if stop.is_set():
            raise Stopped
        now = time.monotonic()
        eta = None
        if phase == "replay":
            if not replay_started:
                replay_started.append(now)
            spent = now - replay_started[0]
            if done > 0:
                eta = round(spent / done * (total - done), 1)
        put(_line({"progress": ProgressLine(phase, done, total, round(now - started, 3), eta)}))

    def job() -> None:
        last: bytes | None = None
        try:
            last = _line({"result": work(report)})
        except Stopped:
            pass
        except Exception as exc:  # the answer has begun: the failure is its last line, no 5xx
            log.exception("impact replay failed")
            last = _line({"error": {"code": "replay_failed", "message": str(exc)[:500]}})
        if last is not None:
            put(last)
        put(None)

    release = hold()
    task = asyncio.ensure_future(asyncio.to_thread(job))
    task.add_done_callback(lambda _: release())
    try:
        while (item := await lines.get()) is not None:
            yield item
    finally:
        stop.set()
