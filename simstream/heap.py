"""`settle`: take a freshly loaded index out of the garbage collector's full passes.

An index node holds a few objects per item (ids, labels, metadata, bookkeeping):
about 600,000 tracked objects at 100,000 items. CPython's full (generation 2)
collection walks every one of them with the interpreter lock held; measured at
100,000 items, such passes took 100–300 ms, and every request and probe of the
process waited for them (`docs/reliability.md`, "Serving under abuse"). Index
entries live long, so the node *settles* the heap now and then (`due`): it
collects once and freezes what survives (`gc.freeze`), and the frequent full
passes in between walk only the objects created since. Each settle first
unfreezes everything, so nothing frozen escapes a later collection for long:
frozen objects are freed by reference counting as usual, and a cycle that
became garbage while frozen is collected at the next settle.
"""

from __future__ import annotations

import gc
import time

from simstream.log import get_logger

log = get_logger("heap")


MIN_RECORDS = 10_000
"""Records applied since the last settle that make the next one due, at least."""


def due(applied_since: int, live: int) -> bool:
    """Whether a settle is due after ``applied_since`` records on an index of ``live`` items:
    once a quarter of the index is new (at least `MIN_RECORDS`), the rhythm of CPython's
    own full passes, so that loading an index settles a few times (each settle
    walks everything once) and a steady index with little churn never does."""
    return applied_since >= max(MIN_RECORDS, live // 4)


def settle(reason: str) -> float:
    """Collect garbage once (frozen objects included), then freeze every surviving object;
    return the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - started
    log.info(
        "heap.settled",
        reason=reason,
        collected=collected,
        frozen=gc.get_freeze_count(),
        seconds=round(seconds, 3),
    )
    return seconds
