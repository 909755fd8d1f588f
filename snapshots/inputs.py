"""Build inputs: local paths, globs and `s3://bucket/key` URLs, NDJSON or Parquet.

Object-storage inputs are copied into the build's temp directory first, hashed while they
stream: the manifest needs a digest of every source, and a local copy gives every later
phase (DuckDB, pyarrow, the line-numbering NDJSON reader) the same random-access file. The S3
client is `pyarrow.fs.S3FileSystem` (pyarrow is already the engine's Arrow hand-off; DuckDB's
own S3 support is its `httpfs` extension, which it downloads at run time). Endpoint and
credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, …).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from snapshots.errors import InputUnreadable

Format = Literal["ndjson", "parquet"]
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
_GLOB_CHARS = frozenset("*?[")


class InputFile(msgspec.Struct, frozen=True):
    """One file to read: `name` is what errors and the manifest say (path or URL)."""

    name: str
    local: str
    format: Format
    sha256: str
    size: int


def detect_format(name: str, forced: Format | None) -> Format:
    if forced is not None:
        return forced
    low = name.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(NDJSON_SUFFIXES):
        return "ndjson"
    raise InputUnreadable(
        f"{name}: cannot tell the format from the name; use .ndjson/.jsonl or .parquet, "
        "or give --format"
    )


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _local(pattern: str) -> list[str]:
    if not _GLOB_CHARS & set(pattern):
        if not os.path.exists(pattern):
            raise InputUnreadable(f"{pattern}: no such file")
        if os.path.isdir(pattern):
            # A partitioned export: every data file below it, in name order.
            return sorted(
                str(p)
                for p in Path(pattern).rglob("*")
                if p.is_file() and p.name.lower().endswith(NDJSON_SUFFIXES + PARQUET_SUFFIXES)
            )
        return [pattern]
    found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not found:
        raise InputUnreadable(f"{pattern}: matches no file")
    return found


def s3_filesystem() -> Any:
    """The S3 client, configured from the environment; short timeouts so an unreachable endpoint
    fails the build in seconds, not minutes."""
    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    scheme = "https"
    override = None
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        override = rest.rstrip("/")
    return fs.S3FileSystem(
        endpoint_override=override,
        scheme=scheme,
        region=os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1")),
        connect_timeout=float(os.environ.get("EDGESIDE_S3_TIMEOUT_S", "5")),
        request_timeout=float(os.environ.get("EDGESIDE_S3_TIMEOUT_S", "5")) * 6,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
    )


def _s3_list(fs: Any, url: str) -> list[str]:
    from pyarrow import fs as pafs

    path = url[len("s3://") :]
    if not _GLOB_CHARS & set(path):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [path]
        if info.type == pafs.FileType.NotFound:
            raise InputUnreadable(f"{url}: no such object")
        pattern = path.rstrip("/") + "/**"
        prefix = path.rstrip("/")
    else:
        cut = min(path.index(c) for c in _GLOB_CHARS if c in path)
        prefix = path[:cut].rsplit("/", 1)[0]
        pattern = path
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    found = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and fnmatch.fnmatchcase(i.path, pattern.replace("/**", "/*"))
        and i.path.lower().endswith(NDJSON_SUFFIXES + PARQUET_SUFFIXES)
    )
    if not found:
        raise InputUnreadable(f"{url}: matches no object")
    return found


def _download(fs: Any, path: str, into: Path, n: int) -> tuple[str, str, int]:
    """Copy one object to `into`, hashing as it streams; return (local path, sha256, bytes)."""

    local = into / f"{n:05d}-{os.path.basename(path)}"
    h = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        while True:
            chunk = src.read(8 << 20)
            if not chunk:
                break
            h.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    return str(local), h.hexdigest(), size


def resolve_inputs(
    inputs: Sequence[str | os.PathLike[str]], work: Path, forced: Format | None = None
) -> list[InputFile]:
    """Expand globs, directories and S3 URLs into files in a fixed order (the order given, each
    pattern's matches sorted by name), downloading remote ones into `work`."""
    out: list[InputFile] = []
    fs: Any = None
    for item in inputs:
        text = str(item)
        if text.startswith("s3://"):
            try:
                if fs is None:
                    fs = s3_filesystem()
                for key in _s3_list(fs, text):
                    name = "s3://" + key
                    fmt = detect_format(name, forced)
                    local, digest, size = _download(fs, key, work, len(out))
                    out.append(InputFile(name, local, fmt, digest, size))
            except InputUnreadable:
                raise
            except OSError as exc:
                raise InputUnreadable(f"{text}: cannot read from object storage: {exc}") from None
            continue
        for path in _local(text):
            fmt = detect_format(path, forced)
            try:
                out.append(InputFile(path, path, fmt, _sha256(path), os.path.getsize(path)))
            except OSError as exc:
                raise InputUnreadable(f"{path}: cannot read: {exc.strerror}") from None
    return out


def source_digests(files: list[InputFile]) -> dict[str, str]:
    """`sources` of the manifest: each input by file name (a path would leak the build host)."""
    out: dict[str, str] = {}
    for f in files:
        base = f.name.rsplit("/", 1)[-1]
        out[base if base not in out else f.name] = f.sha256
    return out
