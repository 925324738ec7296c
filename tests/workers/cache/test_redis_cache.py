"""`RedisResultCache` against real Valkey servers: keys, TTL, single-flight, outages.

Every server here loads the production ACL (``deploy/redis/cache.acl``) and the
cache logs in as its cache user, so a command that ACL denies fails here as it
would in production.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from simstream.settings import Settings
from tests.workers.cache.valkey import CACHE_ACL, BlackHole, OwnValkey, cache_user
from workers.cache import CacheConfig, CacheKey, NullCache, RedisResultCache, log_position

pytestmark = pytest.mark.services

KEY = CacheKey("v1", position="0:7,1:3", query=b"v:\x00\x01", k=10, ef=64, filter="")


def errors() -> float:
    return REGISTRY.get_sample_value("simstream_cache_requests_total", {"result": "error"}) or 0.0


def cache_config(url: str, tmp_path: Path, **overrides: object) -> CacheConfig:
    settings = Settings.load(
        data_dir=tmp_path,
        redis_cache_url=url,
        topic_items=f"items-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    return CacheConfig.from_settings(settings)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnValkey]:
    """A Valkey under the production cache ACL, shared by this module's tests."""
    valkey = OwnValkey(tmp_path_factory.mktemp("valkey"), aclfile=CACHE_ACL)
    valkey.start()
    yield valkey
    valkey.stop()


@pytest.fixture
def shared(production: OwnValkey, tmp_path: Path) -> Iterator[RedisResultCache]:
    """A cache on the module's Valkey, in a namespace of its own."""
    cache = RedisResultCache(cache_config(production.url, tmp_path))
    yield cache
    cache.close()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[OwnValkey]:
    """A Valkey under the production cache ACL that this test may stop."""
    valkey = OwnValkey(tmp_path / "valkey", aclfile=CACHE_ACL)
    valkey.start()
    yield valkey
    valkey.stop()


def test_the_servers_enforce_the_production_acl(production: OwnValkey) -> None:
    anonymous = redis.Redis(port=production.port, retry=Retry(NoBackoff(), 0))
    logged_in = redis.Redis.from_url(production.url)

    with pytest.raises(redis.AuthenticationError):
        anonymous.get("x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        logged_in.eval("return 1", 0)
    assert logged_in.acl_whoami() == cache_user()[0]


def test_under_the_production_acl_a_miss_fills_the_cache_and_the_next_lookup_hits(
    shared: RedisResultCache, production: OwnValkey
) -> None:
    before = errors()
    client = redis.Redis.from_url(production.url)

    first = shared.get_or_compute(KEY, lambda: b"[7]")
    lock_left = client.exists(shared.redis_key(KEY) + ":lock")
    second = shared.get_or_compute(KEY, lambda: b"never")

    assert first == (b"[7]", False)
    assert second == (b"[7]", True)
    assert lock_left == 0, "the leader released its single-flight lock"
    assert shared.available
    assert shared.stats()["failures"] == 0
    assert errors() == before


def test_a_leader_never_releases_a_lock_that_expired_and_was_retaken(
    shared: RedisResultCache, production: OwnValkey
) -> None:
    client = redis.Redis.from_url(production.url)
    lock_key = shared.redis_key(KEY) + ":lock"

    def compute_while_the_lock_is_retaken() -> bytes:
        client.set(lock_key, "next-leader", px=5000)
        return b"[8]"

    value = shared.get_or_compute(KEY, compute_while_the_lock_is_retaken)

    assert value == (b"[8]", False)
    assert client.get(lock_key) == b"next-leader"
    assert shared.available


def test_every_field_of_the_key_changes_the_digest_and_the_version_names_the_namespace(
    shared: RedisResultCache,
) -> None:
    at = KEY.position
    variants = [
        KEY,
        CacheKey("v1", "0:8,1:3", KEY.query, 10, 64, ""),
        CacheKey("v1", at, b"v:\x00\x02", 10, 64, ""),
        CacheKey("v1", at, KEY.query, 11, 64, ""),
        CacheKey("v1", at, KEY.query, 10, 65, ""),
        CacheKey("v1", at, KEY.query, 10, 64, '{"labels":["3"],"metadata":{}}'),
        CacheKey("v1", at + "{", KEY.query, 10, 64, ""),
        CacheKey("v1", at, KEY.query, 10, 64, "{"),
    ]
    promoted = CacheKey("v2", at, KEY.query, 10, 64, "")

    assert len({k.digest() for k in variants}) == len(variants)
    assert promoted.digest() == KEY.digest()
    assert shared.redis_key(promoted) != shared.redis_key(KEY)
    assert shared.redis_key(KEY).startswith(shared.namespace("v1") + ":")
    assert shared.namespace("v2").endswith(":v2")


def test_a_log_position_is_the_same_text_for_the_same_offsets_in_any_order() -> None:
    assert log_position({1: 63, 0: 59}) == log_position({0: 59, 1: 63}) == "0:59,1:63"
    assert log_position({}) == ""


def test_a_value_is_stored_with_the_ttl_plus_jitter(production: OwnValkey, tmp_path: Path) -> None:
    config = cache_config(production.url, tmp_path, cache_ttl_s=10.0, cache_ttl_jitter=0.5)
    cache = RedisResultCache(config)
    keys = [CacheKey("v1", f"0:{i}", b"q", 1, 1) for i in range(20)]

    cache.set_many([(k, b"[]") for k in keys])

    client = redis.Redis.from_url(config.url)
    ttls = [client.pttl(cache.redis_key(k)) for k in keys]
    assert all(9_000 < t <= 15_000 for t in ttls), ttls
    assert len(set(ttls)) > 1, "jitter spreads expiries"
    assert cache.get_many(keys) == [b"[]"] * len(keys)


def test_a_ttl_of_zero_turns_the_cache_off(production: OwnValkey, tmp_path: Path) -> None:
    cache = RedisResultCache(cache_config(production.url, tmp_path, cache_ttl_s=0.0))

    cache.set(KEY, b"[]")

    assert cache.get(KEY) is None
    assert cache.get_or_compute(KEY, lambda: b"x") == (b"x", False)
    assert NullCache().get_or_compute(KEY, lambda: b"y") == (b"y", False)


def test_concurrent_misses_of_one_key_compute_it_once(shared: RedisResultCache) -> None:
    calls = 0
    lock = threading.Lock()

    def compute() -> bytes:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.1)
        return b"[1]"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: shared.get_or_compute(KEY, compute), range(8)))

    assert calls == 1
    assert {value for value, _ in results} == {b"[1]"}
    assert sum(hit for _, hit in results) == 7


def test_a_waiter_computes_itself_when_the_leader_never_stores(
    shared: RedisResultCache, production: OwnValkey
) -> None:
    lock_key = shared.redis_key(KEY) + ":lock"
    redis.Redis.from_url(production.url).set(lock_key, "someone-else", px=5000)
    started = time.monotonic()

    value, hit = shared.get_or_compute(KEY, lambda: b"[2]")

    assert (value, hit) == (b"[2]", False)
    assert time.monotonic() - started < shared.wait_s + 0.2


def test_waiters_stop_waiting_as_soon_as_a_failing_leader_releases_its_lock(
    production: OwnValkey, tmp_path: Path
) -> None:
    # A long wait bound makes the difference plain: waiters that only poll for the
    # value would each wait it out, as every refused image of a burst once did.
    cache = RedisResultCache(cache_config(production.url, tmp_path), wait_s=2.0)
    leading = threading.Event()
    calls = 0

    def refuse() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            leading.set()
            time.sleep(0.1)  # the others arrive and wait meanwhile
        raise ValueError("an invalid payload")

    def one(_: int) -> float:
        if _:
            leading.wait(5)
        started = time.monotonic()
        with pytest.raises(ValueError, match="invalid payload"):
            cache.get_or_compute(KEY, refuse)
        return time.monotonic() - started

    try:
        with ThreadPoolExecutor(4) as pool:
            seconds = list(pool.map(one, range(4)))
    finally:
        cache.close()

    assert calls == 4, "each waiter computed (and failed) itself"
    assert max(seconds[1:]) < 0.5, f"waiters waited {seconds[1:]} s, not until the bound of 2 s"
    assert not redis.Redis.from_url(production.url).exists(cache.redis_key(KEY) + ":lock")


def test_a_stopped_redis_is_a_miss_and_the_breaker_skips_it_until_it_returns(
    own: OwnValkey, tmp_path: Path
) -> None:
    cache = RedisResultCache(cache_config(own.url, tmp_path), breaker_s=0.5)
    cache.set(KEY, b"[3]")
    assert cache.get_or_compute(KEY, lambda: b"never") == (b"[3]", True)
    before = errors()

    own.stop()
    started = time.monotonic()
    first = cache.get_or_compute(KEY, lambda: b"[computed]")
    first_s = time.monotonic() - started
    skipped = cache.get(KEY)

    assert first == (b"[computed]", False)
    assert first_s < 0.5
    assert skipped is None
    assert not cache.available
    assert errors() == before + 2
    assert cache.stats()["failures"] == 1

    own.start()
    time.sleep(0.6)
    assert cache.get_or_compute(KEY, lambda: b"[4]") == (b"[4]", False)
    assert cache.get_or_compute(KEY, lambda: b"never") == (b"[4]", True)
    assert cache.available


def test_a_redis_that_stops_answering_is_a_miss_within_the_socket_timeout(
    tmp_path: Path,
) -> None:
    hole = BlackHole()
    try:
        cache = RedisResultCache(cache_config(hole.url, tmp_path, cache_socket_timeout_s=0.05))
        started = time.monotonic()

        value = cache.get_or_compute(KEY, lambda: b"[5]")
        many = cache.get_many([KEY, KEY])
        elapsed = time.monotonic() - started
    finally:
        hole.close()

    assert value == (b"[5]", False)
    assert many == [None, None]
    assert elapsed < 0.5
    assert cache.stats()["available"] is False
