"""Costly searches run a few at a time: the others queue, boundedly, then get a 429."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.state import ApiState

pytestmark = pytest.mark.services

HEAVY_EF = 500


class _HeavySearchesBlock:
    """Fault injection: a search with a raised ``ef`` blocks until released (a slow search)."""

    def __init__(self, search: Any) -> None:
        self.search = search
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, *args: Any, ef: int, **kwargs: Any) -> Any:
        if ef >= HEAVY_EF:
            self.entered.release()
            self.release.wait(10)
        return self.search(*args, ef=ef, **kwargs)


@pytest.fixture
def one_slot(served: Served) -> Iterator[tuple[TestClient, _HeavySearchesBlock]]:
    """An app with one search slot and a 0.3 s queue, whose heavy searches block."""
    settings = served.settings.model_copy(
        update={"api_search_slots": 1, "api_search_queue_s": 0.3, "api_retry_after_s": 2}
    )
    app = create_app(settings, served.node)
    state: ApiState = app.state.api
    blocking = _HeavySearchesBlock(state.searcher.batcher.search)
    state.searcher.batcher.search = blocking  # type: ignore[method-assign]
    with TestClient(app) as client:
        try:
            yield client, blocking
        finally:
            blocking.release.set()


def _heavy(served: Served, seed: int) -> dict[str, Any]:
    """A lookup by a random vector with a raised ``ef`` (a costly search), uncached."""
    vector = np.random.default_rng(seed).normal(size=served.node.current().dim).tolist()
    return {"vector": vector, "k": 10, "ef": HEAVY_EF, "fresh": True}


def _shed() -> float:
    return REGISTRY.get_sample_value("simstream_api_search_shed_total") or 0.0


def test_a_costly_search_without_a_free_slot_in_time_is_a_429_while_default_lookups_answer(
    served: Served, one_slot: tuple[TestClient, _HeavySearchesBlock]
) -> None:
    client, blocking = one_slot
    heavy = _heavy(served, 0)
    before = _shed()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.post, "/v1/lookup", json=heavy)
        assert blocking.entered.acquire(timeout=30)  # it holds the one slot
        refused = client.post("/v1/lookup", json={**heavy, "ef": HEAVY_EF + 100})
        light = client.post("/v1/lookup", json={**heavy, "ef": None})
        health = client.get("/healthz")
        blocking.release.set()
        answered = running.result(timeout=30)

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["detail"] == (
        "Too many costly searches. Expected one of 1 search slots (SIMSTREAM_API_SEARCH_SLOTS) "
        "free within 0.3 s (SIMSTREAM_API_SEARCH_QUEUE_S). Received a search of cost 600 "
        "(queries × max(ef, k); above 64 takes a slot) that found none; retry after 2 s"
    )
    assert _shed() == before + 1
    assert (light.status_code, health.status_code, answered.status_code) == (200, 200, 200)
    assert len(answered.json()["neighbors"]) == 10
    again = client.post("/v1/lookup", json={**heavy, "ef": HEAVY_EF + 100})
    assert again.status_code == 200  # the slot is free again


def test_a_costly_search_waits_for_a_slot_that_frees_within_the_queue_bound(
    served: Served, one_slot: tuple[TestClient, _HeavySearchesBlock]
) -> None:
    client, blocking = one_slot
    heavy = _heavy(served, 1)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/lookup", json=heavy)
        assert blocking.entered.acquire(timeout=30)
        second = pool.submit(client.post, "/v1/lookup", json={**heavy, "ef": 300})
        threading.Timer(0.1, blocking.release.set).start()
        statuses = [first.result(timeout=30).status_code, second.result(timeout=30).status_code]
    assert statuses == [200, 200]


def test_a_costly_search_runs_on_one_thread_and_a_default_lookup_is_not_capped(
    served: Served, one_slot: tuple[TestClient, _HeavySearchesBlock]
) -> None:
    client, blocking = one_slot
    blocking.release.set()
    caps: list[tuple[int, int | None]] = []
    search = blocking.search

    def recording(*args: Any, ef: int, threads: int | None = None, **kwargs: Any) -> Any:
        caps.append((ef, threads))
        return search(*args, ef=ef, threads=threads, **kwargs)

    blocking.search = recording
    heavy = _heavy(served, 2)
    assert client.post("/v1/lookup", json=heavy).status_code == 200
    assert client.post("/v1/lookup", json={**heavy, "ef": None}).status_code == 200
    default_ef = served.node.current().index.config.ef_search
    assert caps == [(HEAVY_EF, 1), (default_ef, None)]


def test_the_default_search_slots_leave_half_the_cores_to_default_lookups(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.api import config

    for cores, slots in ((1, 1), (2, 1), (8, 4)):
        monkeypatch.setattr(config.os, "cpu_count", lambda cores=cores: cores)
        settings = served.settings.model_copy(update={"api_search_slots": 0})
        assert config.SearchConfig.from_settings(settings).search_slots == slots
