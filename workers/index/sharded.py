"""The sharded index: shard p holds exactly the items of Kafka partition p.

Records are applied to the shard of the partition they were read from; the
index never re-derives a partition from an item id (see `partitioning`). The
shards' items live in hnswlib graphs (`SharedGraph`): in the ``node`` layout
one graph for every shard, so a query is one graph search; in the
``partition`` layout one per shard, and a query searches every graph, each
with the ef scaled to its share of the items (`shard_ef`), in parallel threads
when that pays (hnswlib releases the GIL while it searches; the calling thread
searches one graph itself), and the per-graph top-k lists are merged by
distance (`merge`). A filter's passing ids are looked up in each shard's
postings (see `Filter` and `SharedGraph.search`). Each graph has its own
readers–writer lock, so in the ``partition`` layout a write to one partition
never delays searches of another shard (see ``docs/architecture.md``, "Query
cost and the partition count").

`epoch` increments on every batch that changed the index; caches put it in
their keys so that any change invalidates older results.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, overload

import numpy as np

from simstream.errors import IndexStoreError, WouldBlockError
from simstream.log import get_logger
from simstream.settings import Settings
from workers.index.centroid import LabelSum, merge_sums
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.listing import Page, merge_pages
from workers.index.partitioning import partition_for
from workers.index.record import IndexRecord
from workers.index.rwlock import waiting_allowed
from workers.index.search import Hits
from workers.index.shard import SCAN_BUDGET, ApplyResult, Described, Item, Shard, ShardStats
from workers.index.shared_graph import SharedGraph


@dataclass(frozen=True, slots=True)
class Neighbors:
    """The nearest items of one query, nearest first.

    Attributes:
        ids: item ids (at most k; fewer when fewer items qualify).
        distances: distances in the index's space, same order.
        exhaustive: False when fewer than k came back although more items may
            pass the filter (a shard's fetch cap was reached).
    """

    ids: list[str]
    distances: list[float]
    exhaustive: bool = True

    def __len__(self) -> int:
        return len(self.ids)


class NeighborsBatch(Sequence[Neighbors]):
    """The results of a batched search: one `Neighbors` per query, nearest first.

    Backed by two arrays, like hnswlib's own results, so that a batch costs no
    Python object per query until a query's results are read.

    Attributes:
        ids: object array (batch, w) of item ids, w ≤ k.
        distances: float32 array (batch, w); inf where a row has fewer results.
        exhaustive: bool array (batch,), see `Neighbors.exhaustive`.
    """

    __slots__ = ("_counts", "distances", "exhaustive", "ids")

    def __init__(
        self,
        ids: np.ndarray,
        distances: np.ndarray,
        padded: bool,
        exhaustive: np.ndarray | None = None,
    ) -> None:
        self.ids = ids
        self.distances = distances
        self.exhaustive = np.ones(len(ids), dtype=bool) if exhaustive is None else exhaustive
        self._counts: list[int] | None = (
            np.isfinite(distances).sum(axis=1).tolist() if padded else None
        )

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Neighbors: ...

    @overload
    def __getitem__(self, index: slice) -> list[Neighbors]: ...

    def __getitem__(self, index: int | slice) -> Neighbors | list[Neighbors]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = self.ids.shape[1] if self._counts is None else self._counts[index]
        return Neighbors(
            self.ids[index, :n].tolist(),
            self.distances[index, :n].tolist(),
            bool(self.exhaustive[index]),
        )

    def __iter__(self) -> Iterator[Neighbors]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Counts of the whole index.

    Attributes:
        epoch: the index epoch.
        shards: per-shard counts, by partition.
    """

    epoch: int
    shards: tuple[ShardStats, ...]

    @property
    def live(self) -> int:
        """Searchable items over all shards."""
        return sum(s.live for s in self.shards)

    @property
    def tombstones(self) -> int:
        """Deleted slots over all shards."""
        return sum(s.tombstones for s in self.shards)

    @property
    def capacity(self) -> int:
        """Allocated slots over all shards."""
        return sum(s.capacity for s in self.shards)

    @property
    def healthy(self) -> bool:
        """Whether every shard is healthy (see `ShardStats.healthy`)."""
        return all(s.healthy for s in self.shards)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for the API and logs)."""
        return {
            "epoch": self.epoch,
            "live": self.live,
            "tombstones": self.tombstones,
            "capacity": self.capacity,
            "shards": [
                {
                    "partition": s.partition,
                    "live": s.live,
                    "tombstones": s.tombstones,
                    "capacity": s.capacity,
                    "delete_markers": s.delete_markers,
                    "next_offset": s.next_offset,
                    "epoch": s.epoch,
                    "rebuilding": s.rebuilding,
                    "rebuilds": s.rebuilds,
                    "healthy": s.healthy,
                    "graph": s.graph,
                }
                for s in self.shards
            ],
        }


_EXHAUSTIVE_ONE = np.ones(1, dtype=bool)
_EXHAUSTIVE_ONE.flags.writeable = False


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def shard_ef(ef: int, shard_live: int, total_live: int) -> int:
    """The ef one shard is searched with, for the recall ``ef`` gives one graph of all items.

    A graph holding a share of the items reaches the same recall with a smaller
    beam; the merged answer of S shards searched at ``ef / sqrt(S)`` matched a
    single graph at ``ef`` on the benchmark's MNIST embeddings (S = 4 at ef 10
    ≈ one graph at ef 20; see ``docs/index.md``, "Searches"). So each shard
    gets ``ef`` scaled by the square root of its share of the live items,
    rounded up; hnswlib still searches with at least k.

    Args:
        ef: the beam asked for the whole index.
        shard_live: the shard's live items.
        total_live: live items over all shards.
    """
    if shard_live >= total_live or total_live <= 0:
        return ef
    return max(1, math.ceil(ef * math.sqrt(shard_live / total_live)))


def _check_args(k: int, ef: int | None, threads: int | None) -> None:
    """Refuse a search's k, ef or thread cap below 1."""
    if k < 1:
        raise IndexStoreError(f"Invalid value for `k`. Expected k ≥ 1. Received: k={k}")
    if ef is not None and ef < 1:
        raise IndexStoreError(f"Invalid value for `ef`. Expected ef ≥ 1. Received: ef={ef}")
    if threads is not None and threads < 1:
        raise IndexStoreError(
            f"Invalid value for `threads`. Expected threads ≥ 1. Received: {threads}"
        )


def _graphs_of(shards: Sequence[Shard]) -> list[SharedGraph]:
    """The distinct graphs of ``shards``, in the order of their first shard."""
    found: dict[int, SharedGraph] = {}
    for shard in shards:
        found.setdefault(id(shard.graph), shard.graph)
    return list(found.values())


def merge(parts: Sequence[Hits], k: int) -> Hits:
    """The k nearest of several shards' answers to the same queries, by distance.

    Ties keep shard order (a stable sort). A merged answer is complete when every
    shard's is, or when k came back.
    """
    all_d = np.concatenate([p.distances for p in parts], axis=1)
    all_ids = np.concatenate([p.ids for p in parts], axis=1)
    order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(all_d))[:, None]
    dists = all_d[rows, order]
    exhaustive = np.isfinite(dists).sum(axis=1) >= k
    every = parts[0].exhaustive
    for p in parts[1:]:
        every = every & p.exhaustive
    return Hits(all_ids[rows, order], dists, every | exhaustive)


def _merge_one(pairs: list[tuple[float, str]], k: int) -> Hits:
    """`merge` of one unfiltered query's ``(distance, id)`` pairs from every shard
    (shard order kept on ties): a sort of a few dozen pairs in Python is cheaper
    than NumPy's per-call cost. Unfiltered answers are always exhaustive."""
    pairs.sort(key=itemgetter(0))
    del pairs[k:]
    ids = np.empty((1, len(pairs)), dtype=object)
    ids[0, :] = [item_id for _, item_id in pairs]
    dists = np.array([[d for d, _ in pairs]], dtype=np.float32)
    return Hits(ids, dists, _EXHAUSTIVE_ONE)


class ShardedIndex:
    """Shards, one per owned partition of the embeddings topic, in hnswlib graphs.

    Args:
        config: parameters every shard shares (``config.graph``: the layout of
            new shards; ready ``shards`` keep theirs).
        partitions: number of partitions of the topic.
        model_version: the encoder version whose embeddings this index holds.
        owned: the partitions this index holds a shard of, ascending (default:
            all; an index node of a partition set holds only its set's).
        shards: ready shards (from a snapshot), one per owned partition in order.
        epoch: starting epoch (from a snapshot).
    """

    def __init__(
        self,
        config: IndexConfig,
        partitions: int,
        *,
        model_version: str = "",
        owned: Sequence[int] | None = None,
        shards: Sequence[Shard] | None = None,
        epoch: int = 0,
    ) -> None:
        if partitions < 1:
            raise IndexStoreError(
                f"Invalid value for `partitions`. Expected ≥ 1. Received: partitions={partitions}"
            )
        held = list(range(partitions)) if owned is None else list(owned)
        if not held or held != sorted(set(held)) or not 0 <= held[0] <= held[-1] < partitions:
            raise IndexStoreError(
                f"Invalid value for `owned`. Expected distinct partitions below {partitions} in "
                f"ascending order, at least one. Received: {held}"
            )
        if shards is not None and [s.partition for s in shards] != held:
            raise IndexStoreError(
                f"Expected one shard per owned partition {held} in order. "
                f"Received partitions {[s.partition for s in shards]}"
            )
        self.config = config
        self.model_version = model_version
        self._partitions = partitions
        self._owned = tuple(held)
        self._position = {p: n for n, p in enumerate(held)}
        if shards is None:
            home = SharedGraph(config, held[0]) if config.graph == "node" else None
            shards = [Shard(config, p, home) for p in held]
        self._shards = list(shards)
        self._graphs = _graphs_of(self._shards)
        self._epoch = epoch
        self._epoch_lock = threading.Lock()
        self._cpus = _cpus()
        self._per_query_s = 0.0
        self._pool = (
            ThreadPoolExecutor(max_workers=len(held), thread_name_prefix="index-shard")
            if len(held) > 1
            else None
        )
        # One permit per pool thread: work is handed to the pool only when a thread
        # is free, so a search never queues behind another request's shards.
        self._free_threads = threading.Semaphore(len(held))
        self._log = get_logger("index.sharded", model_version=model_version)

    @classmethod
    def from_settings(
        cls, settings: Settings, model_version: str, dim: int | None = None
    ) -> ShardedIndex:
        """An empty index shaped by the settings (partitions, space, M, ef …)."""
        return cls(
            IndexConfig.from_settings(settings, dim),
            settings.partitions,
            model_version=model_version,
        )

    # --- properties ------------------------------------------------------------------

    @property
    def partitions(self) -> int:
        """Number of partitions of the topic (the shards held: `owned`)."""
        return self._partitions

    @property
    def owned(self) -> tuple[int, ...]:
        """The partitions this index holds a shard of, ascending."""
        return self._owned

    @property
    def shards(self) -> tuple[Shard, ...]:
        """The shards, by partition."""
        return tuple(self._shards)

    @property
    def graphs(self) -> tuple[SharedGraph, ...]:
        """The hnswlib graphs the shards are in (one in the node layout), in shard order."""
        return tuple(self._graphs)

    @property
    def dim(self) -> int:
        """Vector size."""
        return self.config.dim

    @property
    def space(self) -> str:
        """hnswlib space."""
        return self.config.space

    @property
    def epoch(self) -> int:
        """Increments on every batch that changed the index (for cache keys)."""
        return self._epoch

    def shard(self, partition: int) -> Shard:
        """The shard of a partition."""
        return self._shards[self._check_partition(partition)]

    def _check_partition(self, partition: int) -> int:
        """The position of ``partition``'s shard.

        Raises:
            IndexStoreError: this index holds no shard of ``partition``.
        """
        position = self._position.get(partition)
        if position is None:
            raise IndexStoreError(
                f"Invalid value for `partition`. Expected one of the partitions held, "
                f"{list(self._owned)}. Received: partition={partition}"
            )
        return position

    # --- writes ----------------------------------------------------------------------

    def apply(
        self,
        partition: int,
        records: Sequence[IndexRecord],
        *,
        next_offset: int | None = None,
        num_threads: int | None = None,
    ) -> ApplyResult:
        """Apply a batch read from one partition to its shard.

        Args:
            partition: the partition the records were read from.
            records: upserts and deletes, in log order.
            next_offset: the log offset to read next in that partition (last + 1).
            num_threads: hnswlib threads for bulk inserts (default: the config's).
        """
        result = self.shard(partition).apply(
            records, next_offset=next_offset, num_threads=num_threads
        )
        if result.changed:
            with self._epoch_lock:
                self._epoch += 1
        return result

    def apply_many(
        self,
        batches: Mapping[int, Sequence[IndexRecord]],
        next_offsets: Mapping[int, int] | None = None,
    ) -> dict[int, ApplyResult]:
        """Apply batches of several partitions: in parallel, one thread per graph, its
        cores shared among the graphs written (shards of one graph take turns)."""
        graphs = {id(self.shard(partition).graph) for partition in batches}
        offsets = next_offsets or {}
        threads = max(1, self._cpus // max(1, len(graphs)))
        futures = {
            p: self._submit(self.apply, p, records, next_offset=offsets.get(p), num_threads=threads)
            for p, records in batches.items()
        }
        return {p: f.result() for p, f in futures.items()}

    def _submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._pool is None:
            future: Future[Any] = Future()
            future.set_result(fn(*args, **kwargs))
            return future
        self._free_threads.acquire()
        return self._pool.submit(self._releasing, fn, *args, **kwargs)

    def _releasing(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in a pool thread, then give the thread's permit back."""
        try:
            return fn(*args, **kwargs)
        finally:
            self._free_threads.release()

    # --- reads -----------------------------------------------------------------------

    def _queries(self, vectors: Any) -> np.ndarray:
        try:
            q = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise IndexStoreError("Expected query vectors as numbers.") from None
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self.dim or not q.shape[0]:
            raise IndexStoreError(
                f"Invalid query shape. Expected (batch ≥ 1, {self.dim}). Received: {q.shape}"
            )
        q = np.ascontiguousarray(q)
        if len(q) == 1:
            norm = float(np.dot(q[0], q[0]))
            finite, nonzero = math.isfinite(norm), norm != 0.0
        else:
            norms = np.einsum("ij,ij->i", q, q)
            finite, nonzero = bool(np.isfinite(norms).all()), bool(norms.all())
        if not finite and not np.isfinite(q).all():
            raise IndexStoreError("Invalid query. Expected finite values. Received NaN or inf.")
        if self.space == "cosine" and not nonzero:
            raise IndexStoreError("Invalid query. Expected a non-zero vector (cosine space).")
        return q

    def search(
        self,
        vector: Any,
        k: int = 10,
        *,
        ef: int | None = None,
        filter: Filter | None = None,
        total_live: int | None = None,
        threads: int | None = None,
    ) -> Neighbors:
        """The k nearest live items to one vector over all shards.

        Args:
            vector: the query, shape (dim,).
            k: how many neighbours; fewer come back when fewer items qualify.
            ef: the beam for the whole index (default: the config's ``ef_search``);
                each graph searches with it scaled to its size (`shard_ef`).
            filter: which items may be returned.
            total_live: the live items of the whole cluster when this index holds
                only some of its partitions: each graph's ef is then scaled by its
                share of that total, as in one node holding every partition
                (default: this index's own live items).
            threads: most threads the search may keep busy at once (default: every
                core); a node caps costly searches so they never take every core
                from the cheap ones (`workers.api.search_slots`).
        """
        graphs = self._graphs
        if len(graphs) == 1 and (filter is None or filter.empty):
            # One graph, no filter: hnswlib's answer as lists, no batch built around it.
            _check_args(k, ef, threads)
            q = self._queries(vector)
            if len(q) == 1:
                base = self.config.ef_search if ef is None else ef
                if total_live is not None:
                    base = shard_ef(base, graphs[0].live, total_live)
                ids, distances = graphs[0].nearest_lists(q, k, base)
                return Neighbors(ids, distances)
        return self.search_batch(
            vector, k, ef=ef, filter=filter, total_live=total_live, threads=threads
        )[0]

    def search_batch(
        self,
        vectors: Any,
        k: int = 10,
        *,
        ef: int | None = None,
        filter: Filter | None = None,
        total_live: int | None = None,
        threads: int | None = None,
    ) -> NeighborsBatch:
        """`search` for many query vectors at once, shape (batch, dim)."""
        _check_args(k, ef, threads)
        q = self._queries(vectors)
        graphs = self._graphs
        cpus = self._cpus if threads is None else min(self._cpus, threads)
        if len(graphs) == 1:
            base = self.config.ef_search if ef is None else ef
            if total_live is not None:
                base = shard_ef(base, graphs[0].live, total_live)
            hits = graphs[0].search(q, k, base, filter, cpus)
        else:
            width = len(graphs) if threads is None else cpus
            hits = self._fan_out(q, k, ef, filter, total_live, cpus, width)
        padded = filter is not None and not filter.empty
        return NeighborsBatch(hits.ids, hits.distances, padded, hits.exhaustive)

    def _fan_out(
        self,
        q: np.ndarray,
        k: int,
        ef: int | None,
        filter: Filter | None,
        total_live: int | None,
        cpus: int,
        width: int,
    ) -> Hits:
        """Search every graph, each at its scaled ef (`shard_ef`), and merge by distance:
        at most ``width`` graphs at once, with ``cpus`` hnswlib threads among them.

        Graphs are searched in parallel threads when the expected time of one
        graph's search beats the cost of handing work to a thread; small
        queries (one vector on small graphs) run in the calling thread. A graph
        is handed to the pool only when a pool thread is free; otherwise the
        calling thread searches it, so a search never waits in the pool's queue
        behind another request's (say, a costly filtered batch's) graphs.
        """
        graphs = self._graphs
        base = self.config.ef_search if ef is None else ef
        sizes = [g.live for g in graphs]
        total = max(sum(sizes), total_live or 0)
        efs = [shard_ef(base, size, total) for size in sizes]
        parallel = width > 1 and self._per_query_s * len(q) > self.config.fan_out_min_s
        # CPU time of the calling thread: a preempted search on busy cores does
        # not look costly and send later small searches to threads.
        started = time.thread_time()
        if parallel:
            if not waiting_allowed():
                raise WouldBlockError("A search worth threads would wait for them; not waiting.")
            assert self._pool is not None
            threads = max(1, cpus // len(graphs))
            futures, inline = [], []
            for n, (g, e) in enumerate(zip(graphs[1:], efs[1:], strict=True)):
                if n + 1 < width and self._free_threads.acquire(blocking=False):
                    futures.append(
                        self._pool.submit(self._releasing, g.search, q, k, e, filter, threads)
                    )
                else:
                    inline.append((g, e))
            first = graphs[0].search(q, k, efs[0], filter, threads)
            elapsed = time.thread_time() - started
            parts = [first]
            parts += [g.search(q, k, e, filter, threads) for g, e in inline]
            parts += [f.result() for f in futures]
        elif len(q) == 1 and (filter is None or filter.empty):
            pairs = graphs[0].nearest_one(q, k, efs[0])
            elapsed = time.thread_time() - started
            for g, e in zip(graphs[1:], efs[1:], strict=True):
                pairs += g.nearest_one(q, k, e)
            self._per_query_s = 0.9 * self._per_query_s + 0.1 * elapsed
            return _merge_one(pairs, k)
        else:
            threads = cpus if len(q) > 1 else 1
            first = graphs[0].search(q, k, efs[0], filter, threads)
            elapsed = time.thread_time() - started
            parts = [first]
            parts += [
                g.search(q, k, e, filter, threads) for g, e in zip(graphs[1:], efs[1:], strict=True)
            ]
        self._per_query_s = 0.9 * self._per_query_s + 0.1 * elapsed / len(q)
        return merge(parts, k)

    def get(self, item_id: str, *, vector: bool = True) -> Item | None:
        """The live item with this id (the partition Kafka would pick is asked first).

        Args:
            item_id: the id.
            vector: whether to read its stored vector (else the item's is empty:
                describing a neighbour needs only its label and metadata).
        """
        first = self._position.get(partition_for(item_id, self._partitions))
        shards = list(self._shards)
        if first is not None:
            shards.insert(0, shards.pop(first))
        for shard in shards:
            if item_id in shard:
                item = shard.get(item_id, vector=vector)
                if item is not None:
                    return item
        return None

    def describe(self, ids: Sequence[str]) -> list[Described | None]:
        """Label and metadata of each of ``ids`` (None where it is not live), in order.

        What a search's neighbours are described with: one shared hold per shard
        for the whole list, no vector read and no partition hash per id (`get`
        costs both per item).
        """
        out: list[Described | None] = [None] * len(ids)
        left = len(ids)
        for shard in self._shards:
            left -= shard.describe_into(ids, out)
            if not left:
                break
        return out

    def label_sums(
        self, labels: Collection[str], filter: Filter | None = None
    ) -> dict[str, LabelSum]:
        """Per label (as answers name it), the sum and count of the live items' stored
        vectors that pass ``filter`` (None: all) over every shard (`Shard.label_sums`):
        a class's centroid is ``total / size``. Labels with no such item are absent."""
        return merge_sums(s.label_sums(labels, filter) for s in self._shards)

    def page(
        self,
        after: str | None,
        limit: int,
        filter: Filter | None = None,
        *,
        vectors: bool = False,
        budget: int = SCAN_BUDGET,
    ) -> Page:
        """Up to ``limit`` live items with ids above ``after``, in id order (see `listing`).

        Args:
            after: the previous page's ``after`` (None: the first page).
            limit: most items (≥ 1).
            filter: which items to list (None: all).
            vectors: whether to include the stored vectors.
            budget: most ids a shard looks at under a filter.
        """
        if limit < 1:
            raise IndexStoreError(
                f"Invalid value for `limit`. Expected limit ≥ 1. Received: limit={limit}"
            )
        shards = self._shards
        chosen, next_after = merge_pages(
            [s.page(after, limit, filter, budget=budget) for s in shards], limit
        )
        wanted: dict[int, list[str]] = {}
        for n, item_id in chosen:
            wanted.setdefault(n, []).append(item_id)
        found = {i.item_id: i for n, ids in wanted.items() for i in shards[n].items(ids, vectors)}
        return Page([found[i] for _, i in chosen if i in found], next_after)

    def count(self, filter: Filter | None = None) -> int:
        """How many live items pass ``filter`` over all shards (all items when None)."""
        return sum(s.count(filter) for s in self._shards)

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)

    def stats(self) -> IndexStats:
        """Live, tombstone and capacity counts per shard."""
        return IndexStats(self._epoch, tuple(s.stats() for s in self._shards))

    def graph_mates(self, partition: int) -> tuple[int, ...]:
        """The partitions whose shards share ``partition``'s graph (itself included):
        a failed batch leaves that graph partial for all of them."""
        return tuple(s.partition for s in self.shard(partition).graph.members)

    def replace_shard(self, shard: Shard) -> None:
        """Put ``shard`` in place of the shard of its partition (see `replace_shards`)."""
        self.replace_shards([shard])

    def replace_shards(self, shards: Sequence[Shard]) -> None:
        """Put ``shards`` in place of the shards of their partitions; the graphs they
        replace are closed.

        Raises:
            IndexStoreError: a graph would be shared by replaced and kept shards, or
                by the new shards and shards outside the index.
        """
        positions = [self._check_partition(s.partition) for s in shards]
        old = [self._shards[n] for n in positions]
        for shard in old:
            self._check_whole(shard.graph, old, "replaced")
        for shard in shards:
            self._check_whole(shard.graph, shards, "new")
        for n, shard in zip(positions, shards, strict=True):
            self._shards[n] = shard
        self._graphs = _graphs_of(self._shards)
        with self._epoch_lock:
            self._epoch += 1
        for graph in _graphs_of(old):
            graph.close()

    @staticmethod
    def _check_whole(graph: SharedGraph, shards: Sequence[Shard], which: str) -> None:
        if not all(any(m is s for s in shards) for m in graph.members):
            raise IndexStoreError(
                f"Expected the {which} shards to hold every shard of their graphs. "
                f"Received partitions {[s.partition for s in shards]}; graph {graph.name} "
                f"holds partitions {[m.partition for m in graph.members]}."
            )

    def prune_markers(self, below: Mapping[int, int]) -> int:
        """Forget each partition's delete markers below its source offset (`Shard.prune_markers`).

        Returns:
            How many markers were forgotten in all.
        """
        return sum(self.shard(p).prune_markers(offset) for p, offset in below.items())

    def next_offsets(self) -> dict[int, int]:
        """Next embeddings-log offset per partition (partitions never applied are absent)."""
        return {s.partition: s.next_offset for s in self._shards if s.next_offset is not None}

    # --- lifecycle -------------------------------------------------------------------

    def wait_for_rebuilds(self, timeout: float | None = None) -> bool:
        """Wait for running graph rebuilds; return whether all are done."""
        return all(g.rebuilder.wait(timeout) for g in self._graphs)

    def close(self) -> None:
        """Stop background rebuilds and the fan-out threads."""
        for g in self._graphs:
            g.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
