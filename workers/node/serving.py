"""`ServingStatus`: which index generations the node serves, builds and keeps, shared through Redis.

The model registry says which encoder version is *wanted* (its active version).
The index node says which generation is *serving* and which it is *building*
(a re-index in progress) or keeping for rollback. The dispatcher embeds for the
union of the wanted and the serving versions, so a re-index and the live
generation both stay fresh until the alias flips.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from simstream.log import get_logger

log = get_logger("node")

KEY = "simstream:generations"


@dataclass(frozen=True)
class ServingStatus:
    """What the index node published last (not to be confused with an `IndexGeneration`)."""

    serving: str | None = None
    building: tuple[str, ...] = ()
    retained: tuple[str, ...] = ()
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(
            {
                "serving": self.serving,
                "building": list(self.building),
                "retained": list(self.retained),
                "updated_at": self.updated_at,
                "extra": self.extra,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ServingStatus:
        """Inverse of `to_json`."""
        data = json.loads(text)
        return cls(
            serving=data.get("serving"),
            building=tuple(data.get("building", ())),
            retained=tuple(data.get("retained", ())),
            updated_at=float(data.get("updated_at", 0.0)),
            extra=dict(data.get("extra", {})),
        )


class ServingStatusBoard:
    """Reads and writes `ServingStatus` in the coordination Redis (the Celery broker's)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self._key = key

    @classmethod
    def connect(
        cls, url: str, topic_items: str, client: redis.Redis | None = None
    ) -> ServingStatusBoard:
        """The board of ``topic_items`` in the coordination Redis at ``url`` (or ``client``)."""
        return cls(
            client or redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2),
            f"{KEY}:{topic_items}",
        )

    def publish(self, state: ServingStatus) -> None:
        """Store the node's state (best effort: Redis being down is logged)."""
        try:
            self._redis.set(self._key, state.to_json())
        except redis.RedisError as e:
            log.warning("node.status_not_published", error=str(e))

    def read(self) -> ServingStatus:
        """The last published state (empty when none or Redis is down)."""
        try:
            raw = self._redis.get(self._key)
        except redis.RedisError as e:
            log.warning("node.status_unreadable", error=str(e))
            return ServingStatus()
        return ServingStatus.from_json(raw) if raw else ServingStatus()

    def now(self) -> float:
        """Wall-clock time for ``updated_at``."""
        return time.time()
