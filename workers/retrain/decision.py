"""The promotion rule: a candidate replaces the active model only if it is clearly better.

The metric is recall@1 on the run's hold-out (see `workers.retrain.evaluation`),
computed for both models on the same queries and the same index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METRIC = "recall@1"


@dataclass(frozen=True)
class Decision:
    """Whether a candidate replaces the active model, and why.

    Attributes:
        promote: the verdict.
        reason: one sentence for humans.
        gain: candidate minus active ``recall@1`` (None without an active model).
    """

    promote: bool
    reason: str
    gain: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"promote": self.promote, "reason": self.reason, "gain": self.gain}


def decide(
    candidate: Mapping[str, Any], active: Mapping[str, Any] | None, margin: float
) -> Decision:
    """Promote when the candidate's recall@1 beats the active model's by more than ``margin``.

    Without an active model any candidate with a finite recall@1 is promoted. A
    tie is not a win: a re-index costs a full replay, so it must buy something.
    """
    score = _float(candidate.get(METRIC))
    if not math.isfinite(score):
        return Decision(False, f"the candidate has no {METRIC} on the hold-out", None)
    if active is None:
        return Decision(True, "no active model to compare with", None)
    baseline = _float(active.get(METRIC))
    if not math.isfinite(baseline):
        return Decision(False, f"the active model has no {METRIC} on the hold-out", None)
    gain = score - baseline
    if gain > margin:
        return Decision(
            True, f"{METRIC} {score:.4f} beats {baseline:.4f} by more than {margin:g}", gain
        )
    return Decision(
        False, f"{METRIC} {score:.4f} does not beat {baseline:.4f} by more than {margin:g}", gain
    )


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
