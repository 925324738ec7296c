from __future__ import annotations

import numpy as np

from tests.workers.index.helpers import unit_vectors
from workers.index.config import IndexConfig
from workers.index.graph import Graph


def test_capacity_doubles_when_an_allocation_would_overflow_it(rng: np.random.Generator) -> None:
    graph = Graph(IndexConfig(dim=8), capacity=4)
    graph.add([f"i{j}" for j in range(4)], unit_vectors(rng, 4, 8), 1)
    assert graph.capacity == 4
    graph.add(["i4"], unit_vectors(rng, 1, 8), 1)
    assert graph.capacity == 8
    assert len(graph.ids) >= 8


def test_an_allocation_larger_than_double_grows_to_what_is_needed(
    rng: np.random.Generator,
) -> None:
    graph = Graph(IndexConfig(dim=8), capacity=4)
    ids = [f"i{j}" for j in range(50)]
    graph.add(ids, unit_vectors(rng, 50, 8), 1)
    assert graph.capacity == 50
    assert graph.live == 50
    assert [graph.ids[graph.slot_of[i]] for i in ids] == ids


def test_slots_are_never_reused_and_a_replaced_slot_becomes_a_tombstone(
    rng: np.random.Generator,
) -> None:
    graph = Graph(IndexConfig(dim=8), capacity=4)
    old, new = unit_vectors(rng, 2, 8)
    graph.add(["a"], old[None, :], 1)
    first = graph.slot_of["a"]
    graph.add(["a"], new[None, :], 1)
    assert graph.slot_of["a"] == first + 1
    assert graph.ids[first] is None
    assert (graph.live, graph.tombstones, graph.next_slot) == (1, 1, 2)
    np.testing.assert_allclose(graph.vectors(["a"])[0], new, atol=1e-6)


def test_unbind_restores_the_previous_slots(rng: np.random.Generator) -> None:
    graph = Graph(IndexConfig(dim=8), capacity=4)
    graph.add(["a"], unit_vectors(rng, 1, 8), 1)
    before = dict(graph.slot_of)
    previous = graph.bind(["a", "b"], graph.allocate(2))
    graph.unbind(previous)
    assert graph.slot_of == before
    assert graph.ids[before["a"]] == "a"
    assert graph.tombstones == 0


def test_remove_marks_the_slot_deleted_and_ignores_absent_ids(rng: np.random.Generator) -> None:
    graph = Graph(IndexConfig(dim=8), capacity=4)
    graph.add(["a", "b"], unit_vectors(rng, 2, 8), 1)
    graph.remove("a")
    graph.remove("ghost")
    assert (graph.live, graph.tombstones) == (1, 1)
    assert graph.vectors([]).shape == (0, 8)


def test_a_wrapped_index_counts_its_tombstones(rng: np.random.Generator) -> None:
    graph = Graph(IndexConfig(dim=8), capacity=8)
    graph.add(["a", "b", "c"], unit_vectors(rng, 3, 8), 1)
    graph.remove("b")
    wrapped = Graph(IndexConfig(dim=8), 0, graph.index, dict(graph.slot_of), graph.next_slot)
    assert (wrapped.live, wrapped.tombstones, wrapped.next_slot) == (2, 1, 3)
    assert wrapped.ids[graph.slot_of["c"]] == "c"
