"""Who asks: the identifiers a request names, before any profile is looked up (shared by the
decision service and the live store)."""

from __future__ import annotations


class Visitor:
    """Identifiers to resolve, in order; empty means anonymous."""

    __slots__ = ("canonical", "ids")

    def __init__(self, canonical: str | None = None, ids: dict[str, str] | None = None) -> None:
        self.canonical = canonical
        self.ids = ids or {}

    @property
    def anonymous(self) -> bool:
        return self.canonical is None and not self.ids
