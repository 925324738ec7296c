from __future__ import annotations

import numpy as np
import pytest

from tests.workers.index.helpers import distances, unit_vectors
from workers.index import search
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.graph import Graph
from workers.index.postings import Postings


def filled(rng: np.random.Generator, n: int, **config: object) -> tuple[Graph, np.ndarray]:
    graph = Graph(IndexConfig(dim=8, **config), capacity=n)  # type: ignore[arg-type]
    vectors = unit_vectors(rng, n, 8)
    graph.add([f"i{j}" for j in range(n)], vectors, 1)
    return graph, vectors


def brute_force(space: str, query: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(distances(space, query, vectors), kind="stable")[:k]


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_distances_are_hnswlibs_for_each_space(space: str, rng: np.random.Generator) -> None:
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    stored = rng.standard_normal((20, 8)).astype(np.float32)
    if space == "cosine":  # the cosine space stores unit vectors
        stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    got = search.distances(space, queries, stored)
    assert got.shape == (3, 20)
    for row, query in enumerate(queries):
        np.testing.assert_allclose(got[row], distances(space, query, stored), atol=1e-9)


def test_exact_search_merges_chunks_into_the_brute_force_top_k(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph, vectors = filled(rng, 50)
    monkeypatch.setattr(search, "_EXACT_CHUNK", 7)
    queries = unit_vectors(rng, 2, 8)
    slots, dists = search.exact(graph, queries, 5, list(graph.slot_of.values()))
    for row, query in enumerate(queries):
        order = brute_force("cosine", query, vectors, 5)
        assert graph.ids[slots[row]].tolist() == [f"i{j}" for j in order]
        np.testing.assert_allclose(
            dists[row], distances("cosine", query, vectors)[order], atol=1e-5
        )


def test_knn_answers_by_brute_force_what_hnswlib_cannot(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph, vectors = filled(rng, 30)

    def short(*args: object, **kwargs: object) -> object:
        """Fault injection: hnswlib's "contiguous 2D array" error on every query."""
        raise RuntimeError("Cannot return the results in a contiguous 2D array.")

    monkeypatch.setattr(graph, "index", _Failing(graph.index, short))
    queries = unit_vectors(rng, 3, 8)
    slots, dists = search.knn(graph, queries, 4, 64, 1)
    for row, query in enumerate(queries):
        order = brute_force("cosine", query, vectors, 4)
        assert graph.ids[slots[row]].tolist() == [f"i{j}" for j in order]
        np.testing.assert_allclose(
            dists[row], distances("cosine", query, vectors)[order], atol=1e-5
        )


class _Failing:
    """An hnswlib index whose ``knn_query`` is replaced (everything else is the real one)."""

    def __init__(self, index: object, knn_query: object) -> None:
        self._index = index
        self.knn_query = knn_query

    def __getattr__(self, name: str) -> object:
        return getattr(self._index, name)


def test_nearest_on_an_empty_graph_returns_empty_rows() -> None:
    ids, dists, _ = search.nearest(Graph(IndexConfig(dim=8), capacity=4), np.ones((2, 8)), 3, 64, 1)
    assert (ids.shape, dists.shape) == ((2, 0), (2, 0))


def test_nearest_asks_for_no_more_than_the_live_items(rng: np.random.Generator) -> None:
    graph, vectors = filled(rng, 6)
    graph.remove("i0")
    ids, _, _ = search.nearest(graph, vectors[:1], 10, 64, 1)
    assert sorted(ids[0].tolist()) == [f"i{j}" for j in range(1, 6)]


@pytest.mark.parametrize("exact_filter_limit", [0, 10_000], ids=["over-fetch", "brute-force"])
def test_a_label_filter_returns_the_nearest_passing_items_padded(
    rng: np.random.Generator, exact_filter_limit: int
) -> None:
    graph, vectors = filled(rng, 200, exact_filter_limit=exact_filter_limit)
    labels = {f"i{j}": j % 10 for j in range(200)}
    postings = Postings()
    for item_id, label in labels.items():
        postings.add(item_id, label, {})
    matching = [j for j in range(200) if j % 10 == 3]
    query = vectors[:1]
    passing, complete = postings.matching(Filter.of(labels=[3]))
    assert complete and passing is not None
    ids, dists, exhaustive = search.filtered(graph, query, 25, 400, passing, 1)
    order = brute_force("cosine", query[0], vectors[matching], 20)
    assert ids[0, :20].tolist() == [f"i{matching[j]}" for j in order]
    assert ids[0, 20:].tolist() == [None] * 5
    assert np.all(np.isinf(dists[0, 20:]))
    assert exhaustive.tolist() == [True]


def test_the_masked_post_filter_equals_a_brute_force_answer_over_a_large_candidate_set(
    rng: np.random.Generator,
) -> None:
    graph, vectors = filled(rng, 4_000, m=16, ef_construction=200, exact_filter_limit=100)
    passing = [j for j in range(4_000) if j % 3 == 0]
    queries = unit_vectors(rng, 32, 8)
    ids, dists, exhaustive = search.filtered(graph, queries, 15, 400, {f"i{j}" for j in passing}, 1)
    for row, query in enumerate(queries):
        d = distances("cosine", query, vectors[passing])
        order = np.argsort(d, kind="stable")[:15]
        assert ids[row].tolist() == [f"i{passing[j]}" for j in order]
        np.testing.assert_allclose(dists[row], d[order], atol=1e-5)
    assert exhaustive.all()
