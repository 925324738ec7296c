"""Exact evaluation of embeddings: retrieval metrics, threshold calibration, k-NN classification.

Everything here is brute-force NumPy, batched to bound memory: it is the
ground truth approximate indexes are compared with.

- `search`: `ExactIndex`, `nearest_neighbours`, `pairwise_distances`;
- `retrieval`: recall@k, precision@k, R-precision, MAP@R (micro and macro),
  leave-one-out, seen / unseen splits;
- `calibration`: a distance threshold for best F1 or a target precision;
- `classification`: nearest / majority-vote k-NN with "unknown" beyond a threshold,
  and the nearest class mean;
- `few_shot`, `open_set`: new classes from a few examples, and known-vs-unknown.
"""

from __future__ import annotations

from model.evaluation.calibration import Calibration, calibrate, threshold_metrics
from model.evaluation.classification import (
    UNKNOWN,
    ClassificationReport,
    classification_report,
    knn_classify,
    nearest_class_mean,
)
from model.evaluation.retrieval import (
    QueryResults,
    RetrievalReport,
    evaluate_retrieval,
    retrieve,
    split_by_class,
)
from model.evaluation.search import ExactIndex, nearest_neighbours, pairwise_distances

__all__ = [
    "UNKNOWN",
    "Calibration",
    "ClassificationReport",
    "ExactIndex",
    "QueryResults",
    "RetrievalReport",
    "calibrate",
    "classification_report",
    "evaluate_retrieval",
    "knn_classify",
    "nearest_class_mean",
    "nearest_neighbours",
    "pairwise_distances",
    "retrieve",
    "split_by_class",
    "threshold_metrics",
]
