"""k-nearest-neighbour search of one shard's graph, with filters and an exact fallback.

hnswlib answers the queries; where it cannot return k items (it raises when a
query reaches fewer than k: many deletes, tiny or duplicate-heavy graphs) the
query is answered by brute force over the live vectors. A filter with few
label candidates is answered exactly by brute force over the candidates;
otherwise the graph is over-fetched and post-filtered, the fetch growing for
queries still short of k (see ``docs/index.md``, "Searches"). The caller holds
the shard's lock shared throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from workers.index.filter import Filter, LabelKey
from workers.index.graph import Graph

_EXACT_CHUNK = 16384


def no_results(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty ``(ids, distances)`` for ``batch`` queries."""
    return np.empty((batch, 0), dtype=object), np.empty((batch, 0), dtype=np.float32)


def nearest(
    graph: Graph, queries: np.ndarray, k: int, num_threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """The min(k, live) nearest live items of each query: ``(ids, distances)``."""
    kk = min(k, graph.live)
    if not kk:
        return no_results(len(queries))
    slots, dists = knn(graph, queries, kk, num_threads)
    return graph.ids[slots], dists


def knn(
    graph: Graph, queries: np.ndarray, k: int, num_threads: int
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
                s, d = exact(graph, query[None, :], k, list(graph.slot_of.values()))
            slots[row], dists[row] = s[0], d[0]
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
    graph: Graph, queries: np.ndarray, k: int, slots: Sequence[int]
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
    flt: Filter,
    num_threads: int,
    by_label: Mapping[LabelKey, Collection[str]],
    passes: Callable[[str, Filter], bool],
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest live items of each query that pass ``flt``, padded with None and inf.

    Args:
        graph: the shard's graph.
        queries: float32 array of shape (batch, dim).
        k: results per query.
        flt: the filter (not empty).
        num_threads: hnswlib threads.
        by_label: the live ids of each label key.
        passes: whether a live id passes a filter.
    """
    ids = np.full((len(queries), k), None, dtype=object)
    dists = np.full((len(queries), k), np.inf, dtype=np.float32)
    live = graph.live
    keys = flt.label_keys()
    if keys is not None:
        count = sum(len(by_label.get(key, ())) for key in keys)
        if count <= max(graph.config.exact_filter_limit, k):
            candidates = [i for key in keys for i in by_label.get(key, ())]
            passing = [i for i in candidates if passes(i, flt)]
            kk = min(k, len(passing))
            if kk:
                chosen = [graph.slot_of[i] for i in passing]
                s, d = exact(graph, queries, kk, chosen)
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
        slots, found = knn(graph, queries[pending], fetch, num_threads)
        short: list[int] = []
        rows: list[int] = pending.tolist()
        for row, slot_row, dist_row in zip(rows, slots.tolist(), found.tolist(), strict=True):
            n = 0
            for slot, dist in zip(slot_row, dist_row, strict=True):
                item_id = graph.ids[slot]
                if item_id is not None and passes(item_id, flt):
                    ids[row, n], dists[row, n] = item_id, dist
                    n += 1
                    if n == k:
                        break
            if n < k and fetch < live:
                short.append(row)
        pending = np.asarray(short, dtype=np.int64)
        fetch = min(live, fetch * 4)
    return ids, dists
