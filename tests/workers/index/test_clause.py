"""Metadata operators and groups: their semantics, their posting-list lookups, and
filtered shard searches that use them."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from tests.workers.index.helpers import distances, unit_vectors
from tests.workers.index.test_shard import KnnSpy
from workers.index.clause import (
    All,
    AnyOf,
    Clause,
    Equals,
    Exists,
    LabelIn,
    Negation,
    OneOf,
    Range,
)
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.postings import Postings
from workers.index.record import Mutation
from workers.index.shard import Shard

ITEM = {"color": "red", "size": 3, "ratio": 0.5, "flag": True, "none": None}


@pytest.mark.parametrize(
    ("clause", "passes"),
    [
        (Equals("size", 3.0), True),
        (Equals("size", "3"), False),
        (Equals("flag", 1), False),
        (Equals("missing", None), False),
        (Equals("none", None), True),
        (OneOf("color", ("blue", "red")), True),
        (OneOf("color", ("blue",)), False),
        (Range("size", "gt", 2), True),
        (Range("size", "gt", 3), False),
        (Range("size", "gte", 3), True),
        (Range("ratio", "lt", 0.5), False),
        (Range("ratio", "lte", 0.5), True),
        (Range("flag", "gte", 0), False),
        (Range("color", "gt", 0), False),
        (Range("missing", "lt", math.inf), False),
        (Exists("none"), True),
        (Exists("missing"), False),
        (Negation(Equals("missing", 1)), True),
        (Negation(Range("size", "gt", 2)), False),
        (All(()), True),
        (All((Equals("color", "red"), Range("size", "lt", 3))), False),
        (AnyOf((Equals("color", "blue"), Range("size", "lt", 4))), True),
        (LabelIn(frozenset({"7"})), True),
        (LabelIn(frozenset({7})), False),
    ],
)
def test_each_operator_passes_an_item_as_documented(clause: Clause, passes: bool) -> None:
    assert clause.matches("7", ITEM) is passes


def test_equal_clauses_have_equal_cache_keys_whatever_their_order() -> None:
    a = Filter(where=All((OneOf("c", ("x", "y")), Range("n", "gt", 1))))
    b = Filter(where=All((Range("n", "gt", 1), OneOf("c", ("y", "x")))))
    c = Filter(where=All((Range("n", "gte", 1), OneOf("c", ("y", "x")))))

    assert a.cache_key() == b.cache_key() != c.cache_key()


# --- posting lists -----------------------------------------------------------------


def _random_clause(rnd: random.Random, depth: int = 0) -> Clause:
    key = rnd.choice(["c", "n", "odd", "gone"])
    leaves = [
        lambda: Equals(key, rnd.choice(["x", "y", 1, 2.0, True, None])),
        lambda: OneOf(key, tuple(rnd.sample(["x", "y", 1, 2, 3, False], 2))),
        lambda: Range(key, rnd.choice(["gt", "gte", "lt", "lte"]), rnd.uniform(0, 4)),  # type: ignore[arg-type]
        lambda: Exists(key),
        lambda: LabelIn(frozenset(rnd.sample(["a", "b", "c"], 2))),
    ]
    if depth >= 3 or rnd.random() < 0.5:
        return rnd.choice(leaves)()
    kind = rnd.choice(["and", "or", "not"])
    if kind == "not":
        return Negation(_random_clause(rnd, depth + 1))
    children = tuple(_random_clause(rnd, depth + 1) for _ in range(rnd.randint(1, 3)))
    return All(children) if kind == "and" else AnyOf(children)


def test_the_posting_lists_never_miss_an_item_a_clause_passes_and_are_exact_when_they_say_so() -> (
    None
):
    rnd = random.Random(5)
    items: dict[str, tuple[str, dict[str, Any]]] = {}
    for i in range(200):
        metadata: dict[str, Any] = {"c": rnd.choice(["x", "y", 1]), "n": rnd.randint(0, 4)}
        if i % 3:
            metadata["odd"] = rnd.choice([True, 2.0, None, float("nan")])  # NaN: not JSON
        items[f"i{i}"] = (rnd.choice(["a", "b", "c"]), metadata)
    postings = Postings()
    for item_id, (label, metadata) in items.items():
        postings.add(item_id, label, metadata)
    exact_answers = 0

    for _ in range(500):
        clause = _random_clause(rnd)
        passing = {i for i, (label, meta) in items.items() if clause.matches(label, meta)}
        found, complete = postings.matching(Filter(where=clause))

        if found is not None:
            assert passing <= set(found), clause
        if complete:
            assert found is not None and set(found) == passing, clause
            exact_answers += 1
    assert exact_answers > 100


def test_removing_an_item_removes_it_from_the_key_lists() -> None:
    postings = Postings()
    postings.add("a", None, {"k": 1})
    postings.add("b", None, {"k": "x"})
    postings.remove("a", None, {"k": 1})

    assert postings.matching(Filter(where=Exists("k"))) == ({"b"}, True)


# --- shard searches ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shard() -> tuple[Shard, np.ndarray]:
    """4,000 items: ``n`` = position, ``group`` = n mod 10, 4 of them ``rare``."""
    config = IndexConfig(dim=8, m=8, ef_construction=32, exact_filter_limit=64)
    shard = Shard(config)
    vectors = unit_vectors(np.random.default_rng(3), 4000, 8)
    shard.apply(
        [
            Mutation.upsert(
                f"i{j}",
                vectors[j],
                j,
                metadata={"n": j, "group": j % 10, **({"rare": "yes"} if j % 1000 == 7 else {})},
            )
            for j in range(4000)
        ]
    )
    return shard, vectors


def _exact(vectors: np.ndarray, query: np.ndarray, passing: list[int], k: int) -> list[str]:
    d = distances("cosine", query, vectors[passing])
    return [f"i{passing[j]}" for j in np.argsort(d, kind="stable")[:k]]


def test_an_and_of_a_posting_list_and_a_range_is_answered_exactly_without_a_graph_search(
    shard: tuple[Shard, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors = shard
    spy = KnnSpy(index.graph.graph.index)
    monkeypatch.setattr(index.graph.graph, "index", spy)
    where = All((Exists("rare"), Range("n", "gt", 1500)))

    ids, _, exhaustive = index.search(vectors[:3], 5, filter=Filter(where=where))

    assert spy.asked == []
    for row in range(3):
        assert [i for i in ids[row].tolist() if i] == _exact(vectors, vectors[row], [2007, 3007], 5)
    assert exhaustive.all()


@pytest.mark.parametrize(
    ("where", "passes"),
    [
        (Range("n", "lt", 3000), lambda j: j < 3000),
        (Negation(OneOf("group", (0, 1, 2))), lambda j: j % 10 > 2),
        (AnyOf((Equals("group", 4), Range("n", "gte", 3900))), lambda j: j % 10 == 4 or j >= 3900),
    ],
)
def test_a_broad_clause_returns_the_nearest_passing_items(
    shard: tuple[Shard, np.ndarray], where: Clause, passes: Any
) -> None:
    index, vectors = shard
    queries = vectors[10:14]
    passing = [j for j in range(4000) if passes(j)]

    ids, _, _ = index.search(queries, 10, ef=200, filter=Filter(where=where))

    for row, query in enumerate(queries):
        found = [i for i in ids[row].tolist() if i]
        assert all(passes(int(i[1:])) for i in found)
        assert len(set(found) & set(_exact(vectors, query, passing, 10))) >= 9
