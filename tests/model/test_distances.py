"""Pairwise distances: hand-computed values, a NumPy reference, resolution and gradients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from model import distances
from simstream.errors import ModelError

QUERY = np.array([[1.0, 0.0], [0.0, 1.0]], dtype="float32")
KEY = np.array([[1.0, 0.0], [1.0, 1.0]], dtype="float32")


def _numpy(x: object) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _reference(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """One pair at a time, in float64, straight from each definition."""

    def cosine(q: np.ndarray, k: np.ndarray) -> float:
        return 1.0 - float(q @ k) / float(np.linalg.norm(q) * np.linalg.norm(k))

    references: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "cosine": cosine,
        "euclidean": lambda q, k: float(np.sqrt(np.sum((q - k) ** 2))),
        "squared_euclidean": lambda q, k: float(np.sum((q - k) ** 2)),
        "manhattan": lambda q, k: float(np.sum(np.abs(q - k))),
        "inner_product": lambda q, k: 1.0 - float(q @ k),
    }
    return references[name]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cosine", [[0.0, 1.0 - 1.0 / np.sqrt(2.0)], [1.0, 1.0 - 1.0 / np.sqrt(2.0)]]),
        ("euclidean", [[0.0, 1.0], [np.sqrt(2.0), 1.0]]),
        ("squared_euclidean", [[0.0, 1.0], [2.0, 1.0]]),
        ("manhattan", [[0.0, 1.0], [2.0, 1.0]]),
        ("inner_product", [[0.0, 0.0], [1.0, 0.0]]),
    ],
)
def test_distance_matches_hand_computed_matrix(name: str, expected: list[list[float]]) -> None:
    """Queries (1,0), (0,1) against keys (1,0), (1,1).

    cosine: cos = 1, 1/√2, 0, 1/√2 → 1 - cos = 0, 0.2929, 1, 0.2929.
    differences: (0,0), (0,-1), (-1,1), (-1,0) → L2 0, 1, √2, 1; squared 0, 1, 2, 1;
    L1 0, 1, 2, 1. inner products 1, 1, 0, 1 → 1 - <q,k> = 0, 0, 1, 0.
    """
    result = _numpy(distances.get(name)(QUERY, KEY))
    np.testing.assert_allclose(result, np.array(expected), atol=1e-6)


@pytest.mark.parametrize("name", distances.names())
@pytest.mark.parametrize("seed", range(3))
def test_distance_agrees_with_numpy_loops_on_random_batches(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(5, 3)).astype("float32")
    key = rng.normal(size=(7, 3)).astype("float32")
    reference = _reference(name)
    expected = np.array([[reference(q, k) for k in key.astype("float64")] for q in query])
    result = _numpy(distances.get(name)(query, key))
    assert result.shape == (5, 7)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


def test_cosine_distance_ignores_vector_length() -> None:
    """(3,4) and (6,8) point the same way: distance 0; (3,4) vs (-4,3) are orthogonal: 1."""
    result = _numpy(
        distances.get("cosine")(np.array([[3.0, 4.0]]), np.array([[6.0, 8.0], [-4.0, 3.0]]))
    )
    np.testing.assert_allclose(result, [[0.0, 1.0]], atol=1e-6)


def test_euclidean_distance_of_a_point_to_itself_is_zero_with_zero_gradient() -> None:
    points = tf.Variable([[0.6, 0.8], [0.0, 1.0]])
    with tf.GradientTape() as tape:
        matrix = distances.get("euclidean")(points, points)
        total = tf.reduce_sum(matrix)
    gradient = tape.gradient(total, points)
    np.testing.assert_allclose(np.diag(_numpy(matrix)), [0.0, 0.0], atol=1e-6)
    assert np.all(np.isfinite(gradient.numpy()))


@pytest.mark.parametrize("name", distances.names())
def test_distance_gradients_are_finite_even_for_zero_and_duplicate_vectors(name: str) -> None:
    points = tf.Variable([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(distances.get(name)(points, points))
    assert np.all(np.isfinite(tape.gradient(total, points).numpy()))


@pytest.mark.parametrize(
    ("alias", "cls"),
    [
        ("cosine", distances.CosineDistance),
        ("COSINE", distances.CosineDistance),
        ("l2", distances.EuclideanDistance),
        ("euclidean", distances.EuclideanDistance),
        ("sql2", distances.SquaredEuclideanDistance),
        ("squared-euclidean", distances.SquaredEuclideanDistance),
        ("l1", distances.ManhattanDistance),
        ("manhattan", distances.ManhattanDistance),
        ("ip", distances.InnerProductDistance),
        ("dot", distances.InnerProductDistance),
        ("inner_product", distances.InnerProductDistance),
    ],
)
def test_get_resolves_names_and_aliases(alias: str, cls: type[distances.Distance]) -> None:
    assert type(distances.get(alias)) is cls


def test_get_returns_a_distance_instance_unchanged() -> None:
    distance = distances.ManhattanDistance()
    assert distances.get(distance) is distance


@pytest.mark.parametrize("identifier", ["hamming", {"kind": "cosine"}, 3])
def test_get_rejects_unknown_identifiers_saying_what_it_expected(identifier: object) -> None:
    with pytest.raises(ModelError, match=r"Expected .* Received"):
        distances.get(identifier)  # type: ignore[arg-type]
