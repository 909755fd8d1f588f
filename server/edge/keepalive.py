"""The keep-alive timeout with one timer per idle spell, not one per request.

uvicorn closes a keep-alive connection idle for `timeout_keep_alive` seconds by arming a timer
when each response completes and cancelling it when the next request's data arrives: on a busy
connection that is a timer made, pushed into the loop's heap and cancelled for every request —
2.7 µs a request on uvloop (timeit), a few percent of a first question (issue 15 item 2).

Here a completed response only notes when the connection became idle, and arms a timer if none
is armed. When the timer fires it closes the connection only if it has been idle the whole
timeout since; otherwise it is armed again for what remains. Data arriving marks the connection
busy, as uvicorn's cancel did. The connection closes at the same moment as with uvicorn's timer:
`timeout_keep_alive` after its last response, if nothing arrived since.

A mixin for uvicorn's httptools protocol (`MemoProtocol`, `LingeringProtocol`); it relies on
uvicorn's `on_response_complete` (repeated here but for the timer) and
`_unset_keepalive_if_required`, pinned with uvicorn (tests/server/edge/test_keepalive.py).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class IdleTimer(HttpToolsProtocol):
    """uvicorn's httptools protocol whose keep-alive timer is armed once per idle spell."""

    # When the connection last became idle (its last response completed), None while busy.
    idle_since: float | None = None

    def _unset_keepalive_if_required(self) -> None:
        # (uvicorn calls this when data arrives and when a response completes: busy from now.)
        self.idle_since = None

    def on_response_complete(self) -> None:
        # uvicorn's, word for word, but for the keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._idle_due
            )

    def _idle_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self.idle_since
        if since is None:
            return  # busy: armed again when its response completes
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._idle_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        task, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
        if task is not None:
            task.cancel()  # (a closed connection is not kept alive by its timer)
        super().connection_lost(exc)
