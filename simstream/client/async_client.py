"""`AsyncClient`: the lookup API from asyncio code, over an ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from simstream.client.calls import Call, Filter, Json, Request, connection
from simstream.client.exchange import RetryPolicy, exchange
from simstream.client.routes import Routes

P = ParamSpec("P")
T = TypeVar("T")


class AsyncClient(Routes):
    """An asyncio client of the lookup API: `Client`'s methods, awaited.

    Use as an async context manager or `aclose` it. Arguments, retries and
    errors are those of `Client` (``http`` is an ``httpx.AsyncClient``; backoff
    sleeps with ``asyncio.sleep``).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.http = http or httpx.AsyncClient(**connection(base_url, token, timeout_s))
        self.retry = retry or RetryPolicy()

    async def send(self, call: Call[T]) -> T:
        """Carry out a call (retries, errors, the wait after a write); its result."""
        steps = exchange(call, self.retry)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Request):
                    outcome = await self._outcome(step)
                    step = steps.send(outcome)
                else:
                    await asyncio.sleep(step)
                    step = steps.send(None)
        except StopIteration as done:
            result: T = done.value
            return result

    def bind(self, build: Callable[P, Call[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """The coroutine method of a route: sends the call ``build`` makes; its result."""

        @functools.wraps(build)
        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.send(build(*args, **kwargs))

        return method

    async def _outcome(self, request: Request) -> httpx.Response | httpx.TransportError:
        try:
            return await self.http.request(
                request.method, request.path, params=request.query, json=request.json
            )
        except httpx.TransportError as e:
            return e

    async def iter_items(
        self, *, limit: int = 1000, filter: Filter | None = None, vector: bool = False
    ) -> AsyncIterator[Json]:
        """Every item passing ``filter``, in id order, fetched page by page."""
        cursor: str | None = None
        while True:
            page = await self.list_items(limit=limit, cursor=cursor, filter=filter, vector=vector)
            for item in page["items"]:
                yield item
            if (cursor := page["next_cursor"]) is None:
                return

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({str(self.http.base_url)!r})"
