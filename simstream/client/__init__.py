"""A Python client of the lookup API, sync (`Client`) and asyncio (`AsyncClient`), on httpx.

    from simstream.client import Client

    with Client("http://127.0.0.1:8000") as api:
        written = api.upsert("cat-1", image=open("cat.png", "rb").read(), label="cat", wait=True)
        hits = api.lookup(id="cat-1", k=5)

Errors are `simstream.errors.ApiError` subclasses carrying the server's
``status``, ``code``, ``detail`` and ``request_id``. The client imports nothing
of the server: it needs only httpx.
"""

from __future__ import annotations

from simstream.client.async_client import AsyncClient
from simstream.client.exchange import RetryPolicy
from simstream.client.sync_client import Client
from simstream.errors import (
    ApiAuthError,
    ApiBusyError,
    ApiConnectionError,
    ApiError,
    ApiNotFoundError,
    ApiRequestError,
    ApiServerError,
)

__all__ = [
    "ApiAuthError",
    "ApiBusyError",
    "ApiConnectionError",
    "ApiError",
    "ApiNotFoundError",
    "ApiRequestError",
    "ApiServerError",
    "AsyncClient",
    "Client",
    "RetryPolicy",
]
