"""A brute-force model of the shard's semantics, and small helpers for the index tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simstream.wire import Op
from workers.index.record import Mutation


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random unit vectors."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def distances(space: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """hnswlib's distances: 1 - cos, squared L2, 1 - dot."""
    q = query.astype(np.float64)
    v = vectors.astype(np.float64)
    if space == "l2":
        return ((v - q) ** 2).sum(axis=1)
    if space == "cosine":
        q = q / np.linalg.norm(q)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return 1.0 - v @ q


@dataclass
class Model:
    """What the index should hold: last writer by source offset wins (at one offset an
    upsert beats a delete), deletes remembered."""

    live: dict[str, tuple[int, np.ndarray, Any, dict[str, Any]]] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)

    def apply(self, record: Mutation) -> None:
        if record.item_id in self.live:
            if record.source_offset <= self.live[record.item_id][0]:
                return
        elif record.item_id in self.deleted:
            deleted_at = self.deleted[record.item_id]
            # At the offset of a delete only an upsert (a replayed dead letter) still wins.
            if record.source_offset < deleted_at or (
                record.source_offset == deleted_at and record.op == Op.DELETE
            ):
                return
        if record.op == Op.DELETE:
            self.live.pop(record.item_id, None)
            self.deleted[record.item_id] = record.source_offset
        else:
            vector = np.asarray(record.vector, dtype=np.float32)
            self.live[record.item_id] = (
                record.source_offset,
                vector,
                record.label,
                dict(record.metadata or {}),
            )
            self.deleted.pop(record.item_id, None)

    def exact(self, space: str, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        """The k nearest live ids and their distances."""
        if not self.live:
            return [], np.empty(0)
        ids = list(self.live)
        d = distances(space, query, np.stack([self.live[i][1] for i in ids]))
        order = np.argsort(d, kind="stable")[:k]
        return [ids[j] for j in order], d[order]


class KnnSpy:
    """The real hnswlib index, recording the k each ``knn_query`` asks for."""

    def __init__(self, index: object) -> None:
        self._index = index
        self.asked: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._index, name)

    def knn_query(self, data: np.ndarray, k: int, num_threads: int) -> object:
        self.asked.append(k)
        return self._index.knn_query(data, k=k, num_threads=num_threads)  # type: ignore[attr-defined]
