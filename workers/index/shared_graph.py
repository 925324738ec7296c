"""`SharedGraph`: one hnswlib graph, its locks and its rebuilder, and the shards in it.

A shard (`workers.index.shard.Shard`) keeps the bookkeeping of one partition:
ids, labels, metadata, source offsets, delete markers, the next log offset.
The graph those items live in is a `SharedGraph`. In the ``partition`` layout
every shard has a graph of its own; in the ``node`` layout (the default of a
node, ``SIMSTREAM_INDEX_GRAPH``) every shard of an index shares one, so a query
is one ``knn_query`` whatever the partition count (``docs/architecture.md``,
"Query cost and the partition count").

Whatever touches hnswlib holds the graph's readers–writer lock: searches
shared, a shard's write slices exclusive. Batches of every shard in the graph,
snapshots and rebuild swaps are serialised by its apply mutex. Item ids are
unique across partitions (an id's partition is fixed by its key), so the graph's
id ↔ slot mapping serves every shard in it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING, Any

import hnswlib
import numpy as np

from simstream.errors import IndexStoreError
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.graph import Graph
from workers.index.rebuild import Rebuilder
from workers.index.rwlock import RWLock
from workers.index.search import Hits, filtered, knn, nearest

if TYPE_CHECKING:
    from workers.index.shard import Shard


class SharedGraph:
    """One hnswlib graph with its locks and rebuilder, and the shards whose items it holds.

    Args:
        config: the graph's parameters.
        name: the partition that names the graph (its lowest shard's), for logs.
        graph: a loaded graph (default: a new empty one).
    """

    def __init__(self, config: IndexConfig, name: int = 0, graph: Graph | None = None) -> None:
        self.config = config
        self.name = name
        self.lock = RWLock()
        self.apply_lock = threading.Lock()
        self.graph = graph if graph is not None else Graph(config, config.initial_capacity)
        self.members: list[Shard] = []
        self.rebuilder = Rebuilder(
            config, name, self.lock, self.apply_lock, self._current, self._swap
        )

    def _current(self) -> Graph:
        return self.graph

    def _swap(self, graph: Graph) -> None:
        self.graph = graph

    @classmethod
    def restore(
        cls,
        config: IndexConfig,
        name: int,
        index: hnswlib.Index,
        states: Sequence[Mapping[str, Any]],
    ) -> SharedGraph:
        """The graph of a snapshot: a loaded hnswlib index whose live slots are those
        the shards' states list (``items.ids`` and ``items.slots``)."""
        slot_of: dict[str, int] = {}
        for state in states:
            items = state["items"]
            slot_of.update(zip(items["ids"], items["slots"], strict=True))
        next_slot = max((int(s["next_slot"]) for s in states), default=0)
        graph = Graph(config, 0, index, slot_of, next_slot)
        if graph.tombstones < 0:
            raise IndexStoreError(
                f"Graph {name}: bookkeeping lists {len(slot_of)} live items but the "
                f"graph holds only {index.element_count} elements."
            )
        return cls(config, name, graph)

    @property
    def live(self) -> int:
        """Live items of every shard in the graph."""
        return self.graph.live

    @contextmanager
    def held(self) -> Iterator[Graph]:
        """Hold the graph still (no batch, no rebuild swap; searches go on)."""
        with self.apply_lock, self.lock.read():
            yield self.graph

    def _passing(self, filter: Filter) -> Collection[str]:
        """The ids of the live items of every member that pass ``filter`` (held shared)."""
        if len(self.members) == 1:
            return self.members[0].passing(filter)
        return list(chain.from_iterable(s.passing(filter) for s in self.members))

    def search(
        self, queries: np.ndarray, k: int, ef: int, filter: Filter | None, num_threads: int
    ) -> Hits:
        """The k nearest live items of each query among every member's (see `Shard.search`)."""
        lock = self.lock
        lock.acquire_read()  # not `with lock.read()`: this is the hot path of every query
        try:
            graph = self.graph
            if filter is None or filter.empty:
                return nearest(graph, queries, k, ef, num_threads)
            passing = self._passing(filter)
            return filtered(graph, queries, k, ef, passing, num_threads, len(self.members))
        finally:
            lock.release_read()

    def nearest_lists(self, query: np.ndarray, k: int, ef: int) -> tuple[list[str], list[float]]:
        """The min(k, live) nearest live items of one unfiltered query, nearest first,
        as two lists, ids and distances, with no arrays built around hnswlib's
        answer (the hot path of a single lookup).

        Args:
            query: float32 array of shape (1, dim), C-contiguous.
            k: results.
            ef: hnswlib ef.
        """
        lock = self.lock
        lock.acquire_read()  # not `with lock.read()`: this is the hot path of every query
        try:
            graph = self.graph
            kk = min(k, graph.live)
            if not kk:
                return [], []
            slots, dists = knn(graph, query, kk, ef, 1)
            return graph.ids[slots[0]].tolist(), dists[0].tolist()
        finally:
            lock.release_read()

    def nearest_one(self, query: np.ndarray, k: int, ef: int) -> list[tuple[float, str]]:
        """`nearest_lists` as ``(distance, id)`` pairs (to merge several graphs' answers)."""
        ids, distances = self.nearest_lists(query, k, ef)
        return list(zip(distances, ids, strict=True))

    def close(self) -> None:
        """Stop a running rebuild (the old graph stays) and wait for it."""
        self.rebuilder.close()
