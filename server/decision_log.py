"""The decision log: sampled decisions and every event, as NDJSON, written off the request path.

A request encodes its record (a served decision's: `decide/log_record.py`; an event's: orjson
here) and appends the line to a bounded buffer (a full buffer counts a drop and moves on).
Lines, not dicts: a buffer of bytes holds nothing the cyclic garbage collector walks, where half
a second of dicts (with their lists and nested dicts, ~8 tracked objects each) made every young
collection longer, and encoding a batch of 1 000 at flush time was a burst of work on the event
loop (issue 15 item 4). A background task takes batches of lines and, off the loop, either
appends them to rotating files — one file per worker process, so workers never interleave
lines — or POSTs them to an upstream sink with retries and exponential backoff. A dead sink or a
full disk turns into counted drops, never into a slower or failed decision.

Record shapes (docs/live.md):

    {"t":…, "kind":"decision", "visitor":"p:C1"|null, "site", "country", "hour", "snapshots",
     "key", "segments":[…], "placements":[{"placement","variant","rule","experiment","arm"}],
     "sample": 0.1}
    {"t":…, "kind":"event", "type":"click", "visitor":…|null, "placement", "variant",
     "experiment", "arm", "content_id", "value", "country", "hour"}

Identifiers of visitors without consent are never written: their records carry `"visitor":null`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from .config import DecisionLogSettings

log = logging.getLogger("edgeside.decision_log")

Record = dict[str, Any]


class DecisionLog:
    def __init__(self, settings: DecisionLogSettings, data_dir: str = "") -> None:
        self.settings = settings
        directory = settings.dir
        if directory and not os.path.isabs(directory):
            # Relative to the data directory; without one (an app built in a test) there is
            # nowhere it belongs, so file logging stays off rather than writing into the cwd.
            directory = os.path.join(data_dir, directory) if data_dir else ""
        self.dir = Path(directory) if directory else None
        self.enabled = bool(self.dir or settings.url)
        self.sample_rate = max(0.0, min(1.0, settings.sample_rate))
        self.buffer: collections.deque[bytes] = collections.deque()  # NDJSON lines
        self.written = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self._file: Any = None
        self._file_bytes = 0
        self._file_opened = 0.0
        self._seq = 0
        # Sampling only decides whether to log; a seeded generator per worker is enough.
        self._random = random.Random(os.getpid())

    @property
    def where(self) -> str:
        """Where the log goes, for people: the directory, the sink URL, or `off`."""
        if self.settings.url:
            return self.settings.url
        return str(self.dir) if self.dir is not None else "off"

    # -- request side: append only --------------------------------------------------------------

    def sampled(self) -> bool:
        return self.enabled and (
            self.sample_rate >= 1.0 or self._random.random() < self.sample_rate
        )

    def add(self, record: Record) -> None:
        """Append one record, encoded here (a served decision's comes through `add_line`)."""
        if self._room():
            line = self.encode(record)
            if line:
                self.buffer.append(line + b"\n")

    def encode(self, record: Record) -> bytes:
        """`record` as JSON (no newline), or b"" (counted as a drop) when it does not encode."""
        try:
            return orjson.dumps(record)
        except TypeError:  # orjson.JSONEncodeError: a record our code built wrong; never a 5xx
            log.exception("decision log record not encodable")
            self.dropped["encode_error"] += 1
            return b""

    def add_line(self, line: bytes) -> None:
        """Append one NDJSON line already encoded (a served decision's record, `t` spliced in)."""
        if self._room():
            self.buffer.append(line)

    def _room(self) -> bool:
        """Whether a line may be appended now; a full buffer counts the line as dropped."""
        if not self.enabled:
            return False
        if len(self.buffer) >= self.settings.max_buffer:
            self.dropped["buffer_full"] += 1
            return False
        return True

    # -- background side ------------------------------------------------------------------------

    async def run(self) -> None:
        interval = self.settings.flush_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    async def flush(self) -> None:
        """Send what is buffered: to the sink in POSTs of `batch` lines, to the file in one
        write. A file write takes one thread hand-over per flush, not one per `batch` lines:
        each hand-over makes the event loop give the GIL to the thread and wait to get it back
        (several times: the thread starts, writes, returns), and at ~10 k decisions a second a
        flush every 0.5 s was five of them (issue 15 item 4)."""
        buffer = self.buffer
        while buffer:
            size = len(buffer) if not self.settings.url else min(len(buffer), self.settings.batch)
            batch = [buffer.popleft() for _ in range(size)]
            payload = b"".join(batch)
            if self.settings.url:
                ok = await self._post(payload)
                reason = "sink_down"
            else:
                ok = await asyncio.to_thread(self._write, payload)
                reason = "disk_error"
            if ok:
                self.written += len(batch)
            else:
                self.dropped[reason] += len(batch)

    def _write(self, payload: bytes) -> bool:
        if self.dir is None:
            return False
        try:
            now = time.time()
            s = self.settings
            if self._file is not None and (
                self._file_bytes + len(payload) > s.rotate_bytes
                or now - self._file_opened > s.rotate_s
            ):
                self._file.close()
                self._file = None
            if self._file is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._prune(s.max_total_bytes - len(payload))
                self._seq += 1
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                name = f"decisions-{stamp}-{os.getpid()}-{self._seq}.ndjson"
                self._file = (self.dir / name).open("ab")
                self._file_bytes = 0
                self._file_opened = now
            self._file.write(payload)
            self._file.flush()
            self._file_bytes += len(payload)
            return True
        except OSError as exc:  # ENOSPC and friends: drop the batch, keep deciding
            log.error("decision log write failed: %s", exc)
            try:
                if self._file is not None:
                    self._file.close()
            except OSError:
                pass
            self._file = None
            return False

    def _prune(self, budget: int) -> None:
        """Remove the oldest log files (any worker's) until the rest fit in `budget` bytes: the
        log is on by default and must not fill the disk of a node nobody looks at."""
        if self.dir is None:
            return
        files: list[tuple[float, int, Path]] = []
        for path in self.dir.glob("decisions-*.ndjson"):
            try:
                st = path.stat()
            except OSError:
                continue  # removed by another worker meanwhile
            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= budget:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size

    async def _post(self, payload: bytes) -> bool:
        s = self.settings
        delay = 0.1
        for attempt in range(s.retries + 1):
            try:
                status = await asyncio.to_thread(_post, s.url, payload, s.timeout_s)
                if 200 <= status < 300:
                    return True
            except OSError as exc:
                log.warning("decision log sink failed (attempt %d): %s", attempt + 1, exc)
            if attempt < s.retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return False

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def _post(url: str, payload: bytes, timeout: float) -> int:
    """One POST of an NDJSON batch; the status code (http(s) URLs only, checked at start-up)."""
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=payload, method="POST", headers={"content-type": "application/x-ndjson"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
