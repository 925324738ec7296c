"""Concurrency limits per route class: over its limit a request is a 429 with Retry-After."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.waiting import wait_for
from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.limits import route_class

pytestmark = pytest.mark.services

LIMIT = 2


class _SearchesBlock:
    """Fault injection: every search blocks until released (a slow search)."""

    def __init__(self, search: Any) -> None:
        self.search = search
        self.release = threading.Event()
        self.release.set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.release.wait(10)
        return self.search(*args, **kwargs)


@pytest.fixture
def limited(served: Served) -> Iterator[tuple[TestClient, _SearchesBlock]]:
    """An app over the shared node allowing two lookups at once, whose searches block
    while ``release`` is clear (in the thread pool: the event loop answers only
    lookups whose search cannot wait, which this fault makes every search do)."""
    settings = served.settings.model_copy(
        update={
            "api_max_concurrent_lookups": LIMIT,
            "api_retry_after_s": 3,
            "api_inline_lookups": False,
        }
    )
    app = create_app(settings, served.node)
    blocking = _SearchesBlock(app.state.api.searcher.batcher.search)
    app.state.api.searcher.batcher.search = blocking
    with TestClient(app) as client:
        try:
            yield client, blocking
        finally:
            blocking.release.set()


def _inflight(kind: str) -> float:
    value = REGISTRY.get_sample_value("simstream_api_inflight_requests", {"route_class": kind})
    return value or 0.0


def test_a_lookup_over_the_limit_is_a_429_with_retry_after_while_probes_and_writes_answer(
    limited: tuple[TestClient, _SearchesBlock],
) -> None:
    client, blocking = limited
    query = {"id": "digit-0001", "fresh": True}
    blocking.release.clear()

    with ThreadPoolExecutor(LIMIT) as pool:
        held = [pool.submit(client.post, "/v1/lookup", json=query) for _ in range(LIMIT)]
        wait_for(lambda: _inflight("lookups") >= LIMIT, 10, message="two lookups in flight")
        refused = client.post("/v1/lookup", json={"id": "digit-0001"})
        stats = client.get("/v1/stats")
        health = client.get("/healthz")
        write = client.delete("/v1/items/another-absent-id")
        blocking.release.set()
        answered = [f.result(timeout=30) for f in held]

    assert refused.status_code == stats.status_code == 429
    assert refused.headers["Retry-After"] == "3"
    assert refused.json()["detail"] == (
        f"Too many concurrent lookups requests. Expected at most {LIMIT} in flight "
        "(SIMSTREAM_API_MAX_CONCURRENT_LOOKUPS). Received: one more; retry after 3 s"
    )
    assert refused.json()["request_id"] == refused.headers["X-Request-ID"]
    assert (health.status_code, write.status_code) == (200, 202)
    assert [r.status_code for r in answered] == [200] * LIMIT
    assert client.post("/v1/lookup", json={"id": "digit-0001"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/lookup/batch", "lookups"),
        ("GET", "/v1/items/a/b", "lookups"),
        ("POST", "/v1/items", "writes"),
        ("DELETE", "/v1/items/a/image", "writes"),
        ("GET", "/v1/items/a/image", "images"),
        ("POST", "/v1/admin/retrain", "admin"),
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
        ("GET", "/", None),
    ],
)
def test_each_route_belongs_to_its_class_and_probes_to_none(
    method: str, path: str, kind: str | None
) -> None:
    assert route_class(method, path) == kind
