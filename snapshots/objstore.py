"""Snapshots in object storage (S3 API): publish a signed `.tar` and a pointer; read them back.

Layout under `s3://bucket/prefix`:

    <prefix>/<kind>/<version>.tar    the archive `snapshot pack` makes, uploaded first
    <prefix>/<kind>/latest.json      {"kind","version","sha256","key","size","published_at"}

The pointer is written only after the archive is complete, so a reader that sees a pointer finds
its archive. Nodes read the pointer with `If-None-Match` (a 304 costs nothing), download the
archive with a size cap, check its sha256 against the pointer's, and then verify it exactly as a
push (hashes, signature, smoke validation): nothing read here is trusted before that. After a
publish, `announce` tells the nodes on the broker (NATS) so they need not wait for their next poll.
An archive of at most `INLINE_MAX_BYTES` (a rules snapshot is ~40 KB) also travels in the
announcement itself (`<subject>.snapshots.inline`, before the plain pointer): a node with a signing
key takes it from there and makes no S3 request at all; the archive is verified exactly the same.

Credentials come from the usual AWS chain (environment, config files); `endpoint` names an
S3-compatible server other than AWS.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from snapshots.archive import pack
from snapshots.errors import SnapshotError
from snapshots.manifest import KINDS, Manifest, read_manifest

POINTER = "latest.json"
POINTER_MAX_BYTES = 64 * 1024
CHUNK = 1 << 20
# Archives up to this size ride in the announcement (msgpack, so the message is the archive plus
# ~300 bytes): well under the nodes' `fleet.max_message_bytes` (256 KiB) and NATS' default 1 MiB
# max_payload. Larger ones (profiles, content) are fetched from object storage as before.
INLINE_MAX_BYTES = 128 * 1024


class ObjectStoreError(Exception):
    """Object storage could not be reached or answered something unusable (retry later)."""


class Pointer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    kind: str
    version: str
    sha256: str
    key: str
    size: int
    published_at: float


_decode_pointer = msgspec.json.Decoder(Pointer).decode


class Inline(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An announcement with the archive in it (`<subject>.snapshots.inline`, msgpack): the
    pointer as in `latest.json`, and the archive's bytes it describes."""

    pointer: Pointer
    archive: bytes


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at either end)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r}: expected s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def pointer_key(prefix: str, kind: str) -> str:
    return _join(prefix, kind, POINTER)


def client(endpoint: str = "", region: str = "us-east-1", timeout_s: float = 10.0) -> Any:
    """A boto3 S3 client: bounded timeouts and few retries (a node retries on its own schedule)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish(snapshot: str | os.PathLike[str], to: str, s3: Any) -> Pointer:
    """Upload a snapshot (directory or .tar) and then its kind's pointer; returns the pointer."""
    return publish_inline(snapshot, to, s3, inline_max=0)[0]


def publish_inline(
    snapshot: str | os.PathLike[str], to: str, s3: Any, *, inline_max: int = INLINE_MAX_BYTES
) -> tuple[Pointer, bytes | None]:
    """`publish`, and the archive's bytes when it is at most `inline_max` bytes (for `announce`
    to carry), else None."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_url(to)
    src = Path(snapshot)
    with tempfile.TemporaryDirectory(prefix="edgeside-publish-") as tmp:
        manifest: Manifest | _ManifestHead
        if src.is_dir():
            manifest = read_manifest(src)
            tar = pack(src, Path(tmp) / "snapshot.tar")
        else:
            import tarfile

            with tarfile.open(src, "r:") as t:
                member = t.extractfile("manifest.json")
                if member is None:
                    raise SnapshotError(f"{src}: no manifest.json in the archive")
                manifest = msgspec.json.decode(member.read(1 << 20), type=_ManifestHead)
            tar = src
        if manifest.kind not in KINDS:
            raise SnapshotError(f"{src}: a {manifest.kind} snapshot cannot be published")
        key = _join(prefix, manifest.kind, f"{manifest.version}.tar")
        pointer = Pointer(
            kind=manifest.kind,
            version=manifest.version,
            sha256=_sha256(tar),
            key=key,
            size=tar.stat().st_size,
            published_at=time.time(),
        )
        try:
            s3.upload_file(str(tar), bucket, key)
            s3.put_object(
                Bucket=bucket,
                Key=pointer_key(prefix, manifest.kind),
                Body=msgspec.json.encode(pointer),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"publishing to {to}: {exc}") from None
        inline = tar.read_bytes() if pointer.size <= inline_max else None
    return pointer, inline


class _ManifestHead(msgspec.Struct):
    kind: str
    version: str


def read_pointer(
    s3: Any, bucket: str, prefix: str, kind: str, etag: str | None
) -> tuple[bytes | None, str | None]:
    """(the pointer's bytes, its ETag), or (None, etag) when unchanged since `etag` or absent."""
    from botocore.exceptions import BotoCoreError, ClientError

    args: dict[str, str] = {"Bucket": bucket, "Key": pointer_key(prefix, kind)}
    if etag:
        args["IfNoneMatch"] = etag
    try:
        answer = s3.get_object(**args)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if status == 304 or code in ("304", "NotModified"):
            return None, etag
        if code in ("NoSuchKey", "404"):
            return None, None
        raise ObjectStoreError(f"reading the {kind} pointer: {exc}") from None
    except BotoCoreError as exc:
        raise ObjectStoreError(f"reading the {kind} pointer: {exc}") from None
    body = answer["Body"]
    with body:
        raw: bytes = body.read(POINTER_MAX_BYTES + 1)
    if len(raw) > POINTER_MAX_BYTES:
        raise ObjectStoreError(f"the {kind} pointer is over {POINTER_MAX_BYTES} bytes")
    return raw, answer.get("ETag")


def download(
    s3: Any,
    bucket: str,
    key: str,
    dest: Path,
    *,
    size: int,
    sha256: str,
    max_bytes: int,
    deadline_s: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Stream `key` to `dest` (never whole in memory): at most `max_bytes`, exactly `size`
    bytes with this `sha256`, within `deadline_s`; `ObjectStoreError` otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    if size > max_bytes:
        raise ObjectStoreError(f"{key}: {size} bytes announced; at most {max_bytes}")
    digest = hashlib.sha256()
    got = 0
    deadline = time.monotonic() + deadline_s
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with body, open(dest, "xb") as f:
            while chunk := body.read(CHUNK):
                got += len(chunk)
                if got > size or time.monotonic() > deadline or should_stop():
                    raise ObjectStoreError(f"{key}: longer than announced, or too slow")
                digest.update(chunk)
                f.write(chunk)
    except (BotoCoreError, ClientError, OSError) as exc:
        raise ObjectStoreError(f"downloading {key}: {exc}") from None
    if got != size or digest.hexdigest() != sha256:
        raise ObjectStoreError(f"{key}: {got} bytes with another sha256 than announced")
    return got


def save(data: bytes, dest: Path, *, size: int, sha256: str, max_bytes: int) -> int:
    """Write an archive that came inline (in an announcement) to `dest`, held to the same terms
    as `download`: at most `max_bytes`, exactly `size` bytes with this `sha256`."""
    if size > max_bytes:
        raise ObjectStoreError(f"{size} bytes announced; at most {max_bytes}")
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise ObjectStoreError(f"{len(data)} inline bytes, not the size or sha256 announced")
    try:
        with open(dest, "xb") as f:
            f.write(data)
    except OSError as exc:
        raise ObjectStoreError(f"writing the inline archive: {exc}") from None
    return size


def decode_pointer(raw: bytes) -> Pointer:
    try:
        return _decode_pointer(raw)
    except msgspec.DecodeError as exc:
        raise ObjectStoreError(f"malformed pointer: {exc}") from None


async def announce(
    broker: str,
    subject: str,
    pointer: Pointer,
    timeout_s: float = 5.0,
    *,
    archive: bytes | None = None,
) -> None:
    """Tell the fleet on its NATS broker (core publish on `<subject>.snapshots`): a hint only,
    nodes verify what they fetch; a node that misses it finds the pointer at its next poll. With
    `archive` (from `publish_inline`), first the same pointer with the archive in it on
    `<subject>.snapshots.inline`: nodes that take it there fetch nothing, nodes that do not (no
    signing key, or an older version) take the plain announcement."""
    import nats

    async def quiet(exc: Exception) -> None:
        """nats-py prints every failed attempt otherwise; the caller reports the outcome."""

    servers = [s for s in broker.replace(",", " ").split() if s]
    connecting = nats.connect(
        servers=servers,
        connect_timeout=timeout_s,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=quiet,
    )
    nc = await asyncio.wait_for(connecting, timeout=timeout_s * 2)
    try:
        if archive is not None:
            inline = Inline(pointer=pointer, archive=archive)
            await nc.publish(f"{subject}.snapshots.inline", msgspec.msgpack.encode(inline))
        await nc.publish(f"{subject}.snapshots", msgspec.json.encode(pointer))
        await nc.flush(timeout=max(1, round(timeout_s)))
    finally:
        await nc.close()
