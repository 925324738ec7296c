from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.few_shot import few_shot_curve
from simstream.errors import ModelError


def _blobs(centres: np.ndarray, per_class: int, spread: float, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(centres)), per_class)
    points = centres[labels] + spread * rng.normal(size=(len(labels), centres.shape[1]))
    return points, labels


def test_more_shots_classify_new_classes_better_on_overlapping_blobs() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(7, 8)) * 1.5
    base, base_labels = _blobs(centres[:3], 40, 1.0, seed=1)
    new, new_labels = _blobs(centres[3:], 80, 1.0, seed=2)
    new_labels = new_labels + 3
    curve = few_shot_curve(
        base, base_labels, new, new_labels, shots=(1, 5, 20, 60), distance="euclidean", draws=5
    )
    accuracies = [curve[n] for n in (1, 5, 20, 60)]
    assert accuracies == sorted(accuracies)
    assert accuracies[-1] - accuracies[0] > 0.1


def test_well_separated_new_classes_are_learnt_from_one_shot() -> None:
    centres = np.eye(6) * 10
    base, base_labels = _blobs(centres[:3], 20, 0.1, seed=1)
    new, new_labels = _blobs(centres[3:], 20, 0.1, seed=2)
    curve = few_shot_curve(base, base_labels, new, new_labels + 3, shots=(1,), distance="euclidean")
    assert curve == {1: 1.0}


def test_asking_for_as_many_shots_as_a_class_has_is_refused() -> None:
    points = np.random.default_rng(0).random((10, 2))
    with pytest.raises(ModelError, match="fewer shots"):
        few_shot_curve(points[:0], np.zeros(0, int), points, np.repeat([0, 1], 5), shots=(5,))
