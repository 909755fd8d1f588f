"""Profile builds end to end: round trip through LMDB, and every kind of bad input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapshots import InputInvalid, OutputExists, open_profiles
from snapshots.config import ProfilesConfig
from snapshots.profiles_build import build_profiles
from tests.snapshots.kit import WriteNdjson, rec

Cfg = Callable[..., ProfilesConfig]


def test_round_trip_by_id_alias_and_priority(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg
) -> None:
    src = write_ndjson(
        "in.ndjson",
        [
            rec(
                "crm",
                {"customer_id": "C1", "cookie": "k1"},
                attributes={"tier": "gold"},
                last_seen={"category:shoes": "2026-11-19T18:00:00+01:00"},
            ),
            rec(
                "crm", {"customer_id": "C2", "cookie": ["k2", "k2b"]}, attributes={"tier": "silver"}
            ),
        ],
    )
    summary = build_profiles([src], profiles_config(), tmp_path / "snap")
    assert (summary.records_read, summary.written, summary.aliases) == (2, 2, 5)
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["data.mdb", "manifest.json"]
    with open_profiles(tmp_path / "snap") as r:
        assert r.manifest.counts["profiles"] == 2
        assert r.id_priority == ["customer_id", "email_sha256", "cookie", "device_id"]
        cid = r.resolve("cookie", "k2b")
        assert cid is not None
        p = r.get(cid)
        assert p is not None and p.attributes == {"tier": "silver"} and p.id == cid
        assert p.ids["cookie"] == ["k2", "k2b"]
        # customer_id is tried before cookie, so C1 wins over the cookie of C2.
        first = r.lookup({"cookie": "k2", "customer_id": "C1"})
        assert first is not None and first.attributes["tier"] == "gold"
        shoes = datetime(2026, 11, 19, 17, 0, tzinfo=UTC).timestamp()  # 18:00 at UTC+1
        assert first.last_seen == {"category:shoes": shoes}
        assert r.lookup({"cookie": "nobody"}) is None
        assert r.get("p_missing") is None


BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"source": "crm", "ids": {"cookie": "k"}', "malformed JSON"),
    (
        b'{"source": "crm", "ids": {"cookie": 7}, "updated_at": "2026-11-20T10:00:00Z"}',
        "$.ids[...]",
    ),
    (b'{"source": "crm", "ids": {}, "updated_at": "2026-11-20T10:00:00Z"}', "no identifiers"),
    (
        b'{"source": "crm", "ids": {"cookie": "k"}, "updated_at": "2026-13-45T10:00:00Z"}',
        "$.updated_at",
    ),
    (b'{"source": "crm", "ids": {"cookie": "k"}, "updated_at": "2026-11-20T10:00:00"}', "timezone"),
    (
        b'{"source": "cr\xff", "ids": {"cookie": "k"}, "updated_at": "2026-11-20T10:00:00Z"}',
        "invalid UTF-8",
    ),
    (
        b'{"source": "crm", "ids": {"fax": "k"}, "updated_at": "2026-11-20T10:00:00Z"}',
        "unknown id type `fax`",
    ),
    (
        b'{"source": "crm", "ids": {"cookie": "k"}, "updated_at": "2026-11-20T10:00:00Z", "attributes": {"ltv": [1]}}',  # noqa: E501
        "$.attributes[...]",
    ),
    (
        b'{"source": "crm", "ids": {"customer_id": ["C1", "C2"]}, "updated_at": "2026-11-20T10:00:00Z"}',  # noqa: E501
        "unique",
    ),
    (
        b'{"source": "crm", "ids": {"email_sha256": "junk"}, "updated_at": "2026-11-20T10:00:00Z"}',
        "blocklisted",
    ),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_lines_are_reported_with_file_and_line(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg, line: bytes, reason: str
) -> None:
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": "ok"}), line])
    with pytest.raises(InputInvalid) as err:
        build_profiles([src], profiles_config(), tmp_path / "snap")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"{src}:2: ")
    assert reason in err.value.problems[0]
    assert not (tmp_path / "snap").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")] == []


def test_skip_invalid_builds_from_the_good_records(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg
) -> None:
    src = write_ndjson(
        "in.ndjson", [line for line, _ in BAD_LINES] + [rec("crm", {"cookie": "ok"})]
    )
    summary = build_profiles([src], profiles_config(), tmp_path / "snap", skip_invalid=True)
    assert summary.records_invalid == len(BAD_LINES)
    assert summary.written == 1
    assert [p.split(": ")[0] for p in summary.invalid] == [
        f"{src}:{i}" for i in range(1, len(BAD_LINES) + 1)
    ]
    with open_profiles(tmp_path / "snap") as r:
        assert r.lookup({"cookie": "ok"}) is not None


def test_an_existing_output_is_never_overwritten(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Cfg
) -> None:
    src = write_ndjson("in.ndjson", [rec("crm", {"cookie": "ok"})])
    build_profiles([src], profiles_config(), tmp_path / "snap")
    with pytest.raises(OutputExists):
        build_profiles([src], profiles_config(), tmp_path / "snap")
    build_profiles([src], profiles_config(), tmp_path / "snap", force=True)
