"""The baseline of `bench.http`: a bare ASGI app answering a constant 204, nothing else."""

from __future__ import annotations

from server.asgi import Receive, Scope, Send

_START = {
    "type": "http.response.start",
    "status": 204,
    "headers": [(b"x-edge-key", b"0123456789abcdef"), (b"content-length", b"0")],
}
_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(_START)
    await send(_BODY)
