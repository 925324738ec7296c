"""Lookups answered on the event loop (`Searcher.lookup_now`): only those that cannot
wait, with the thread pool's answer, and a busy shard lock sends them to the pool."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import workers.api.fast_route as fast_route
import workers.api.searcher as searcher_module
from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.schemas import LookupRequest
from workers.cache import CacheConfig, LocalFirstCache, RedisResultCache


@pytest.fixture(scope="module")
def clients(served: Served) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps over the same node, each with its own LRU before the session Valkey:
    lookups on the loop where they can be, and always in the thread pool."""
    apps = [
        create_app(
            served.settings.model_copy(update={"api_inline_lookups": inline}),
            served.node,
            cache=LocalFirstCache(RedisResultCache(CacheConfig.from_settings(served.settings)), 64),
        )
        for inline in (True, False)
    ]
    with TestClient(apps[0]) as on_loop, TestClient(apps[1]) as in_pool:
        yield on_loop, in_pool


@pytest.fixture
def pool_calls(monkeypatch: pytest.MonkeyPatch, served: Served) -> list[str]:
    """The route of each lookup the fast routes sent to the thread pool.

    The index's estimate of a search's time starts from zero: costly searches of
    other tests raise it past the point where single queries fan out to threads,
    which no lookup on the loop waits for."""
    monkeypatch.setattr(served.node.current().index, "_per_query_s", 0.0)
    calls: list[str] = []
    original = fast_route.run_in_threadpool

    async def counting(call: Any, *args: Any) -> Any:
        calls.append(type(args[1]).__name__)
        return await original(call, *args)

    monkeypatch.setattr(fast_route, "run_in_threadpool", counting)
    return calls


def _vector(served: Served, n: int = 0) -> list[float]:
    item = served.node.current().index.get(served.digits.ids[n])
    assert item is not None
    return [float(x) for x in item.vector]


def _body(response: Any) -> dict[str, Any]:
    return {k: v for k, v in response.json().items() if k != "request_id"}


def test_lookups_that_cannot_wait_are_answered_on_the_loop_as_the_pool_answers_them(
    clients: tuple[TestClient, TestClient], served: Served, pool_calls: list[str]
) -> None:
    on_loop, in_pool = clients
    vector = _vector(served)
    fresh = [
        {"vector": vector, "k": 5, "fresh": True},
        {"vector": vector, "k": 10, "max_distance": 0.2, "fresh": True},
        {"id": served.digits.ids[3], "k": 5, "fresh": True},  # its neighbours but itself
    ]
    for body in fresh:
        a, b = on_loop.post("/v1/lookup", json=body), in_pool.post("/v1/lookup", json=body)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert _body(a) == _body(b) and a.json()["neighbors"]
        assert a.headers["x-cache"] == b.headers["x-cache"] == "bypass"
    assert pool_calls == ["LookupRequest"] * len(fresh)  # the second app's only
    pool_calls.clear()

    # Cached: the first ask reads and writes the shared cache (off the loop); the
    # second is a hit in the process, answered on the loop.
    cached = {"vector": _vector(served, 1), "k": 4}
    first = on_loop.post("/v1/lookup", json=cached)
    second = on_loop.post("/v1/lookup", json=cached)
    assert first.headers["x-cache"] in {"miss", "hit"} and second.headers["x-cache"] == "hit"
    assert _body(first) == _body(second)
    assert pool_calls == ["LookupRequest"]


def test_an_image_lookup_is_answered_on_the_loop_only_when_this_process_caches_its_answer(
    clients: tuple[TestClient, TestClient],
    served: Served,
    pool_calls: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop, in_pool = clients
    image = base64.b64encode(served.digits.pngs[5]).decode()
    body = {"image": image, "k": 4}
    fresh = on_loop.post("/v1/lookup", json={**body, "fresh": True})
    first = on_loop.post("/v1/lookup", json=body)  # embedded in the pool, then cached
    assert pool_calls == ["LookupRequest"] * 2
    second = on_loop.post("/v1/lookup", json=body)  # a hit in the process: on the loop
    assert pool_calls == ["LookupRequest"] * 2
    assert second.headers["x-cache"] == "hit"
    assert _body(first) == _body(second)
    assert fresh.json()["neighbors"] == second.json()["neighbors"]
    pooled = in_pool.post("/v1/lookup", json=body)
    assert pooled.json()["neighbors"] == second.json()["neighbors"]
    # An image past the inline size is always answered in the pool, hit or not.
    pool_calls.clear()
    monkeypatch.setattr(searcher_module, "INLINE_IMAGE_CHARS", len(image) - 1)
    again = on_loop.post("/v1/lookup", json=body)
    assert again.headers["x-cache"] == "hit" and pool_calls == ["LookupRequest"]
    # A bad image is refused on the loop as the pool refuses it.
    bad = {"image": "bm90IGFuIGltYWdl", "k": 4}  # base64 of "not an image"
    a, b = on_loop.post("/v1/lookup", json=bad), in_pool.post("/v1/lookup", json=bad)
    assert a.status_code == b.status_code == 400 and a.json()["detail"] == b.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"vector": None, "k": 5, "filter": {"labels": ["7"]}, "fresh": True},
        {"vector": None, "k": 5, "ef": 4000, "fresh": True},  # above the default cost
        {"vector": None, "k": 6},  # a first ask goes to the shared cache
    ],
)
def test_lookups_that_may_wait_go_to_the_thread_pool(
    clients: tuple[TestClient, TestClient],
    served: Served,
    pool_calls: list[str],
    body: dict[str, Any],
) -> None:
    on_loop, _ = clients
    response = on_loop.post("/v1/lookup", json={**body, "vector": _vector(served, 7)})
    assert response.status_code == 200, response.text
    assert pool_calls == ["LookupRequest"]


def test_shard_locks_held_by_a_writer_send_the_lookup_to_the_pool_without_waiting(
    clients: tuple[TestClient, TestClient], served: Served, pool_calls: list[str]
) -> None:
    on_loop, _ = clients
    generation = served.node.current()
    searcher = on_loop.app.state.api.searcher  # type: ignore[attr-defined]
    request = LookupRequest.model_validate({"vector": _vector(served, 2), "k": 5, "fresh": True})
    assert searcher.lookup_now(request, generation) is not None
    by_id = LookupRequest.model_validate({"id": served.digits.ids[0], "k": 5, "fresh": True})
    assert searcher.lookup_now(by_id, generation) is not None
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        locks = [graph.lock for graph in generation.index.graphs]
        for lock in locks:  # writes in progress in every graph (fault injection)
            lock.acquire_write()
        held.set()
        release.wait(5)
        for lock in locks:
            lock.release_write()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        assert searcher.lookup_now(request, generation) is None
        assert searcher.lookup_now(by_id, generation) is None  # reading the item would wait
        assert time.monotonic() - started < 0.5
        threading.Timer(0.3, release.set).start()
        response = on_loop.post("/v1/lookup", json=request.model_dump(exclude_none=True))
        assert response.status_code == 200 and response.json()["neighbors"]
        assert time.monotonic() - started >= 0.3  # it waited for the writer, in the pool
        assert pool_calls == ["LookupRequest"]
    finally:
        release.set()
        thread.join(5)
