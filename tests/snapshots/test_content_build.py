"""Content hub: two sources normalised into one schema, enrichment, indexes, validity windows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from snapshots import InputInvalid, open_content
from snapshots.config import ContentConfig
from snapshots.content_build import build_content
from tests.snapshots.kit import WriteNdjson

CONFIG: dict[str, Any] = {
    "sources": {
        "cms": {
            "fields": {
                "id": "uid",
                "title": "headline",
                "placements": "slots",
                "valid_from": "from",
                "valid_to": "until",
                "published_at": "published",
            },
            "defaults": {"type": "article"},
        },
        "pim": {
            "fields": {
                "id": "sku",
                "type": "family",
                "title": "name",
                "categories": "category",
                "attributes.price": "price.amount",
            },
            "id_prefix": "pim:",
        },
    },
    "enrich": [
        {"when": {"type": "product", "attribute": "price", "lt": 20}, "add_tags": ["budget"]},
        {"when": {"type": "product", "attribute": "price", "gte": 150}, "add_tags": ["premium"]},
        {"when": {"published_within_days": 14}, "add_tags": ["fresh"]},
    ],
    "reference_time": "2026-11-22T00:00:00Z",
}
CMS = {
    "uid": "a1",
    "headline": "Trail guide",
    "locale": "en-GB",
    "tags": ["running"],
    "slots": ["article_sidebar"],
    "from": "2026-01-01T00:00:00Z",
    "until": "2027-12-31T00:00:00Z",
    "published": "2026-11-20T00:00:00Z",
    "body": "<p>hi</p>",
}
PIM = [
    {
        "sku": "S1",
        "family": "product",
        "name": "Socks",
        "category": "running",
        "locale": "en-GB",
        "price": {"amount": 9.5},
        "placements": ["home_recs"],
    },
    {
        "sku": "S2",
        "family": "product",
        "name": "Tent",
        "category": "camping",
        "locale": "de-DE",
        "price": {"amount": 499},
        "placements": ["home_recs", "cart_upsell"],
    },
]


def cfg() -> ContentConfig:
    return msgspec.convert(CONFIG, ContentConfig)


def test_two_sources_become_one_hub_with_indexes(tmp_path: Path, write_ndjson: WriteNdjson) -> None:
    inputs = [write_ndjson("cms.ndjson", [CMS]), write_ndjson("pim.ndjson", PIM)]
    summary = build_content(inputs, cfg(), tmp_path / "snap")
    assert summary.written == 3
    with open_content(tmp_path / "snap") as c:
        a = c.item("a1")
        assert a is not None
        assert (a.type, a.title, a.source, a.placements) == (
            "article",
            "Trail guide",
            "cms",
            ["article_sidebar"],
        )
        assert a.valid_from == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
        assert a.valid_to == datetime(2027, 12, 31, tzinfo=UTC).timestamp()
        assert a.tags == ["fresh", "running"]  # published 2 days before the reference time
        socks, tent = c.get("pim:S1"), c.get("pim:S2")
        assert socks is not None and tent is not None
        assert socks.attributes == {"price": 9.5} and socks.categories == ["running"]
        assert "budget" in socks.tags and "premium" in tent.tags
        assert c.ids("tag", "budget") == {"pim:S1"}
        assert c.ids("placement", "home_recs") == {"pim:S1", "pim:S2"}
        assert c.ids("type", "product") == {"pim:S1", "pim:S2"}
        assert c.ids("locale", "en-GB") == {"a1", "pim:S1"}
        assert c.ids("category", "camping") == {"pim:S2"}
        assert c.ids("tag", "nothing") == frozenset()
        assert c.ids("tag", "budget") is c.ids("tag", "budget")  # cached after first use
        assert c.item("missing") is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({**CMS, "uid": "a1"}, "duplicate content id 'a1' (first at "),
        ({**CMS, "uid": "a2", "from": "yesterday"}, "$.valid_from"),
        ({**CMS, "uid": "a3", "until": "2025-01-01T00:00:00Z"}, "is after valid_to"),
        ({**CMS, "uid": "a4", "headline": None}, "$.title"),
        ({**CMS, "source": "blog"}, "unknown source 'blog'"),
        ({k: v for k, v in CMS.items() if k != "uid"}, "Object missing required field `id`"),
    ],
)
def test_bad_items_are_reported_with_file_and_line(
    tmp_path: Path, write_ndjson: WriteNdjson, record: dict[str, Any], reason: str
) -> None:
    src = write_ndjson("cms.ndjson", [CMS, record])
    with pytest.raises(InputInvalid) as err:
        build_content([src], cfg(), tmp_path / "snap")
    assert err.value.problems[0].startswith(f"{src}:2: ")
    assert reason in err.value.problems[0]
    assert not (tmp_path / "snap").exists()
    summary = build_content([src], cfg(), tmp_path / "snap", skip_invalid=True)
    assert (summary.written, summary.records_invalid) == (1, 1)
