"""Streaming NDJSON reader: one typed record or one positioned error per line, never a crash."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

import msgspec

T = TypeVar("T")
U = TypeVar("U")

# The most a record's line may hold, its newline not counted. A longer line is an invalid
# record at its `file:line` (`--skip-invalid` skips it), read in chunks and dropped, never
# held whole: a corrupt export (newlines lost, a binary blob pasted in) must not make a build
# hold gigabytes for one line. Export records are ~0.4 KB; 1 MiB leaves room for any real one.
MAX_LINE_BYTES = 1 << 20
# How much of an over-long line is read at a time while it is skipped.
SKIP_CHUNK = 64 << 10


class LineError(msgspec.Struct, frozen=True):
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def read_ndjson(
    path: str | os.PathLike[str], decoder: msgspec.json.Decoder[T]
) -> Iterator[tuple[int, T | LineError]]:
    """Yield `(line_number, record_or_error)`; blank lines are skipped.

    Wrong types come back with msgspec's `$.path` message, e.g.
    ``Expected `float`, got `str` - at `$.attributes.ltv` ``.
    """
    for lineno, _, rec in read_ndjson_lines(path, decoder):
        yield lineno, rec


def read_ndjson_lines(
    path: str | os.PathLike[str], decoder: msgspec.json.Decoder[T], *, name: str | None = None
) -> Iterator[tuple[int, bytes, T | LineError]]:
    """Like `read_ndjson`, also yielding each raw line (for builders that keep bytes, which
    are far smaller than decoded objects, and decode again when they need the record).
    `name` is what errors call the file (an s3:// URL for a downloaded copy)."""
    name = str(path) if name is None else name
    with open(path, "rb") as f:
        for lineno, line in enumerate(bounded_lines(f), 1):
            if isinstance(line, int):
                yield lineno, b"", line_too_long(name, lineno, line)
                continue
            if not line.strip():
                continue
            rec = decode_line(decoder, name, lineno, line)
            yield lineno, line, rec


def bounded_lines(f: BinaryIO) -> Iterator[bytes | int]:
    """The file's lines as `for line in f` yields them (newline kept), but a line longer than
    `MAX_LINE_BYTES` comes as its length (newline not counted), read in chunks and dropped."""
    limit = MAX_LINE_BYTES
    readline = f.readline
    while True:
        line = readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        n = len(line)
        while True:
            part = readline(SKIP_CHUNK)
            n += len(part)
            if not part or part.endswith(b"\n"):
                break
        yield n - (1 if part.endswith(b"\n") else 0)


def line_too_long(name: str, lineno: int, length: int) -> LineError:
    """The error of a line longer than `MAX_LINE_BYTES` (`length`: its bytes, newline not
    counted), the same from every reader."""
    return LineError(
        name,
        lineno,
        f"line of {length} bytes, longer than a record may be ({MAX_LINE_BYTES} bytes)",
    )


def decode_line(
    decoder: msgspec.json.Decoder[U], name: str, lineno: int, line: bytes
) -> U | LineError:
    """One line's record or its positioned error (shared by every engine that reads NDJSON)."""
    try:
        return decoder.decode(line)
    except msgspec.ValidationError as exc:
        return LineError(name, lineno, f"invalid record: {exc}")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return LineError(name, lineno, _undecodable(line, exc))


def _undecodable(line: bytes, exc: Exception) -> str:
    """Why a line is not JSON. msgspec ≤ 0.22 raised `UnicodeDecodeError` for invalid UTF-8 and
    0.23 raises a `DecodeError` without the offset, so the line itself is asked: the byte offset is
    what lets someone find the bad byte in a multi-gigabyte export."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start}"
    return f"malformed JSON: {exc}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def source_digests(paths: list[Path]) -> dict[str, str]:
    """`sources` of the manifest: each input by file name (a path would leak the build host)."""
    out: dict[str, str] = {}
    for p in paths:
        key = p.name if p.name not in out else str(p)
        out[key] = file_sha256(p)
    return out
