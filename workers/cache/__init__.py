"""The lookup result cache: `ResultCache` (the concept), `RedisResultCache` and the
in-process tier before it, `LocalFirstCache`."""

from workers.cache.cache import CacheKey, NullCache, ResultCache, log_position
from workers.cache.config import CacheConfig
from workers.cache.local import LocalFirstCache, open_result_cache
from workers.cache.redis import RedisResultCache

__all__ = [
    "CacheConfig",
    "CacheKey",
    "LocalFirstCache",
    "NullCache",
    "RedisResultCache",
    "ResultCache",
    "log_position",
    "open_result_cache",
]
