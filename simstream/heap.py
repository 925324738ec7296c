"""`settle`: take a freshly loaded index out of the garbage collector's full passes.

An index node holds a few objects per item (ids, labels, metadata, bookkeeping):
about 600,000 tracked objects at 100,000 items. CPython's full (generation 2)
collection walks every one of them with the interpreter lock held; measured at
100,000 items, such passes took 100–300 ms, and every request and probe of the
process waited for them (`docs/reliability.md`, "Serving under abuse"). Index
entries live long, so the node *settles* the heap now and then (`due`): it
collects once and freezes what survives (`gc.freeze`), and the frequent full
passes in between walk only the objects created since.

A *full* settle first unfreezes everything, so a cycle that became garbage
while frozen is collected (frozen objects are freed by reference counting as
usual; only cycles wait). It walks every object with the interpreter lock
held: 0.25 s at 100,000 items, about 1 s while a re-index holds two
generations. So a node settles fully only while it serves nothing, or when
its last full settle is `FULL_EVERY_S` old (`full_due`); a *light* settle, at
the other times, collects the young generations and freezes what survives,
walking only the objects created since the last settle.
"""

from __future__ import annotations

import gc
import time

from simstream.log import get_logger

log = get_logger("heap")


FULL_EVERY_S = 3600.0
"""A serving node settles fully at most this often (cyclic garbage frozen meanwhile waits)."""

MIN_RECORDS = 10_000
"""Records applied since the last settle that make the next one due, at least."""


def due(applied_since: int, live: int) -> bool:
    """Whether a settle is due after ``applied_since`` records on an index of ``live`` items:
    once a quarter of the index is new (at least `MIN_RECORDS`), the rhythm of CPython's
    own full passes, so that loading an index settles a few times (each settle
    walks everything once) and a steady index with little churn never does."""
    return applied_since >= max(MIN_RECORDS, live // 4)


def full_due(serving: bool, last_full: float, now: float) -> bool:
    """Whether the next settle should be full: nothing is served (no request waits for
    it), or the last full one (monotonic ``last_full``) is `FULL_EVERY_S` old."""
    return not serving or now - last_full >= FULL_EVERY_S


def settle(reason: str, *, full: bool = True) -> float:
    """Collect garbage once, then freeze every surviving object; return the seconds it took.

    Args:
        reason: why (logged).
        full: collect every generation, frozen objects included (else the young
            generations only: the objects frozen before are not walked).
    """
    started = time.perf_counter()
    if full:
        gc.unfreeze()
        collected = gc.collect()
    else:
        collected = gc.collect(1)
    gc.freeze()
    seconds = time.perf_counter() - started
    log.info(
        "heap.settled",
        reason=reason,
        full=full,
        collected=collected,
        frozen=gc.get_freeze_count(),
        seconds=round(seconds, 3),
    )
    return seconds
