"""`MicroBatcher`: concurrent single-query searches coalesced into one batched search.

A request thread searching one vector opens a *group* for its search options
(index, k, ef, filter) if none is open, and waits ``window_s`` for others to
join; threads arriving meanwhile with the same options add their vector to the
group and wait. The opener then searches every vector of the group in one
``search_batch`` call (one hnswlib ``knn_query`` per shard for the whole group)
and hands each waiter its row. Each answer is the one a lone search would give
(hnswlib answers each query of a batch on its own). With a window of 0 the
batcher searches at once, which is the default (``SIMSTREAM_API_BATCH_WINDOW_MS``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any

import numpy as np

from workers.index.filter import Filter
from workers.index.sharded import Neighbors, NeighborsBatch, ShardedIndex


class _Group:
    __slots__ = ("done", "error", "results", "vectors")

    def __init__(self) -> None:
        self.vectors: list[np.ndarray] = []
        self.done = threading.Event()
        self.results: NeighborsBatch | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Coalesces single-vector searches that arrive within ``window_s`` of each other.

    Args:
        window_s: how long the first search of a group waits for others (0: off).
        max_batch: most vectors in one group; a full group takes no more members.
    """

    def __init__(self, window_s: float, max_batch: int = 256) -> None:
        self.window_s = window_s
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Group] = {}
        self.batches = 0

    def search(
        self,
        index: ShardedIndex,
        vectors: np.ndarray,
        k: int,
        *,
        ef: int,
        filter: Filter | None,
        total_live: int | None = None,
        threads: int | None = None,
    ) -> list[Neighbors]:
        """The neighbours of each row of ``vectors``, as `ShardedIndex.search_batch` finds them
        (a search capped to ``threads`` is a costly one: never grouped)."""
        if len(vectors) == 1 and (self.window_s <= 0 or threads is not None):
            # One lookup: `search`'s single-query path builds no batch arrays.
            return [
                index.search(
                    vectors[0], k, ef=ef, filter=filter, total_live=total_live, threads=threads
                )
            ]
        if self.window_s <= 0 or len(vectors) != 1 or threads is not None:
            return list(
                index.search_batch(
                    vectors, k, ef=ef, filter=filter, total_live=total_live, threads=threads
                )
            )
        options: tuple[Any, ...] = (
            id(index),
            k,
            ef,
            "" if filter is None else filter.cache_key(),
            total_live,
        )
        with self._lock:
            group = self._open.get(options)
            leader = group is None
            if group is None:
                group = self._open[options] = _Group()
            row = len(group.vectors)
            group.vectors.append(vectors[0])
            if len(group.vectors) >= self.max_batch:
                del self._open[options]
        if not leader:
            group.done.wait()
            if group.error is not None:
                raise group.error
            assert group.results is not None
            return [group.results[row]]
        time.sleep(self.window_s)  # the window itself: others join meanwhile
        with self._lock:
            if self._open.get(options) is group:
                del self._open[options]
        try:
            group.results = index.search_batch(
                np.stack(group.vectors), k, ef=ef, filter=filter, total_live=total_live
            )
            self.batches += 1
        except BaseException as e:
            group.error = e
            raise
        finally:
            group.done.set()
        return [group.results[row]]
