"""k-nearest-neighbour search of one shard's graph, with filters and an exact fallback.

hnswlib answers the queries; where it cannot return k items (it raises when a
query reaches fewer than k: many deletes, tiny or duplicate-heavy graphs) the
query is answered by brute force over the live vectors.

Per-query ef without touching the graph: hnswlib searches with a beam of
``max(ef, k)`` and keeps the best k. Graphs are kept at hnswlib's ef = 1 and
every search asks hnswlib for ``max(k, ef)`` results and keeps the first k:
the same beam, the same answer, and no shared state changes (``set_ef`` would
need the exclusive lock).

A filter is answered from the ids that pass it (the intersection of its posting
lists, `workers.index.postings`): none, no search; few, exactly by brute force
over them; otherwise the graph is over-fetched and post-filtered with a boolean
mask over its slots (NumPy, no call per candidate), the fetch growing for
queries still short of k up to ``IndexConfig.filter_fetch_limit`` per query. A
query still short of k then is answered with fewer and marked not exhaustive
(see ``docs/index.md``, "Filters"). The caller holds the shard's lock shared throughout.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import NamedTuple

import numpy as np

from workers.index.graph import Graph

_EXACT_CHUNK = 16384


class Hits(NamedTuple):
    """One shard's answer to a batch of queries.

    Attributes:
        ids: object array (batch, w ≤ k) of item ids, nearest first; None where a
            row has fewer results.
        distances: float32 array (batch, w); inf where a row has fewer results.
        exhaustive: bool array (batch,): False where a row has fewer than k results
            although more items may pass its filter (the fetch cap was reached).
    """

    ids: np.ndarray
    distances: np.ndarray
    exhaustive: np.ndarray


def no_results(batch: int) -> Hits:
    """Empty hits for ``batch`` queries."""
    return Hits(
        np.empty((batch, 0), dtype=object),
        np.empty((batch, 0), dtype=np.float32),
        np.ones(batch, dtype=bool),
    )


def nearest(graph: Graph, queries: np.ndarray, k: int, ef: int, num_threads: int) -> Hits:
    """The min(k, live) nearest live items of each query."""
    kk = min(k, graph.live)
    if not kk:
        return no_results(len(queries))
    slots, dists = knn(graph, queries, kk, ef, num_threads)
    return Hits(graph.ids[slots], dists, np.ones(len(queries), dtype=bool))


def knn(
    graph: Graph, queries: np.ndarray, k: int, ef: int, num_threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exactly k ≤ live results per query, searched with a beam of max(ef, k).

    hnswlib is asked for ``max(k, ef)`` results (its beam is ``max(graph ef, that)``
    with the graph's ef kept at 1) and the first k are kept; queries hnswlib cannot
    fill are answered by brute force.
    """
    fetch = min(max(k, ef), graph.live)
    try:
        slots, dists = graph.index.knn_query(queries, k=fetch, num_threads=num_threads)
        return slots[:, :k].astype(np.int64), dists[:, :k]
    except RuntimeError:
        # Fewer than asked reachable (deletes, tiny or duplicate-heavy graphs): retry
        # per query and answer the ones hnswlib cannot fill by brute force.
        slots = np.empty((len(queries), k), dtype=np.int64)
        dists = np.empty((len(queries), k), dtype=np.float32)
        for row, query in enumerate(queries):
            try:
                s, d = graph.index.knn_query(query[None, :], k=fetch, num_threads=1)
            except RuntimeError:
                s, d = exact(graph, query[None, :], k, list(graph.slot_of.values()))
            slots[row], dists[row] = s[0, :k], d[0, :k]
        return slots, dists


def distances(space: str, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """hnswlib's distances in ``space`` of every query to every (stored) vector, float64."""
    q = queries.astype(np.float64)
    v = vectors.astype(np.float64)
    if space == "l2":
        return np.maximum((q * q).sum(1)[:, None] - 2.0 * (q @ v.T) + (v * v).sum(1)[None, :], 0.0)
    if space == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return 1.0 - q @ v.T


def exact(
    graph: Graph, queries: np.ndarray, k: int, slots: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over the given slots: ``(slots, distances)``; k ≤ len(slots)."""
    best_d = np.full((len(queries), 0), np.inf)
    best_s = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(slots), _EXACT_CHUNK):
        chunk = np.asarray(slots[start : start + _EXACT_CHUNK], dtype=np.int64)
        vectors = np.asarray(graph.index.get_items(chunk.tolist()), dtype=np.float32)
        d = np.concatenate([best_d, distances(graph.config.space, queries, vectors)], axis=1)
        s = np.concatenate([best_s, np.broadcast_to(chunk, (len(queries), len(chunk)))], 1)
        keep = np.argsort(d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(d, keep, 1)
        best_s = np.take_along_axis(s, keep, 1)
    return best_s, best_d.astype(np.float32)


def filtered(
    graph: Graph,
    queries: np.ndarray,
    k: int,
    ef: int,
    passing: Collection[str],
    num_threads: int,
    shards: int = 1,
) -> Hits:
    """The k nearest live items of each query among ``passing``, padded with None and inf.

    Args:
        graph: the shard's graph.
        queries: float32 array of shape (batch, dim).
        k: results per query.
        ef: hnswlib ef.
        passing: the ids of the items that pass the filter (see `Postings.matching`).
        num_threads: hnswlib threads.
        shards: the shards whose items the graph holds: the exact-search limit
            and the fetch cap (`IndexConfig.exact_filter_limit`,
            ``filter_fetch_limit``, per shard) are multiplied by it, so a graph
            shared by S shards answers a filter as S graphs of their own would.
    """
    batch = len(queries)
    ids = np.full((batch, k), None, dtype=object)
    dists = np.full((batch, k), np.inf, dtype=np.float32)
    slot_of = graph.slot_of
    slots = np.fromiter(
        (s for s in map(slot_of.get, passing) if s is not None), dtype=np.int64, count=-1
    )
    if len(slots) <= max(graph.config.exact_filter_limit * shards, k):
        kk = min(k, len(slots))
        if kk:
            s, d = exact(graph, queries, kk, np.sort(slots))
            ids[:, :kk] = graph.ids[s]
            dists[:, :kk] = d
        return Hits(ids, dists, np.ones(batch, dtype=bool))
    mask = np.zeros(len(graph.ids), dtype=bool)
    mask[slots] = True
    live = graph.live
    # Over-fetch, post-filter, and grow the fetch for queries still short of k
    # until k pass, the shard is exhausted (fetch = live) or the fetch reaches the cap.
    cap = min(live, max(graph.config.filter_fetch_limit * shards, k))
    fetch = min(cap, max(2 * k, math.ceil(2 * k * live / len(slots))))
    pending = np.arange(batch)
    while len(pending) and fetch:
        fetched, fetched_d = knn(graph, queries[pending], fetch, ef, num_threads)
        passes = mask[fetched]
        # The passing neighbours first, each row's order kept; then the first k.
        first = np.argsort(~passes, axis=1, kind="stable")[:, :k]
        found = np.minimum(passes.sum(axis=1), k)
        kept = np.arange(first.shape[1])[None, :] < found[:, None]
        width = first.shape[1]
        ids[pending, :width] = np.where(
            kept, graph.ids[np.take_along_axis(fetched, first, 1)], None
        )
        dists[pending, :width] = np.where(kept, np.take_along_axis(fetched_d, first, 1), np.inf)
        pending = pending[found < k]
        if fetch == cap:
            break
        fetch = min(cap, fetch * 4)
    exhaustive = np.ones(batch, dtype=bool)
    if cap < live:
        exhaustive[pending] = False
    return Hits(ids, dists, exhaustive)
