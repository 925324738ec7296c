"""The lookup result cache: `ResultCache` (the concept) and `RedisResultCache`."""

from workers.cache.cache import CacheKey, NullCache, ResultCache
from workers.cache.redis import RedisResultCache

__all__ = ["CacheKey", "NullCache", "RedisResultCache", "ResultCache"]
