"""Redis going away mid-test: lookups keep answering correctly, and use the cache on return."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.waiting import wait_for
from tests.workers.api.conftest import Served
from tests.workers.cache.valkey import OwnValkey
from workers.api import create_app
from workers.cache import CacheConfig, RedisResultCache

pytestmark = pytest.mark.services


def count(result: str) -> float:
    value = REGISTRY.get_sample_value("simstream_cache_requests_total", {"result": result})
    return value or 0.0


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[OwnValkey]:
    server = OwnValkey(tmp_path)
    server.start()
    yield server
    server.stop()


def test_lookups_answer_while_redis_is_down_and_hit_the_cache_again_once_it_returns(
    served: Served, valkey: OwnValkey
) -> None:
    settings = served.settings.model_copy(update={"redis_cache_url": valkey.url})
    cache = RedisResultCache(CacheConfig.from_settings(settings), breaker_s=2.0)
    query = {"id": "digit-0033", "k": 5}
    with TestClient(create_app(settings, served.node, cache=cache)) as client:
        expected = client.post("/v1/lookup", json=query)
        assert expected.headers["X-Cache"] == "miss"
        assert client.post("/v1/lookup", json=query).headers["X-Cache"] == "hit"

        valkey.stop()
        errors = count("error")
        during = [client.post("/v1/lookup", json=query) for _ in range(5)]

        assert [r.status_code for r in during] == [200] * 5
        assert all(r.json() == expected.json() for r in during)
        assert {r.headers["X-Cache"] for r in during} == {"miss"}
        assert count("error") == errors + 5
        assert cache.stats()["failures"] == 1, "the breaker spared Redis the other four"

        valkey.start()
        wait_for(lambda: cache.available, timeout_s=5, message="the breaker to close")
        hits = count("hit")
        after = [client.post("/v1/lookup", json=query) for _ in range(3)]

        assert [r.headers["X-Cache"] for r in after] == ["miss", "hit", "hit"]
        assert all(r.json() == expected.json() for r in after)
        assert count("hit") == hits + 2
