"""NDJSON read in blocks (issue 17): the engine's fast path reads what the line-by-line reader
reads — the same lines, keys, blocked values, errors and snapshot — wherever blocks are cut and
whatever the lines hold (escapes, unicode, duplicate keys, CRLF, blank or bad lines, a last
line without a newline)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snapshots.engine.read_ndjson
import snapshots.ndjson_blocks
from snapshots.config import ProfilesConfig
from snapshots.engine import EngineOptions, build_profiles
from snapshots.identity import IdRules
from snapshots.ndjson import MAX_LINE_BYTES, read_ndjson_lines
from snapshots.ndjson_blocks import (
    BLOCK_BYTES,
    key_block,
    line_offsets,
    payloads,
    read_span,
    spans,
    split_lines,
)
from tests.snapshots.oracle_build import build_profiles as oracle_build
from tests.snapshots.test_engine_equivalence import (
    SUMMARY_FIELDS,
    TYPES,
    configs,
    dump,
    id_values,
    records,
)

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Lines that are not plain records, each of which must send its block down the per-line path.
ODD_LINES = [
    b"",  # blank
    b"   \t",  # whitespace only
    b"{not json",
    b'{"source":"crm","ids":{"cookie":"k1"}}',  # no updated_at
    b'{"source":"crm","ids":{"cookie":"k1"},"updated_at":"2026-11-01T00:00:00Z","x":1}',
    b'{"source":"crm","ids":{"fax":"f1"},"updated_at":"2026-11-01T00:00:00Z"}',  # unknown type
    b'{"source":"crm","ids":{},"updated_at":"2026-11-01T00:00:00Z"}',  # no identifiers
    b'{"source":"crm","ids":{"email":"junk"},"updated_at":"2026-11-01T00:00:00Z"}',  # all junk
    b'{"source":"cr\xffm","ids":{"cookie":"k1"},"updated_at":"2026-11-01T00:00:00Z"}',
    b'{"source":"crm","ids":{"cookie":"k1"},"updated_at":"2026-11-01T00:00:00Z",'
    b'"attributes":{"n":1e400}}',  # out of range
    b'{"source":"crm","ids":{"cookie":"k1","cookie":"k2"},"updated_at":"2026-11-01T00:00:00Z"}'
    b"}",  # a stray character after the record
]
# Plain records written unusually: escapes, unicode, duplicate keys (the last one counts),
# integers past a double's precision, spaces around the value.
ODD_RECORDS = [
    b'{"source":"crm","ids":{"cookie":"k\\u0031"},"updated_at":"2026-11-01T00:00:00Z",'
    b'"attributes":{"city":"Z\\u00fcrich \\"Nord\\"\\n","t":"\xe2\x9c\x93"}}',
    b'{"source":"web","ids":{"cookie":"k9","cookie":"k2"},"updated_at":"2026-11-01T00:00:00Z",'
    b'"source":"crm","attributes":{"n":9007199254740993,"m":-9007199254740993}}',
    b'  {"source":"app","ids":{"device":"d1","email":""},"updated_at":"2026-11-02T05:00:00Z"} ',
    b'{"source":"app","ids":{"customer_id":"C\xc3\xa9"},"updated_at":"2026-11-01T00:00:00+01:00"}',
]


@st.composite
def export_lines(draw: Any) -> bytes:
    """An export's bytes: random records in random spellings, odd lines among them, LF or
    CRLF, with or without a final newline."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            line = draw(st.sampled_from(ODD_LINES))
        elif kind == 1:
            line = draw(st.sampled_from(ODD_RECORDS))
        elif kind == 2:
            line = json.dumps(draw(records()), ensure_ascii=True).encode()
        else:
            line = orjson.dumps(draw(records()))
        out.append(line)
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = eol.join(out)
    return data + eol if draw(st.booleans()) else data


@SETTINGS
@given(
    cfg=configs(),
    a=export_lines(),
    b=export_lines(),
    block=st.integers(1, 600),
    workers=st.sampled_from([1, 2]),
)
def test_blocks_build_what_the_line_reader_builds(
    tmp_path_factory: Any, cfg: ProfilesConfig, a: bytes, b: bytes, block: int, workers: int
) -> None:
    """Blocks cut anywhere, scanned here or by worker processes."""
    tmp = tmp_path_factory.mktemp("blk")
    fa, fb = tmp / "a.ndjson", tmp / "b.ndjson"
    fa.write_bytes(a)
    fb.write_bytes(b)
    old = oracle_build([fa, fb], cfg, tmp / "old", skip_invalid=True)
    with mock.patch.object(snapshots.ndjson_blocks, "BLOCK_BYTES", block):
        new = build_profiles(
            [fa, fb],
            cfg,
            tmp / "new",
            skip_invalid=True,
            options=EngineOptions(merge_workers=workers),
        )
    for f in SUMMARY_FIELDS:
        assert getattr(new, f) == getattr(old, f), f
    assert new.blocked_examples == old.blocked_examples
    assert dump(tmp / "new") == dump(tmp / "old")


@given(
    data=st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")),
    size=st.integers(1, 64),
    limit=st.sampled_from([MAX_LINE_BYTES, 8]),
)
def test_blocks_are_the_files_lines_numbered(
    tmp_path_factory: Any, data: bytes, size: int, limit: int
) -> None:
    path = tmp_path_factory.mktemp("b") / "x.ndjson"
    path.write_bytes(data)
    expected = path.read_bytes().split(b"\n")
    with mock.patch.object(snapshots.ndjson_blocks, "MAX_LINE_BYTES", limit):
        parts = list(spans(path, size))
    got = [read_span(path, off, n) for off, n, _ in parts]
    assert b"".join(got) == data
    first = 1
    for (_, _, too_long), blk in zip(parts, got, strict=True):
        assert blk.endswith(b"\n") or blk is got[-1]
        lines = split_lines(blk)
        assert lines == expected[first - 1 : first - 1 + len(lines)]
        first += len(lines)
        # A line cut by a block's end that is over the limit is a span of its own.
        assert too_long == 0 or (len(lines) == 1 and too_long == len(lines[0]) > limit)
        # The payloads are the lines as `for line in file` yields them, newline included.
        with_eol = [line + b"\n" for line in lines]
        if not blk.endswith(b"\n"):
            with_eol[-1] = lines[-1]
        assert payloads(blk, line_offsets(lines, len(blk))).to_pylist() == with_eol


def test_a_huge_line_is_skipped_in_chunks_never_read_whole(tmp_path: Path) -> None:
    """A corrupt export (one 32 MiB line) costs its readers no more than a chunk of memory."""
    path = tmp_path / "x.ndjson"
    huge = 32 << 20
    with path.open("wb") as f:
        f.write(b'{"a":1}\n{"b":"')
        f.write(b"x" * huge)
        f.write(b'"}\n{"c":3}\n')
    decoder = msgspec.json.Decoder(dict[str, Any])
    tracemalloc.start()
    try:
        parts = list(spans(path, 1 << 20))
        lines = [(n, str(r)) for n, _, r in read_ndjson_lines(path, decoder, name="x")]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    length = huge + len(b'{"b":""}')
    assert parts == [(0, 8, 0), (8, length + 1, length), (length + 9, 8, 0)]
    assert lines == [
        (1, "{'a': 1}"),
        (2, f"x:2: line of {length} bytes, longer than a record may be (1048576 bytes)"),
        (3, "{'c': 3}"),
    ]


@pytest.mark.parametrize(("block", "workers"), [(None, 1), (300, 1), (300, 2), (40_000, 2)])
def test_a_line_longer_than_a_record_may_be_is_invalid_at_its_line(
    tmp_path: Path, profiles_config: Any, block: int | None, workers: int
) -> None:
    """Over `MAX_LINE_BYTES` (a valid record otherwise), in a block or cut by a block's end:
    refused at its file:line, skipped with --skip-invalid, as the line-by-line reader does."""
    cfg = profiles_config()
    path = tmp_path / "in.ndjson"

    def line(i: int, **kw: Any) -> bytes:
        r = {"source": "crm", "ids": {"cookie": f"k{i}"}, "updated_at": "2026-11-01T00:00:00Z"}
        return orjson.dumps(r | kw)

    def sized(i: int, n: int) -> bytes:
        return line(i, attributes={"note": "n" * (n - len(line(i, attributes={"note": ""})))})

    lines = [line(i) for i in range(200)]
    lines[7] = sized(7, MAX_LINE_BYTES)  # the most a line may hold: a record
    lines[100] = sized(100, MAX_LINE_BYTES + 1)  # one byte more: refused
    lines[150] = b" " * (MAX_LINE_BYTES + 5)  # blank, but too long to be read as blank
    path.write_bytes(b"\n".join(lines) + b"\n")
    reads: list[int] = []
    real_read = snapshots.engine.read_ndjson.read_span

    def read_span_seen(p: str, off: int, n: int) -> bytes:
        reads.append(n)
        return real_read(p, off, n)

    too_long = "longer than a record may be (1048576 bytes)"
    with (
        mock.patch.object(snapshots.ndjson_blocks, "BLOCK_BYTES", block or BLOCK_BYTES),
        mock.patch.object(snapshots.engine.read_ndjson, "read_span", read_span_seen),
    ):
        with pytest.raises(snapshots.InputInvalid) as err:
            build_profiles(
                [path], cfg, tmp_path / "out", options=EngineOptions(merge_workers=workers)
            )
        assert err.value.problems == [
            f"{path}:101: line of {MAX_LINE_BYTES + 1} bytes, {too_long}",
            f"{path}:151: line of {MAX_LINE_BYTES + 5} bytes, {too_long}",
        ]
        new = build_profiles(
            [path],
            cfg,
            tmp_path / "new",
            skip_invalid=True,
            options=EngineOptions(merge_workers=workers),
        )
    if block is not None:
        # The over-long lines were never read: only blocks of short lines and the longest
        # allowed line.
        assert max(reads) <= MAX_LINE_BYTES + block + 1
    old = oracle_build([path], cfg, tmp_path / "old", skip_invalid=True)
    assert (new.records_read, new.written, new.records_invalid) == (200, 198, 2)
    for f in SUMMARY_FIELDS:
        assert getattr(new, f) == getattr(old, f), f
    assert dump(tmp_path / "new") == dump(tmp_path / "old")


RULES_CFG = msgspec.convert(
    {
        "id_types": {t: {"priority": i, "unique": t == "customer_id"} for i, t in enumerate(TYPES)},
        "blocklist": {"email": ["junk", ""], "*": ["0000"]},
    },
    ProfilesConfig,
)


@st.composite
def ids_dicts(draw: Any) -> dict[str, Any]:
    types = draw(st.lists(st.sampled_from([*TYPES, "fax"]), max_size=3, unique=True))
    return {t: draw(id_values(t if t != "fax" else "cookie")) for t in types} | (
        {"cookie": ""} if draw(st.integers(0, 6)) == 0 else {}
    )


@given(st.lists(ids_dicts(), max_size=12))
def test_keying_a_block_is_keying_each_record(ids: list[dict[str, Any]]) -> None:
    rules = IdRules(RULES_CFG)
    each = [rules.keyed(d) for d in ids]
    kb = key_block(rules, ids)
    plain = all(
        k.problem is None and all(isinstance(v, str) for v in d.values())
        for d, k in zip(ids, each, strict=True)
    )
    if not plain:
        assert kb is None
        return
    assert kb is not None
    keys = [
        f"{rules.order[r]}:{v}" for r, v in zip(kb.rank.tolist(), kb.value.to_pylist(), strict=True)
    ]
    rows = sorted(zip(kb.record.tolist(), kb.pos.tolist(), keys, kb.rank.tolist(), strict=True))
    assert rows == [(i, p, key, r) for i, k in enumerate(each) for p, (key, r) in enumerate(k.keys)]
    assert kb.blocked == [(i, b) for i, k in enumerate(each) for b in k.blocked]


@pytest.mark.parametrize("workers", [1, 2])
def test_plain_exports_never_take_the_line_by_line_path(
    tmp_path: Path, profiles_config: Any, workers: int
) -> None:
    """The fast path is the one taken (else the tests above would pass on the old reader)."""
    cfg = profiles_config()
    path = tmp_path / "in.ndjson"
    lines = [
        orjson.dumps(
            {
                "source": "crm",
                "ids": {"cookie": f"k{i}", "device_id": "0000"},
                "updated_at": "2026-11-01T00:00:00Z",
            }
        )
        for i in range(50)
    ]
    path.write_bytes(b"\n".join(lines))
    with (
        mock.patch.object(snapshots.ndjson_blocks, "BLOCK_BYTES", 300),
        mock.patch.object(snapshots.engine.read_ndjson, "read_lines", side_effect=AssertionError),
    ):
        s = build_profiles(
            [path], cfg, tmp_path / "out", options=EngineOptions(merge_workers=workers)
        )
    assert (s.records_read, s.written, s.blocked) == (50, 50, 50)
    assert s.blocked_examples[0] == f"{path}:1: device_id:0000"
    # A bad line sends its block (only) down the line-by-line path, which names the line.
    path.write_bytes(b"\n".join([*lines[:10], b"{oops", *lines[10:]]))
    with pytest.raises(snapshots.InputInvalid, match=rf"{path.name}:11: malformed JSON"):
        build_profiles([path], cfg, tmp_path / "out2", options=EngineOptions(merge_workers=workers))
