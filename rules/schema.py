"""What names exist: the declared profile schema, the profile's own fields and `recent.*`.

The context fields are described by `rules.context.FIELDS`, the functions by `rules.builtins`."""

from __future__ import annotations

from dataclasses import dataclass, field

from rules import types as T


@dataclass(slots=True)
class Attribute:
    name: str
    type: T.Type
    values: tuple[str | int | float, ...] | None = None  # declared enum, when given


@dataclass(slots=True)
class ProfileSchema:
    """The profile attributes a rules file declares it uses (``schema:``).

    ``interests``/``counters``/``upstream_segments`` are optional name lists: when given, names
    used in expressions are checked against them; when absent any name is accepted.
    """

    attributes: dict[str, Attribute] = field(default_factory=dict)
    interests: frozenset[str] | None = None
    counters: frozenset[str] | None = None
    upstream_segments: frozenset[str] | None = None


# Fields of `profile.` that are not declared attributes.
PROFILE_BUILTINS: dict[str, T.Type] = {
    "id": T.STRING,
    "interests": T.NUMBER_MAP,
    "counters": T.NUMBER_MAP,
    "last_seen": T.TIMESTAMP_MAP,
    "segments": T.STRING_LIST,
    "attributes": T.Type("map", T.ANY),
}

RECENT_FIELDS: dict[str, T.Type] = {
    "views": T.STRING_LIST,
    "purchases": T.STRING_LIST,
    "cart": T.STRING_LIST,
    "categories": T.NUMBER_MAP,
}

ROOTS = ("profile", "ctx", "segment", "recent")
