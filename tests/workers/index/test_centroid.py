from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.search import pairwise_distances
from workers.index.centroid import LabelSum, centroid_distance, merge_sums


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_the_centroid_distance_is_the_model_distance_to_the_mean(space: str) -> None:
    # The units of the benchmark's nearest class mean (`model.evaluation`), which
    # `/v1/classify`'s centroid vote must reproduce.
    rng = np.random.default_rng(3)
    members = rng.standard_normal((7, 5))
    if space != "l2":
        members /= np.linalg.norm(members, axis=1, keepdims=True)
    query = rng.standard_normal(5).astype(np.float32)
    query /= np.linalg.norm(query)

    found = centroid_distance(query, LabelSum(members.sum(axis=0), 7), space)

    expected = pairwise_distances(query[None], members.mean(axis=0)[None], space)[0, 0]
    assert found == pytest.approx(float(expected), abs=1e-5)


def test_a_cosine_centroid_of_opposite_members_is_at_distance_one() -> None:
    total = np.zeros(3)  # two opposite unit vectors: no direction

    assert centroid_distance(np.ones(3, np.float32), LabelSum(total, 2), "cosine") == 1.0


def test_merged_sums_add_totals_and_sizes_per_label() -> None:
    a = {"x": LabelSum(np.array([1.0, 2.0]), 1), "y": LabelSum(np.array([0.5, 0.5]), 2)}
    b = {"x": LabelSum(np.array([3.0, -1.0]), 4)}

    merged = merge_sums([a, b, {}])

    assert merged["x"].total.tolist() == [4.0, 1.0] and merged["x"].size == 5
    assert merged["y"].size == 2
