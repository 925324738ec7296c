from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.open_set import auroc, open_set_report
from simstream.errors import ModelError


def test_a_perfect_separator_has_an_auroc_of_one_and_a_reversed_one_of_zero() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    positives = np.array([False, False, False, True, True, True])
    assert auroc(scores, positives) == 1.0
    assert auroc(-scores, positives) == 0.0


def test_random_scores_have_an_auroc_near_one_half() -> None:
    rng = np.random.default_rng(0)
    value = auroc(rng.random(20_000), rng.random(20_000) < 0.3)
    assert abs(value - 0.5) < 0.02


def test_tied_scores_count_one_half() -> None:
    assert auroc(np.ones(6), np.array([True, False] * 3)) == 0.5
    # One positive above one negative, one tie: (1 + 0.5) / 2.
    assert auroc(np.array([2.0, 1.0, 1.0]), np.array([True, True, False])) == 0.75


def test_an_auroc_needs_both_classes() -> None:
    with pytest.raises(ModelError, match="both positives and negatives"):
        auroc(np.ones(3), np.ones(3, bool))


def test_the_unknown_decision_counts_queries_beyond_the_threshold() -> None:
    known = np.array([0.1, 0.2, 0.3, 0.6])
    unknown = np.array([0.5, 0.7, 0.8, 0.25])
    report = open_set_report(known, unknown, threshold=0.4)
    assert report.recall == 0.75  # 3 of 4 unknown queries lie beyond 0.4
    assert report.precision == 0.75  # one known query (0.6) is flagged too
    assert report.f1 == pytest.approx(0.75)
    assert report.known_accepted == 0.75
    assert report.auroc == pytest.approx(auroc(np.r_[known, unknown], np.r_[[0] * 4, [1] * 4]))
