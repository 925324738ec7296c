"""The hnswlib graph of one shard, whose integer slots carry string item ids.

hnswlib knows integer *slots* (its "labels") and vectors. `Graph` adds the
item id ↔ slot mapping, hands out fresh slots (never reused, so a slot seen by
a search always names one version of one item), grows the capacity before an
add would overflow it, and counts tombstones. `Insert` runs one bulk
``add_items`` on a helper thread (hnswlib releases the GIL), and
`PendingInsert` finishes or undoes it. The graph does no locking of its own:
the shard holds its readers–writer lock around every call (see
``docs/index.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import hnswlib
import numpy as np

from simstream.errors import IndexStoreError
from workers.index.config import IndexConfig

Previous = list[tuple[str, int | None]]
"""Each id bound by `Graph.bind` with the slot it had before (None: a new id)."""


class Graph:
    """An hnswlib index whose integer slots carry string item ids.

    Args:
        config: dim, space, M, ef_construction and ef of the graph.
        capacity: slots to allocate for a new graph.
        index: a loaded hnswlib index to wrap instead of a new one.
        slot_of: the slot of each live id of ``index``.
        next_slot: the first slot never used in ``index``.
    """

    def __init__(
        self,
        config: IndexConfig,
        capacity: int,
        index: hnswlib.Index | None = None,
        slot_of: dict[str, int] | None = None,
        next_slot: int = 0,
    ) -> None:
        self.config = config
        if index is None:
            index = hnswlib.Index(space=config.space, dim=config.dim)
            index.init_index(
                max_elements=max(capacity, 1), M=config.m, ef_construction=config.ef_construction
            )
        # Searches pass their ef as hnswlib's k (`workers.index.search.knn`): the
        # graph's own ef stays 1, so no search ever changes shared state.
        index.set_ef(1)
        self.index = index
        self.slot_of: dict[str, int] = dict(slot_of or {})
        self.next_slot = next_slot
        self.ids: np.ndarray = np.full(max(self.capacity, next_slot, 1), None, dtype=object)
        for item_id, slot in self.slot_of.items():
            self.ids[slot] = item_id
        self.tombstones = int(index.element_count) - len(self.slot_of)

    @property
    def capacity(self) -> int:
        """Slots allocated in hnswlib."""
        return int(self.index.get_max_elements())

    @property
    def live(self) -> int:
        """Ids that searches can return."""
        return len(self.slot_of)

    def _reserve(self, n: int) -> None:
        needed = self.next_slot + n
        if needed > self.capacity:
            self.index.resize_index(max(2 * self.capacity, needed))
        if needed > len(self.ids):
            grown = np.full(max(2 * len(self.ids), needed, self.capacity), None, dtype=object)
            grown[: len(self.ids)] = self.ids
            self.ids = grown

    def add(self, item_ids: Sequence[str], vectors: np.ndarray, num_threads: int) -> None:
        """Add (or replace) items; ids must be distinct."""
        if len(item_ids):
            slots = self.allocate(len(item_ids))
            self.index.add_items(vectors, slots, num_threads=num_threads)
            self.retire(self.bind(item_ids, slots))

    def insert(self, vectors: np.ndarray, slots: np.ndarray, num_threads: int) -> None:
        """Insert vectors under allocated slots in hnswlib (no bookkeeping; see `bind`)."""
        self.index.add_items(vectors, slots, num_threads=num_threads)

    def allocate(self, n: int) -> np.ndarray:
        """Reserve ``n`` fresh slots (growing the capacity first when needed)."""
        self._reserve(n)
        slots = np.arange(self.next_slot, self.next_slot + n, dtype=np.uint64)
        self.next_slot += n
        return slots

    def bind(self, item_ids: Sequence[str], slots: np.ndarray) -> Previous:
        """Point ids at fresh slots (Python only); return each id's previous slot."""
        previous: Previous = []
        slot_of, ids = self.slot_of, self.ids
        for item_id, slot in zip(item_ids, slots.tolist(), strict=True):
            old = slot_of.get(item_id)
            if old is not None:
                ids[old] = None
            slot_of[item_id] = slot
            ids[slot] = item_id
            previous.append((item_id, old))
        return previous

    def retire(self, previous: Previous) -> None:
        """Mark the slots that ``bind`` replaced deleted in hnswlib."""
        for _, old in previous:
            if old is not None:
                self.index.mark_deleted(old)
                self.tombstones += 1

    def unbind(self, previous: Previous) -> None:
        """Undo ``bind`` (after a failed insert)."""
        for item_id, old in reversed(previous):
            self.ids[self.slot_of.pop(item_id)] = None
            if old is not None:
                self.slot_of[item_id] = old
                self.ids[old] = item_id

    def remove(self, item_id: str) -> None:
        """Mark an item's slot deleted (no-op for an absent id)."""
        slot = self.slot_of.pop(item_id, None)
        if slot is not None:
            self.index.mark_deleted(slot)
            self.ids[slot] = None
            self.tombstones += 1

    def vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of live ids, shape (n, dim)."""
        if not item_ids:
            return np.empty((0, self.config.dim), dtype=np.float32)
        slots = [self.slot_of[i] for i in item_ids]
        return np.asarray(self.index.get_items(slots), dtype=np.float32).reshape(len(slots), -1)


class Insert(threading.Thread):
    """One hnswlib ``add_items`` call on a helper thread (it releases the GIL)."""

    def __init__(self, graph: Graph, vectors: np.ndarray, slots: np.ndarray, threads: int) -> None:
        super().__init__(name="index-insert", daemon=True)
        self.args = (graph, vectors, slots, threads)
        self.error: BaseException | None = None

    def run(self) -> None:
        graph, vectors, slots, threads = self.args
        try:
            graph.insert(vectors, slots, threads)
        except BaseException as e:
            self.error = e


def _nothing() -> None:
    pass


class PendingInsert:
    """A bulk insert running on a helper thread while its caller holds a write lock.

    The caller sets `previous` (what `Graph.bind` returned for the inserted ids)
    and `rollback` (undoes its own bookkeeping) after starting the insert.
    `finish` waits for it, completes the graph's bookkeeping (or, on failure,
    undoes it and calls `rollback`) and calls ``release``; it must be called
    exactly once.

    Args:
        graph: the graph being inserted into.
        insert: the started insert.
        release: releases the caller's write lock.
    """

    def __init__(self, graph: Graph, insert: Insert, release: Callable[[], None]) -> None:
        self.graph, self.insert, self.release = graph, insert, release
        self.previous: Previous = []
        self.rollback: Callable[[], None] = _nothing

    def finish(self) -> None:
        """Wait for the insert; retire replaced slots, or undo everything on failure.

        Raises:
            IndexStoreError: if hnswlib failed to insert.
        """
        try:
            self.insert.join()
            if self.insert.error is not None:
                self.graph.unbind(self.previous)
                self.rollback()
                raise IndexStoreError(f"hnswlib insert failed: {self.insert.error}")
            self.graph.retire(self.previous)
        finally:
            self.release()
