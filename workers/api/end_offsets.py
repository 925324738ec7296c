"""`PartitionEnds`: the end offsets of the items topic, to refuse write tokens past them.

A write token names an offset some producer was acknowledged; one at or past
its partition's end names no event yet, and a lookup waiting for it would wait
its whole bound for nothing. End offsets only grow, so what was read once stays
a valid lower bound: a token below it needs no broker round trip. A token past
it asks the broker again, but one refresh at a time, and a request takes the
answer of any refresh that started after it asked (so concurrent requests
share one round trip, and a write acknowledged before the request is seen).
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaException

from simstream.kafka import end_offsets
from simstream.log import get_logger
from workers.api.config import EndOffsetsConfig

log = get_logger("api.end_offsets")


class PartitionEnds:
    """End offsets of the items topic as this process knows them (thread-safe).

    Args:
        config: the items topic and the probing consumer's properties.
    """

    def __init__(self, config: EndOffsetsConfig) -> None:
        self.config = config
        self._known: dict[int, int] = {}
        self._refreshed_at = -1.0
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()  # one refresh at a time
        self._known_lock = threading.Lock()

    def observe(self, partition: int, end: int) -> None:
        """Record that ``partition`` has at least ``end`` events (a write was acknowledged)."""
        with self._known_lock:
            self._known[partition] = max(self._known.get(partition, 0), end)

    def end(self, partition: int, offset: int) -> int | None:
        """The end offset of ``partition``, read again from the broker if ``offset`` is past
        the one known; None when the broker cannot say (a token is then given the benefit
        of the doubt).

        Blocks for a broker round trip at most once per concurrent wave of callers.
        """
        known = self._known.get(partition, 0)
        if offset < known:
            return known
        asked = time.monotonic()
        with self._lock:
            if self._refreshed_at < asked:
                started = time.monotonic()
                try:
                    self._refresh()
                except KafkaException as e:
                    log.warning("api.end_offsets_unknown", error=str(e))
                    return None
                self._refreshed_at = started
            return self._known.get(partition, 0)

    def _refresh(self) -> None:
        if self._consumer is None:
            self._consumer = Consumer(dict(self.config.consumer))
        config = self.config
        ends = end_offsets(self._consumer, config.topic, range(config.partitions), config.timeout_s)
        for partition, end in ends.items():
            self.observe(partition, end)

    def close(self) -> None:
        """Close the probing consumer."""
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
