"""What travels on the broker: msgspec structs, encoded as msgpack, decoded with size bounds.

Everything from the broker is untrusted until `decode_*` accepted it: the byte length is checked
before any decoding, the decoders forbid unknown fields, and every string and list is bounded
again after decoding (a valid msgpack message can still carry a megabyte of category name).
"""

from __future__ import annotations

import math

import msgspec

MAX_KEY_CHARS = 600  # a live key: "p:" or an id type, then an identifier of ≤ 256 characters
MAX_FIELD_CHARS = 256
MAX_EVENTS = 5000
EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "consent"})
KINDS = ("profiles", "content", "rules")


class Malformed(ValueError):
    """A broker message that is not what its subject promises; dropped and counted."""


class LiveEvent(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """One accepted event, reduced to what a live store applies (server.live.store.Change)."""

    key: str
    type: str
    ts: float
    content_id: str | None = None
    category: str | None = None
    experiment: str | None = None
    arm: str | None = None
    consent: bool | None = None


class LiveBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The events one worker applied in one batch. `id` (node, process start, batch counter) is
    the message id JetStream deduplicates a re-sent publish by; `node` lets the node that
    accepted the events skip them (it applied them already)."""

    id: str
    node: str
    events: list[LiveEvent]


class Pointer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`<prefix>/<kind>/latest.json` (snapshots/objstore.py): the snapshot a kind's nodes should
    run; an announcement on the broker carries the same. Only a hint: the node downloads `key`,
    checks the sha256 and verifies the archive exactly as a push (hashes and signature) before
    anything is activated."""

    kind: str
    version: str
    sha256: str
    key: str
    size: int
    published_at: float


class InlineSnapshot(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An announcement with the archive in it (`<subject>.snapshots.inline`, msgpack; published
    by snapshots/objstore.py `announce` for archives of at most 128 KiB). The archive is as
    untrusted as one downloaded: its size and sha256 are checked against the pointer, then it is
    verified exactly as a push."""

    pointer: Pointer
    archive: bytes


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    """What a node says about itself every `heartbeat_s` (key `node` in the fleet's KV bucket)."""

    node: str
    at: float
    started_at: float
    ready: bool
    versions: dict[str, str]
    # Seconds between the newest event on the live stream and the newest this node applied.
    live_lag_s: float | None = None
    live_position: int = 0
    broker: str = "up"
    notes: list[str] = msgspec.field(default_factory=list)


_encode = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(LiveBatch).decode
_decode_heartbeat = msgspec.json.Decoder(Heartbeat).decode
_decode_pointer = msgspec.json.Decoder(Pointer).decode
_decode_inline = msgspec.msgpack.Decoder(InlineSnapshot).decode


def encode_batch(batch: LiveBatch) -> bytes:
    return _encode(batch)


def _text(value: str | None, limit: int = MAX_FIELD_CHARS) -> bool:
    return value is None or (0 < len(value) <= limit and value.isprintable())


def _sized(raw: bytes, limit: int) -> None:
    if len(raw) > limit:
        raise Malformed(f"message of {len(raw)} bytes; at most {limit}")


def decode_batch(raw: bytes, limit: int) -> LiveBatch:
    """A live batch, every field checked as `POST /v1/events` checks it; `Malformed` otherwise."""
    _sized(raw, limit)
    try:
        batch = _decode_batch(raw)
    except msgspec.DecodeError as exc:
        raise Malformed(str(exc)) from None
    if not _text(batch.id, 128) or not _text(batch.node, 128):
        raise Malformed("bad batch id or node name")
    if len(batch.events) > MAX_EVENTS:
        raise Malformed(f"{len(batch.events)} events in one message; at most {MAX_EVENTS}")
    for e in batch.events:
        if e.type not in EVENT_TYPES:
            raise Malformed(f"unknown event type {e.type[:40]!r}")
        if not _text(e.key, MAX_KEY_CHARS) or not math.isfinite(e.ts) or e.ts < 0:
            raise Malformed("bad live key or timestamp")
        if not all(_text(v) for v in (e.content_id, e.category, e.experiment, e.arm)):
            raise Malformed("a field is over 256 characters or unprintable")
        if (e.type == "consent") != (e.consent is not None):
            raise Malformed("consent value on a non-consent event, or missing on a consent one")
    return batch


def encode_json(value: msgspec.Struct) -> bytes:
    return msgspec.json.encode(value)


def decode_heartbeat(raw: bytes, limit: int) -> Heartbeat:
    _sized(raw, limit)
    try:
        beat = _decode_heartbeat(raw)
    except msgspec.DecodeError as exc:
        raise Malformed(str(exc)) from None
    if not _text(beat.node, 128) or len(beat.versions) > 8 or len(beat.notes) > 32:
        raise Malformed("bad heartbeat")
    if not all(_text(k, 32) and _text(v, 128) for k, v in beat.versions.items()):
        raise Malformed("bad heartbeat versions")
    return beat


def _snapshot_fields(kind: str, version: str, sha256: str, key: str, size: int) -> None:
    if kind not in KINDS:
        raise Malformed(f"unknown kind {kind[:40]!r}")
    if not _text(version, 128) or version.startswith(".") or "/" in version:
        raise Malformed("bad version name")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise Malformed("sha256 is not 64 lower-case hex digits")
    if not _text(key, 1024) or ".." in key.split("/") or size <= 0:
        raise Malformed("bad object key or size")


def decode_pointer(raw: bytes, limit: int) -> Pointer:
    _sized(raw, limit)
    try:
        p = _decode_pointer(raw)
    except msgspec.DecodeError as exc:
        raise Malformed(str(exc)) from None
    _snapshot_fields(p.kind, p.version, p.sha256, p.key, p.size)
    return p


def decode_inline(raw: bytes, limit: int) -> InlineSnapshot:
    """An inline announcement: bounded before decoding, the pointer's fields checked as a plain
    announcement's, and the archive exactly as long as the pointer says."""
    _sized(raw, limit)
    try:
        inline = _decode_inline(raw)
    except msgspec.DecodeError as exc:
        raise Malformed(str(exc)) from None
    p = inline.pointer
    _snapshot_fields(p.kind, p.version, p.sha256, p.key, p.size)
    if len(inline.archive) != p.size:
        raise Malformed(f"{len(inline.archive)} archive bytes; the pointer says {p.size}")
    return inline
