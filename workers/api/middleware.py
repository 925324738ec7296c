"""ASGI middleware: request ids, access logs and latency metrics; the body size limit.

Both are plain ASGI callables (no per-request task or body buffering).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from simstream.log import get_logger
from workers.api.access_log import AccessLogBudget
from workers.api.codes import for_status
from workers.metrics import REQUEST_SECONDS

log = get_logger("api.access")

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_KEY = "simstream.request_id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_MAX_TIMERS = 1024
"""Most latency histogram children `RequestContextMiddleware` keeps at hand."""


class _RequestIds:
    """Request ids: a random per-process prefix and a counter (32 hex digits).

    Unique like a uuid4 across processes, restarts and forks, without a system
    call per request (``os.urandom`` per id cost more than the search under load).
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_IDS = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reseed)


def new_request_id() -> str:
    """A fresh request id (see `_RequestIds`)."""
    return _IDS.new()


def request_id(scope: Scope) -> str | None:
    """The id of the request being served (for error bodies)."""
    value = scope.get(REQUEST_ID_KEY)
    return str(value) if value is not None else None


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID`` in and out), times it and logs it
    (at most ``access_log_per_s`` lines a second per route and status: `AccessLogBudget`).

    An incoming ``X-Request-ID`` of 1..128 characters ``[A-Za-z0-9._:-]`` is kept,
    anything else replaced by a fresh one. The latency histogram is labelled by
    the route *template* (``/v1/items/{item_id}``), never the raw path, so its
    cardinality stays bounded.
    """

    def __init__(self, app: ASGIApp, access_log_per_s: int = 50) -> None:
        self.app = app
        self.budget = AccessLogBudget(access_log_per_s)
        self._timers: dict[tuple[str, str, int], Any] = {}

    def _timer(self, route: str, method: str, status: int) -> Any:
        """The latency histogram's child for these labels (looked up once per label set;
        routes are templates and methods those the server parses, so the set is small)."""
        key = (route, method, status)
        timer = self._timers.get(key)
        if timer is None:
            timer = REQUEST_SECONDS.labels(route, method, str(status))
            if len(self._timers) < _MAX_TIMERS:
                self._timers[key] = timer
        return timer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, REQUEST_ID_HEADER)
        rid = incoming if incoming and _VALID_ID.fullmatch(incoming) else new_request_id()
        scope[REQUEST_ID_KEY] = rid
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        # bind/reset rather than `bound_contextvars`, which copies the whole context
        bound = bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            try:
                elapsed = time.perf_counter() - started
                route = _route(scope)
                self._timer(route, scope["method"], status).observe(elapsed)
                left_out = self.budget.take(route, status)
                if left_out is not None:
                    level = "debug" if route in _QUIET and status < 400 else "info"
                    getattr(log, level)(
                        "api.request",
                        method=scope["method"],
                        route=route,
                        path=scope["path"],
                        status=status,
                        duration_ms=round(elapsed * 1000, 3),
                        client=(scope.get("client") or ("-",))[0],
                        **({"suppressed": left_out} if left_out else {}),
                    )
            finally:
                reset_contextvars(**bound)


class BodyTooLargeError(HTTPException):
    """A request body over the limit (answered 413)."""


class BodyLimitMiddleware:
    """Answers 413 to bodies over ``max_bytes``: by Content-Length first, then by count.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; one within it is trusted (the server reads that many bytes, no more)
    unless a ``Transfer-Encoding`` is sent too. A body without one (chunked) is
    counted as it streams in, and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, received: str) -> BodyTooLargeError:
        return BodyTooLargeError(
            413,
            f"Request body too large. Expected at most {self.max_bytes} bytes "
            f"(SIMSTREAM_API_MAX_BODY_BYTES). Received: {received}",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, "content-length")
        if declared is not None:
            if not declared.isdigit():
                await reply(scope, receive, send, 400, f"Invalid Content-Length {declared!r}")
                return
            if int(declared) > self.max_bytes:
                error = self._error(f"Content-Length {declared}")
                await reply(scope, receive, send, 413, str(error.detail))
                return
            if header(scope, "transfer-encoding") is None:
                # The server reads exactly Content-Length bytes: nothing left to count.
                await self.app(scope, receive, send)
                return
        counted = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal counted
            message = await receive()
            if message["type"] == "http.request":
                counted += len(message.get("body", b""))
                if counted > self.max_bytes:
                    raise self._error(f"more than {self.max_bytes} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError as e:
            if started:
                raise
            await reply(scope, receive, send, 413, str(e.detail))


async def reply(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer an error body (the code of ``status``, ``detail`` and the request id) from
    a middleware."""
    body: dict[str, Any] = {
        "code": for_status(status),
        "detail": detail,
        "request_id": request_id(scope),
    }
    await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


def header(scope: Scope, name: str) -> str | None:
    key = name.encode()
    for header, value in scope.get("headers", []):
        if header.lower() == key:
            return bytes(value).decode("latin-1")
    return None


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"
