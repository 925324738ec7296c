"""The HTTP floor of the API benchmark: a request's cost with no application behind it.

`FixedAnswer` is an ASGI app that reads each request's body and answers one
fixed body: a real lookup answer, captured in the same run, so the bytes on
the wire match the API's. The benchmark serves it with the same
`ThreadedServer` (uvicorn, same settings) and loads it with the same client
process and request bodies as the API. Its QPS is the most any application
reaches on this machine under that client and server; the API's QPS is
reported against it as well as against the index searched directly.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send


class FixedAnswer:
    """ASGI app: drain each HTTP request's body, answer ``body`` (200, JSON).

    Lifespan events are acknowledged; nothing else is done.

    Args:
        body: the answer to every request.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            more = bool(message.get("more_body", False))
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})
