"""The records snapshots hand to the world (docs/CONTRACTS.md). Times are epoch seconds (UTC)."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

TzDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Scalar = str | int | float | bool | None
# An export's integers: 64-bit signed, as Parquet's and most warehouses' (a snapshot value holds
# up to 2**64 - 1). One past that is refused where it is read, with its file and line, not
# when its profile is written.
StoredInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
InputScalar = str | StoredInt | float | bool | None


class Profile(msgspec.Struct, frozen=True):
    id: str
    ids: dict[str, list[str]]
    attributes: dict[str, Scalar]
    interests: dict[str, float]
    segments: list[str]
    counters: dict[str, float]
    last_seen: dict[str, float]
    updated_at: float
    sources: list[str]


_EMPTY: Any = types.MappingProxyType({})  # read-only: shared by every view


class ProfileView(msgspec.Struct, frozen=True):
    """A profile decoded only as far as the reader was asked (`profile_view`): its `id` and the
    named fields; every other field reads as empty. Decoding a profile is most of a look-up, and
    a reader of a few fields need not pay for all of them (issue 15)."""

    id: str
    ids: ClassVar[Mapping[str, Sequence[str]]] = _EMPTY
    attributes: ClassVar[Mapping[str, Scalar]] = _EMPTY
    interests: ClassVar[Mapping[str, float]] = _EMPTY
    segments: ClassVar[Sequence[str]] = ()
    counters: ClassVar[Mapping[str, float]] = _EMPTY
    last_seen: ClassVar[Mapping[str, float]] = _EMPTY
    updated_at: ClassVar[float] = 0.0
    sources: ClassVar[Sequence[str]] = ()


PROFILE_FIELDS = frozenset(Profile.__struct_fields__)


def profile_view(fields: Iterable[str]) -> type[ProfileView]:
    """The `ProfileView` type that decodes `fields` of a `Profile` (besides `id`); a name that is
    not a profile field is a programming error (ValueError)."""
    wanted = frozenset(fields) - {"id"}
    unknown = wanted - PROFILE_FIELDS
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    return _view(wanted)


@functools.cache  # one type per field set: a handful per process
def _view(fields: frozenset[str]) -> type[ProfileView]:
    hints = typing.get_type_hints(Profile)
    own = [(name, hints[name]) for name in Profile.__struct_fields__ if name in fields]
    # gc=False: a view holds only scalars and containers of scalars (no cycles), so the collector
    # need not track it — ~4 % of decoding one (issue 15).
    view = msgspec.defstruct(
        "ProfileView", own, bases=(ProfileView,), frozen=True, gc=False, module=__name__
    )
    return typing.cast(type[ProfileView], view)


class ContentItem(msgspec.Struct, frozen=True):
    id: str
    source: str
    type: str
    title: str
    locale: str | None
    tags: list[str]
    categories: list[str]
    placements: list[str]
    attributes: dict[str, Scalar]
    valid_from: float | None
    valid_to: float | None
    published_at: float | None
    priority: float
    body: str
    template: str | None
    fields: dict[str, str]


class ProfileRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of a profile export: one source system's view of one person (SPEC §4)."""

    source: str
    ids: dict[str, str | list[str]]
    updated_at: TzDatetime
    attributes: dict[str, InputScalar] = {}
    interests: dict[str, float] = {}
    segments: list[str] = []
    counters: dict[str, float] = {}
    last_seen: dict[str, TzDatetime] = {}
