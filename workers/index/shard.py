"""One shard: the items of one Kafka partition, in an hnswlib graph, with the
bookkeeping hnswlib lacks.

A `Shard` holds the items of one Kafka partition. hnswlib knows integer
*slots* (its "labels") and vectors; the shard adds each item's label, metadata
and source offset, the source offsets of deletes (delete markers) and the next
log offset; its graph (`workers.index.shared_graph.SharedGraph`, shared with
the other shards of the index in the ``node`` layout, its own in the
``partition`` layout) maps item ids to slots.

Writes. ``apply`` takes a batch of upserts and deletes. Per item id, the event
with the highest source offset wins; an event whose offset is not higher than
what the shard holds for that id (an upsert, or a delete marker) is stale and
ignored, so replays are idempotent and a delete is never undone by an older
upsert arriving late. Inside a batch only each id's final state reaches hnswlib.
An upsert of an existing id marks the old slot deleted and adds the vector
under a fresh slot: slots are never reused, so a slot seen by a search always
names one version of one item. (hnswlib's in-place update is slower and
``replace_deleted`` would reuse slots; tombstones are reclaimed by rebuilds.)
Deletes are ``mark_deleted``. Capacity doubles before an add would overflow
(`workers.index.graph`).

Concurrency. hnswlib is never written, resized or saved while it is searched:
each graph has a phase-fair readers–writer lock (`RWLock`), which its shards use. Searches, ``get``
and snapshot saves hold it shared; ``apply`` holds it exclusively, one *write
slice* at a time. While searches are running (a reader in the last 50 ms) a
slice lasts about ``write_slice_s`` (a few items, one thread), so a search waits
at most one slice; otherwise slices are 1024 items with all threads, for bulk
ingest, inserted on a helper thread while the bookkeeping runs. A slice of at
most 64 items inserts in the calling thread: a helper thread's start and
hand-back would cost more than the single or small upsert itself. A separate
apply mutex (one per graph) serialises batches, snapshots and rebuild swaps, so
a snapshot never sees half a batch and always pairs state with its offset.
Searches only ever hold the lock shared, whatever their ef (see
`workers.index.search`). A batch that fails midway releases every lock and
leaves the shard unhealthy (``healthy``): it refuses batches and snapshots
until its owner replaces it with one rebuilt from a snapshot and the log.

Rebuilds (of the whole graph). When deleted slots pass ``tombstone_ratio`` of
all slots, a background thread copies the live vectors (under short shared holds) into a new graph,
replays the ids written meanwhile (tracked as a dirty set), and swaps the new
graph in under the exclusive lock with a final small catch-up. No write is lost
and searches continue on the old graph throughout (`workers.index.rebuild`).

Searches, with filters and the exact fallback, are in `workers.index.search`;
the view a snapshot reads is `workers.index.frozen.FrozenShard`. See
``docs/index.md``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Collection, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from types import MappingProxyType
from typing import Any, NamedTuple

import hnswlib
import numpy as np

from simstream.errors import IndexStoreError
from simstream.log import get_logger
from simstream.wire import Op
from workers.index.centroid import LabelSum, merge_sums
from workers.index.config import IndexConfig
from workers.index.filter import Filter, ItemLabel, answered_label_keys
from workers.index.frozen import FrozenShard
from workers.index.graph import Insert, PendingInsert
from workers.index.item_order import ItemOrder
from workers.index.postings import Postings
from workers.index.record import IndexRecord
from workers.index.search import Hits, filtered
from workers.index.shared_graph import SharedGraph

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_VECTOR = np.empty(0, dtype=np.float32)
SCAN_BUDGET = 10_000
"""Ids a shard looks at for one page under a filter (see `workers.index.listing`)."""
_READER_WINDOW_S = 0.05
_BULK_SLICE = 1024
_DELETE_SLICE = 128
_INLINE_MAX = 64


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


class Described(NamedTuple):
    """What a neighbour's description needs of a stored item: its label and metadata.

    Attributes:
        label: the item's class label, if any.
        metadata: the item's metadata (the stored mapping: do not change it).
    """

    label: ItemLabel | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ShardPage:
    """One shard's part of a page.

    Attributes:
        ids: the ids of passing items after the cursor, in order (at most ``limit``).
        stopped_at: the last id looked at when the scan budget ran out before
            ``limit`` items were found (None when the shard's page is complete).
    """

    ids: list[str]
    stopped_at: str | None = None


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
        healthy: False once a batch failed midway (its state may be partial):
            rebuild the shard from its snapshot and the log.
        graph: the partition naming the graph the shard's items are in (its
            first shard's). A graph shared by several shards reports its
            tombstones and capacity on its first shard only (0 on the others).
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
    healthy: bool = True
    graph: int = 0


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


class Shard:
    """The items of one partition in an hnswlib graph; see the module docstring.

    Args:
        config: parameters shared by every shard of the index.
        partition: the Kafka partition this shard mirrors.
        graph: the graph to keep the items in, shared with its other shards
            (default: a graph of its own).
    """

    def __init__(
        self, config: IndexConfig, partition: int = 0, graph: SharedGraph | None = None
    ) -> None:
        self.config = config
        self.partition = partition
        home = graph if graph is not None else SharedGraph(config, partition)
        home.members.append(self)
        self._home = home
        self._lock = home.lock
        self._apply_lock = home.apply_lock
        self._rebuilder = home.rebuilder
        self._entries: dict[str, _Entry] = {}
        self._order = ItemOrder()
        self._postings = Postings()
        self._deleted_at: dict[str, int] = {}
        self.failure: str | None = None
        self._next_offset: int | None = None
        self._epoch = 0
        self._per_item_s = 2e-4
        self._log = get_logger("index.shard", partition=partition)

    @property
    def graph(self) -> SharedGraph:
        """The graph this shard's items are in (shared with other shards in the node layout)."""
        return self._home

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

        Raises:
            IndexStoreError: hnswlib failed (the shard is then unhealthy), or the
                shard was already unhealthy.
        """
        threads = self.config.num_threads if num_threads is None else num_threads
        with self._apply_lock:
            if self.failure is not None:
                raise IndexStoreError(
                    f"Shard {self.partition} is unhealthy after a failed batch "
                    f"({self.failure}). Expected it to be rebuilt from its snapshot and "
                    "the log before it takes more batches."
                )
            result = ApplyResult()
            try:
                self._apply_chunks(records, threads, result)
            except BaseException as e:
                # Locks are released (every hold is a `with` or a PendingInsert's
                # finish), but the batch may be half applied: searches go on with
                # what is there, and the owner rebuilds the shard (see `healthy`).
                self.failure = f"{type(e).__name__}: {e}"
                self._log.error("index.apply_failed", error=self.failure)
                raise
            if result.changed:
                self._epoch += 1
            if next_offset is not None:
                self._next_offset = next_offset
            self._rebuilder.maybe_start()
        if result.rejected:
            self._log.warning(
                "index.records_rejected", count=len(result.rejected), first=result.rejected[0]
            )
        return result

    def _apply_chunks(
        self, records: Sequence[IndexRecord], threads: int, result: ApplyResult
    ) -> None:
        pending: PendingInsert | None = None
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

    @property
    def healthy(self) -> bool:
        """False once a batch failed midway: the shard's state may be partial."""
        return self.failure is None

    def _held(self, item_id: str, plan: Mapping[str, _Planned]) -> tuple[int, bool] | None:
        """The source offset of what decides ``item_id`` now, and whether it is a delete."""
        planned = plan.get(item_id)
        if planned is not None:
            return planned.source_offset, planned.op == Op.DELETE
        entry = self._entries.get(item_id)
        if entry is not None:
            return entry.source_offset, False
        deleted_at = self._deleted_at.get(item_id)
        return None if deleted_at is None else (deleted_at, True)

    @staticmethod
    def _is_stale(op: str, source_offset: int, held: tuple[int, bool] | None) -> bool:
        """Last writer wins by source offset; at the same offset an upsert beats a delete.

        One source offset is one event, so an upsert and a delete share an offset
        only when the event was dead-lettered (the embedder wrote a delete for the
        item it names) and later embedded after all (a replay): the upsert stands.
        """
        if held is None:
            return False
        offset, deleted = held
        if source_offset != offset:
            return source_offset < offset
        return not (op == Op.UPSERT and deleted)

    def _plan(self, records: Sequence[IndexRecord], result: ApplyResult) -> dict[str, _Planned]:
        ops = [r.op for r in records]
        vectors, problems = self._check_vectors(
            [r.vector for r, op in zip(records, ops, strict=True) if op == Op.UPSERT]
        )
        plan: dict[str, _Planned] = {}
        upsert = 0
        for record, op in zip(records, ops, strict=True):
            item_id = record.item_id
            vector: np.ndarray | None = None
            problem = ""
            if op == Op.UPSERT:
                vector, problem = vectors[upsert], problems[upsert]
                upsert += 1
            if self._is_stale(op, record.source_offset, self._held(item_id, plan)):
                result.stale += 1
            elif op == Op.DELETE:
                plan[item_id] = _Planned(Op.DELETE, record.source_offset)
            elif op != Op.UPSERT:
                result.rejected.append((item_id, f"op must be upsert or delete, got {op!r}"))
            elif problem:
                result.rejected.append((item_id, problem))
            elif item_id not in self._entries and item_id in self._home.graph.slot_of:
                result.rejected.append(
                    (
                        item_id,
                        "the item is held by another partition's shard in this graph: all "
                        "events of an item must be in one partition (key them by item id)",
                    )
                )
            else:
                metadata = dict(record.metadata) if record.metadata else _EMPTY
                plan[item_id] = _Planned(
                    Op.UPSERT, record.source_offset, vector, record.label, metadata
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
            # One check of the whole block: most batches hold no invalid vector.
            total = float(np.dot(stacked.ravel(), stacked.ravel()))
            if math.isfinite(total) and (
                self.config.space != "cosine" or bool(np.any(stacked, axis=1).all())
            ):
                return rows, problems
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
            self._postings.remove(item_id, entry.label, entry.metadata)
            self._order.discard(item_id)
            self._home.graph.remove(item_id)  # never another shard's item in a shared graph
        self._deleted_at[item_id] = source_offset

    def _write(
        self, plan: dict[str, _Planned], num_threads: int, result: ApplyResult
    ) -> PendingInsert | None:
        """Apply a planned chunk; a bulk insert may be left running (see `PendingInsert`)."""
        upserts = [(i, p) for i, p in plan.items() if p.op == Op.UPSERT]
        deletes = [(i, p) for i, p in plan.items() if p.op == Op.DELETE]
        for start in range(0, len(deletes), _DELETE_SLICE):
            with self._lock.write():
                for item_id, p in deletes[start : start + _DELETE_SLICE]:
                    self._delete(item_id, p.source_offset)
        result.deleted += len(deletes)
        result.upserted += len(upserts)
        self._rebuilder.touch(plan)
        return self._write_upserts(upserts, num_threads)

    def _write_upserts(
        self, upserts: list[tuple[str, _Planned]], num_threads: int
    ) -> PendingInsert | None:
        pending: PendingInsert | None = None
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
            if latency_mode or len(chunk) <= _INLINE_MAX:
                # Small chunks insert in the calling thread: a helper thread's start
                # and hand-back cost more than the bookkeeping it would overlap.
                with self._lock.write():
                    started = time.perf_counter()
                    graph = self._home.graph
                    slots = graph.allocate(len(chunk))
                    try:
                        graph.insert(vectors, slots, threads)
                    except Exception as e:
                        raise IndexStoreError(f"hnswlib insert failed: {e}") from e
                    self._record(chunk)
                    graph.retire(graph.bind(ids, slots))
                if latency_mode:
                    per_item = (time.perf_counter() - started) / len(chunk)
                    self._per_item_s = 0.8 * self._per_item_s + 0.2 * per_item
            else:
                # hnswlib releases the GIL while it inserts: the bookkeeping (and the
                # caller's planning of its next chunk) runs meanwhile.
                pending = self._start_insert(chunk, ids, vectors, threads)
            pos += len(chunk)
        return pending

    def _start_insert(
        self, chunk: list[tuple[str, _Planned]], ids: list[str], vectors: np.ndarray, threads: int
    ) -> PendingInsert:
        """Take the write lock and start a bulk insert; the lock passes to the result.

        If anything fails before the `PendingInsert` exists, the lock is released
        here; after, its ``finish`` releases it (and waits for the insert).
        """
        self._lock.acquire_write()
        try:
            graph = self._home.graph
            slots = graph.allocate(len(chunk))
            insert = Insert(graph, vectors, slots, threads)
            insert.start()
        except BaseException:
            self._lock.release_write()
            raise
        pending = PendingInsert(graph, insert, self._lock.release_write)
        try:
            undo = self._record(chunk)
            pending.rollback = partial(self._undo, undo)
            pending.previous = graph.bind(ids, slots)
        except BaseException:
            pending.finish()
            raise
        return pending

    def _record(
        self, chunk: list[tuple[str, _Planned]]
    ) -> list[tuple[str, _Entry | None, int | None]]:
        """Update the bookkeeping of upserted items; return what is needed to undo it."""
        undo = []
        entries, postings, deleted_at = self._entries, self._postings, self._deleted_at
        for item_id, p in chunk:
            old = entries.get(item_id)
            if old is not None:
                postings.remove(item_id, old.label, old.metadata)
            else:
                self._order.add(item_id)
            entries[item_id] = _Entry(p.source_offset, p.label, p.metadata)
            postings.add(item_id, p.label, p.metadata)
            undo.append((item_id, old, deleted_at.pop(item_id, None)))
        return undo

    def _undo(self, undo: list[tuple[str, _Entry | None, int | None]]) -> None:
        for item_id, old, deleted in reversed(undo):
            entry = self._entries.pop(item_id, None)
            if entry is not None:
                self._postings.remove(item_id, entry.label, entry.metadata)
            if old is not None:
                self._entries[item_id] = old
                self._postings.add(item_id, old.label, old.metadata)
            elif entry is not None:
                self._order.discard(item_id)
            if deleted is not None:
                self._deleted_at[item_id] = deleted

    def prune_markers(self, below: int) -> int:
        """Forget the delete markers whose source offset is below ``below``.

        Only safe when no event of this partition with a source offset below
        ``below`` can be applied again (see ``docs/index.md``, "Delete markers").

        Returns:
            How many markers were forgotten.
        """
        with self._apply_lock:
            old = [i for i, offset in self._deleted_at.items() if offset < below]
            for item_id in old:
                del self._deleted_at[item_id]
        return len(old)

    # --- reads -----------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        filter: Filter | None = None,
        num_threads: int = 1,
    ) -> Hits:
        """The k nearest live items of each query in this shard (under the shared lock).

        Args:
            queries: float32 array of shape (batch, dim), C-contiguous.
            k: results per query; fewer come back when fewer items qualify.
            ef: hnswlib ef (default: the config's ``ef_search``).
            filter: which items may be returned (see `Filter`).
            num_threads: hnswlib threads for the batch.

        Returns:
            `Hits`: ``ids`` and ``distances`` of shape (batch, w) with w ≤ k, nearest
            first (an object array of item ids and float32 distances; rows with
            fewer results, under filters, are padded with None and inf), and per
            query whether the answer is exhaustive.
        """
        ef = self.config.ef_search if ef is None else ef
        home = self._home
        if len(home.members) == 1:
            return home.search(queries, k, ef, filter, num_threads)
        # A graph shared with other shards: this shard's items only.
        with self._lock.read():
            own: Collection[str] = (
                self._entries if filter is None or filter.empty else self.passing(filter)
            )
            return filtered(home.graph, queries, k, ef, own, num_threads)

    def passing(self, flt: Filter) -> Collection[str]:
        """The ids of this shard's live items that pass ``flt`` (the caller holds the lock
        shared)."""
        found, complete = self._postings.matching(flt)
        if complete and found is not None:
            return found
        # Constraints the postings cannot look up (values that are not JSON):
        # checked item by item, once per batch.
        pool = self._entries if found is None else found
        return [i for i in pool if self._passes(i, flt)]

    def _passes(self, item_id: str, flt: Filter) -> bool:
        entry = self._entries.get(item_id)
        return entry is not None and flt.matches(entry.label, entry.metadata)

    def label_sums(
        self, labels: Collection[str], filter: Filter | None = None
    ) -> dict[str, LabelSum]:
        """Per label as answers name it (`answered_label_keys`), the sum and count of this
        shard's live items' stored vectors; labels with no item here are absent.

        With a ``filter``, only the items that pass it count (summed each time; an
        unfiltered sum is kept until the label changes, `Postings.label_sum`).
        """
        parts: list[dict[str, LabelSum]] = []
        with self._lock.read():
            vectors = self._home.graph.vectors
            passing: Container[str] | None = None
            if filter is not None and not filter.empty:
                found_ids = self.passing(filter)
                passing = found_ids if isinstance(found_ids, set) else set(found_ids)
            for name in labels:
                for key in answered_label_keys(name):
                    found = (
                        self._postings.label_sum(key, vectors)
                        if passing is None
                        else self._postings.label_sum_within(key, passing, vectors)
                    )
                    if found is not None:
                        parts.append({name: found})
        return merge_sums(parts)

    def get(self, item_id: str, *, vector: bool = True) -> Item | None:
        """The live item with this id, or None (with an empty vector unless ``vector``)."""
        with self._lock.read():
            if item_id not in self._entries:
                return None
            return self._item(
                item_id, self._home.graph.vectors([item_id])[0] if vector else _NO_VECTOR
            )

    def describe_into(self, ids: Sequence[str], out: list[Described | None]) -> int:
        """Fill ``out[i]`` with the description of ``ids[i]`` where it is None and this
        shard holds that id live (one shared hold for all of them, no vector read).

        Returns:
            How many entries of ``out`` it filled.
        """
        entries = self._entries
        lock = self._lock
        filled = 0
        lock.acquire_read()
        try:
            for n, item_id in enumerate(ids):
                if out[n] is None:
                    entry = entries.get(item_id)
                    if entry is not None:
                        out[n] = Described(entry.label, entry.metadata)
                        filled += 1
        finally:
            lock.release_read()
        return filled

    def page(
        self,
        after: str | None,
        limit: int,
        filter: Filter | None = None,
        *,
        budget: int = SCAN_BUDGET,
    ) -> ShardPage:
        """The first ``limit`` ids of live items above ``after`` that pass ``filter``.

        Args:
            after: the cursor's id (None: from the first id).
            limit: most ids to return.
            filter: which items to return (None: all).
            budget: most ids looked at under a filter (see `workers.index.listing`).
        """
        with self._lock.read():
            if filter is None or filter.empty:
                return ShardPage(list(islice(self._order.after(after), limit)))
            return self._passing_after(after, limit, filter, budget)

    def _passing_after(self, after: str | None, limit: int, flt: Filter, budget: int) -> ShardPage:
        """Ids above ``after`` that pass, and the id the budget stopped the scan at.

        Few passing items (``m² ≤ limit · n``) are sorted; otherwise the ids are
        walked in order, which finds ``limit`` of them after about ``limit · n / m``.
        """
        found, complete = self._postings.matching(flt)
        if (
            complete
            and found is not None
            and len(found) <= budget
            and len(found) ** 2 <= max(limit, 1) * len(self._entries)
        ):
            return ShardPage(
                heapq.nsmallest(limit, (i for i in found if after is None or i > after))
            )
        ids: list[str] = []
        for looked, item_id in enumerate(self._order.after(after), 1):
            if (found is None or item_id in found) and (complete or self._passes(item_id, flt)):
                ids.append(item_id)
                if len(ids) == limit:
                    return ShardPage(ids)
            if looked >= budget:
                return ShardPage(ids, item_id)
        return ShardPage(ids)

    def items(self, ids: Sequence[str], vectors: bool = False) -> list[Item]:
        """The live items among ``ids``, in that order (ids deleted meanwhile are left out).

        Args:
            ids: item ids of this shard.
            vectors: whether to read the stored vectors (else each item's is empty).
        """
        with self._lock.read():
            live = [i for i in ids if i in self._entries]
            found = self._home.graph.vectors(live) if vectors and live else None
            return [
                self._item(item_id, _NO_VECTOR if found is None else found[n])
                for n, item_id in enumerate(live)
            ]

    def count(self, filter: Filter | None = None) -> int:
        """How many live items pass ``filter`` (all of them when None)."""
        with self._lock.read():
            if filter is None or filter.empty:
                return len(self._entries)
            return len(self.passing(filter))

    def _item(self, item_id: str, vector: np.ndarray) -> Item:
        entry = self._entries[item_id]
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
        graph = self._home.graph
        # A shared graph's tombstones and capacity are counted once, on its first
        # shard, so that sums over shards are the graph's.
        first = self._home.members[0] is self
        return ShardStats(
            partition=self.partition,
            live=len(self._entries),
            tombstones=graph.tombstones if first else 0,
            capacity=graph.capacity if first else 0,
            delete_markers=len(self._deleted_at),
            next_offset=self._next_offset,
            epoch=self._epoch,
            rebuilding=self._rebuilder.running,
            rebuilds=self._rebuilder.completed if first else 0,
            healthy=self.healthy,
            graph=self._home.name,
        )

    # --- rebuild ---------------------------------------------------------------------

    def rebuild(self, wait: bool = True, timeout: float | None = None) -> None:
        """Start a rebuild now (whatever the tombstone count); optionally wait for it."""
        with self._apply_lock:
            self._rebuilder.maybe_start(force=True)
        if wait:
            self.wait_for_rebuild(timeout)

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a running rebuild; return whether none is running afterwards."""
        return self._rebuilder.wait(timeout)

    def close(self) -> None:
        """Stop a running rebuild of its graph (the old graph stays) and wait for it."""
        self._home.close()

    # --- snapshots -------------------------------------------------------------------

    @contextmanager
    def frozen(self) -> Iterator[FrozenShard]:
        """Hold the shard still for a snapshot: no batch or rebuild swap, searches go on.

        Writers wait until the block ends; searches are not blocked (saving an
        hnswlib index only reads it).
        """
        with self._home.held():
            yield self.view()

    def view(self) -> FrozenShard:
        """What a snapshot reads of this shard; the caller holds its graph
        (`SharedGraph.held`)."""
        return FrozenShard(self._home.graph, self._stats, self._state)

    @classmethod
    def restore(
        cls,
        config: IndexConfig,
        partition: int,
        index: hnswlib.Index,
        state: Mapping[str, Any],
    ) -> Shard:
        """A shard from a loaded hnswlib index and its bookkeeping (see `FrozenShard.state`)."""
        return cls.restore_into(
            SharedGraph.restore(config, partition, index, [state]), partition, state
        )

    @classmethod
    def restore_into(cls, graph: SharedGraph, partition: int, state: Mapping[str, Any]) -> Shard:
        """A shard of a restored graph (`SharedGraph.restore`) from its bookkeeping."""
        shard = cls(graph.config, partition, graph)
        items = state["items"]
        for item_id, offset, label, metadata in zip(
            items["ids"], items["offsets"], items["labels"], items["metadata"], strict=True
        ):
            shard._entries[item_id] = _Entry(offset, label, metadata or _EMPTY)
            shard._postings.add(item_id, label, metadata or _EMPTY)
        shard._order = ItemOrder(items["ids"])
        deleted = state["deleted"]
        shard._deleted_at = dict(zip(deleted["ids"], deleted["offsets"], strict=True))
        shard._next_offset = state.get("next_offset")
        shard._epoch = int(state.get("epoch", 0))
        return shard

    def _state(self) -> dict[str, Any]:
        """The bookkeeping as JSON-ready columns, as `restore` reads them."""
        graph = self._home.graph
        ids = list(self._entries)
        entries = [self._entries[i] for i in ids]
        return {
            "partition": self.partition,
            "next_offset": self._next_offset,
            "next_slot": graph.next_slot,
            "epoch": self._epoch,
            "items": {
                "ids": ids,
                "slots": [graph.slot_of[i] for i in ids],
                "offsets": [e.source_offset for e in entries],
                "labels": [e.label for e in entries],
                "metadata": [dict(e.metadata) if e.metadata else None for e in entries],
            },
            "deleted": {
                "ids": list(self._deleted_at),
                "offsets": list(self._deleted_at.values()),
            },
        }
