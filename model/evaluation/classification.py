"""k-nearest-neighbour classification with an "unknown" answer beyond a distance threshold.

Only neighbours within the threshold count. ``vote="nearest"`` answers the
label of the nearest of them (what ``/v1/classify`` does by default);
``vote="majority"`` the most frequent label among them (ties go to the label
whose closest neighbour is nearer). A query with no neighbour within the
threshold is classified as ``unknown`` (``-1`` by default).

A majority of ``k`` neighbours is biased toward classes with many indexed
examples: a class indexed with ``n < k`` examples can win at most ``n`` votes,
so a query of a new class with five examples loses to a crowd of farther
neighbours of a large class. The nearest neighbour has no such bias, and
`nearest_class_mean` (each class represented by the mean of its examples,
whatever their number) has less still.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from model.evaluation.search import DistanceLike, nearest_neighbours, pairwise_distances
from simstream.errors import ModelError

Vote = Literal["nearest", "majority"]
VOTES: tuple[Vote, ...] = ("nearest", "majority")
UNKNOWN = -1


@dataclass(frozen=True)
class ClassificationReport:
    """How a set of predictions fares.

    Attributes:
        accuracy: correct predictions / queries (an "unknown" is wrong).
        coverage: share of queries given a label (not unknown).
        accuracy_known: correct / labelled queries (1.0 when none is labelled).
        queries: number of queries.
    """

    accuracy: float
    coverage: float
    accuracy_known: float
    queries: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def knn_classify(
    query_embeddings: np.ndarray,
    index_embeddings: np.ndarray,
    index_labels: np.ndarray,
    k: int = 1,
    vote: Vote = "nearest",
    threshold: float | None = None,
    distance: DistanceLike = "cosine",
    unknown: int = UNKNOWN,
    batch_size: int | None = None,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Label each query from its ``k`` nearest index items.

    Args:
        query_embeddings: ``(Q, D)``.
        index_embeddings: ``(N, D)``.
        index_labels: ``(N,)`` integer labels.
        k: neighbours consulted (1 for ``vote="nearest"`` is enough).
        vote: ``"nearest"`` or ``"majority"``.
        threshold: neighbours farther than this are ignored; ``None`` keeps all.
        distance: anything `model.distances.get` resolves.
        unknown: the label answered when no neighbour is within the threshold.
        batch_size: queries per distance matrix.
        exclude_self: leave-one-out: the queries are the index's first items,
            and none is its own neighbour.

    Returns:
        ``(labels, distances)``: the predicted label of each query and the
        distance to its nearest neighbour.
    """
    if vote not in VOTES:
        raise ModelError(
            f"Invalid value for argument `vote`. Expected nearest or majority. Received: {vote!r}"
        )
    index_labels = _checked_labels(index_embeddings, index_labels)
    idx, dist = nearest_neighbours(
        query_embeddings,
        index_embeddings,
        k if vote == "majority" else 1,
        distance,
        exclude_self=exclude_self,
        batch_size=batch_size,
    )
    labels = index_labels[idx]
    within = np.ones(dist.shape, bool) if threshold is None else dist <= threshold
    predictions = np.full(len(idx), unknown, dtype=np.int64)
    if vote == "nearest":
        predictions[within[:, 0]] = labels[within[:, 0], 0]
    else:
        for row in np.flatnonzero(within.any(axis=1)):
            voters = labels[row][within[row]]
            values, first, counts = np.unique(voters, return_index=True, return_counts=True)
            # Most votes; among equals, the label met first (nearest) wins.
            best = np.lexsort((first, -counts))[0]
            predictions[row] = values[best]
    return predictions, dist[:, 0]


def nearest_class_mean(
    query_embeddings: np.ndarray,
    index_embeddings: np.ndarray,
    index_labels: np.ndarray,
    distance: DistanceLike = "cosine",
    exclude_self: bool = False,
    candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label each query with the class whose mean embedding is nearest.

    Every class counts once, however many examples it has indexed, so a class
    with five examples competes on equal terms with one of hundreds (the
    prototype classifier of few-shot learning). For cosine, the mean of the
    class's embeddings is compared by angle, so it needs no renormalising.

    Args:
        query_embeddings: ``(Q, D)``.
        index_embeddings: ``(N, D)``.
        index_labels: ``(N,)`` integer labels.
        distance: anything `model.distances.get` resolves.
        exclude_self: leave-one-out: the queries are the index's first items,
            and each query's own class mean leaves the query out (a class it is
            the only member of cannot be its answer).
        candidates: when set, only the classes of each query's ``candidates``
            nearest index items compete (what ``/v1/classify`` answers with
            ``vote="centroid"`` and ``k=candidates``); None: every class.

    Returns:
        ``(labels, distances)``: each query's class and its distance to that
        class's mean.

    Raises:
        ModelError: ``candidates`` below 1.
    """
    if candidates is not None and candidates < 1:
        raise ModelError(f"Expected candidates ≥ 1. Received: candidates={candidates}")
    index_labels = _checked_labels(index_embeddings, index_labels)
    index = np.asarray(index_embeddings, np.float64)
    classes, members = np.unique(index_labels, return_inverse=True)
    sums = np.zeros((len(classes), index.shape[1]), np.float64)
    np.add.at(sums, members, index)
    counts = np.bincount(members)
    matrix = pairwise_distances(query_embeddings, sums / counts[:, None], distance)
    if exclude_self:
        rows = np.arange(len(matrix))
        own, alone = members[rows], counts[members[rows]] == 1
        others = (sums[own] - index[rows]) / np.maximum(counts[own] - 1, 1)[:, None]
        own_distance = np.array([
            pairwise_distances(q[None], m[None], distance)[0, 0]
            for q, m in zip(np.asarray(query_embeddings, np.float64), others, strict=True)
        ])  # fmt: skip
        matrix[rows, own] = np.where(alone, np.inf, own_distance)
    if candidates is not None:
        near, _ = nearest_neighbours(
            query_embeddings, index, candidates, distance, exclude_self=exclude_self
        )
        competing = np.zeros(matrix.shape, bool)
        competing[np.arange(len(matrix))[:, None], members[near]] = True
        matrix[~competing] = np.inf
    best = np.argmin(matrix, axis=1)
    return classes[best], matrix[np.arange(len(matrix)), best]


def _checked_labels(index_embeddings: np.ndarray, index_labels: np.ndarray) -> np.ndarray:
    index_labels = np.asarray(index_labels)
    if len(index_labels) != len(index_embeddings) or not len(index_labels):
        raise ModelError(
            f"Expected a non-empty index with one label per embedding. Received: "
            f"{len(index_embeddings)} embeddings, {len(index_labels)} labels"
        )
    return index_labels


def classification_report(
    true_labels: np.ndarray, predicted: np.ndarray, unknown: int = UNKNOWN
) -> ClassificationReport:
    """Accuracy and coverage of predictions that may be ``unknown``."""
    true_labels, predicted = np.asarray(true_labels), np.asarray(predicted)
    if len(true_labels) != len(predicted):
        raise ModelError(
            f"Expected as many predictions as labels. Received: {len(predicted)} and "
            f"{len(true_labels)}"
        )
    if not len(true_labels):
        return ClassificationReport(accuracy=0.0, coverage=0.0, accuracy_known=1.0, queries=0)
    known = predicted != unknown
    correct = predicted == true_labels
    return ClassificationReport(
        accuracy=float(correct.mean()),
        coverage=float(known.mean()),
        accuracy_known=float(correct[known].mean()) if known.any() else 1.0,
        queries=len(true_labels),
    )
