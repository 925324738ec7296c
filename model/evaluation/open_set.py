"""Open-set evaluation: can the nearest-neighbour distance tell a known class from an unknown one?

The index holds only *known* classes. A query of a known class should find a
close neighbour; a query of an *unknown* class has no correct match and should
be answered "unknown". Both are scored by their distance to the nearest indexed
item, "unknown" being the positive class:

- **AUROC**: the probability that a random unknown query lies farther from the
  index than a random known one (ties count one half): 1 for a perfect
  separator, 0.5 for chance, independent of any threshold;
- **precision / recall / F1 of "unknown"** at a threshold: a query is declared
  unknown when its nearest distance exceeds the threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from simstream.errors import ModelError


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher: more likely positive).

    Computed exactly as the Mann–Whitney U statistic over average ranks, so tied
    scores count one half.

    Args:
        scores: one score per example, ``(N,)``.
        positives: whether each example is a positive, ``(N,)`` booleans.

    Raises:
        ModelError: on mismatched lengths, or when either class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if len(scores) != len(positives):
        raise ModelError(
            f"Expected one label per score. Received: {len(scores)} scores, {len(positives)} labels"
        )
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if not n_pos or not n_neg:
        raise ModelError(
            "Expected both positives and negatives to compute an AUROC. "
            f"Received: {n_pos} positives, {n_neg} negatives"
        )
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class OpenSetReport:
    """How well distances separate unknown from known queries.

    Attributes:
        auroc: AUROC of the nearest distance, "unknown" positive.
        threshold: a query is declared unknown when its distance exceeds this.
        precision: share of queries declared unknown that are unknown.
        recall: share of unknown queries declared unknown.
        f1: harmonic mean of precision and recall.
        known_accepted: share of known queries kept (not declared unknown).
        known: number of known queries.
        unknown: number of unknown queries.
    """

    auroc: float
    threshold: float
    precision: float
    recall: float
    f1: float
    known_accepted: float
    known: int
    unknown: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, rounded to 4 decimals."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def open_set_report(
    known_distances: np.ndarray, unknown_distances: np.ndarray, threshold: float
) -> OpenSetReport:
    """Score the "unknown" decision ``distance > threshold`` over known and unknown queries.

    Args:
        known_distances: nearest-neighbour distance of each known-class query.
        unknown_distances: nearest-neighbour distance of each unknown-class query.
        threshold: the decision threshold (calibrated without unknown classes).
    """
    known = np.asarray(known_distances, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_distances, dtype=np.float64).ravel()
    flagged_unknown = int((unknown > threshold).sum())
    flagged_known = int((known > threshold).sum())
    flagged = flagged_unknown + flagged_known
    precision = flagged_unknown / flagged if flagged else 1.0
    recall = flagged_unknown / len(unknown) if len(unknown) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return OpenSetReport(
        auroc=auroc(
            np.concatenate([known, unknown]), np.r_[np.zeros(len(known)), np.ones(len(unknown))]
        ),
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        f1=f1,
        known_accepted=1 - flagged_known / len(known) if len(known) else 0.0,
        known=len(known),
        unknown=len(unknown),
    )
