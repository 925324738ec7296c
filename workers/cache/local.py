"""`LocalFirstCache`: an in-process LRU of lookup results in front of another cache.

A hit in the process costs a dictionary look-up instead of a Redis round trip,
which is longer than a vector search. The LRU keys are the same `CacheKey`s
the shared cache uses, so it is invalidated the same way: every index change
moves the log position in the key, and a promotion changes the model version,
so an entry of an older state is never asked for again and ages out of the
LRU (it holds at most ``entries`` results). Every value stored through this
cache also goes to the shared one, and a shared hit is copied into the LRU, so
replicas still share their work.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from workers.cache.cache import CacheKey, NullCache, ResultCache
from workers.cache.config import CacheConfig
from workers.cache.redis import RedisResultCache
from workers.metrics import CACHE_LOCAL_HITS


class LocalFirstCache(ResultCache):
    """An LRU of at most ``entries`` results, asked before ``shared``.

    Args:
        shared: the cache behind it (Redis, shared by replicas).
        entries: most results held in the process (≥ 1).
    """

    def __init__(self, shared: ResultCache, entries: int) -> None:
        self.shared = shared
        self.entries = entries
        self._lru: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def peek(self, key: CacheKey) -> bytes | None:
        """The LRU's value of ``key`` (counted as a hit), or None; never asks the shared cache."""
        return self._local(key)

    def _local(self, key: CacheKey) -> bytes | None:
        with self._lock:
            value = self._lru.get(key)
            if value is not None:
                self._lru.move_to_end(key)
                self.hits += 1
        if value is not None:
            CACHE_LOCAL_HITS.inc()
        return value

    def _keep(self, items: Sequence[tuple[CacheKey, bytes]]) -> None:
        with self._lock:
            for key, value in items:
                self._lru[key] = value
                self._lru.move_to_end(key)
            while len(self._lru) > self.entries:
                self._lru.popitem(last=False)

    def get_many(self, keys: Sequence[CacheKey]) -> list[bytes | None]:
        """Local values first; the rest from the shared cache (and kept locally)."""
        values = [self._local(key) for key in keys]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            found = self.shared.get_many([keys[i] for i in missing])
            for i, value in zip(missing, found, strict=True):
                values[i] = value
            self._keep([(keys[i], v) for i, v in zip(missing, found, strict=True) if v])
        return values

    def set_many(self, items: Sequence[tuple[CacheKey, bytes]]) -> None:
        """Store locally and in the shared cache."""
        self._keep(items)
        self.shared.set_many(items)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], bytes]) -> tuple[bytes, bool]:
        """A local hit, else the shared cache's single-flight `get_or_compute`."""
        value = self._local(key)
        if value is not None:
            return value, True
        value, hit = self.shared.get_or_compute(key, compute)
        self._keep([(key, value)])
        return value, hit

    def stats(self) -> dict[str, Any]:
        """The shared cache's stats, with the LRU's size and hits under ``local``."""
        with self._lock:
            held = len(self._lru)
        return {
            **self.shared.stats(),
            "local": {"entries": held, "max_entries": self.entries, "hits": self.hits},
        }

    def close(self) -> None:
        """Close the shared cache."""
        self.shared.close()


def open_result_cache(config: CacheConfig) -> ResultCache:
    """The cache the settings describe: none (TTL 0), Redis, or the LRU before Redis."""
    if config.ttl_s <= 0:
        return NullCache()
    shared = RedisResultCache(config)
    return LocalFirstCache(shared, config.local_entries) if config.local_entries else shared
