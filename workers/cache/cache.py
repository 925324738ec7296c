"""`ResultCache`: where lookup results are kept between identical queries.

A result depends on exactly what `CacheKey` holds (invariant 5 of
``docs/architecture.md``): the model version, the index state, the normalised
query, ``k``, ``ef`` and the filter. The index state is its *log position*: the next offset of each
partition of the embeddings log it has applied. It moves with every batch the
index applies (like the index epoch), so a cached result is never older than
the index state it is served for; unlike the epoch, which counts batches and so
differs between replicas that batched differently, a position names the same
logical state on every replica, so replicas can share one cache safely. The
TTL bounds memory (and how long an entry outlives its position, unreachable).
The model version names the key's namespace, so a promotion starts a fresh one.

Values are opaque bytes (the API stores serialised neighbour lists). A cache
never raises on a backend failure: a failure is a miss.
"""

from __future__ import annotations

import hashlib
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NUMBERS = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Everything a lookup result depends on.

    Attributes:
        model_version: the encoder version of the generation searched (the namespace).
        position: the index's log position when the query started (`log_position`).
        query: the normalised query (rounded vector bytes, ``id:<id>`` or a payload hash).
        k: neighbours asked for.
        ef: hnswlib ef (the default resolved, so omitted and explicit defaults agree).
        filter: the filter's canonical string (`Filter.cache_key`), empty for none.
    """

    model_version: str
    position: str
    query: bytes
    k: int
    ef: int
    filter: str = ""

    def digest(self) -> str:
        """A hex digest of every field but the model version (which names the namespace)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(_NUMBERS.pack(self.k, self.ef))
        for text in (self.position, self.filter):
            encoded = text.encode()
            h.update(struct.pack(">I", len(encoded)))
            h.update(encoded)
        h.update(self.query)
        return h.hexdigest()


def log_position(next_offsets: Mapping[int, int]) -> str:
    """The canonical text of an index's log position (``"0:59,1:63"``)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(next_offsets.items()))


class ResultCache(ABC):
    """A best-effort store of lookup results; failures are misses, never errors."""

    @abstractmethod
    def get_many(self, keys: Sequence[CacheKey]) -> list[bytes | None]:
        """The cached values of ``keys`` (None where absent or unavailable)."""

    @abstractmethod
    def set_many(self, items: Sequence[tuple[CacheKey, bytes]]) -> None:
        """Store values (best effort)."""

    def get(self, key: CacheKey) -> bytes | None:
        """The cached value of ``key``, or None."""
        return self.get_many([key])[0]

    def set(self, key: CacheKey, value: bytes) -> None:
        """Store one value (best effort)."""
        self.set_many([(key, value)])

    remote: bool = True
    """Whether reading or storing a value may wait on I/O (a thread that must not
    wait then asks only `peek`)."""

    def peek(self, key: CacheKey) -> bytes | None:
        """The value of ``key`` if this process holds it (no I/O, never waits), else None."""
        return None

    def get_or_compute(self, key: CacheKey, compute: Callable[[], bytes]) -> tuple[bytes, bool]:
        """The cached value of ``key``, or ``compute()`` stored under it.

        Returns:
            ``(value, hit)``: ``hit`` tells whether the value came from the cache.
        """
        value = self.get(key)
        if value is not None:
            return value, True
        value = compute()
        self.set(key, value)
        return value, False

    def stats(self) -> dict[str, Any]:
        """A JSON-ready description for ``/v1/stats``."""
        return {"backend": type(self).__name__}

    def close(self) -> None:  # noqa: B027 - optional hook, most caches hold nothing
        """Release connections."""


class NullCache(ResultCache):
    """No caching: every lookup is computed (``SIMSTREAM_CACHE_TTL_S=0`` or no Redis)."""

    remote = False

    def get_many(self, keys: Sequence[CacheKey]) -> list[bytes | None]:
        """Always misses."""
        return [None] * len(keys)

    def set_many(self, items: Sequence[tuple[CacheKey, bytes]]) -> None:
        """Stores nothing."""

    def stats(self) -> dict[str, Any]:
        """``{"backend": "none"}``."""
        return {"backend": "none"}
