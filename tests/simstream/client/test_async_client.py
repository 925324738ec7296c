"""`simstream.client.AsyncClient` against a real server: the same routes, awaited."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from simstream.client import ApiNotFoundError, AsyncClient, RetryPolicy
from tests.simstream.client.conftest import ADMIN_TOKEN, Server
from tests.simstream.client.test_client import applied, embed_later, new_image
from tests.workers.api.conftest import png

pytestmark = pytest.mark.services


def test_an_awaited_upsert_with_wait_returns_once_the_item_is_searchable(server: Server) -> None:
    image = png(new_image(50))

    async def write() -> dict[str, object]:
        async with AsyncClient(server.url, token=ADMIN_TOKEN) as api:
            written = await api.upsert("async-1", image=image, label="a", wait=True)
            assert applied(server, written), "returned before the write was applied"
            hits = await api.lookup(image=image, k=1)
            return {"written": written, "hits": hits}

    embedding = embed_later(server, 2.5)  # past the API's 2 s wait: one 503 is retried
    try:
        answer = asyncio.run(write())
    finally:
        embedding.join()

    assert answer["hits"]["neighbors"][0]["id"] == "async-1"  # type: ignore[index]


def test_concurrent_awaited_calls_share_one_client(server: Server) -> None:
    ids = server.served.digits.ids[:8]

    async def read() -> tuple[list[str], list[str], int]:
        async with AsyncClient(server.url, token=ADMIN_TOKEN) as api:
            items = await asyncio.gather(*(api.get_item(i) for i in ids))
            listed = [item["id"] async for item in api.iter_items(limit=5)]
            return [i["id"] for i in items], listed, await api.count_items()

    fetched, listed, count = asyncio.run(read())

    assert fetched == ids
    assert listed == sorted(set(listed))
    assert len(listed) == count


def test_an_awaited_error_answer_raises_with_the_servers_detail(server: Server) -> None:
    async def missing() -> None:
        async with AsyncClient(server.url, token=ADMIN_TOKEN) as api:
            await api.get_item("async-no-such-item")

    with pytest.raises(ApiNotFoundError) as error:
        asyncio.run(missing())

    assert error.value.status == 404
    assert "async-no-such-item" in error.value.detail
    assert error.value.request_id


class Unavailable(httpx.AsyncBaseTransport):
    """Fault injection: answers 503 with Retry-After to the first request."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            return httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "not ready"})
        return await self.real.handle_async_request(request)


def test_an_awaited_503_is_retried_after_its_retry_after(server: Server) -> None:
    transport = Unavailable()

    async def probe() -> tuple[dict[str, object], float]:
        http = httpx.AsyncClient(base_url=server.url, transport=transport)
        async with AsyncClient(http=http, retry=RetryPolicy(backoff_s=0.01)) as api:
            started = asyncio.get_running_loop().time()
            answer = await api.health()
            return answer, asyncio.get_running_loop().time() - started

    answer, took = asyncio.run(probe())

    assert answer == {"status": "ok"}
    assert transport.calls == 2
    assert took >= 1.0
