"""One shard: an hnswlib graph plus the bookkeeping hnswlib lacks.

A `Shard` holds the items of one Kafka partition. hnswlib knows integer
*slots* (its "labels") and vectors; the shard adds the string item id ↔ slot
mapping, each item's label, metadata and source offset, the source offsets of
deletes (delete markers), live and tombstone counts, and the next log offset.

Writes. ``apply`` takes a batch of upserts and deletes. Per item id, the event
with the highest source offset wins; an event whose offset is not higher than
what the shard holds for that id (an upsert, or a delete marker) is stale and
ignored, so replays are idempotent and a delete is never undone by an older
upsert arriving late. Inside a batch only each id's final state reaches hnswlib.
An upsert of an existing id marks the old slot deleted and adds the vector
under a fresh slot: slots are never reused, so a slot seen by a search always
names one version of one item. (hnswlib's in-place update is slower and
``replace_deleted`` would reuse slots; tombstones are reclaimed by rebuilds.)
Deletes are ``mark_deleted``. Capacity doubles before an add would overflow.

Concurrency. hnswlib is never written, resized or saved while it is searched:
each shard has a phase-fair readers–writer lock (`RWLock`). Searches, ``get``
and snapshot saves hold it shared; ``apply`` holds it exclusively, one *write
slice* at a time. While searches are running (a reader in the last 50 ms) a
slice lasts about ``write_slice_s`` (a few items, one thread), so a search waits
at most one slice; otherwise slices are 1024 items with all threads, for bulk
ingest. A separate apply mutex serialises batches, snapshots and rebuild swaps,
so a snapshot never sees half a batch and always pairs state with its offset.

Rebuilds. When deleted slots pass ``tombstone_ratio`` of all slots, a background
thread copies the live vectors (under short shared holds) into a new graph,
replays the ids written meanwhile (tracked as a dirty set), and swaps the new
graph in under the exclusive lock with a final small catch-up. No write is lost
and searches continue on the old graph throughout.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import hnswlib
import numpy as np

from simstream.errors import IndexStoreError
from simstream.log import get_logger
from workers.index.config import IndexConfig
from workers.index.filter import Filter, ItemLabel, label_key
from workers.index.record import DELETE, UPSERT, IndexRecord
from workers.index.rwlock import RWLock

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_READER_WINDOW_S = 0.05
_BULK_SLICE = 1024
_DELETE_SLICE = 128
_REBUILD_CHUNK = 1024
_FINAL_CATCH_UP = 256
_CATCH_UP_ROUNDS = 4
_EXACT_CHUNK = 16384
_LabelKey = tuple[str, ItemLabel | None]


class _AbandonedError(Exception):
    """A rebuild stopped because the shard is closing."""


@dataclass(slots=True)
class _Entry:
    source_offset: int
    label: ItemLabel | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Item:
    """A stored item, as `Shard.get` returns it.

    Attributes:
        item_id: the id.
        vector: the stored vector (unit length in the cosine space).
        label: the item's class label, if any.
        metadata: the item's metadata (read-only).
        source_offset: offset in the ``items`` topic of the event that wrote it.
        partition: the partition (shard) holding it.
    """

    item_id: str
    vector: np.ndarray
    label: ItemLabel | None
    metadata: Mapping[str, Any]
    source_offset: int
    partition: int


@dataclass(frozen=True, slots=True)
class ShardStats:
    """Counts of one shard.

    Attributes:
        partition: the shard's partition.
        live: items that searches can return.
        tombstones: deleted slots still in the hnswlib graph.
        capacity: slots allocated in the graph.
        delete_markers: ids remembered as deleted, with the delete's source offset.
        next_offset: next offset of the embeddings log to read (None: not tracked yet).
        epoch: batches that changed this shard.
        rebuilding: whether a background rebuild is running.
        rebuilds: rebuilds completed since the shard was created or loaded.
    """

    partition: int
    live: int
    tombstones: int
    capacity: int
    delete_markers: int
    next_offset: int | None
    epoch: int
    rebuilding: bool
    rebuilds: int


@dataclass(slots=True)
class ApplyResult:
    """What one ``apply`` did.

    Attributes:
        upserted: ids written (new or replaced).
        deleted: ids deleted (or remembered as deleted).
        stale: records ignored because the shard held a newer or equal source offset.
        rejected: ``(item_id, reason)`` of invalid records (bad op, dimension, value).
    """

    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the batch changed the index."""
        return bool(self.upserted or self.deleted)

    def merge(self, other: ApplyResult) -> None:
        """Add another result's counts to this one."""
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale
        self.rejected.extend(other.rejected)


@dataclass(slots=True)
class _Planned:
    op: str
    source_offset: int
    vector: np.ndarray | None = None
    label: ItemLabel | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


class _Insert(threading.Thread):
    """One hnswlib ``add_items`` call on a helper thread (it releases the GIL)."""

    def __init__(
        self, index: hnswlib.Index, vectors: np.ndarray, slots: np.ndarray, threads: int
    ) -> None:
        super().__init__(name="index-insert", daemon=True)
        self.args = (index, vectors, slots, threads)
        self.error: BaseException | None = None

    def run(self) -> None:
        index, vectors, slots, threads = self.args
        try:
            index.add_items(vectors, slots, num_threads=threads)
        except BaseException as e:
            self.error = e


class _PendingInsert:
    """A bulk insert running on a helper thread while the shard's write lock is held.

    `finish` waits for it, completes (or, on failure, undoes) the bookkeeping
    and releases the lock; it must be called exactly once.
    """

    def __init__(self, shard: Shard, graph: _Graph, insert: _Insert) -> None:
        self.shard, self.graph, self.insert = shard, graph, insert
        self.undo: list[tuple[str, _Entry | None, int | None]] = []
        self.previous: list[tuple[str, int | None]] = []

    def finish(self) -> None:
        try:
            self.insert.join()
            if self.insert.error is not None:
                self.graph.unbind(self.previous)
                self.shard._undo(self.undo)
                raise IndexStoreError(f"hnswlib insert failed: {self.insert.error}")
            self.graph.retire(self.previous)
        finally:
            self.shard._lock.release_write()


def _no_results(batch: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((batch, 0), dtype=object), np.empty((batch, 0), dtype=np.float32)


class _Graph:
    """An hnswlib index whose integer slots carry string item ids."""

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
        index.set_ef(config.ef_search)
        self.index = index
        self.slot_of: dict[str, int] = dict(slot_of or {})
        self.next_slot = next_slot
        self.ids: np.ndarray = np.full(max(self.capacity, next_slot, 1), None, dtype=object)
        for item_id, slot in self.slot_of.items():
            self.ids[slot] = item_id
        self.tombstones = int(index.element_count) - len(self.slot_of)

    @property
    def capacity(self) -> int:
        return int(self.index.get_max_elements())

    @property
    def live(self) -> int:
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

    def allocate(self, n: int) -> np.ndarray:
        """Reserve ``n`` fresh slots (growing the capacity first when needed)."""
        self._reserve(n)
        slots = np.arange(self.next_slot, self.next_slot + n, dtype=np.uint64)
        self.next_slot += n
        return slots

    def bind(self, item_ids: Sequence[str], slots: np.ndarray) -> list[tuple[str, int | None]]:
        """Point ids at fresh slots (Python only); return each id's previous slot."""
        previous: list[tuple[str, int | None]] = []
        slot_of, ids = self.slot_of, self.ids
        for item_id, slot in zip(item_ids, slots.tolist(), strict=True):
            old = slot_of.get(item_id)
            if old is not None:
                ids[old] = None
            slot_of[item_id] = slot
            ids[slot] = item_id
            previous.append((item_id, old))
        return previous

    def retire(self, previous: list[tuple[str, int | None]]) -> None:
        """Mark the slots that ``bind`` replaced deleted in hnswlib."""
        for _, old in previous:
            if old is not None:
                self.index.mark_deleted(old)
                self.tombstones += 1

    def unbind(self, previous: list[tuple[str, int | None]]) -> None:
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


class Shard:
    """The items of one partition in an hnswlib graph; see the module docstring.

    Args:
        config: parameters shared by every shard of the index.
        partition: the Kafka partition this shard mirrors.
    """

    def __init__(self, config: IndexConfig, partition: int = 0) -> None:
        self.config = config
        self.partition = partition
        self._lock = RWLock()
        self._apply_lock = threading.Lock()
        self._graph = _Graph(config, config.initial_capacity)
        self._entries: dict[str, _Entry] = {}
        self._by_label: dict[_LabelKey, set[str]] = {}
        self._deleted_at: dict[str, int] = {}
        self._next_offset: int | None = None
        self._epoch = 0
        self._rebuilds = 0
        self._rebuild_thread: threading.Thread | None = None
        self._dirty: set[str] | None = None
        self._closing = False
        self._per_item_s = 2e-4
        self._log = get_logger("index.shard", partition=partition)

    # --- writes ----------------------------------------------------------------------

    def apply(
        self,
        records: Sequence[IndexRecord],
        *,
        next_offset: int | None = None,
        num_threads: int | None = None,
    ) -> ApplyResult:
        """Apply a batch of upserts and deletes (last writer by source offset wins).

        Args:
            records: the batch, normally in log order (any order gives the same state).
            next_offset: the embeddings-log offset to read after this batch; stored
                with the shard state so snapshots pair the two.
            num_threads: hnswlib threads for bulk slices (default: the config's).

        Returns:
            Counts of upserted, deleted, stale and rejected records.
        """
        threads = self.config.num_threads if num_threads is None else num_threads
        with self._apply_lock:
            result = ApplyResult()
            pending: _PendingInsert | None = None
            try:
                # Plan the next chunk while hnswlib inserts the previous one.
                for start in range(0, max(len(records), 1), _BULK_SLICE):
                    plan = self._plan(records[start : start + _BULK_SLICE], result)
                    if pending is not None:
                        finishing, pending = pending, None
                        finishing.finish()
                    pending = self._write(plan, threads, result)
            finally:
                if pending is not None:
                    pending.finish()
            if result.changed:
                self._epoch += 1
            if next_offset is not None:
                self._next_offset = next_offset
            self._maybe_start_rebuild()
        if result.rejected:
            self._log.warning(
                "index.records_rejected", count=len(result.rejected), first=result.rejected[0]
            )
        return result

    def _held_offset(self, item_id: str, plan: Mapping[str, _Planned]) -> int | None:
        planned = plan.get(item_id)
        if planned is not None:
            return planned.source_offset
        entry = self._entries.get(item_id)
        if entry is not None:
            return entry.source_offset
        return self._deleted_at.get(item_id)

    def _plan(self, records: Sequence[IndexRecord], result: ApplyResult) -> dict[str, _Planned]:
        ops = [r.op for r in records]
        vectors, problems = self._check_vectors(
            [r.vector for r, op in zip(records, ops, strict=True) if op == UPSERT]
        )
        plan: dict[str, _Planned] = {}
        upsert = 0
        for record, op in zip(records, ops, strict=True):
            item_id = record.item_id
            vector: np.ndarray | None = None
            problem = ""
            if op == UPSERT:
                vector, problem = vectors[upsert], problems[upsert]
                upsert += 1
            held = self._held_offset(item_id, plan)
            if held is not None and record.source_offset <= held:
                result.stale += 1
            elif op == DELETE:
                plan[item_id] = _Planned(DELETE, record.source_offset)
            elif op != UPSERT:
                result.rejected.append((item_id, f"op must be upsert or delete, got {op!r}"))
            elif problem:
                result.rejected.append((item_id, problem))
            else:
                metadata = dict(record.metadata) if record.metadata else _EMPTY
                plan[item_id] = _Planned(
                    UPSERT, record.source_offset, vector, record.label, metadata
                )
        return plan

    def _check_vectors(self, raws: Sequence[object]) -> tuple[list[np.ndarray], list[str]]:
        """Vectors as float32 rows and, per vector, why it is invalid ("" when valid)."""
        dim = self.config.dim
        rows: list[np.ndarray] = []
        problems: list[str] = []
        if raws and all(isinstance(r, np.ndarray) and r.shape == (dim,) for r in raws):
            stacked = np.asarray(raws, dtype=np.float32)
            rows = list(stacked)
            problems = [""] * len(rows)
            raws = ()
        for raw in raws:
            problem = ""
            vector = np.zeros(dim, dtype=np.float32)
            if raw is None:
                problem = "upsert without a vector"
            else:
                try:
                    vector = np.asarray(raw, dtype=np.float32).reshape(-1)
                except (TypeError, ValueError):
                    problem = "vector is not a sequence of numbers"
                else:
                    if vector.shape[0] != dim:
                        problem = f"vector has {vector.shape[0]} dimensions, expected {dim}"
                        vector = np.zeros(dim, dtype=np.float32)
            rows.append(vector)
            problems.append(problem)
        if rows:
            matrix = np.stack(rows)
            finite = [bool(x) for x in np.isfinite(matrix).all(axis=1)]
            nonzero = [bool(x) for x in np.any(matrix, axis=1)]
            for i, problem in enumerate(problems):
                if problem:
                    continue
                if not finite[i]:
                    problems[i] = "vector has NaN or infinite values"
                elif self.config.space == "cosine" and not nonzero[i]:
                    problems[i] = "zero vector has no direction (cosine space)"
        return rows, problems

    def _delete(self, item_id: str, source_offset: int) -> None:
        entry = self._entries.pop(item_id, None)
        if entry is not None:
            self._unindex_label(item_id, entry.label)
        self._graph.remove(item_id)
        self._deleted_at[item_id] = source_offset

    def _unindex_label(self, item_id: str, label: ItemLabel | None) -> None:
        key = label_key(label)
        ids = self._by_label.get(key)
        if ids is not None:
            ids.discard(item_id)
            if not ids:
                del self._by_label[key]

    def _write(
        self, plan: dict[str, _Planned], num_threads: int, result: ApplyResult
    ) -> _PendingInsert | None:
        """Apply a planned chunk; a bulk insert may be left running (see `_PendingInsert`)."""
        upserts = [(i, p) for i, p in plan.items() if p.op == UPSERT]
        deletes = [(i, p) for i, p in plan.items() if p.op == DELETE]
        for start in range(0, len(deletes), _DELETE_SLICE):
            with self._lock.write():
                for item_id, p in deletes[start : start + _DELETE_SLICE]:
                    self._delete(item_id, p.source_offset)
        result.deleted += len(deletes)
        result.upserted += len(upserts)
        if self._dirty is not None:
            self._dirty.update(plan)
        return self._write_upserts(upserts, num_threads)

    def _write_upserts(
        self, upserts: list[tuple[str, _Planned]], num_threads: int
    ) -> _PendingInsert | None:
        pending: _PendingInsert | None = None
        pos = 0
        while pos < len(upserts):
            if pending is not None:
                finishing, pending = pending, None
                finishing.finish()
            latency_mode = self._lock.readers_recent(_READER_WINDOW_S)
            if latency_mode:
                size = max(1, int(self.config.write_slice_s / self._per_item_s))
                threads = 1
            else:
                size, threads = _BULK_SLICE, num_threads
            chunk = upserts[pos : pos + size]
            ids = [i for i, _ in chunk]
            vectors = np.stack([p.vector for _, p in chunk if p.vector is not None])
            if latency_mode:
                with self._lock.write():
                    started = time.perf_counter()
                    graph = self._graph
                    slots = graph.allocate(len(chunk))
                    graph.index.add_items(vectors, slots, num_threads=threads)
                    self._record(chunk)
                    graph.retire(graph.bind(ids, slots))
                per_item = (time.perf_counter() - started) / len(chunk)
                self._per_item_s = 0.8 * self._per_item_s + 0.2 * per_item
            else:
                # hnswlib releases the GIL while it inserts: the bookkeeping (and the
                # caller's planning of its next chunk) runs meanwhile.
                self._lock.acquire_write()
                graph = self._graph
                slots = graph.allocate(len(chunk))
                insert = _Insert(graph.index, vectors, slots, threads)
                insert.start()
                pending = _PendingInsert(self, graph, insert)
                pending.undo = self._record(chunk)
                pending.previous = graph.bind(ids, slots)
            pos += len(chunk)
        return pending

    def _record(
        self, chunk: list[tuple[str, _Planned]]
    ) -> list[tuple[str, _Entry | None, int | None]]:
        """Update the bookkeeping of upserted items; return what is needed to undo it."""
        undo = []
        entries, by_label, deleted_at = self._entries, self._by_label, self._deleted_at
        for item_id, p in chunk:
            old = entries.get(item_id)
            if old is not None:
                self._unindex_label(item_id, old.label)
            entries[item_id] = _Entry(p.source_offset, p.label, p.metadata)
            by_label.setdefault(label_key(p.label), set()).add(item_id)
            undo.append((item_id, old, deleted_at.pop(item_id, None)))
        return undo

    def _undo(self, undo: list[tuple[str, _Entry | None, int | None]]) -> None:
        for item_id, old, deleted in reversed(undo):
            entry = self._entries.pop(item_id)
            self._unindex_label(item_id, entry.label)
            if old is not None:
                self._entries[item_id] = old
                self._by_label.setdefault(label_key(old.label), set()).add(item_id)
            if deleted is not None:
                self._deleted_at[item_id] = deleted

    # --- reads -----------------------------------------------------------------------

    def _acquire_read(self, ef: int) -> _Graph:
        """Hold the lock shared with the graph's ef set to ``ef``; return the graph."""
        while True:
            self._lock.acquire_read()
            graph = self._graph
            if graph.index.ef == ef:
                return graph
            self._lock.release_read()
            with self._lock.write():
                self._graph.index.set_ef(ef)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        filter: Filter | None = None,
        num_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live items of each query in this shard.

        Args:
            queries: float32 array of shape (batch, dim), C-contiguous.
            k: results per query; fewer come back when fewer items qualify.
            ef: hnswlib ef (default: the config's ``ef_search``).
            filter: which items may be returned (see `Filter`).
            num_threads: hnswlib threads for the batch.

        Returns:
            ``(ids, distances)`` of shape (batch, w) with w ≤ k, nearest first: an
            object array of item ids and float32 distances. Rows with fewer results
            (filters) are padded with None and inf.
        """
        graph = self._acquire_read(self.config.ef_search if ef is None else ef)
        try:
            if filter is None or filter.empty:
                kk = min(k, graph.live)
                if not kk:
                    return _no_results(len(queries))
                slots, dists = self._knn(graph, queries, kk, num_threads)
                return graph.ids[slots], dists
            return self._filtered(graph, queries, k, filter, num_threads)
        finally:
            self._lock.release_read()

    def _knn(
        self, graph: _Graph, queries: np.ndarray, k: int, num_threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exactly k ≤ live results per query from hnswlib, exact where hnswlib falls short."""
        try:
            slots, dists = graph.index.knn_query(queries, k=k, num_threads=num_threads)
            return slots.astype(np.int64), dists
        except RuntimeError:
            # Fewer than k reachable (deletes, tiny or duplicate-heavy graphs): retry per
            # query and answer the ones hnswlib cannot fill by brute force.
            slots = np.empty((len(queries), k), dtype=np.int64)
            dists = np.empty((len(queries), k), dtype=np.float32)
            for row, query in enumerate(queries):
                try:
                    s, d = graph.index.knn_query(query[None, :], k=k, num_threads=1)
                except RuntimeError:
                    s, d = self._exact(graph, query[None, :], k, list(graph.slot_of.values()))
                slots[row], dists[row] = s[0], d[0]
            return slots, dists

    def _distances(self, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        q = queries.astype(np.float64)
        v = vectors.astype(np.float64)
        if self.config.space == "l2":
            return np.maximum(
                (q * q).sum(1)[:, None] - 2.0 * (q @ v.T) + (v * v).sum(1)[None, :], 0.0
            )
        if self.config.space == "cosine":
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
        return 1.0 - q @ v.T

    def _exact(
        self, graph: _Graph, queries: np.ndarray, k: int, slots: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over the given slots; k ≤ len(slots)."""
        best_d = np.full((len(queries), 0), np.inf)
        best_s = np.empty((len(queries), 0), dtype=np.int64)
        for start in range(0, len(slots), _EXACT_CHUNK):
            chunk = np.asarray(slots[start : start + _EXACT_CHUNK], dtype=np.int64)
            vectors = np.asarray(graph.index.get_items(chunk.tolist()), dtype=np.float32)
            d = np.concatenate([best_d, self._distances(queries, vectors)], axis=1)
            s = np.concatenate([best_s, np.broadcast_to(chunk, (len(queries), len(chunk)))], 1)
            keep = np.argsort(d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(d, keep, 1)
            best_s = np.take_along_axis(s, keep, 1)
        return best_s, best_d.astype(np.float32)

    def _filtered(
        self,
        graph: _Graph,
        queries: np.ndarray,
        k: int,
        flt: Filter,
        num_threads: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(queries), k), None, dtype=object)
        dists = np.full((len(queries), k), np.inf, dtype=np.float32)
        live = graph.live
        keys = flt.label_keys()
        if keys is not None:
            count = sum(len(self._by_label.get(key, ())) for key in keys)
            if count <= max(self.config.exact_filter_limit, k):
                candidates = [i for key in keys for i in self._by_label.get(key, ())]
                passing = [i for i in candidates if self._passes(i, flt)]
                kk = min(k, len(passing))
                if kk:
                    chosen = [graph.slot_of[i] for i in passing]
                    s, d = self._exact(graph, queries, kk, chosen)
                    ids[:, :kk] = graph.ids[s]
                    dists[:, :kk] = d
                return ids, dists
            share = count / max(live, 1)
        else:
            share = 1.0
        # Over-fetch, post-filter, and grow the fetch for queries still short of k
        # until k pass or the shard is exhausted (fetch = live returns every item).
        fetch = min(live, max(2 * k, math.ceil(2 * k / max(share, 1e-9))))
        pending = np.arange(len(queries))
        while len(pending) and fetch:
            slots, found = self._knn(graph, queries[pending], fetch, num_threads)
            short: list[int] = []
            rows: list[int] = pending.tolist()
            for row, slot_row, dist_row in zip(rows, slots.tolist(), found.tolist(), strict=True):
                n = 0
                for slot, dist in zip(slot_row, dist_row, strict=True):
                    item_id = graph.ids[slot]
                    if item_id is not None and self._passes(item_id, flt):
                        ids[row, n], dists[row, n] = item_id, dist
                        n += 1
                        if n == k:
                            break
                if n < k and fetch < live:
                    short.append(row)
            pending = np.asarray(short, dtype=np.int64)
            fetch = min(live, fetch * 4)
        return ids, dists

    def _passes(self, item_id: str, flt: Filter) -> bool:
        entry = self._entries.get(item_id)
        return entry is not None and flt.matches(entry.label, entry.metadata)

    def get(self, item_id: str) -> Item | None:
        """The live item with this id, or None."""
        with self._lock.read():
            entry = self._entries.get(item_id)
            if entry is None:
                return None
            vector = self._graph.vectors([item_id])[0]
            return Item(
                item_id,
                vector,
                entry.label,
                MappingProxyType(dict(entry.metadata)),
                entry.source_offset,
                self.partition,
            )

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def next_offset(self) -> int | None:
        """Next offset of the embeddings log to read, as given to the last ``apply``."""
        return self._next_offset

    @property
    def epoch(self) -> int:
        """Batches that changed this shard."""
        return self._epoch

    def stats(self) -> ShardStats:
        """Current counts."""
        with self._lock.read():
            return self._stats()

    def _stats(self) -> ShardStats:
        graph = self._graph
        return ShardStats(
            partition=self.partition,
            live=graph.live,
            tombstones=graph.tombstones,
            capacity=graph.capacity,
            delete_markers=len(self._deleted_at),
            next_offset=self._next_offset,
            epoch=self._epoch,
            rebuilding=self._rebuild_thread is not None,
            rebuilds=self._rebuilds,
        )

    # --- rebuild ---------------------------------------------------------------------

    def _maybe_start_rebuild(self, force: bool = False) -> None:
        graph = self._graph
        total = graph.live + graph.tombstones
        due = (
            graph.tombstones >= self.config.min_tombstones
            and graph.tombstones >= self.config.tombstone_ratio * total
        )
        if self._rebuild_thread is not None or self._closing or not (due or force):
            return
        self._dirty = set()
        self._rebuild_thread = threading.Thread(
            target=self._rebuild, name=f"index-rebuild-{self.partition}", daemon=True
        )
        self._log.info("index.rebuild_started", live=graph.live, tombstones=graph.tombstones)
        self._rebuild_thread.start()

    def rebuild(self, wait: bool = True, timeout: float | None = None) -> None:
        """Start a rebuild now (whatever the tombstone count); optionally wait for it."""
        with self._apply_lock:
            self._maybe_start_rebuild(force=True)
        if wait:
            self.wait_for_rebuild(timeout)

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a running rebuild; return whether none is running afterwards."""
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)
        return self._rebuild_thread is None

    def _rebuild(self) -> None:
        started = time.perf_counter()
        old = self._graph
        try:
            with self._lock.read():
                pairs = list(old.slot_of.items())
            new = _Graph(
                self.config, max(self.config.initial_capacity, int(len(pairs) * 1.25) + 16)
            )
            for start in range(0, len(pairs), _REBUILD_CHUNK):
                if self._closing:
                    raise _AbandonedError
                with self._lock.read():
                    part = pairs[start : start + _REBUILD_CHUNK]
                    chunk = [i for i, s in part if old.slot_of.get(i) == s]
                    vectors = old.vectors(chunk)
                new.add(chunk, vectors, 1)
            for round_ in range(_CATCH_UP_ROUNDS + 1):
                with self._apply_lock:
                    dirty = self._dirty or set()
                    self._dirty = set()
                    if len(dirty) <= _FINAL_CATCH_UP or round_ == _CATCH_UP_ROUNDS:
                        # Writers wait (they hold the apply lock); searches go on
                        # until the swap itself.
                        self._catch_up(old, new, dirty)
                        with self._lock.write():
                            self._graph = new
                        self._dirty = None
                        self._rebuilds += 1
                        break
                if self._closing:
                    raise _AbandonedError
                self._catch_up(old, new, dirty)
            self._log.info(
                "index.rebuild_done",
                live=new.live,
                reclaimed=old.tombstones,
                seconds=round(time.perf_counter() - started, 3),
            )
        except _AbandonedError:
            with self._apply_lock:
                self._dirty = None
        except Exception:
            self._log.exception("index.rebuild_failed")
            with self._apply_lock:
                self._dirty = None
        finally:
            self._rebuild_thread = None

    def _catch_up(self, old: _Graph, new: _Graph, dirty: set[str]) -> None:
        """Copy the current state of ``dirty`` ids from the old graph to the new one."""
        with self._lock.read():
            live = [i for i in dirty if i in old.slot_of]
            vectors = old.vectors(live)
        new.add(live, vectors, 1)
        for item_id in dirty.difference(live):
            new.remove(item_id)

    def close(self) -> None:
        """Stop a running rebuild (the old graph stays) and wait for it."""
        self._closing = True
        thread = self._rebuild_thread
        if thread is not None:
            thread.join()

    # --- snapshots -------------------------------------------------------------------

    @contextmanager
    def frozen(self) -> Iterator[FrozenShard]:
        """Hold the shard still for a snapshot: no batch or rebuild swap, searches go on.

        Writers wait until the block ends; searches are not blocked (saving an
        hnswlib index only reads it).
        """
        with self._apply_lock, self._lock.read():
            yield FrozenShard(self)

    @classmethod
    def restore(
        cls,
        config: IndexConfig,
        partition: int,
        index: hnswlib.Index,
        state: Mapping[str, Any],
    ) -> Shard:
        """A shard from a loaded hnswlib index and its bookkeeping (see `FrozenShard.state`)."""
        shard = cls(config, partition)
        items = state["items"]
        slot_of = dict(zip(items["ids"], items["slots"], strict=True))
        shard._graph = _Graph(config, 0, index, slot_of, int(state["next_slot"]))
        for item_id, offset, label, metadata in zip(
            items["ids"], items["offsets"], items["labels"], items["metadata"], strict=True
        ):
            shard._entries[item_id] = _Entry(offset, label, metadata or _EMPTY)
            shard._by_label.setdefault(label_key(label), set()).add(item_id)
        deleted = state["deleted"]
        shard._deleted_at = dict(zip(deleted["ids"], deleted["offsets"], strict=True))
        shard._next_offset = state.get("next_offset")
        shard._epoch = int(state.get("epoch", 0))
        if shard._graph.tombstones < 0:
            raise IndexStoreError(
                f"Shard {partition}: bookkeeping lists {len(slot_of)} live items but the "
                f"graph holds only {index.element_count} elements."
            )
        return shard


class FrozenShard:
    """A shard held still by `Shard.frozen`: what a snapshot reads."""

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    @property
    def stats(self) -> ShardStats:
        """The shard's counts."""
        return self._shard._stats()

    @property
    def element_count(self) -> int:
        """Slots in the graph file (live plus tombstones)."""
        return int(self._shard._graph.index.element_count)

    def save_index(self, path: str) -> None:
        """Write the hnswlib graph to ``path`` (hnswlib's own format)."""
        self._shard._graph.index.save_index(path)

    def state(self) -> dict[str, Any]:
        """The bookkeeping as JSON-ready columns (ids, slots, offsets, labels, metadata)."""
        s = self._shard
        graph = s._graph
        ids = list(s._entries)
        entries = [s._entries[i] for i in ids]
        return {
            "partition": s.partition,
            "next_offset": s._next_offset,
            "next_slot": graph.next_slot,
            "epoch": s._epoch,
            "items": {
                "ids": ids,
                "slots": [graph.slot_of[i] for i in ids],
                "offsets": [e.source_offset for e in entries],
                "labels": [e.label for e in entries],
                "metadata": [dict(e.metadata) if e.metadata else None for e in entries],
            },
            "deleted": {"ids": list(s._deleted_at), "offsets": list(s._deleted_at.values())},
        }
