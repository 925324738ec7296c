from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.few_shot import few_shot_trial
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
    curve = few_shot_trial(
        base, base_labels, new, new_labels, shots=(1, 5, 20, 60), distance="euclidean", draws=5
    ).new
    accuracies = [curve[n] for n in (1, 5, 20, 60)]
    assert accuracies == sorted(accuracies)
    assert accuracies[-1] - accuracies[0] > 0.1


def test_well_separated_new_classes_are_learnt_from_one_shot() -> None:
    centres = np.eye(6) * 10
    base, base_labels = _blobs(centres[:3], 20, 0.1, seed=1)
    new, new_labels = _blobs(centres[3:], 20, 0.1, seed=2)
    trial = few_shot_trial(base, base_labels, new, new_labels + 3, shots=(1,), distance="euclidean")
    assert trial.new == {1: 1.0} and trial.known == {1: 1.0}


def test_asking_for_as_many_shots_as_a_class_has_is_refused() -> None:
    points = np.random.default_rng(0).random((10, 2))
    with pytest.raises(ModelError, match="fewer shots"):
        few_shot_trial(points[:0], np.zeros(0, int), points, np.repeat([0, 1], 5), shots=(5,))


def _crowd_and_two_new_classes(
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """300 known examples around the origin; two new classes of 60, four units away."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(300, 2))
    new = rng.normal(size=(120, 2)) + np.repeat([[4.0, 0.0], [0.0, 4.0]], 60, axis=0)
    return base, np.zeros(300, int), new, np.repeat([1, 2], 60)


def test_five_shots_lose_to_a_crowd_under_a_majority_of_ten_and_win_by_their_mean() -> None:
    base, base_labels, new, new_labels = _crowd_and_two_new_classes(seed=0)
    accuracy = {
        classifier: few_shot_trial(
            base, base_labels, new, new_labels, (5,), "euclidean", 5, 0, classifier, k=10
        ).new[5]
        for classifier in ("nearest", "majority", "class_mean")
    }
    assert accuracy["majority"] < accuracy["nearest"] - 0.2
    assert accuracy["class_mean"] > accuracy["nearest"] + 0.1


def test_an_unknown_few_shot_classifier_is_refused() -> None:
    points, labels = np.random.default_rng(0).random((4, 2)), np.repeat([0, 1], 2)
    with pytest.raises(ModelError, match="classifier"):
        few_shot_trial(points, labels, points, labels + 1, shots=(1,), classifier="vote")  # type: ignore[arg-type]


def test_the_class_mean_pays_for_its_new_class_accuracy_with_known_class_accuracy() -> None:
    base, base_labels, new, new_labels = _crowd_and_two_new_classes(seed=0)
    trials = {
        classifier: few_shot_trial(
            base, base_labels, new, new_labels, (5,), "euclidean", 5, 0, classifier
        )
        for classifier in ("nearest", "class_mean")
    }
    nearest, mean = trials["nearest"], trials["class_mean"]
    assert mean.new[5] > nearest.new[5]
    assert mean.known[5] < nearest.known[5]
    # The known queries are leave-one-out: with themselves indexed, 1-NN would be perfect.
    assert nearest.known[5] < 1.0


def test_an_empty_base_index_measures_no_known_accuracy() -> None:
    points, labels = np.random.default_rng(0).random((10, 2)), np.repeat([0, 1], 5)
    trial = few_shot_trial(points[:0], np.zeros(0, int), points, labels, shots=(2,))
    assert trial.known == {} and set(trial.new) == {2}
