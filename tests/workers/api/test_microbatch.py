"""`MicroBatcher` over a real `ShardedIndex`: coalesced searches answer as lone ones."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

from tests.workers.index.helpers import unit_vectors
from workers.api.microbatch import MicroBatcher
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.record import Mutation
from workers.index.sharded import Neighbors, ShardedIndex


@pytest.fixture
def index() -> ShardedIndex:
    rng = np.random.default_rng(3)
    index = ShardedIndex(IndexConfig(dim=8, fan_out_min_s=10.0), 4)
    vectors = unit_vectors(rng, 400, 8)
    for p in range(4):
        index.apply(
            p,
            [Mutation.upsert(f"i{j}", vectors[j], j, label=j % 2) for j in range(p, 400, 4)],
        )
    return index


def batch_sizes(index: ShardedIndex, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every search: each `search_batch` call's batch, 1 for a
    `search` call (the real search still runs)."""
    sizes: list[int] = []
    original, original_one = index.search_batch, index.search
    inside = threading.local()

    def recording(vectors: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        if not getattr(inside, "one", False):
            sizes.append(len(vectors))
        return original(vectors, *args, **kwargs)

    def recording_one(vector: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        sizes.append(1)
        inside.one = True  # `search` may answer through `search_batch`: counted once
        try:
            return original_one(vector, *args, **kwargs)
        finally:
            inside.one = False

    monkeypatch.setattr(index, "search_batch", recording)
    monkeypatch.setattr(index, "search", recording_one)
    return sizes


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at once; their results (or errors) in order."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def ids(found: list[Neighbors]) -> list[list[str]]:
    return [n.ids for n in found]


def test_concurrent_searches_within_the_window_are_one_batch_answering_each_as_alone(
    index: ShardedIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = unit_vectors(np.random.default_rng(4), 6, 8)
    alone = [index.search(q, 5, ef=32) for q in queries]
    sizes = batch_sizes(index, monkeypatch)
    batcher = MicroBatcher(window_s=0.5)

    found = together(
        [partial(batcher.search, index, q[None, :], 5, ef=32, filter=None) for q in queries]
    )

    assert sizes == [6]
    assert [f[0].ids for f in found] == [a.ids for a in alone]
    assert [f[0].distances for f in found] == [a.distances for a in alone]


def test_with_a_window_of_zero_every_search_runs_at_once(
    index: ShardedIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = unit_vectors(np.random.default_rng(5), 3, 8)
    sizes = batch_sizes(index, monkeypatch)
    batcher = MicroBatcher(window_s=0.0)

    together([partial(batcher.search, index, q[None, :], 5, ef=32, filter=None) for q in queries])

    assert sizes == [1, 1, 1]


def test_searches_with_other_options_are_never_batched_together(
    index: ShardedIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = unit_vectors(np.random.default_rng(6), 1, 8)
    evens = Filter.of(labels=[0])
    sizes = batch_sizes(index, monkeypatch)
    batcher = MicroBatcher(window_s=0.3)

    found = together(
        [
            lambda: batcher.search(index, q, 5, ef=32, filter=None),
            lambda: batcher.search(index, q, 5, ef=32, filter=evens),
            lambda: batcher.search(index, q, 3, ef=32, filter=None),
        ]
    )

    assert sorted(sizes) == [1, 1, 1]
    assert ids(found[1]) == ids([index.search(q[0], 5, ef=32, filter=evens)])
    assert all(int(i[1:]) % 2 == 0 for i in found[1][0].ids)
    assert len(found[2][0].ids) == 3


def test_a_failed_batched_search_fails_every_search_of_the_batch(
    index: ShardedIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("injected")

    monkeypatch.setattr(index, "search_batch", broken)
    queries = unit_vectors(np.random.default_rng(7), 3, 8)
    batcher = MicroBatcher(window_s=0.3)

    found = together(
        [partial(batcher.search, index, q[None, :], 5, ef=32, filter=None) for q in queries]
    )

    assert [type(f) for f in found] == [MemoryError] * 3
