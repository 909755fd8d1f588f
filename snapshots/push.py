"""Client side of the admin API: push a snapshot to many nodes, show status, roll back.

Standard library only (http.client), so the snapshot tooling runs on a build box without the
server's dependencies. Uploads stream the .tar from disk; nodes are contacted concurrently.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshots.archive import pack
from snapshots.manifest import read_manifest

ADMIN = "/v1/admin/snapshots"


@dataclass
class NodeResult:
    node: str
    status: int  # HTTP status; 0 when the node could not be reached
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def line(self) -> str:
        if self.ok:
            b = self.body
            if "version" in b:
                timing = b.get("timings_ms", {}).get("total_ms")
                took = f" in {timing:.0f} ms" if isinstance(timing, int | float) else ""
                return f"ok    {self.node}: {b.get('message', '')}{took}"
            return f"ok    {self.node}"
        err = self.body.get("error", {})
        code = err.get("code", "error") if isinstance(err, dict) else "error"
        msg = err.get("message", "") if isinstance(err, dict) else str(err)
        return f"FAIL  {self.node}: {self.status or 'unreachable'} {code}: {msg}"


def _call(
    method: str, url: str, token: str, body: Path | None = None, timeout: float = 600.0
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/x-tar"
        headers["Content-Length"] = str(body.stat().st_size)
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    try:
        conn = connection(parts.netloc, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return 0, {"error": {"code": "unreachable", "message": str(exc)}}
    try:
        try:
            if body is None:
                conn.request(method, target, headers=headers)
            else:
                with body.open("rb") as f:
                    conn.request(method, target, body=f, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # The node answered before taking the whole upload (a refusal): read what it said.
            pass
        try:
            resp = conn.getresponse()
            return resp.status, _decode(resp.read())
        except (OSError, http.client.HTTPException) as exc:
            return 0, {
                "error": {
                    "code": "connection_closed",
                    "message": f"the node closed the connection without an answer: {exc}",
                }
            }
    except OSError as exc:
        return 0, {"error": {"code": "unreachable", "message": str(exc)}}
    finally:
        conn.close()


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"error": {"code": "bad_response", "message": raw[:200].decode("latin-1")}}
    return value if isinstance(value, dict) else {"value": value}


def _each(nodes: list[str], fn: Callable[[str], NodeResult]) -> list[NodeResult]:
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        return list(pool.map(fn, nodes))


def push(snapshot: str | os.PathLike[str], nodes: list[str], token: str) -> list[NodeResult]:
    """Push a snapshot directory (packed once here) or a ready .tar to every node at once."""
    src = Path(snapshot)
    with tempfile.TemporaryDirectory() as tmp:
        if src.is_dir():
            kind = read_manifest(src).kind
            tar = pack(src, Path(tmp) / "snapshot.tar")
        else:
            tar = src
            kind = _kind_of_tar(src)

        def one(node: str) -> NodeResult:
            status, body = _call("PUT", f"{node.rstrip('/')}{ADMIN}/{kind}", token, tar)
            return NodeResult(node, status, body)

        return _each(nodes, one)


def _kind_of_tar(tar: Path) -> str:
    import tarfile

    with tarfile.open(tar, "r:") as t:
        f = t.extractfile("manifest.json")
        if f is None:
            raise ValueError(f"{tar}: no manifest.json")
        kind: str = json.loads(f.read())["kind"]
        return kind


def status(nodes: list[str], token: str) -> list[NodeResult]:
    return _each(
        nodes, lambda n: NodeResult(n, *_call("GET", f"{n.rstrip('/')}{ADMIN}", token, timeout=30))
    )


def rollback(kind: str, nodes: list[str], token: str) -> list[NodeResult]:
    return _each(
        nodes,
        lambda n: NodeResult(n, *_call("POST", f"{n.rstrip('/')}{ADMIN}/{kind}/rollback", token)),
    )


def activate(kind: str, version: str, nodes: list[str], token: str) -> list[NodeResult]:
    return _each(
        nodes,
        lambda n: NodeResult(
            n, *_call("POST", f"{n.rstrip('/')}{ADMIN}/{kind}/activate/{version}", token)
        ),
    )
