"""How a GET hot-route request is looked up in the answer memos: by what can change its answer.

A proxy forwards more than the rules read: the page's URL, the referrer, the user agent. Keyed by
every header byte for byte, a memo would know an answer only for the very same page view. Keyed by
the headers the current rules can depend on (`ContextBuilder.key_headers` of the engine's
`context_fields`), the same visitor on another page finds the answer already known. The key sets
change with the rules: they are reset when a new world is swapped in, as the memos are cleared.

A header over the size limit makes a request unkeyable (None): it is never answered from a memo,
so it still gets its 431 from the route, even when the rules never read that header.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ..asgi import Headers
from ..decide.context import VISITOR_HEADERS, ContextBuilder


class MemoKeys:
    def __init__(self, builder: ContextBuilder, max_header_bytes: int) -> None:
        self.builder = builder
        self.limit = max_header_bytes
        # The headers keyed for one visitor's request (None: every header).
        self._asked: frozenset[bytes] | None = None

    def use(self, fields: Iterable[str] | None) -> None:
        """Key requests by what decisions reading these context fields can depend on (the
        engine's `context_fields`; None: by every header)."""
        keyed = None if fields is None else self.builder.key_headers(fields)
        self._asked = None if keyed is None else keyed | VISITOR_HEADERS

    def edge(self, method: str, path: str, query: bytes, headers: Headers) -> Hashable | None:
        """`/v1/edge`: one visitor's question (the path is always the same)."""
        return _key([method, query], headers, self._asked, self.limit)

    def fragment(self, method: str, path: str, query: bytes, headers: Headers) -> Hashable | None:
        return _key([path, method, query], headers, self._asked, self.limit)


def _key(
    parts: list[object], headers: Headers, keep: frozenset[bytes] | None, limit: int
) -> Hashable | None:
    """`parts` and the headers in `keep` (all if None), in order; None if one left out is over
    `limit` (one kept cannot be: a request with one is refused, so never remembered)."""
    if keep is None:
        parts.extend(headers)
        return tuple(parts)
    for header in headers:
        if header[0] in keep:
            parts.append(header)
        elif len(header[1]) > limit:
            return None
    return tuple(parts)
