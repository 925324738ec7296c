"""`SearchSlots`: at most N costly searches run at once, one thread each; the others queue,
boundedly.

hnswlib releases the GIL, so every search in flight is a runnable thread: fifty
lookups with ``ef`` in the thousands, eight at a time on two cores, kept the
event loop (probes included) waiting for a CPU. A search costs about
``queries × max(ef, k)`` graph steps; one whose cost exceeds that of a single
lookup at the index's default ``ef`` takes one of ``slots`` slots and waits for
a free one at most ``queue_s``, after which it is refused (`BusyError`, a 429
with ``Retry-After``). A costly search runs on one thread (its batch and its
shards one after another), so costly work keeps at most ``slots`` cores busy:
by default half of them, and the other half stays with the single lookups at
the default ``ef``, which never wait: they are what the node is for, and they
are short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from simstream.errors import BusyError
from workers.metrics import API_SEARCH_SHED, API_SEARCH_WAIT


class SearchSlots:
    """Admission of costly searches.

    Args:
        slots: most costly searches running at once.
        queue_s: longest wait for a slot before the search is refused.
        retry_after_s: the ``Retry-After`` of a refusal.
    """

    def __init__(self, slots: int, queue_s: float, retry_after_s: int = 1) -> None:
        self.slots = slots
        self.queue_s = queue_s
        self.retry_after_s = retry_after_s
        self._free = threading.BoundedSemaphore(slots)

    @contextmanager
    def hold(self, cost: int, light_cost: int) -> Iterator[int | None]:
        """Run the block in a slot when ``cost`` exceeds ``light_cost``, else at once.

        Yields:
            The threads the search may use: 1 in a slot, None (no cap) for a light one.

        Raises:
            BusyError: no slot came free within ``queue_s``.
        """
        if cost <= light_cost:
            yield None
            return
        started = time.perf_counter()
        if not self._free.acquire(timeout=self.queue_s):
            API_SEARCH_SHED.inc()
            raise BusyError(
                f"Too many costly searches. Expected one of {self.slots} search slots "
                f"(SIMSTREAM_API_SEARCH_SLOTS) free within {self.queue_s:g} s "
                f"(SIMSTREAM_API_SEARCH_QUEUE_S). Received a search of cost {cost} "
                f"(queries × max(ef, k); above {light_cost} takes a slot) that found none; "
                f"retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        API_SEARCH_WAIT.observe(time.perf_counter() - started)
        try:
            yield 1
        finally:
            self._free.release()
