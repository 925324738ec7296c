"""Exact (brute-force) nearest-neighbour search in NumPy, batched to bound memory.

This is the ground truth that approximate indexes are measured against, and the
engine of every retrieval metric in `model.evaluation`. Distances follow
`model.distances` (smaller is closer; cosine is ``1 - cos``), computed here in
float32 NumPy so evaluation needs no framework session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from model import distances as distances_module
from simstream.errors import ModelError

DistanceLike = str | dict[str, Any] | distances_module.Distance

_MATRIX_BUDGET = 1 << 24
"""Largest number of distance-matrix cells held at once (64 MiB of float32)."""


def canonical_distance(distance: DistanceLike) -> str:
    """The canonical name of a distance (``"cosine"``, ``"euclidean"``…)."""
    return distances_module.get(distance).name


def pairwise_distances(query: np.ndarray, key: np.ndarray, distance: DistanceLike) -> np.ndarray:
    """The ``(Q, N)`` distance matrix between two sets of embeddings.

    Args:
        query: ``(Q, D)`` embeddings.
        key: ``(N, D)`` embeddings.
        distance: anything `model.distances.get` resolves.

    Returns:
        float32 ``(Q, N)``; entry ``[i, j]`` is the distance from ``query[i]`` to ``key[j]``.
    """
    q = np.asarray(query, dtype=np.float32)
    k = np.asarray(key, dtype=np.float32)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ModelError(
            f"Expected query (Q, D) and key (N, D) embeddings. Received: {q.shape} and {k.shape}"
        )
    fn = _NUMPY.get(canonical_distance(distance))
    if fn is None:  # a custom Distance: evaluate it with keras.ops
        from keras import ops

        return np.asarray(ops.convert_to_numpy(distances_module.get(distance)(q, k)), np.float32)
    return fn(q, k)


def nearest_neighbours(
    query: np.ndarray,
    key: np.ndarray,
    k: int,
    distance: DistanceLike = "cosine",
    exclude_self: bool = False,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys of every query, closest first (ties by key position).

    Args:
        query: ``(Q, D)`` embeddings.
        key: ``(N, D)`` embeddings.
        k: neighbours per query; capped at the number of candidate keys.
        distance: anything `model.distances.get` resolves.
        exclude_self: leave-one-out: query ``i`` is key ``i`` and never its own
            neighbour (the queries must then be the first keys, or all of them).
        batch_size: queries per distance matrix; by default as many as fit in a
            64 MiB matrix.

    Returns:
        ``(indices, distances)``, each ``(Q, min(k, N'))`` where ``N'`` is ``N``
        or ``N - 1`` with ``exclude_self``.
    """
    if k < 1:
        raise ModelError(f"Invalid value for argument `k`. Expected k ≥ 1. Received: k={k}")
    if exclude_self and len(query) > len(key):
        raise ModelError(
            "Expected the queries to be the first keys for leave-one-out. "
            f"Received: {len(query)} queries and {len(key)} keys"
        )
    indices, dists = [], []
    for start, rows in _row_batches(len(query), len(key), batch_size):
        matrix = pairwise_distances(query[start : start + rows], key, distance)
        if exclude_self:
            matrix[np.arange(len(matrix)), np.arange(start, start + len(matrix))] = np.inf
        idx, dist = top_k(matrix, k, drop=1 if exclude_self else 0)
        indices.append(idx)
        dists.append(dist)
    width = min(k, len(key) - (1 if exclude_self else 0))
    if not indices:
        return np.zeros((0, width), np.int64), np.zeros((0, width), np.float32)
    return np.concatenate(indices), np.concatenate(dists)


def top_k(matrix: np.ndarray, k: int, drop: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` smallest entries of each row, ascending.

    Args:
        matrix: ``(Q, N)`` distances.
        k: entries per row; capped at ``N - drop``.
        drop: trailing columns known to be ``inf`` (leave-one-out self-matches)
            that must not be returned.

    Returns:
        ``(indices, values)``, each ``(Q, min(k, N - drop))``. Ties are ordered by
        column index.
    """
    n = matrix.shape[1] - drop
    k = min(k, n)
    if k <= 0:
        empty = np.zeros((len(matrix), 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    if k < n:
        candidates = np.argpartition(matrix, k - 1, axis=1)[:, :k]
        candidates.sort(axis=1)  # column order, so the stable sort below breaks ties by it
    else:
        candidates = np.broadcast_to(np.arange(matrix.shape[1]), matrix.shape).copy()
    values = np.take_along_axis(matrix, candidates, axis=1)
    order = np.argsort(values, axis=1, kind="stable")[:, :k]
    return (
        np.take_along_axis(candidates, order, axis=1).astype(np.int64),
        np.take_along_axis(values, order, axis=1),
    )


class ExactIndex:
    """A brute-force in-memory index: exact results, O(N) per query.

    Args:
        distance: anything `model.distances.get` resolves.

    Example:
        >>> index = ExactIndex("cosine")
        >>> index.add(embeddings, labels)
        >>> ids, distances = index.search(queries, k=5)
        >>> index.labels[ids]  # labels of the neighbours
    """

    def __init__(self, distance: DistanceLike = "cosine") -> None:
        self.distance = canonical_distance(distance)
        self.embeddings = np.zeros((0, 0), np.float32)
        self.labels = np.zeros((0,), np.int64)

    def __len__(self) -> int:
        return len(self.embeddings)

    def add(self, embeddings: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Append embeddings (and their labels); returns their ids (positions)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ModelError(f"Expected embeddings (N, D). Received: {embeddings.shape}")
        if len(self) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise ModelError(
                f"Expected embeddings of dimension {self.embeddings.shape[1]}. "
                f"Received: {embeddings.shape[1]}"
            )
        labels_array = (
            np.full(len(embeddings), -1, np.int64) if labels is None else np.asarray(labels)
        )
        if len(labels_array) != len(embeddings):
            raise ModelError(
                f"Expected one label per embedding. Received: {len(labels_array)} labels "
                f"for {len(embeddings)} embeddings"
            )
        start = len(self)
        self.embeddings = embeddings if not start else np.concatenate([self.embeddings, embeddings])
        self.labels = labels_array if not start else np.concatenate([self.labels, labels_array])
        return np.arange(start, len(self))

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest ids and distances of each query, closest first."""
        if not len(self):
            raise ModelError("Cannot search an empty index. Add embeddings first.")
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        return nearest_neighbours(queries, self.embeddings, k, self.distance)


# --- helpers -----------------------------------------------------------------------


def _row_batches(rows: int, columns: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    step = batch_size or max(1, _MATRIX_BUDGET // max(1, columns))
    for start in range(0, rows, step):
        yield start, min(step, rows - start)


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _squared_euclidean(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    sq = (q * q).sum(1)[:, None] + (k * k).sum(1)[None, :] - 2.0 * (q @ k.T)
    return np.maximum(sq, 0.0).astype(np.float32)


def _manhattan(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), len(k)), np.float32)
    step = max(1, _MATRIX_BUDGET // max(1, len(k) * q.shape[1]))
    for s in range(0, len(q), step):
        out[s : s + step] = np.abs(q[s : s + step, None, :] - k[None]).sum(-1)
    return out


_NUMPY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": lambda q, k: (1.0 - _normalise(q) @ _normalise(k).T).astype(np.float32),
    "inner_product": lambda q, k: (1.0 - q @ k.T).astype(np.float32),
    "squared_euclidean": _squared_euclidean,
    "euclidean": lambda q, k: np.sqrt(_squared_euclidean(q, k)),
    "manhattan": _manhattan,
}
