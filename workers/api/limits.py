"""`ConcurrencyLimitMiddleware`: at most N requests in flight per route class, else 429.

Route classes (`route_class`): ``lookups`` (lookups, classification and every
other read under ``/v1``), ``writes`` (``POST``/``DELETE /v1/items``),
``images`` (``GET /v1/items/{id}/image``) and ``admin`` (``/v1/admin/*``).
Probes, metrics and the page belong to none and are never limited. A request
over its class's limit is answered at once with 429 and ``Retry-After``, before
its body is read, instead of queueing for a thread. The counters live on the
event loop (one thread), so they need no lock.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from workers.api.config import RouteClass
from workers.api.middleware import reply
from workers.metrics import API_INFLIGHT, API_REJECTED

SETTINGS: dict[RouteClass, str] = {
    "lookups": "SIMSTREAM_API_MAX_CONCURRENT_LOOKUPS",
    "writes": "SIMSTREAM_API_MAX_CONCURRENT_WRITES",
    "images": "SIMSTREAM_API_MAX_CONCURRENT_IMAGES",
    "admin": "SIMSTREAM_API_MAX_CONCURRENT_ADMIN",
}


def route_class(method: str, path: str) -> RouteClass | None:
    """The class of a request by method and path; None for unlimited ones (probes, page)."""
    if path.startswith("/v1/admin/"):
        return "admin"
    if path == "/v1/items" or path.startswith("/v1/items/"):
        if method in ("POST", "DELETE"):
            return "writes"
        if path.endswith("/image"):
            return "images"
    if path.startswith("/v1/"):
        return "lookups"
    return None


class ConcurrencyLimitMiddleware:
    """Answers 429 with ``Retry-After`` to a request over its route class's limit.

    Args:
        app: the ASGI app.
        limits: most requests in flight per route class.
        retry_after_s: the ``Retry-After`` of a 429.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[RouteClass, int], retry_after_s: int) -> None:
        self.app = app
        self.limits = dict(limits)
        self.retry_after_s = retry_after_s
        self.inflight: dict[RouteClass, int] = dict.fromkeys(self.limits, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == "http"
        kind = route_class(scope.get("method", ""), scope["path"]) if http else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        limit = self.limits[kind]
        if self.inflight[kind] >= limit:
            API_REJECTED.labels(kind).inc()
            detail = (
                f"Too many concurrent {kind} requests. Expected at most {limit} in flight "
                f"({SETTINGS[kind]}). Received: one more; retry after {self.retry_after_s} s"
            )
            headers = {"Retry-After": str(self.retry_after_s)}
            await reply(scope, receive, send, 429, detail, headers)
            return
        self.inflight[kind] += 1
        gauge = API_INFLIGHT.labels(kind)
        gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight[kind] -= 1
            gauge.dec()
