"""The baselines of `bench.http`: bare ASGI apps answering a constant 204, nothing else.

`app` sends one decision header, as a proxy callout's minimum; `app_edge_headers` sends the same
five headers, of the same lengths, as edgeside's `/v1/edge` does — the difference between the two
is what the server itself charges for the headers the contract asks for.
"""

from __future__ import annotations

from server.asgi import ASGIApp, Headers, Receive, Scope, Send

_BODY = {"type": "http.response.body", "body": b""}


def _constant(headers: Headers) -> ASGIApp:
    start = {"type": "http.response.start", "status": 204, "headers": headers}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send(start)
        await send(_BODY)

    return app


app = _constant([(b"x-edge-key", b"0123456789abcdef"), (b"content-length", b"0")])

app_edge_headers = _constant(
    [
        (b"x-edge-key", b"4884fafaf2d2ef5a"),
        (b"x-edge-decision", b"home_hero=default;home_recs=popular"),
        (b"x-edge-segments", b""),
        (
            b"x-edge-snapshot",
            b"profiles=20261122T172909Z-c307c35a;content=20261122T172909Z-e217d319;"
            b"rules=20261122T172909Z-4af137e0",
        ),
        (b"cache-control", b"private, max-age=120"),
    ]
)
