"""Identity stitching: transitive links, unique-type conflicts, the cluster cap, the blocklist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from snapshots.config import ProfilesConfig
from snapshots.profiles_build import build_profiles
from snapshots.reader import open_profiles
from snapshots.stitching import (
    CID_DIGEST_BYTES,
    Stitcher,
    canonical_digests,
    canonical_id,
    digest_order,
    key_places,
)
from tests.snapshots.kit import WriteNdjson, rec


def test_links_are_transitive() -> None:
    s = Stitcher(frozenset({"email"}), max_cluster_size=10)
    a = s.add_record([("email", "e1"), ("cookie", "ka")])
    b = s.add_record([("email", "e1"), ("cookie", "kb")])  # A~B by email
    c = s.add_record([("cookie", "kb"), ("device", "d3")])  # B~C by cookie
    d = s.add_record([("cookie", "kd")])
    assert s.find(a) == s.find(b) == s.find(c)
    assert s.find(d) != s.find(a)


def test_transitive_records_become_one_profile(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> None:
    src = write_ndjson(
        "in.ndjson",
        [
            rec("crm", {"customer_id": "C1", "email_sha256": "e1"}, attributes={"tier": "gold"}),
            rec("web", {"email_sha256": "e1", "cookie": "k1"}),
            rec("web", {"cookie": "k1", "device_id": "d1"}, interests={"running": 0.9}),
            rec("web", {"cookie": "k2"}),
        ],
    )
    summary = build_profiles([src], profiles_config(), tmp_path / "snap")
    assert summary.written == 2
    assert summary.merges == 2
    with open_profiles(tmp_path / "snap") as r:
        p = r.lookup({"device_id": "d1"})
        assert p is not None
        assert p.ids == {
            "customer_id": ["C1"],
            "email_sha256": ["e1"],
            "cookie": ["k1"],
            "device_id": ["d1"],
        }
        assert p.attributes["tier"] == "gold" and p.interests == {"running": 0.9}
        assert r.resolve("customer_id", "C1") == r.resolve("cookie", "k1") == p.id
        assert r.resolve("cookie", "k2") not in (None, p.id)


def test_two_unique_ids_never_merge_the_link_is_reported(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> None:
    src = write_ndjson(
        "in.ndjson",
        [
            rec("crm", {"customer_id": "C1", "cookie": "shared-kiosk"}),
            rec("crm", {"customer_id": "C2", "cookie": "shared-kiosk"}),
        ],
    )
    summary = build_profiles([src], profiles_config(), tmp_path / "snap")
    assert summary.written == 2
    assert summary.conflicts == 1
    assert "customer_id:C1" in summary.conflict_examples[0]
    assert "customer_id:C2" in summary.conflict_examples[0]
    with open_profiles(tmp_path / "snap") as r:
        assert r.resolve("customer_id", "C1") != r.resolve("customer_id", "C2")


def test_cluster_cap_refuses_links_beyond_it() -> None:
    s = Stitcher(frozenset(), max_cluster_size=3)
    s.add_record([("cookie", "a"), ("cookie", "b")])
    s.add_record([("cookie", "b"), ("cookie", "c")])
    s.add_record([("cookie", "c"), ("cookie", "d")])  # would make 4
    assert s.find(s.index["cookie:a"]) == s.find(s.index["cookie:c"])
    assert s.find(s.index["cookie:d"]) != s.find(s.index["cookie:a"])
    assert s.report.capped == 1
    assert "max_cluster_size 3" in s.report.capped_examples[0]


def test_blocklisted_values_link_nothing(
    tmp_path: Path, write_ndjson: WriteNdjson, profiles_config: Callable[..., ProfilesConfig]
) -> None:
    src = write_ndjson(
        "in.ndjson",
        [
            rec("crm", {"customer_id": "C1", "email_sha256": "junk"}),
            rec("crm", {"customer_id": "C2", "email_sha256": "junk", "device_id": "0000"}),
        ],
    )
    summary = build_profiles([src], profiles_config(), tmp_path / "snap")
    assert summary.written == 2
    assert summary.conflicts == 0  # never even tried: the junk value is not an identifier
    assert summary.blocked == 3
    assert summary.blocked_examples[0] == f"{src}:1: email_sha256:junk"
    with open_profiles(tmp_path / "snap") as r:
        assert r.resolve("email_sha256", "junk") is None


def test_canonical_digests_are_the_canonical_ids() -> None:
    """The engine hexes the digests in bulk: the same ids as `canonical_id`, non-ASCII too."""
    keys = ["email:e1", "cookie:k\u00e9", "device:" + "x" * 300, ""]
    d = canonical_digests(k.encode() for k in keys)
    assert len(d) == CID_DIGEST_BYTES * len(keys)
    hexed = ["p_" + d[i : i + CID_DIGEST_BYTES].hex() for i in range(0, len(d), CID_DIGEST_BYTES)]
    assert hexed == [canonical_id(k) for k in keys]


def test_digests_are_ordered_as_their_canonical_ids_are() -> None:
    """Sorted as integers, ties in the first 8 bytes and equal digests too, stable as sorting
    the ids' text is."""
    rng = np.random.default_rng(7)
    d = rng.integers(0, 256, (2000, CID_DIGEST_BYTES), dtype=np.uint8)
    d[:300, :8] = d[0, :8]  # the same first 8 bytes, different last ones
    d[300:320] = d[300]  # equal digests: input order kept
    d[320:330, :8] = 0xFF
    for rows in (d, d[330:]):  # with and without ties in the first 8 bytes
        text = ["p_" + bytes(r).hex() for r in rows]
        expect = sorted(range(len(text)), key=lambda i: (text[i], i))
        assert digest_order(rows).tolist() == expect
    assert digest_order(d[:0]).tolist() == []


def test_keys_sort_as_their_types_places_and_values() -> None:
    """The engine sorts identifiers by (type's place, value): the order of the keys' bytes,
    types that are prefixes of others and values of any bytes included."""
    types = ["cookie", "cookie_id", "a", "ab", "é", "z"]
    values = ["", "0", ":", "_", "a", "b:c", "\u00e9", "\U0001f600", "~"]
    places = key_places(types)
    keys = [(i, v) for i in range(len(types)) for v in values]
    by_key = sorted(keys, key=lambda k: f"{types[k[0]]}:{k[1]}".encode())
    assert sorted(keys, key=lambda k: (places[k[0]], k[1].encode())) == by_key
    assert sorted(places) == list(range(len(types)))


def test_a_type_holding_a_colon_has_no_place() -> None:
    with pytest.raises(ValueError, match="'a'"):
        key_places(["a", "a:b"])
