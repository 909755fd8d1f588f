"""The demo shop agrees with the vocabulary in docs/CONTRACTS.md that the rules rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapshots import open_content, open_profiles
from snapshots.config import ContentConfig, ProfilesConfig, load_config
from snapshots.content_build import build_content
from snapshots.profiles_build import build_profiles

DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data"


def test_named_visitors_have_their_traits(tmp_path: Path) -> None:
    cfg = load_config(DEMO / "profiles.yaml", ProfilesConfig)
    s = build_profiles(sorted((DEMO / "profiles").glob("*.ndjson")), cfg, tmp_path / "p")
    assert s.records_invalid == 0 and 250 <= s.written <= 400 and s.merges > 100
    with open_profiles(tmp_path / "p") as r:
        expect = {
            "c-alice": ("gold", "FR", {"running"}),
            "c-bruno": ("bronze", "DE", {"camping"}),
            "c-chloe": ("platinum", "GB", {"climbing", "fashion"}),
        }
        for cookie, (tier, country, interests) in expect.items():
            p = r.lookup({"cookie": cookie})
            assert p is not None, cookie
            assert p.attributes["tier"] == tier and p.attributes["country"] == country
            top = {k for k, v in p.interests.items() if v >= 0.8}
            assert top == interests
            assert p.sources == ["crm", "web"]
        assert r.lookup({"cookie": "c-nobody"}) is None


def test_content_covers_every_placement_locale_and_type(tmp_path: Path) -> None:
    cfg = load_config(DEMO / "content.yaml", ContentConfig)
    s = build_content(sorted((DEMO / "content").glob("*.ndjson")), cfg, tmp_path / "c")
    assert s.records_invalid == 0 and 80 <= s.written <= 120
    now = datetime(2027, 6, 1, tzinfo=UTC).timestamp()
    with open_content(tmp_path / "c") as c:
        for placement in ("home_hero", "home_recs", "article_sidebar", "cart_upsell"):
            for locale in ("fr-FR", "de-DE", "en-GB"):
                ids = c.ids("placement", placement) & c.ids("locale", locale)
                live = [i for i in ids if (it := c.item(i)) and (it.valid_to or 0) > now]
                assert live, (placement, locale)
        for t in ("banner", "article", "product", "offer"):
            assert c.ids("type", t)
        for tag in ("budget", "premium", "fresh"):
            assert c.ids("tag", tag)
        expired = [i for i in c.all_ids() if (it := c.item(i)) and (it.valid_to or 1e12) < now]
        assert expired


def test_a_profile_decoded_only_as_far_as_asked(tmp_path: Path) -> None:
    # Issue 15: the server asks for the fields its rules read; the rest is never decoded.
    cfg = load_config(DEMO / "profiles.yaml", ProfilesConfig)
    build_profiles(sorted((DEMO / "profiles").glob("*.ndjson")), cfg, tmp_path / "p")
    fields = frozenset({"attributes", "segments"})
    with open_profiles(tmp_path / "p") as r:
        for cookie in ("c-alice", "c-bruno", "c-chloe"):
            whole = r.lookup({"cookie": cookie})
            view = r.lookup({"cookie": cookie}, fields)
            assert whole is not None and view is not None
            assert type(view).__struct_fields__ == ("id", "attributes", "segments")
            assert (view.id, view.attributes, view.segments) == (
                whole.id,
                whole.attributes,
                whole.segments,
            )
            assert whole.interests and whole.sources  # there, but not decoded into the view
            assert (view.interests, view.sources, view.ids) == ({}, (), {})
            assert r.get(whole.id, fields) == view
        assert r.lookup({"cookie": "c-nobody"}, fields) is None
        with pytest.raises(ValueError, match="not profile fields"):
            r.lookup({"cookie": "c-alice"}, frozenset({"password"}))
