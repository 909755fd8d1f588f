"""Lingering close against a real server on raw sockets: a client that writes its whole oversized
body before reading gets its 413 (with `Connection: close` too, where the socket used to be reset),
and a body that never ends, or trickles, is still cut off at the bounds (server/edge/linger.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from bench.procs import Edgeside
from server.edge.linger import LINGER_BYTES, LINGER_S

FIVE_MB = 5_000_000


def _connect(server: Edgeside) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    return sock


def _head(path: str, length: int, close: bool) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(["Connection: close"] if close else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.fixture()
def sock(server: Edgeside) -> Iterator[socket.socket]:
    s = _connect(server)
    yield s
    s.close()


@pytest.mark.parametrize("path", ["/v1/decide", "/ofrep/v1/evaluate/flags", "/v1/events"])
def test_writing_a_whole_oversized_body_first_still_reads_the_413(
    sock: socket.socket, path: str
) -> None:
    sock.sendall(_head(path, FIVE_MB, close=True) + b"x" * FIVE_MB)  # no reset while writing
    answer = _read_until_closed(sock)  # nor while reading: the answer, then an orderly close
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_after_a_drained_body_the_connection_serves_the_next_request(
    sock: socket.socket,
) -> None:
    sock.sendall(_head("/v1/decide", FIVE_MB, close=False) + b"x" * FIVE_MB)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"HTTP/1.1 200 " in answer and answer.endswith(b'{"status":"ok"}')


@pytest.mark.parametrize("close", [False, True])
def test_an_endless_body_is_cut_off_at_the_byte_bound(sock: socket.socket, close: bool) -> None:
    sock.sendall(_head("/v1/decide", 10 * 1024**3, close=close))
    sent = 0
    chunk = b"x" * 65536
    with pytest.raises(OSError):  # reset or broken pipe: the server closed
        while sent < 8 * LINGER_BYTES:
            sock.sendall(chunk)
            sent += len(chunk)
    # What the server drained, plus what the kernel's buffers held when it closed.
    assert sent < LINGER_BYTES + 16 * 1024 * 1024, sent


def test_a_trickling_body_is_cut_off_at_the_time_bound(sock: socket.socket) -> None:
    sock.sendall(_head("/v1/decide", FIVE_MB, close=False))
    started = time.monotonic()
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    with pytest.raises(OSError):
        while time.monotonic() - started < 4 * LINGER_S:
            sock.sendall(b"x")
            if sock.recv(1) == b"":  # an orderly close
                raise ConnectionResetError
            time.sleep(0.2)
    assert time.monotonic() - started < LINGER_S + 3
