"""The lookup result cache: `ResultCache` (the concept) and `RedisResultCache`."""

from workers.cache.cache import CacheKey, NullCache, ResultCache, log_position
from workers.cache.config import CacheConfig
from workers.cache.redis import RedisResultCache

__all__ = [
    "CacheConfig",
    "CacheKey",
    "NullCache",
    "RedisResultCache",
    "ResultCache",
    "log_position",
]
