"""Build configs: YAML or JSON, every mistake named with the file and the path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from snapshots import ConfigInvalid
from snapshots.config import ContentConfig, ProfilesConfig, load_config

GOOD: dict[str, Any] = {"id_types": {"cookie": {"priority": 1}}}


def test_yaml_and_json_give_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    a = load_config(tmp_path / "a.yaml", ProfilesConfig)
    assert a == load_config(tmp_path / "a.json", ProfilesConfig)
    assert a.merge.default == "newest" and a.max_cluster_size == 64


@pytest.mark.parametrize(
    ("cfg", "reason"),
    [
        ({**GOOD, "merge": {"default": "average"}}, "$.merge.default"),
        ({**GOOD, "merge": {"fields": {"attributes.tier": "oldest"}}}, "$.merge.fields"),
        ({**GOOD, "merge": {"fields": {"tier": "max"}}}, "merge.fields.tier: unknown field"),
        ({**GOOD, "blocklist": {"fax": ["0"]}}, "unknown id type 'fax'"),
        ({**GOOD, "id_types": {}}, "`id_types` is empty"),
        ({**GOOD, "max_cluster_size": 0}, "max_cluster_size"),
        ({**GOOD, "id_type": {}}, "unknown field `id_type`"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, cfg: dict[str, Any], reason: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigInvalid) as err:
        load_config(path, ProfilesConfig)
    assert str(err.value).startswith(f"{path}: ")
    assert reason in str(err.value)


def test_content_config_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  cms: {fields: {id: uid}}\nenrich:\n  - when: {lt: cheap}\n")
    with pytest.raises(ConfigInvalid, match=r"\$\.enrich\[0\]\.when\.lt"):
        load_config(path, ContentConfig)
    path.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigInvalid, match="not valid YAML"):
        load_config(path, ContentConfig)
