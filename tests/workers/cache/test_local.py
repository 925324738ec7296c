"""`LocalFirstCache`: the in-process LRU before a real Valkey."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from simstream.settings import Settings
from tests.workers.cache.valkey import OwnValkey
from workers.cache import (
    CacheConfig,
    CacheKey,
    LocalFirstCache,
    NullCache,
    RedisResultCache,
    open_result_cache,
)

pytestmark = pytest.mark.services


def key(query: bytes, position: str = "0:7,1:3") -> CacheKey:
    return CacheKey("v1", position=position, query=query, k=10, ef=64)


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnValkey]:
    server = OwnValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def config(valkey: OwnValkey, tmp_path: Path) -> CacheConfig:
    settings = Settings.load(
        data_dir=tmp_path, redis_cache_url=valkey.url, topic_items=f"items-{uuid.uuid4().hex[:8]}"
    )
    return CacheConfig.from_settings(settings)


def forget_in_redis(valkey: OwnValkey, shared: RedisResultCache, *keys: CacheKey) -> None:
    """Delete keys from Valkey behind the cache's back."""
    client = redis.Redis.from_url(valkey.url)
    client.delete(*(shared.redis_key(k) for k in keys))
    client.close()


def test_the_settings_put_the_in_process_tier_before_redis_unless_it_is_off(
    config: CacheConfig,
) -> None:
    tiered = open_result_cache(config)
    assert isinstance(tiered, LocalFirstCache)
    assert tiered.entries == 4096
    assert isinstance(tiered.shared, RedisResultCache)
    assert isinstance(open_result_cache(replace(config, ttl_s=0)), NullCache)
    plain = open_result_cache(replace(config, local_entries=0))
    assert isinstance(plain, RedisResultCache)
    for cache in (tiered, plain):
        cache.close()


def test_a_result_one_replica_stored_is_shared_through_redis_then_answered_in_process(
    config: CacheConfig, valkey: OwnValkey
) -> None:
    first = LocalFirstCache(RedisResultCache(config), 8)
    second = LocalFirstCache(RedisResultCache(config), 8)
    first.set(key(b"a"), b"[1]")

    assert second.get(key(b"a")) == b"[1]"  # from Redis
    assert isinstance(second.shared, RedisResultCache)
    forget_in_redis(valkey, second.shared, key(b"a"))
    assert second.get(key(b"a")) == b"[1]"  # from the process
    assert second.stats()["local"] == {"entries": 1, "max_entries": 8, "hits": 1}
    for cache in (first, second):
        cache.close()


def test_the_lru_holds_at_most_its_entries_and_drops_the_least_recently_used(
    config: CacheConfig, valkey: OwnValkey
) -> None:
    shared = RedisResultCache(config)
    cache = LocalFirstCache(shared, 2)
    cache.set_many([(key(b"a"), b"A"), (key(b"b"), b"B")])
    assert cache.get(key(b"a")) == b"A"  # a is now the most recently used
    cache.set(key(b"c"), b"C")
    forget_in_redis(valkey, shared, key(b"a"), key(b"b"), key(b"c"))

    assert cache.get_many([key(b"a"), key(b"b"), key(b"c")]) == [b"A", None, b"C"]
    cache.close()


def test_a_key_at_another_log_position_is_not_answered_from_the_process(
    config: CacheConfig,
) -> None:
    cache = LocalFirstCache(RedisResultCache(config), 8)
    value, hit = cache.get_or_compute(key(b"q"), lambda: b"before")
    assert (value, hit) == (b"before", False)
    assert cache.get_or_compute(key(b"q"), lambda: b"unused") == (b"before", True)

    moved = key(b"q", position="0:8,1:3")  # the index applied a write
    assert cache.get_or_compute(moved, lambda: b"after") == (b"after", False)
    cache.close()
