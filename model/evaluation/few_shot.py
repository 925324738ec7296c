"""Few-shot new classes: add ``n`` examples of each new class to an index and classify the rest.

This is the product's "add a class without retraining": the encoder is fixed,
``n`` labelled examples of every new class are indexed next to the known
classes, and each remaining example of a new class is classified by its nearest
indexed neighbour (1-NN, what ``/v1/classify`` answers by default). Accuracy
counts a query right only when the answer is the query's class, so confusions
with known classes are errors.

``classifier`` measures the alternatives on the same draws: ``"majority"``
(a majority of ``k`` neighbours, biased toward the known classes whenever
``k`` exceeds the shots) and ``"class_mean"`` (the nearest class mean, see
`model.evaluation.classification.nearest_class_mean`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from model.evaluation.classification import knn_classify, nearest_class_mean
from model.evaluation.search import DistanceLike
from simstream.errors import ModelError

FewShotClassifier = Literal["nearest", "majority", "class_mean"]
CLASSIFIERS: tuple[FewShotClassifier, ...] = ("nearest", "majority", "class_mean")


def few_shot_curve(
    base_embeddings: np.ndarray,
    base_labels: np.ndarray,
    new_embeddings: np.ndarray,
    new_labels: np.ndarray,
    shots: Sequence[int] = (1, 5, 10, 50),
    distance: DistanceLike = "cosine",
    draws: int = 3,
    seed: int = 0,
    classifier: FewShotClassifier = "nearest",
    k: int = 10,
) -> dict[int, float]:
    """Accuracy on the new classes' remaining examples, for each number of shots.

    For each ``n`` in ``shots`` and each of ``draws`` random draws, ``n``
    examples of every new class are added to the base index; the other examples
    of the new classes are the queries. Accuracies are averaged over the draws.

    Args:
        base_embeddings: the index before new classes, ``(N, D)`` (may be empty).
        base_labels: its labels, ``(N,)``.
        new_embeddings: every example of the new classes, ``(M, D)``.
        new_labels: their labels, ``(M,)``.
        shots: numbers of examples added per new class.
        distance: anything `model.distances.get` resolves.
        draws: random draws of the shots per ``n``.
        seed: seed of the draws.
        classifier: ``"nearest"`` (1-NN), ``"majority"`` (of ``k`` neighbours) or
            ``"class_mean"``.
        k: neighbours of the majority vote.

    Returns:
        ``n`` → mean accuracy.

    Raises:
        ModelError: when a new class has no example left to query at some ``n``,
            or an unknown classifier.
    """
    if classifier not in CLASSIFIERS:
        raise ModelError(
            f"Invalid value for argument `classifier`. Expected one of {CLASSIFIERS}. "
            f"Received: {classifier!r}"
        )
    new_labels = np.asarray(new_labels)
    base_labels = np.asarray(base_labels)
    classes, counts = np.unique(new_labels, return_counts=True)
    if len(shots) and min(shots) < 1:
        raise ModelError(f"Expected shots ≥ 1. Received: shots={list(shots)}")
    if len(shots) and max(shots) >= counts.min():
        raise ModelError(
            f"Expected fewer shots than examples of every new class. Received: "
            f"shots up to {max(shots)}, smallest new class {int(counts.min())}"
        )
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(new_labels == c) for c in classes]
    curve: dict[int, float] = {}
    for n in shots:
        accuracies = []
        for _ in range(draws):
            chosen = np.concatenate([rng.choice(m, size=n, replace=False) for m in members])
            query = np.setdiff1d(np.arange(len(new_labels)), chosen)
            index = np.concatenate([base_embeddings, new_embeddings[chosen]])
            index_labels = np.concatenate([base_labels, new_labels[chosen]])
            if classifier == "class_mean":
                predicted, _ = nearest_class_mean(
                    new_embeddings[query], index, index_labels, distance
                )
            else:
                predicted, _ = knn_classify(
                    new_embeddings[query], index, index_labels, k=k, vote=classifier,
                    distance=distance,
                )  # fmt: skip
            accuracies.append(float(np.mean(predicted == new_labels[query])))
        curve[int(n)] = float(np.mean(accuracies))
    return curve
