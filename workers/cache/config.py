"""`CacheConfig`: what the Redis result cache takes from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simstream.settings import Settings


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Where results are cached and for how long.

    Attributes:
        url: the Redis URL (``SIMSTREAM_REDIS_CACHE_URL``, never the Celery broker's).
        scope: what keeps deployments sharing one Redis apart (the items topic).
        ttl_s: entry lifetime in seconds (0 turns the cache off).
        ttl_jitter: up to this share of ``ttl_s`` is added at random to each entry.
        socket_timeout_s: connect and read timeout of every command.
        local_entries: results kept in the process before Redis (0: no local tier).
    """

    url: str
    scope: str
    ttl_s: float
    ttl_jitter: float
    socket_timeout_s: float
    local_entries: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CacheConfig:
        """The config ``SIMSTREAM_CACHE_*``, the cache URL and the items topic describe."""
        return cls(
            url=settings.redis_cache_url,
            scope=settings.topic_items,
            ttl_s=settings.cache_ttl_s,
            ttl_jitter=settings.cache_ttl_jitter,
            socket_timeout_s=settings.cache_socket_timeout_s,
            local_entries=settings.cache_local_entries,
        )
