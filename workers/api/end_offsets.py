"""`PartitionEnds`: the end offsets of the items topic, to refuse write tokens past them.

A write token names an offset some producer was acknowledged; one at or past
its partition's end names no event yet, and a lookup waiting for it would wait
its whole bound for nothing. End offsets only grow, so what was read once stays
a valid lower bound: a token below it needs no broker round trip.

A token past it waits for a *refresh* that starts after it asked (so a write
acknowledged before the request is seen) and is refused only if still past the
end then. Refreshes are single-flight and spaced: one runs at a time, in the
wait pool, at most one per ``refresh_s``, and every request waiting meanwhile
awaits it on the event loop, holding no thread. However many far-future tokens
arrive, the broker sees at most one round trip per ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from anyio import CapacityLimiter, to_thread
from confluent_kafka import Consumer, KafkaException

from simstream.kafka import end_offsets
from simstream.log import get_logger
from workers.api.config import EndOffsetsConfig
from workers.metrics import API_END_OFFSET_REFRESHES

log = get_logger("api.end_offsets")


class _Refresh:
    """One refresh: its task and when its broker call began (None: not yet)."""

    def __init__(self, run: Callable[[_Refresh], Coroutine[Any, Any, bool]]) -> None:
        self.called_at: float | None = None
        self.task = asyncio.get_running_loop().create_task(run(self))

    def serves(self, asked: float) -> bool:
        """Whether its answer counts for a request that asked at ``asked``."""
        return self.called_at is None or self.called_at >= asked


class PartitionEnds:
    """End offsets of the items topic as this process knows them.

    `observe` is thread-safe; `end` runs on the event loop.

    Args:
        config: the items topic, the probing consumer's properties, the refresh spacing.
        pool: the limiter of the wait pool the broker calls run in.
    """

    def __init__(self, config: EndOffsetsConfig, pool: CapacityLimiter) -> None:
        self.config = config
        self.pool = pool
        self._known: dict[int, int] = {}
        self._known_lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._consumer_lock = threading.Lock()
        self._refresh: _Refresh | None = None
        self._last_call = -float("inf")

    def observe(self, partition: int, end: int) -> None:
        """Record that ``partition`` has at least ``end`` events (a write was acknowledged)."""
        with self._known_lock:
            self._known[partition] = max(self._known.get(partition, 0), end)

    async def end(self, partition: int, offset: int) -> int | None:
        """The end offset of ``partition``, read again from the broker if ``offset`` is past
        the one known; None when the broker cannot say (a token is then given the benefit
        of the doubt).

        Waits on the event loop for a refresh whose broker call starts after this
        call, shared with every request waiting meanwhile.
        """
        known = self._known.get(partition, 0)
        if offset < known:
            return known
        asked = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            refresh = self._refresh
            if refresh is not None and refresh.task.get_loop() is loop:
                if refresh.serves(asked):
                    break
                if not refresh.task.done():  # an older one: wait for it, then ask again
                    await asyncio.wait({refresh.task})
                    continue
            refresh = self._refresh = _Refresh(self._run)
        ok = await asyncio.shield(refresh.task)
        return self._known.get(partition, 0) if ok else None

    async def _run(self, refresh: _Refresh) -> bool:
        """One refresh, no sooner than ``refresh_s`` after the previous broker call."""
        try:
            spaced = self._last_call + self.config.refresh_s - time.monotonic()
            await asyncio.sleep(max(0.0, spaced))
            refresh.called_at = self._last_call = time.monotonic()
            await to_thread.run_sync(self._read, limiter=self.pool)
            return True
        except KafkaException as e:
            log.warning("api.end_offsets_unknown", error=str(e))
            return False

    def _read(self) -> None:
        API_END_OFFSET_REFRESHES.inc()
        config = self.config
        with self._consumer_lock:
            if self._consumer is None:
                self._consumer = Consumer(dict(config.consumer))
            ends = end_offsets(
                self._consumer, config.topic, range(config.partitions), config.timeout_s
            )
        for partition, end in ends.items():
            self.observe(partition, end)

    def close(self) -> None:
        """Close the probing consumer."""
        with self._consumer_lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
