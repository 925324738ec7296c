"""`ConcurrencyLimitMiddleware`: at most N requests in flight per route class, else 429.

Route classes (`route_class`): ``lookups`` (lookups, classification and every
other read under ``/v1``), ``writes`` (``POST``/``DELETE /v1/items``),
``images`` (``GET /v1/items/{id}/image``) and ``admin`` (``/v1/admin/*``).
Probes, metrics and the page belong to none and are never limited. A request
over its class's limit is answered at once with 429 and ``Retry-After``, before
its body is read, instead of queueing for a thread. The counters live on the
event loop (one thread), so they need no lock.

A request that waits on the event loop for a write to be applied (`waiting`:
a read-your-writes token, the end-offset refresh of a far-future one) holds no
thread, so it steps out of its class's count for the wait and into a separate,
larger budget of waiters (``SIMSTREAM_API_MAX_WAITING``); over that budget the
wait is refused with a 429. Before, 24 far-future tokens, each waiting for the
spaced end-offset refresh, filled the lookup class and every plain lookup
behind them was answered 429.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from simstream.errors import BusyError
from workers.api.config import RouteClass
from workers.api.middleware import reply
from workers.metrics import API_INFLIGHT, API_REJECTED, API_WAITING

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


@dataclass(slots=True)
class _Admitted:
    """The admission of the request being served: its limiter and class."""

    limiter: ConcurrencyLimitMiddleware
    kind: RouteClass


_admitted: ContextVar[_Admitted | None] = ContextVar("simstream_admitted", default=None)


@asynccontextmanager
async def waiting() -> AsyncIterator[None]:
    """Wait on the event loop outside the current request's route class count (see the
    module docstring); a no-op outside an admitted request.

    Raises:
        BusyError: (429) ``max_waiting`` requests wait already.
    """
    admitted = _admitted.get()
    if admitted is None:
        yield
        return
    limiter, kind = admitted.limiter, admitted.kind
    if limiter.waiting >= limiter.max_waiting:
        API_REJECTED.labels("waiting").inc()
        raise BusyError(
            f"Too many requests waiting for their writes. Expected at most "
            f"{limiter.max_waiting} waiting at once (SIMSTREAM_API_MAX_WAITING). Received: "
            f"one more; retry after {limiter.retry_after_s} s",
            limiter.retry_after_s,
        )
    limiter.inflight[kind] -= 1
    limiter.waiting += 1
    API_INFLIGHT.labels(kind).dec()
    API_WAITING.inc()
    try:
        yield
    finally:
        limiter.waiting -= 1
        limiter.inflight[kind] += 1  # admitted once: it finishes even over the limit
        API_WAITING.dec()
        API_INFLIGHT.labels(kind).inc()


async def sleep_outside(seconds: float) -> None:
    """Sleep on the event loop outside the current request's route class count (as
    `waiting`); at once when ``max_waiting`` requests wait already."""
    admitted = _admitted.get()
    if admitted is not None and admitted.limiter.waiting >= admitted.limiter.max_waiting:
        return
    async with waiting():
        await asyncio.sleep(seconds)


class ConcurrencyLimitMiddleware:
    """Answers 429 with ``Retry-After`` to a request over its route class's limit.

    Args:
        app: the ASGI app.
        limits: most requests in flight per route class.
        retry_after_s: the ``Retry-After`` of a 429.
        max_waiting: most requests waiting for their writes at once (`waiting`).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: Mapping[RouteClass, int],
        retry_after_s: int,
        max_waiting: int = 256,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.retry_after_s = retry_after_s
        self.max_waiting = max_waiting
        self.inflight: dict[RouteClass, int] = dict.fromkeys(self.limits, 0)
        self.gauges = {kind: API_INFLIGHT.labels(kind) for kind in self.limits}
        self.waiting = 0

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
        gauge = self.gauges[kind]
        gauge.inc()
        reset = _admitted.set(_Admitted(self, kind))
        try:
            await self.app(scope, receive, send)
        finally:
            _admitted.reset(reset)
            self.inflight[kind] -= 1
            gauge.dec()
