"""Calibration of a distance threshold: when is a nearest neighbour a match?

A lookup returns the nearest indexed item and its distance ``d``; a threshold
``t`` turns that into a decision: *accept* the neighbour as the same class when
``d ≤ t``, else answer "unknown". Calibration runs over *pairs* (query → its
nearest neighbour), each with its distance and whether the two share a class
(a *match*). At threshold ``t``:

- precision = matches accepted / pairs accepted (1 when none is accepted);
- recall = matches accepted / all matches;
- F1 = 2 · precision · recall / (precision + recall).

Recall here is relative to the pairs that *can* be right (the matches): a
threshold cannot rescue a query whose nearest neighbour has another class; it
can only reject it. `calibrate` picks the threshold of best F1, or the largest
threshold whose precision reaches a target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from simstream.errors import ModelError


@dataclass(frozen=True)
class Calibration:
    """A threshold and how pairs fare under it.

    Attributes:
        threshold: accept a neighbour when its distance is ≤ this.
        precision: share of accepted pairs that match.
        recall: share of matching pairs accepted.
        f1: harmonic mean of precision and recall.
        pairs: number of (query, nearest neighbour) pairs.
        matches: number of matching pairs.
        target_precision: the target asked for, if any.
    """

    threshold: float
    precision: float
    recall: float
    f1: float
    pairs: int
    matches: int
    target_precision: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def threshold_metrics(distances: np.ndarray, matches: np.ndarray, threshold: float) -> Calibration:
    """Precision, recall and F1 of the pairs at a given threshold.

    Args:
        distances: distance of each pair, ``(P,)``.
        matches: whether each pair shares a class, ``(P,)`` booleans.
        threshold: accept pairs with distance ≤ threshold.
    """
    distances, matches = _check(distances, matches)
    accepted = distances <= threshold
    true_positives = int((accepted & matches).sum())
    precision = true_positives / int(accepted.sum()) if accepted.any() else 1.0
    recall = true_positives / int(matches.sum()) if matches.any() else 0.0
    return Calibration(
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        pairs=len(distances),
        matches=int(matches.sum()),
    )


def calibrate(
    distances: np.ndarray, matches: np.ndarray, target_precision: float | None = None
) -> Calibration:
    """Choose a distance threshold.

    Args:
        distances: distance of each (query, nearest neighbour) pair, ``(P,)``.
        matches: whether each pair shares a class, ``(P,)`` booleans.
        target_precision: ``None`` to maximise F1 (ties: the smallest such
            threshold); otherwise the largest threshold (most recall) whose
            precision is at least this value.

    Returns:
        The chosen threshold, with its precision, recall and F1. Thresholds are
        observed distances, so at least one pair is accepted.

    Raises:
        ModelError: on empty or mismatched inputs, a target outside (0, 1], or a
            target no threshold reaches.
    """
    distances, matches = _check(distances, matches)
    if not len(distances):
        raise ModelError("Cannot calibrate on zero pairs. Expected at least one query.")
    order = np.argsort(distances, kind="stable")
    sorted_d, sorted_m = distances[order], matches[order]
    # A threshold accepts every pair up to the last one at that distance.
    last_of_value = np.append(sorted_d[1:] != sorted_d[:-1], True)
    true_positives = np.cumsum(sorted_m)[last_of_value]
    accepted = np.arange(1, len(sorted_d) + 1)[last_of_value]
    thresholds = sorted_d[last_of_value]
    total = max(int(matches.sum()), 1)
    precision = true_positives / accepted
    recall = true_positives / total
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if target_precision is None:
        best = int(np.argmax(f1))
    else:
        if not 0 < target_precision <= 1:
            raise ModelError(
                "Invalid value for argument `target_precision`. Expected 0 < target ≤ 1. "
                f"Received: target_precision={target_precision}"
            )
        reaching = np.flatnonzero(precision >= target_precision)
        if not len(reaching):
            raise ModelError(
                f"No threshold reaches precision {target_precision}. "
                f"Received: the best precision is {float(precision.max()):.4f}"
            )
        best = int(reaching[-1])
    return Calibration(
        threshold=float(thresholds[best]),
        precision=float(precision[best]),
        recall=float(recall[best]),
        f1=float(f1[best]),
        pairs=len(distances),
        matches=int(matches.sum()),
        target_precision=target_precision,
    )


def _check(distances: np.ndarray, matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).ravel()
    m = np.asarray(matches, dtype=bool).ravel()
    if len(d) != len(m):
        raise ModelError(
            f"Expected one match flag per distance. Received: {len(d)} distances, {len(m)} flags"
        )
    if np.isnan(d).any():
        raise ModelError("Expected distances without NaN. Received: NaN")
    return d, m


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
