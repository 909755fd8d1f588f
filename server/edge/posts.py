"""POST routes the HTTP protocol answers itself once their body is in (server/edge/protocol.py).

A JSON route such as `POST /v1/decide` needs no `await` once its body has arrived; under ASGI it
still pays for a scope, a task, a request-response cycle and uvicorn's checks on the way out —
about as much as the decision (issue 15 item 5). The app hands the protocol such routes in the
ASGI lifespan state (`PROTOCOL_POSTS`, by path), as it hands the GET routes (`PROTOCOL_ROUTES`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..asgi import Scope
from ..state import AppState

# The lifespan state key holding the POST routes the protocol answers, by path (bytes).
PROTOCOL_POSTS = "edgeside.posts"

# The whole answer (status, JSON body) to a request whose body is in, counted as the route counts
# it; raises nothing the route would not (a fault goes on to the ASGI route).
Responds = Callable[[Scope, bytes], tuple[int, bytes]]


class BodyRoute:
    """A POST route the protocol answers once the body is in: a request it cannot be sure of (a
    body over `max_body`, no `Content-Length`, a header over the limit) goes on to the app."""

    def __init__(self, state: AppState, label: str, respond: Responds) -> None:
        self.respond = respond
        self.label = label
        self.max_body = state.settings.limits.max_body_bytes
        # A header longer than this is the app's 431 (`ContextBuilder.oversized_header`).
        self.header_limit = state.settings.limits.max_header_bytes
        self.answered = 0  # by the protocol since the last scrape
        self._counter = state.metrics.protocol_decisions
        state.before_scrape.append(self.count)

    def count(self) -> None:
        answered, self.answered = self.answered, 0
        self._counter.inc((self.label,), answered)
