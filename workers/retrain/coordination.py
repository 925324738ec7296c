"""Redis coordination of retraining: leases (beat leader, running retrain) and period claims.

Everything lives in the coordination Redis (the Celery broker's), under keys
scoped by the items topic so that several deployments can share one Redis:

- ``simstream:beat-leader:<topic>``: the beat allowed to send (a `Lease`);
- ``simstream:retrain:running:<topic>``: the retrain in progress (a `Lease`);
- ``simstream:retrain:slot:<topic>:<slot>``: the task id a period (a slot)
  was claimed for, by beat before sending and by the task when it runs
  (`claim_slot`), kept `SLOT_TTL_S`.

A lease is redis-py's `Lock`: ``SET key token NX PX ttl`` to take it, a Lua
compare-and-expire to renew it and a compare-and-delete to release it, so only
its holder can extend or drop it, and a holder that dies loses it after ``ttl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
from redis.exceptions import LockError

from simstream.log import get_logger
from workers.retrain.config import RetrainConfig

log = get_logger("retrain.coordination")

SLOT_TTL_S = 24 * 3600
RUN_LEASE_TTL_S = 60.0
SLOT_SEPARATOR = "@"
SCHEDULE, NEW_ITEMS = "schedule", "new-items"


def parse_trigger(triggered_by: str, slot: str | None = None) -> tuple[str, str | None]:
    """Split ``"<source>@<slot>"`` (what beat sends) into the source and the period slot."""
    source, separator, embedded = triggered_by.partition(SLOT_SEPARATOR)
    if slot is None and separator and embedded:
        slot = embedded
    return source or "unknown", slot


def coordination_redis(config: RetrainConfig) -> redis.Redis:
    """A client of the coordination Redis, with explicit socket timeouts."""
    return redis.Redis.from_url(config.coordination_url, socket_timeout=5, socket_connect_timeout=5)


def leader_key(config: RetrainConfig) -> str:
    """Key of the beat leader lease."""
    return f"simstream:beat-leader:{config.topic_items}"


def running_key(config: RetrainConfig) -> str:
    """Key of the lease held by the retrain in progress."""
    return f"simstream:retrain:running:{config.topic_items}"


def slot_key(config: RetrainConfig, slot: str) -> str:
    """Key of one schedule period's claim."""
    return f"simstream:retrain:slot:{config.topic_items}:{slot}"


class Lease:
    """A lock with a time to live in Redis, renewed by its holder.

    Args:
        client: the coordination Redis.
        key: the lock's key.
        ttl_s: how long the lock outlives its last renewal.
    """

    def __init__(self, client: redis.Redis, key: str, ttl_s: float) -> None:
        self.key = key
        self.ttl_s = ttl_s
        self._lock = client.lock(key, timeout=ttl_s, blocking=False, thread_local=False)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; return whether this holder has it."""
        return bool(self._lock.acquire(blocking=False))

    def renew(self) -> bool:
        """Reset the time to live; return False when the lease was lost meanwhile."""
        try:
            self._lock.reacquire()
        except LockError:
            return False
        return True

    def release(self) -> None:
        """Drop the lease if still held (a lost lease is left to its new holder)."""
        with suppress(LockError):
            self._lock.release()

    @contextmanager
    def kept_alive(self) -> Iterator[threading.Event]:
        """Renew the (held) lease every third of its TTL until the block ends, then release it.

        Yields:
            An event set when a renewal found the lease lost (or Redis failing
            for longer than the TTL): the holder must not act as owner any more.
        """
        lost, stop = threading.Event(), threading.Event()

        def renew() -> None:
            failing_since: float | None = None
            while not stop.wait(self.ttl_s / 3):
                try:
                    if self.renew():
                        failing_since = None
                        continue
                    lost.set()
                    log.error("retrain.lease_lost", key=self.key)
                    return
                except redis.RedisError as e:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    log.warning("retrain.lease_renewal_failed", key=self.key, error=str(e))
                    if now - failing_since >= self.ttl_s:
                        lost.set()
                        return

        thread = threading.Thread(target=renew, name=f"lease-{self.key}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join(5)
            try:
                self.release()
            except redis.RedisError as e:
                log.warning("retrain.lease_not_released", key=self.key, error=str(e))


def claim_slot(client: redis.Redis, config: RetrainConfig, slot: str, owner: str) -> bool:
    """Claim a schedule period for ``owner`` (a task id); return whether ``owner`` holds it.

    The first claim wins (``SET NX``, kept `SLOT_TTL_S`). The same owner claiming
    again (a redelivered task after a crash) still holds it; anyone else is a
    duplicate of that period.
    """
    key = slot_key(config, slot)
    if client.set(key, owner, nx=True, ex=SLOT_TTL_S):
        return True
    holder = client.get(key)
    if isinstance(holder, bytes):
        holder = holder.decode()
    return holder == owner


def release_slot(client: redis.Redis, config: RetrainConfig, slot: str, owner: str) -> None:
    """Drop ``owner``'s claim on ``slot`` (so the trigger may try again); others' are kept."""
    key = slot_key(config, slot)
    holder = client.get(key)
    if isinstance(holder, bytes):
        holder = holder.decode()
    if holder == owner:
        client.delete(key)


def retrain_running(client: redis.Redis, config: RetrainConfig) -> bool:
    """Whether a retrain holds its lease right now."""
    return bool(client.exists(running_key(config)))
