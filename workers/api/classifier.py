"""`Classifier`: the k-NN label of a query, or ``unknown``, above the `Searcher`.

The query's neighbours come from one search (with its cache entry, shared with
lookups); the labelled ones within a distance threshold vote. By default the
nearest of them decides (``vote="nearest"``); ``vote="majority"`` answers the
label with the most of them, which favours labels with many indexed items: a
label added with five examples loses to a crowd of farther neighbours of a
large label whenever ``k`` exceeds five (`model.evaluation.classification`).
``vote="centroid"`` answers, among the labels of the voters, the one whose mean
stored embedding over the whole index (its items that pass the request's
filter, if any) is nearest to the query (`workers.index.centroid`): every
label counts once, so a label of five
examples competes fairly with one of thousands, where the nearest neighbour
still favours the crowd (more items, more chances to be nearest). The
threshold decides ``unknown`` alike for every rule: on the neighbours.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from model.registry import Registry
from simstream.errors import RegistryError
from workers.api.config import ClassifierConfig
from workers.api.filters import to_filter
from workers.api.schemas import ClassifyRequest, ClassifyVote
from workers.api.searcher import Searcher
from workers.index.centroid import LabelSum, centroid_distance
from workers.node.generation import IndexGeneration

UNKNOWN_LABEL = "unknown"
_THRESHOLD_KEYS = ("threshold", "calibration_threshold", "distance_threshold")

ThresholdSource = Literal["request", "model", "settings"]


class Classifier:
    """Labelled neighbours within a calibrated distance threshold vote (nearest or majority).

    Args:
        config: the default threshold.
        searcher: finds the neighbours.
        registry: where the serving model's metrics (its calibrated threshold) are read.
    """

    def __init__(self, config: ClassifierConfig, searcher: Searcher, registry: Registry) -> None:
        self.searcher = searcher
        self.thresholds = Thresholds(config, registry)

    def classify(self, request: ClassifyRequest, generation: IndexGeneration) -> dict[str, Any]:
        """Classify one query in ``generation`` (the request's, pinned by `WriteWaiter`).

        Raises:
            RequestError: invalid options or query (400/422).
            NotFoundError: a query by an unknown id (404).
        """
        by_centroid = request.vote == "centroid"
        answer = self.searcher.search(request, [request], generation, embed=by_centroid)
        [raw] = answer.neighbours
        threshold, source = self.threshold(answer.version, request.threshold)
        rows = json.loads(raw)
        centroids = None
        if by_centroid:
            [vector] = answer.vectors
            sums = generation.index.label_sums(
                candidates(rows, threshold), to_filter(request.filter)
            )
            centroids = centroid_distances(vector, sums, generation.index.space)
        body = verdict(
            rows, threshold, source, answer.version, answer.epoch, request.vote, centroids
        )
        return body | {"degraded": answer.degraded}

    def threshold(self, version: str, requested: float | None) -> tuple[float, ThresholdSource]:
        """The distance threshold of classification and where it came from (`Thresholds`)."""
        return self.thresholds.threshold(version, requested)

    @staticmethod
    def vote(
        rows: Sequence[dict[str, Any]],
        threshold: float,
        rule: ClassifyVote = "nearest",
        centroids: Mapping[str, float] | None = None,
    ) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        """The label of the labelled neighbours within ``threshold``.

        ``rule="nearest"``: labels ranked by their nearest voter (1-NN).
        ``rule="majority"``: by number of voters, ties to the nearer nearest
        voter. ``rule="centroid"``: by ``centroids`` (the query's distance to each
        label's mean embedding; a label without one ranks last), ties to the
        nearer nearest voter. No voter: ``unknown``.

        Returns:
            ``(label, votes, evidence)``: votes sorted best first; every neighbour
            with a ``within_threshold`` flag.
        """
        evidence = [{**row, "within_threshold": row["distance"] <= threshold} for row in rows]
        voters = [e for e in evidence if e["within_threshold"] and e["label"] is not None]
        counts = Counter(str(e["label"]) for e in voters)
        nearest: dict[str, float] = {}
        for e in voters:
            nearest[str(e["label"])] = min(
                float(e["distance"]), nearest.get(str(e["label"]), math.inf)
            )
        away = {} if centroids is None else centroids
        if rule == "majority":
            ranked = sorted(counts, key=lambda label: (-counts[label], nearest[label]))
        elif rule == "centroid":
            ranked = sorted(counts, key=lambda label: (away.get(label, math.inf), nearest[label]))
        else:
            ranked = sorted(counts, key=lambda label: (nearest[label], -counts[label]))
        votes = [
            {
                "label": label,
                "votes": counts[label],
                "nearest_distance": nearest[label],
                "centroid_distance": away.get(label) if rule == "centroid" else None,
            }
            for label in ranked
        ]
        label = ranked[0] if ranked else UNKNOWN_LABEL
        return label, votes, evidence


class Thresholds:
    """The classification threshold of each model version, read once from the registry.

    Args:
        config: the default threshold.
        registry: where a model's metrics (its calibrated threshold) are read.
    """

    def __init__(self, config: ClassifierConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self._thresholds: dict[str, tuple[float, Literal["model", "settings"]]] = {}

    def threshold(self, version: str, requested: float | None) -> tuple[float, ThresholdSource]:
        """The distance threshold of classification and where it came from.

        The serving model's ``metrics.json`` is read once per version: its
        ``calibration.threshold`` (what the benchmark and retraining record), else a
        top-level ``threshold``/``calibration_threshold``/``distance_threshold``;
        failing those, the configured default (``SIMSTREAM_CLASSIFY_THRESHOLD``).
        """
        if requested is not None:
            return requested, "request"
        if version not in self._thresholds:
            try:
                metrics = self.registry.get(version).metrics
            except RegistryError:
                metrics = {}
            found = _calibrated(metrics)
            self._thresholds[version] = (
                (found, "model")
                if found is not None
                else (self.config.default_threshold, "settings")
            )
        return self._thresholds[version]


def candidates(rows: Sequence[dict[str, Any]], threshold: float) -> list[str]:
    """The labels of the labelled neighbours within ``threshold`` (the voters), once each."""
    return list(
        dict.fromkeys(
            str(row["label"])
            for row in rows
            if row["label"] is not None and row["distance"] <= threshold
        )
    )


def centroid_distances(
    vector: np.ndarray, sums: Mapping[str, LabelSum], space: str
) -> dict[str, float]:
    """The query's distance to each label's mean embedding (`centroid_distance`)."""
    return {label: centroid_distance(vector, found, space) for label, found in sums.items()}


def verdict(
    rows: Sequence[dict[str, Any]],
    threshold: float,
    source: ThresholdSource,
    version: str,
    epoch: int,
    rule: ClassifyVote = "nearest",
    centroids: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The body of a `ClassifyResponse` (without ``degraded``) from a query's neighbours,
    voted by ``rule`` (see `Classifier.vote`; ``centroids`` for ``rule="centroid"``)."""
    label, votes, evidence = Classifier.vote(rows, threshold, rule, centroids)
    return {
        "label": label,
        "known": bool(votes),
        "threshold": threshold,
        "threshold_source": source,
        "vote": rule,
        "votes": votes,
        "neighbors": evidence,
        "model_version": version,
        "index_epoch": epoch,
    }


def _calibrated(metrics: dict[str, Any]) -> float | None:
    candidates: list[Any] = []
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict):
        candidates.append(calibration.get("threshold"))
    candidates += [metrics.get(key) for key in _THRESHOLD_KEYS]
    for value in candidates:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and math.isfinite(value) and value > 0:
            return float(value)
    return None
