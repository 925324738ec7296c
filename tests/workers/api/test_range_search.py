"""Range search: ``max_distance`` returns every neighbour within the distance, up to k."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.workers.api.conftest import Served
from workers.index.sharded import ShardedIndex

pytestmark = pytest.mark.services


def exact_distances(index: ShardedIndex, query: np.ndarray) -> dict[str, float]:
    """Every live item's distance to ``query`` by brute force, in the reported units."""
    ids: list[str] = []
    for shard in index.shards:
        with shard.frozen() as frozen:
            ids.extend(frozen.state()["items"]["ids"])
    vectors = np.stack([np.asarray(index.get(i).vector, np.float64) for i in ids])  # type: ignore[union-attr]
    q = query.astype(np.float64)
    if index.space == "cosine":
        cos = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        found = 1.0 - cos
    elif index.space == "l2":
        found = np.linalg.norm(vectors - q, axis=1)
    else:
        found = 1.0 - vectors @ q
    return dict(zip(ids, found.tolist(), strict=True))


def _within(distances: dict[str, float], bound: float) -> list[str]:
    return sorted((i for i, d in distances.items() if d <= bound), key=distances.__getitem__)


def _bound_between(distances: dict[str, float], n: int) -> float:
    """A distance with exactly n items within it (halfway between the n-th and next)."""
    ordered = sorted(distances.values())
    return (ordered[n - 1] + ordered[n]) / 2


def test_a_lookup_with_max_distance_returns_exactly_the_items_within_it(
    client: TestClient, served: Served
) -> None:
    query = served.encoder.embed(
        served.encoder.input_spec.to_model_batch(served.digits.images[:1])
    )[0]
    distances = exact_distances(served.node.current().index, query)
    bound = _bound_between(distances, 5)

    within = client.post(
        "/v1/lookup", json={"vector": query.tolist(), "k": 20, "max_distance": bound}
    )
    capped = client.post(
        "/v1/lookup", json={"vector": query.tolist(), "k": 3, "max_distance": bound}
    )
    unbounded = client.post("/v1/lookup", json={"vector": query.tolist(), "k": 20})

    assert within.status_code == 200, within.text
    assert [n["id"] for n in within.json()["neighbors"]] == _within(distances, bound)
    assert all(n["distance"] <= bound for n in within.json()["neighbors"])
    assert [n["id"] for n in capped.json()["neighbors"]] == _within(distances, bound)[:3]
    assert len(unbounded.json()["neighbors"]) == 20


def test_a_cached_answer_is_never_served_for_another_max_distance(
    client: TestClient, served: Served
) -> None:
    query = served.digits.ids[7]
    vector = np.asarray(served.node.current().index.get(query).vector)  # type: ignore[union-attr]
    distances = exact_distances(served.node.current().index, vector)
    distances.pop(query)
    near, far = _bound_between(distances, 2), _bound_between(distances, 8)

    answers = [
        client.post("/v1/lookup", json={"id": query, "k": 10, "max_distance": bound})
        for bound in (far, near, far, None)
    ]

    counts = [len(a.json()["neighbors"]) for a in answers]
    assert counts == [8, 2, 8, 10]
    assert [a.headers["X-Cache"] for a in answers] == ["miss", "miss", "hit", "miss"]


def test_a_batch_applies_max_distance_to_every_query(client: TestClient, served: Served) -> None:
    index = served.node.current().index
    ids = served.digits.ids[20:23]
    vectors = [np.asarray(index.get(i).vector) for i in ids]  # type: ignore[union-attr]
    exact = [exact_distances(index, v) for v in vectors]
    bound = min(_bound_between(d, 5) for d in exact)

    response = client.post(
        "/v1/lookup/batch",
        json={"queries": [{"vector": v.tolist()} for v in vectors], "k": 50, "max_distance": bound},
    )

    assert response.status_code == 200, response.text
    got = [[n["id"] for n in r["neighbors"]] for r in response.json()["results"]]
    assert got == [_within(d, bound) for d in exact]
    assert min(len(ids) for ids in got) >= 1


@pytest.mark.parametrize("bound", ["NaN", "Infinity", '"far"'])
def test_max_distance_must_be_a_finite_number(client: TestClient, bound: str) -> None:
    response = client.post(
        "/v1/lookup",
        content=f'{{"id": "digit-0001", "max_distance": {bound}}}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert "Invalid value for `max_distance`" in response.json()["detail"]
