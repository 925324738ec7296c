"""`RedisResultCache`: lookup results in Redis, with single-flight and a circuit breaker.

Keys: ``<prefix>:<items topic>:<model version>:<digest>`` where the digest
covers the index's log position, the normalised query, ``k``, ``ef`` and the
filter (see `CacheKey`). The items topic keeps deployments that share one Redis
apart; the model version makes a promotion start a fresh namespace.

Expiry: ``ttl_s`` plus a random share of up to ``ttl_jitter`` of it,
so entries written together do not expire together.

Single-flight: on a miss, the first caller takes a short lock
(``SET <key>:lock NX PX``) and computes; the others poll for the value for at
most ``wait_s`` and then compute themselves, so a slow or dead lock holder
only costs them a short wait; a holder that fails (an invalid payload)
releases its lock without a value, and the others stop waiting as soon as
they see it gone (each poll is one ``MGET`` of the value and the lock). The
leader releases its lock with a compare-and-delete that needs no script (the
production ACL denies the cache user ``@scripting``): ``WATCH`` the lock,
``GET`` it, and only if it still holds the leader's token
``MULTI``/``DEL``/``EXEC``; a lock that expired and was retaken in between
changes the watched key, so ``EXEC`` aborts and the new holder's lock stays.
The commands the cache runs are ``GET``, ``MGET``, ``SET``, ``WATCH``,
``MULTI``, ``DEL``, ``EXEC`` and ``UNWATCH``.

Failures: every command runs with ``socket_timeout_s`` as its socket
timeout and no retries. Any Redis error is a miss (counted as ``error``) and
opens a circuit breaker: for ``breaker_s`` the cache is skipped altogether, so
a dead Redis costs one timeout per ``breaker_s``, not one per request.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from simstream.log import get_logger
from workers.cache.cache import CacheKey, ResultCache
from workers.cache.config import CacheConfig
from workers.metrics import CACHE_REQUESTS

log = get_logger("cache")

_ERRORS = (redis.RedisError, OSError)
_POLL_S = (0.002, 0.004, 0.008, 0.016)


class RedisResultCache(ResultCache):
    """Lookup results in Redis (the cache URL only, never the Celery broker's).

    Args:
        config: the cache URL, key scope, TTL, jitter and socket timeout.
        client: a ready client (tests); else one is made from ``config.url``
            with the socket timeout and no retries.
        prefix: first part of every key.
        lock_ms: how long a single-flight lock lives at most.
        wait_s: how long a caller waits for another's computation before
            computing itself.
        breaker_s: how long Redis is skipped after a failure.
    """

    def __init__(
        self,
        config: CacheConfig,
        client: redis.Redis | None = None,
        *,
        prefix: str = "simstream:lookup",
        lock_ms: int = 2000,
        wait_s: float = 0.25,
        breaker_s: float = 2.0,
    ) -> None:
        timeout = config.socket_timeout_s
        self._redis = client or redis.Redis.from_url(
            config.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._scope = f"{prefix}:{config.scope}"
        self.ttl_s = config.ttl_s
        self.jitter = config.ttl_jitter
        self.lock_ms = lock_ms
        self.wait_s = wait_s
        self.breaker_s = breaker_s
        self._skip_until = 0.0
        self._state_lock = threading.Lock()
        self._failures = 0

    # --- keys and expiry -------------------------------------------------------------

    def namespace(self, model_version: str) -> str:
        """The prefix of every key of one model version."""
        return f"{self._scope}:{model_version}"

    def redis_key(self, key: CacheKey) -> str:
        """The Redis key of a cache key."""
        return f"{self.namespace(key.model_version)}:{key.digest()}"

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000 * (1 + random.uniform(0, self.jitter))))

    # --- circuit breaker -------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the cache stores anything (a TTL of 0 turns it off)."""
        return self.ttl_s > 0

    @property
    def available(self) -> bool:
        """Whether Redis is tried now (False while the breaker is open)."""
        return time.monotonic() >= self._skip_until

    def _failed(self, error: BaseException, count: int) -> None:
        CACHE_REQUESTS.labels("error").inc(count)
        with self._state_lock:
            opening = self.available
            self._skip_until = time.monotonic() + self.breaker_s
            self._failures += 1
        if opening:
            log.warning(
                "cache.unavailable",
                error=f"{type(error).__name__}: {error}",
                skip_s=self.breaker_s,
            )

    def _usable(self, count: int) -> bool:
        if not self.enabled:
            return False
        if not self.available:
            CACHE_REQUESTS.labels("error").inc(count)
            return False
        return True

    # --- ResultCache -----------------------------------------------------------------

    def get_many(self, keys: Sequence[CacheKey]) -> list[bytes | None]:
        """MGET of the keys; all None (misses) when Redis is down or slow."""
        if not keys or not self._usable(len(keys)):
            return [None] * len(keys)
        try:
            values = self._redis.mget([self.redis_key(k) for k in keys])
        except _ERRORS as e:
            self._failed(e, len(keys))
            return [None] * len(keys)
        out: list[bytes | None] = [v if isinstance(v, bytes) else None for v in values]
        hits = sum(v is not None for v in out)
        if hits:
            CACHE_REQUESTS.labels("hit").inc(hits)
        if len(out) - hits:
            CACHE_REQUESTS.labels("miss").inc(len(out) - hits)
        return out

    def set_many(self, items: Sequence[tuple[CacheKey, bytes]]) -> None:
        """SET … PX of each item in one pipeline (best effort)."""
        if not items or not self.enabled or not self.available:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, value in items:
                pipe.set(self.redis_key(key), value, px=self._ttl_ms())
            pipe.execute()
        except _ERRORS as e:
            self._failed(e, 0)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], bytes]) -> tuple[bytes, bool]:
        """The cached value, or ``compute()`` computed once across callers (single-flight).

        Returns:
            ``(value, hit)``.
        """
        if not self._usable(1):
            return compute(), False
        name = self.redis_key(key)
        try:
            value = self._redis.get(name)
            if isinstance(value, bytes):
                CACHE_REQUESTS.labels("hit").inc()
                return value, True
            token = uuid.uuid4().hex
            leader = bool(self._redis.set(f"{name}:lock", token, nx=True, px=self.lock_ms))
        except _ERRORS as e:
            self._failed(e, 1)
            return compute(), False
        if not leader:
            value = self._wait_for(name, f"{name}:lock")
            if value is not None:
                CACHE_REQUESTS.labels("hit").inc()
                return value, True
        CACHE_REQUESTS.labels("miss").inc()
        try:
            value = compute()
            self._store(name, value)
        finally:
            if leader:
                self._release(f"{name}:lock", token)
        return value, False

    def _wait_for(self, name: str, lock: str) -> bytes | None:
        """The value the lock holder stores, or None once the lock is gone without one
        (its computation failed, say on an invalid payload) or after ``wait_s``."""
        deadline = time.monotonic() + self.wait_s
        attempt = 0
        while time.monotonic() < deadline:
            time.sleep(_POLL_S[min(attempt, len(_POLL_S) - 1)])
            attempt += 1
            try:
                value, held = self._redis.mget(name, lock)
            except _ERRORS as e:
                self._failed(e, 0)
                return None
            if isinstance(value, bytes):
                return value
            if held is None:
                return None
        return None

    def _store(self, name: str, value: bytes) -> None:
        if not self.available:
            return
        try:
            self._redis.set(name, value, px=self._ttl_ms())
        except _ERRORS as e:
            self._failed(e, 0)

    def _release(self, lock: str, token: str) -> None:
        # Delete the lock only if still ours: it may have expired and been retaken.
        if not self.available:
            return
        try:
            with self._redis.pipeline() as pipe:
                pipe.watch(lock)
                if pipe.get(lock) == token.encode():
                    pipe.multi()
                    pipe.delete(lock)
                    pipe.execute()
        except redis.WatchError:
            return  # the lock changed after the compare: no longer ours to delete
        except _ERRORS as e:
            self._failed(e, 0)

    # --- housekeeping ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Backend, TTL and breaker state for ``/v1/stats``."""
        return {
            "backend": "redis",
            "ttl_s": self.ttl_s,
            "ttl_jitter": self.jitter,
            "available": self.available,
            "failures": self._failures,
        }

    def close(self) -> None:
        """Close the connection pool."""
        with contextlib.suppress(*_ERRORS):
            self._redis.close()
