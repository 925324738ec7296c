"""Class centroids: per label, the sum and count of its items' stored vectors.

``/v1/classify`` with ``vote="centroid"`` ranks the labels of a query's
neighbours by the distance from the query to each label's mean stored vector
over the whole index (every shard; every partition set behind the router), so a
class with five indexed examples competes on equal terms with one of thousands
(the prototype classifier of few-shot learning). Shards keep the sums
(`workers.index.postings.Postings.label_sum`); `merge_sums` adds up those of
shards and nodes; `centroid_distance` compares a query with their mean in the
units of the index's reported distances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from workers.index.config import reported_distance


class LabelSum(NamedTuple):
    """The sum (float64) of some live items' stored vectors, and how many they are."""

    total: np.ndarray
    size: int


def merge_sums(parts: Iterable[Mapping[str, LabelSum]]) -> dict[str, LabelSum]:
    """Per label, the sums and counts of ``parts`` added up (shards, nodes)."""
    out: dict[str, LabelSum] = {}
    for part in parts:
        for label, found in part.items():
            held = out.get(label)
            out[label] = (
                found
                if held is None
                else LabelSum(held.total + found.total, held.size + found.size)
            )
    return out


def centroid_distance(query: np.ndarray, found: LabelSum, space: str) -> float:
    """The distance from ``query`` to the mean of ``found``, as the index reports
    distances in ``space`` (`reported_distance`): ``cosine`` compares angles (the mean
    of unit vectors is not renormalised: only its direction counts), ``l2`` is
    Euclidean, ``ip`` is ``1 - dot``."""
    q = np.asarray(query, np.float64).ravel()
    mean = found.total / max(found.size, 1)
    if space == "cosine":
        norms = float(np.linalg.norm(q) * np.linalg.norm(mean))
        return reported_distance(space, 1.0 - float(q @ mean) / norms if norms > 0 else 1.0)
    if space == "l2":
        delta = q - mean
        return reported_distance(space, float(delta @ delta))
    return reported_distance(space, 1.0 - float(q @ mean))
