from __future__ import annotations

import numpy as np
import pytest

from model.evaluation import calibrate, threshold_metrics
from simstream.errors import ModelError

# Pairs by distance 0.1..0.5 with matches T T F T F (3 matches). Accepting up to:
#   0.1: P 1/1  R 1/3  F1 .5      0.2: P 2/2 R 2/3 F1 .8     0.3: P 2/3 R 2/3 F1 2/3
#   0.4: P 3/4  R 3/3  F1 6/7     0.5: P 3/5 R 1   F1 .75
DISTANCES = np.array([0.3, 0.1, 0.5, 0.2, 0.4])
MATCHES = np.array([False, True, False, True, True])


def test_the_best_f1_threshold_is_the_hand_computed_one() -> None:
    best = calibrate(DISTANCES, MATCHES)
    assert best.threshold == pytest.approx(0.4)
    assert (best.precision, best.recall, best.f1) == pytest.approx((0.75, 1.0, 6 / 7))
    assert best.pairs == 5 and best.matches == 3


@pytest.mark.parametrize(
    ("target", "threshold", "precision", "recall"),
    [(1.0, 0.2, 1.0, 2 / 3), (0.9, 0.2, 1.0, 2 / 3), (0.7, 0.4, 0.75, 1.0), (0.5, 0.5, 0.6, 1.0)],
)
def test_a_target_precision_picks_the_largest_threshold_that_reaches_it(
    target: float, threshold: float, precision: float, recall: float
) -> None:
    chosen = calibrate(DISTANCES, MATCHES, target_precision=target)
    assert chosen.threshold == pytest.approx(threshold)
    assert (chosen.precision, chosen.recall) == pytest.approx((precision, recall))
    assert chosen.target_precision == target


def test_pairs_at_the_same_distance_are_accepted_together() -> None:
    chosen = calibrate(np.array([0.1, 0.1, 0.2]), np.array([True, False, True]))
    # 0.1 accepts two pairs (P 1/2, R 1/2, F1 1/2); 0.2 accepts all (P 2/3, R 1, F1 .8).
    assert chosen.threshold == pytest.approx(0.2) and chosen.f1 == pytest.approx(0.8)
    assert threshold_metrics(
        np.array([0.1, 0.1, 0.2]), np.array([True, False, True]), 0.1
    ).precision == pytest.approx(0.5)


def test_metrics_at_a_fixed_threshold() -> None:
    at = threshold_metrics(DISTANCES, MATCHES, 0.25)
    assert (at.precision, at.recall, at.f1) == pytest.approx((1.0, 2 / 3, 0.8))
    nothing = threshold_metrics(DISTANCES, MATCHES, 0.0)
    assert (nothing.precision, nothing.recall, nothing.f1) == (1.0, 0.0, 0.0)


def test_an_unreachable_target_names_the_best_precision() -> None:
    with pytest.raises(ModelError, match=r"best precision is 0\.0000"):
        calibrate(np.array([0.1, 0.2]), np.array([False, False]), target_precision=0.5)


@pytest.mark.parametrize(
    ("distances", "matches", "kwargs", "message"),
    [
        ([], [], {}, "zero pairs"),
        ([0.1], [True, False], {}, "one match flag per distance"),
        ([np.nan], [True], {}, "NaN"),
        ([0.1], [True], {"target_precision": 1.5}, "target_precision"),
    ],
)
def test_invalid_inputs_are_refused(
    distances: list[float], matches: list[bool], kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        calibrate(np.array(distances), np.array(matches), **kwargs)
