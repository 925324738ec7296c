"""`Client`: the lookup API from synchronous code, over an ``httpx.Client``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import ParamSpec, TypeVar

import httpx

from simstream.client.calls import Call, Filter, Json, Request, connection
from simstream.client.exchange import RetryPolicy, exchange
from simstream.client.routes import Routes

P = ParamSpec("P")
T = TypeVar("T")


class Client(Routes):
    """A synchronous client of the lookup API; use as a context manager or `close` it.

    Every route is a method with the route's parameters (see `simstream.client.calls`).
    429 and 503 answers and refused connections are retried with backoff
    (``Retry-After`` honoured); error answers raise `simstream.errors.ApiError`
    subclasses carrying the server's ``detail``, ``code`` and ``request_id``.

    Args:
        base_url: where the API listens.
        token: a bearer token (read scope for reads, admin scope for writes).
        timeout_s: the timeout of one HTTP request.
        retry: when to retry.
        http: a ready ``httpx.Client`` (its base URL and headers are used as they are).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.http = http or httpx.Client(**connection(base_url, token, timeout_s))
        self.retry = retry or RetryPolicy()

    def send(self, call: Call[T]) -> T:
        """Carry out a call (retries, errors, the wait after a write); its result."""
        steps = exchange(call, self.retry)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Request):
                    step = steps.send(self._outcome(step))
                else:
                    time.sleep(step)
                    step = steps.send(None)
        except StopIteration as done:
            result: T = done.value
            return result

    def bind(self, build: Callable[P, Call[T]]) -> Callable[P, T]:
        """The method of a route: sends the call ``build`` makes; its result."""

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.send(build(*args, **kwargs))

        return method

    def _outcome(self, request: Request) -> httpx.Response | httpx.TransportError:
        try:
            return self.http.request(
                request.method, request.path, params=request.query, json=request.json
            )
        except httpx.TransportError as e:
            return e

    def iter_items(
        self, *, limit: int = 1000, filter: Filter | None = None, vector: bool = False
    ) -> Iterator[Json]:
        """Every item passing ``filter``, in id order, fetched page by page."""
        cursor: str | None = None
        while True:
            page = self.list_items(limit=limit, cursor=cursor, filter=filter, vector=vector)
            yield from page["items"]
            if (cursor := page["next_cursor"]) is None:
                return

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({str(self.http.base_url)!r})"
