"""What a node accepts from the broker: bounded by bytes first, then checked field by field; any
other input is `Malformed` — never another exception, never a partly trusted message."""

from __future__ import annotations

import contextlib
import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.fleet.messages import (
    Heartbeat,
    LiveBatch,
    LiveEvent,
    Malformed,
    Pointer,
    decode_batch,
    decode_heartbeat,
    decode_inline,
    decode_pointer,
    encode_batch,
    encode_json,
)
from server.fleet.shared import decode_counts

LIMIT = 64 * 1024
GOOD = LiveEvent("cookie:k1", "view", 1_700_000_000.0, content_id="c1", category="tents")
SHA = "ab" * 32


def batch(*events: LiveEvent) -> bytes:
    return encode_batch(LiveBatch("a.1.1", "a", list(events)))


def test_a_good_batch_round_trips() -> None:
    assert decode_batch(batch(GOOD), LIMIT).events == [GOOD]


@pytest.mark.parametrize(
    "event",
    [
        LiveEvent("cookie:k1", "explode", 1.0),
        LiveEvent("", "view", 1.0),
        LiveEvent("k" * 601, "view", 1.0),
        LiveEvent("cookie:k1\n", "view", 1.0),
        LiveEvent("cookie:k1", "view", math.nan),
        LiveEvent("cookie:k1", "view", math.inf),
        LiveEvent("cookie:k1", "view", -1.0),
        LiveEvent("cookie:k1", "view", 1.0, category="x" * 257),
        LiveEvent("cookie:k1", "view", 1.0, content_id=""),
        LiveEvent("cookie:k1", "view", 1.0, consent=False),
        LiveEvent("cookie:k1", "consent", 1.0),
    ],
)
def test_a_bad_field_refuses_the_whole_message(event: LiveEvent) -> None:
    with pytest.raises(Malformed):
        decode_batch(batch(GOOD, event), LIMIT)


def test_size_is_checked_before_decoding() -> None:
    raw = batch(*[GOOD] * 100)
    assert decode_batch(raw, len(raw)).events
    with pytest.raises(Malformed, match="bytes"):
        decode_batch(raw, len(raw) - 1)


def test_too_many_events_and_unknown_fields() -> None:
    with pytest.raises(Malformed):
        decode_batch(batch(*[GOOD] * 5001), 1 << 30)
    extra = msgspec.msgpack.encode({"id": "x", "node": "a", "events": [], "more": 1})
    with pytest.raises(Malformed):
        decode_batch(extra, LIMIT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_batch_or_malformed(raw: bytes) -> None:
    with contextlib.suppress(Malformed):
        decode_batch(raw, LIMIT)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_pointer_heartbeat_counts_or_refused(raw: bytes) -> None:
    for decode in (decode_pointer, decode_heartbeat, decode_inline):
        with contextlib.suppress(Malformed):
            decode(raw, LIMIT)
    decode_counts(raw)  # None or counts, never an exception


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "secrets"},
        {"version": "../etc"},
        {"version": ".hidden"},
        {"sha256": "AB" * 32},
        {"sha256": "ab"},
        {"key": "prefix/../../other.tar"},
        {"size": 0},
    ],
)
def test_a_pointer_is_checked_field_by_field(changes: dict[str, object]) -> None:
    good = {"kind": "rules", "version": "v1", "sha256": SHA, "key": "p/rules/v1.tar", "size": 10,
            "published_at": 1.0}  # fmt: skip
    assert decode_pointer(msgspec.json.encode(good), LIMIT) == Pointer(**good)  # type: ignore[arg-type]
    with pytest.raises(Malformed):
        decode_pointer(msgspec.json.encode({**good, **changes}), LIMIT)


def test_an_inline_archive_is_bounded_checked_and_as_long_as_its_pointer_says() -> None:
    """What `snapshots.objstore.announce` sends on `<subject>.snapshots.inline` decodes here; the
    pointer is checked as a plain one, the archive's length against it, the whole message's
    size before anything is decoded."""
    from snapshots import objstore

    archive = b"tar bytes" * 100
    pointer = objstore.Pointer("rules", "v1", SHA, "p/rules/v1.tar", len(archive), 1.0)
    raw = msgspec.msgpack.encode(objstore.Inline(pointer=pointer, archive=archive))
    inline = decode_inline(raw, LIMIT)
    assert inline.archive == archive
    assert inline.pointer == Pointer("rules", "v1", SHA, "p/rules/v1.tar", len(archive), 1.0)
    # The plain announcement of the same publish decodes to an equal (and equally hashed)
    # pointer: that is how a node that took the archive inline knows to ignore it.
    published = msgspec.structs.replace(pointer, published_at=1_733_390_000.123456789)
    raw_inline = msgspec.msgpack.encode(objstore.Inline(pointer=published, archive=archive))
    plain = decode_pointer(msgspec.json.encode(published), LIMIT)
    assert plain in {decode_inline(raw_inline, LIMIT).pointer: None}
    with pytest.raises(Malformed, match="at most"):
        decode_inline(raw, len(raw) - 1)
    short = objstore.Inline(pointer=pointer, archive=archive[:-1])
    with pytest.raises(Malformed, match="the pointer says"):
        decode_inline(msgspec.msgpack.encode(short), LIMIT)
    bad = msgspec.structs.replace(pointer, key="p/../../x.tar")
    with pytest.raises(Malformed):
        decode_inline(msgspec.msgpack.encode(objstore.Inline(pointer=bad, archive=archive)), LIMIT)
    with pytest.raises(Malformed):  # a plain announcement is not an inline one
        decode_inline(msgspec.json.encode(pointer), LIMIT)


def test_a_heartbeat_is_bounded() -> None:
    beat = Heartbeat("a", 1.0, 1.0, True, {"rules": "v1"})
    assert decode_heartbeat(encode_json(beat), LIMIT) == beat
    many = Heartbeat("a", 1.0, 1.0, True, {f"k{i}": "v" for i in range(9)})
    with pytest.raises(Malformed):
        decode_heartbeat(encode_json(many), LIMIT)


def test_agreed_counts_are_checked() -> None:
    enc = msgspec.msgpack.encode
    assert decode_counts(enc({"x": (1, 2)})) == {"x": (1, 2)}
    assert decode_counts(enc({"x": (-1, 2)})) is None
    assert decode_counts(enc({"": (1, 2)})) is None
    assert decode_counts(enc({f"a{i}": (0, 0) for i in range(1001)})) is None
