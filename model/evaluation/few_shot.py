"""Few-shot new classes: add ``n`` examples of each new class to an index and classify the rest.

This is the product's "add a class without retraining": the encoder is fixed,
``n`` labelled examples of every new class are indexed next to the known
classes, and each remaining example of a new class is classified by its nearest
indexed neighbour (1-NN, what ``/v1/classify`` answers by default). Accuracy
counts a query right only when the answer is the query's class, so confusions
with known classes are errors.

``classifier`` measures the alternatives on the same draws: ``"majority"``
(a majority of ``k`` neighbours, biased toward the known classes whenever
``k`` exceeds the shots), ``"class_mean"`` (the nearest class mean, see
`model.evaluation.classification.nearest_class_mean`) and ``"centroid"`` (the
nearest class mean among the classes of the ``k`` nearest neighbours: what
``/v1/classify`` answers with ``vote="centroid"``).

A classifier can buy accuracy on the new classes with accuracy on the known
ones (one that favours classes with few examples answers a new class more
often, rightly or not), so `few_shot_trial` also measures, on the same draws,
the known classes' indexed examples classified leave-one-out once the shots
are indexed (``FewShotTrial.known``, beside ``new``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.evaluation.classification import Vote, knn_classify, nearest_class_mean
from model.evaluation.search import DistanceLike
from simstream.errors import ModelError

FewShotClassifier = Literal["nearest", "majority", "class_mean", "centroid"]
CLASSIFIERS: tuple[FewShotClassifier, ...] = ("nearest", "majority", "class_mean", "centroid")


@dataclass(frozen=True)
class FewShotTrial:
    """Mean accuracies per number of shots ``n`` over the draws.

    Attributes:
        new: on the new classes' examples that were not drawn as shots.
        known: on the base index's examples, each classified leave-one-out
            against the rest of the base index and the shots (empty when the
            base index is).
    """

    new: dict[int, float]
    known: dict[int, float]


def few_shot_trial(
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
    known: bool = True,
) -> FewShotTrial:
    """Accuracy on the new classes' remaining examples, and on the known ones, per shot count.

    For each ``n`` in ``shots`` and each of ``draws`` random draws, ``n``
    examples of every new class are added to the base index; the other examples
    of the new classes are the queries. With ``known``, every base example is
    also classified, leave-one-out, against that index. Accuracies are averaged
    over the draws.

    Args:
        base_embeddings: the index before new classes, ``(N, D)`` (may be empty).
        base_labels: its labels, ``(N,)``.
        new_embeddings: every example of the new classes, ``(M, D)``.
        new_labels: their labels, ``(M,)``.
        shots: numbers of examples added per new class.
        distance: anything `model.distances.get` resolves.
        draws: random draws of the shots per ``n``.
        seed: seed of the draws.
        classifier: ``"nearest"`` (1-NN), ``"majority"`` (of ``k`` neighbours),
            ``"class_mean"`` or ``"centroid"`` (among the ``k`` neighbours' classes).
        k: neighbours of the majority and centroid votes.
        known: also measure the base examples (``known``; a search over the
            whole index per base example and draw).

    Returns:
        ``new`` and ``known``: ``n`` → mean accuracy.

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
    measure_known = known and len(base_labels) > 0
    curve: dict[int, float] = {}
    known_curve: dict[int, float] = {}
    for n in shots:
        accuracies, known_accuracies = [], []
        for _ in range(draws):
            chosen = np.concatenate([rng.choice(m, size=n, replace=False) for m in members])
            query = np.setdiff1d(np.arange(len(new_labels)), chosen)
            index = np.concatenate([base_embeddings, new_embeddings[chosen]])
            index_labels = np.concatenate([base_labels, new_labels[chosen]])
            predicted = _classify(
                new_embeddings[query], index, index_labels, classifier, k, distance
            )
            accuracies.append(float(np.mean(predicted == new_labels[query])))
            if measure_known:
                predicted = _classify(
                    base_embeddings, index, index_labels, classifier, k, distance, True
                )
                known_accuracies.append(float(np.mean(predicted == base_labels)))
        curve[int(n)] = float(np.mean(accuracies))
        if measure_known:
            known_curve[int(n)] = float(np.mean(known_accuracies))
    return FewShotTrial(curve, known_curve)


def _classify(
    queries: np.ndarray,
    index: np.ndarray,
    labels: np.ndarray,
    classifier: FewShotClassifier,
    k: int,
    distance: DistanceLike,
    exclude_self: bool = False,
) -> np.ndarray:
    if classifier in ("class_mean", "centroid"):
        candidates = k if classifier == "centroid" else None
        predicted, _ = nearest_class_mean(
            queries, index, labels, distance, exclude_self, candidates
        )
    else:
        vote: Vote = "majority" if classifier == "majority" else "nearest"
        predicted, _ = knn_classify(
            queries, index, labels, k=k, vote=vote, distance=distance, exclude_self=exclude_self
        )
    return predicted
