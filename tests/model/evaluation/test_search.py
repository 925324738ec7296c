from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from model import distances
from model.evaluation import ExactIndex, nearest_neighbours, pairwise_distances
from simstream.errors import ModelError


@pytest.mark.parametrize("name", distances.names())
def test_numpy_distances_agree_with_the_keras_distances(name: str) -> None:
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(7, 6)).astype(np.float32)
    expected = ops.convert_to_numpy(distances.get(name)(q, k))
    np.testing.assert_allclose(pairwise_distances(q, k, name), expected, rtol=1e-4, atol=1e-5)


def test_neighbours_come_closest_first_with_ties_broken_by_position() -> None:
    key = np.array([[2.0], [1.0], [1.0], [0.0]])
    idx, dist = nearest_neighbours(np.array([[0.0]]), key, k=3, distance="euclidean")
    assert idx.tolist() == [[3, 1, 2]] and dist.tolist() == [[0.0, 1.0, 1.0]]


def test_leave_one_out_never_returns_the_query_itself() -> None:
    x = np.random.default_rng(0).normal(size=(30, 4))
    idx, _ = nearest_neighbours(x, x, k=29, exclude_self=True, batch_size=4)
    assert idx.shape == (30, 29)
    assert all(i not in row for i, row in enumerate(idx.tolist()))
    assert nearest_neighbours(x, x, k=100, exclude_self=True)[0].shape == (30, 29)


def test_the_exact_index_finds_what_brute_force_numpy_finds() -> None:
    rng = np.random.default_rng(1)
    data, queries = rng.normal(size=(200, 16)), rng.normal(size=(10, 16))
    index = ExactIndex("cosine")
    index.add(data[:120], np.arange(120))
    index.add(data[120:], np.arange(120, 200))
    ids, dist = index.search(queries, k=5)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    expected = np.argsort(-(queries @ unit.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    assert (np.diff(dist, axis=1) >= 0).all() and len(index) == 200
    np.testing.assert_array_equal(index.labels[ids], expected)


def test_the_exact_index_refuses_empty_searches_and_other_dimensions() -> None:
    index = ExactIndex()
    with pytest.raises(ModelError, match="empty index"):
        index.search(np.zeros((1, 3)))
    index.add(np.ones((2, 3)))
    with pytest.raises(ModelError, match="dimension 3"):
        index.add(np.ones((2, 4)))
    with pytest.raises(ModelError, match="one label per embedding"):
        index.add(np.ones((2, 3)), np.zeros(3))
    with pytest.raises(ModelError, match="k ≥ 1"):
        index.search(np.ones(3), k=0)
