"""Build configuration, declarative and loaded from YAML or JSON (same schema).

Profiles: identifier types (priority, `unique`), junk values to ignore, a cluster cap, and a merge
policy per field. Content: sources with field mappings to the hub schema, and enrichment rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import msgspec
import yaml

from snapshots.errors import ConfigInvalid
from snapshots.model import Scalar, TzDatetime

Policy = Literal["newest", "source_priority", "sum", "max"]
MERGE_GROUPS = ("attributes", "interests", "counters", "last_seen")


class IdType(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    priority: int  # lower = tried first by lookups and preferred for the canonical id
    unique: bool = False  # one value per person: two different values never merge


class MergeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    default: Policy = "newest"
    # "counters", "interests", or one key: "attributes.tier"; the most specific entry wins.
    fields: dict[str, Policy] = {}


class ProfilesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id_types: dict[str, IdType]
    kind: Literal["profiles"] = "profiles"
    blocklist: dict[str, list[str]] = {}  # id type (or "*") -> junk values never used to link
    max_cluster_size: int = 64  # identifiers per profile; a link that would exceed it is refused
    source_priority: list[str] = []  # first = most trusted, for the `source_priority` policy
    merge: MergeConfig = MergeConfig()

    def id_priority(self) -> list[str]:
        return sorted(self.id_types, key=lambda t: (self.id_types[t].priority, t))


class SourceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # hub field (or "attributes.x" / "fields.x") -> dotted path in the source record.
    # Hub fields not mapped are read from the record's field of the same name.
    fields: dict[str, str] = {}
    defaults: dict[str, Scalar | list[str]] = {}
    id_prefix: str = ""


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """All given tests must hold. Numeric tests read `attribute` from the item's attributes."""

    type: str | None = None
    has_tag: str | None = None
    attribute: str | None = None
    lt: float | None = None
    lte: float | None = None
    gt: float | None = None
    gte: float | None = None
    published_within_days: float | None = None


class EnrichRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    when: Condition
    add_tags: list[str] = []
    set_attributes: dict[str, Scalar] = {}


class ContentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sources: dict[str, SourceConfig]
    kind: Literal["content"] = "content"
    enrich: list[EnrichRule] = []
    # Freshness is judged against this instant; unset means the build time.
    reference_time: TzDatetime | None = None


C = TypeVar("C", ProfilesConfig, ContentConfig)


def load_config(path: str | os.PathLike[str], cls: type[C]) -> C:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigInvalid(f"{p}: no such config file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(f"{p}: not valid YAML/JSON: {exc}") from None
    try:
        cfg = msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise ConfigInvalid(f"{p}: {exc}") from None
    if isinstance(cfg, ProfilesConfig):
        _check_profiles(p, cfg)
    return cfg


def _check_profiles(p: Path, cfg: ProfilesConfig) -> None:
    if not cfg.id_types:
        raise ConfigInvalid(f"{p}: `id_types` is empty; declare at least one identifier type")
    if cfg.max_cluster_size < 1:
        raise ConfigInvalid(f"{p}: `max_cluster_size` must be ≥ 1")
    for name in cfg.id_types:
        if ":" in name:
            raise ConfigInvalid(f"{p}: id type {name!r} must not contain ':'")
    for t in cfg.blocklist:
        if t != "*" and t not in cfg.id_types:
            raise ConfigInvalid(f"{p}: blocklist names unknown id type {t!r}")
    for field in cfg.merge.fields:
        group = field.split(".", 1)[0]
        if group not in MERGE_GROUPS:
            raise ConfigInvalid(
                f"{p}: merge.fields.{field}: unknown field; expected one of {MERGE_GROUPS} "
                "or `group.key`"
            )
