"""`BodyLimitMiddleware` at the ASGI level: what it trusts and what it counts."""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import Message, Receive, Scope, Send

from workers.api.middleware import BodyLimitMiddleware

LIMIT = 1024


async def _read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def _call(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, bytes]:
    """Send ``chunks`` as one request through the middleware; its status and body."""
    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/lookup", "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": n < len(chunks) - 1}
        for n, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(BodyLimitMiddleware(_read_all, LIMIT)(scope, receive, send))
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_a_body_within_its_declared_length_is_passed_through_whole() -> None:
    status, body = _call([(b"content-length", b"1000")], [b"x" * 500, b"y" * 500])

    assert (status, body) == (200, b"1000")


def test_a_small_declared_length_beside_a_transfer_encoding_is_not_trusted() -> None:
    headers = [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")]
    status, body = _call(headers, [b"x" * 800, b"y" * 800])

    assert status == 413
    assert f"Received: more than {LIMIT} bytes" in orjson.loads(body)["detail"]


def test_a_body_without_a_declared_length_is_counted_as_it_streams() -> None:
    within = _call([(b"transfer-encoding", b"chunked")], [b"x" * 600, b"y" * 400])
    over = _call([(b"transfer-encoding", b"chunked")], [b"x" * 600, b"y" * 600])

    assert within == (200, b"1000")
    assert over[0] == 413
