"""NDJSON read in blocks (issue 17): the engine's fast path reads what the line-by-line reader
reads — the same lines, keys, blocked values, errors and snapshot — wherever blocks are cut and
whatever the lines hold (escapes, unicode, duplicate keys, CRLF, blank or bad lines, a last
line without a newline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snapshots.engine
import snapshots.ndjson_blocks
from snapshots.config import ProfilesConfig
from snapshots.engine import EngineOptions, build_profiles
from snapshots.identity import IdRules
from snapshots.ndjson_blocks import (
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
    data=st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")), size=st.integers(1, 64)
)
def test_blocks_are_the_files_lines_numbered(tmp_path_factory: Any, data: bytes, size: int) -> None:
    path = tmp_path_factory.mktemp("b") / "x.ndjson"
    path.write_bytes(data)
    expected = path.read_bytes().split(b"\n")
    got = [read_span(path, off, n) for off, n in spans(path, size)]
    assert b"".join(got) == data
    first = 1
    for blk in got:
        assert blk.endswith(b"\n") or blk is got[-1]
        lines = split_lines(blk)
        assert lines == expected[first - 1 : first - 1 + len(lines)]
        first += len(lines)
        # The payloads are the lines as `for line in file` yields them, newline included.
        with_eol = [line + b"\n" for line in lines]
        if not blk.endswith(b"\n"):
            with_eol[-1] = lines[-1]
        assert payloads(blk, line_offsets(lines, len(blk))).to_pylist() == with_eol


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
    rows = sorted(
        zip(kb.record.tolist(), kb.pos.tolist(), kb.key.to_pylist(), kb.rank.tolist(), strict=True)
    )
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
        mock.patch.object(snapshots.engine._Build, "_ndjson_lines", side_effect=AssertionError),
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
