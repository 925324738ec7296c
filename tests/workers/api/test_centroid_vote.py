"""``/v1/classify`` with ``vote="centroid"`` against a real node (PNG digits, a real CNN)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.workers.api.conftest import PER_CLASS, Served
from tests.workers.api.test_lookup import b64, cache_count
from workers.api.classifier import Classifier

pytestmark = pytest.mark.services


def indexed(client: TestClient) -> list[dict[str, Any]]:
    """Every item with its stored vector, through the listing."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, "vector": "true"}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/items", params=params)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def centroid_distances(items: list[dict[str, Any]], query: np.ndarray) -> dict[str, float]:
    """Cosine distance from ``query`` to every label's mean stored vector."""
    by_label: dict[str, list[list[float]]] = {}
    for item in items:
        if item["label"] is not None:
            by_label.setdefault(str(item["label"]), []).append(item["vector"])
    out = {}
    for label, vectors in by_label.items():
        mean = np.mean(np.asarray(vectors, np.float64), axis=0)
        out[label] = 1.0 - float(query @ mean) / float(np.linalg.norm(query) * np.linalg.norm(mean))
    return out


def test_the_centroid_vote_ranks_the_voters_labels_by_their_mean_over_the_whole_index(
    client: TestClient, served: Served
) -> None:
    assert served.node.current().index.space == "cosine"
    items = indexed(client)
    stored = {item["id"]: np.asarray(item["vector"], np.float64) for item in items}
    for item_id in served.digits.ids[:40:4]:
        query = {"id": item_id, "k": 10, "threshold": 10.0, "vote": "centroid", "fresh": True}
        response = client.post("/v1/classify", json=query)
        nearest = client.post("/v1/classify", json={**query, "vote": "nearest"})

        assert response.status_code == 200, response.text
        body = response.json()
        expected = centroid_distances(items, stored[item_id])
        voters = {str(n["label"]) for n in body["neighbors"] if n["label"] is not None}
        ranked = sorted(voters, key=lambda label: expected[label])
        assert body["vote"] == "centroid"
        assert [v["label"] for v in body["votes"]] == ranked
        assert body["label"] == ranked[0]
        for vote in body["votes"]:
            assert vote["centroid_distance"] == pytest.approx(expected[vote["label"]], abs=1e-4)
        assert body["neighbors"] == nearest.json()["neighbors"]
    assert len(items) >= len(served.digits.ids)


def test_a_filtered_centroid_vote_averages_only_the_items_that_pass_the_filter(
    client: TestClient, served: Served
) -> None:
    # The digits are published class by class, PER_CLASS each, numbered by `n`: the
    # filter keeps the first half of every class.
    first_half = [
        {"gte": {"n": c * PER_CLASS}, "lt": {"n": c * PER_CLASS + PER_CLASS // 2}}
        for c in range(10)
    ]
    items = [i for i in indexed(client) if isinstance(i["metadata"].get("n"), int)]
    passing = [i for i in items if i["metadata"]["n"] % PER_CLASS < PER_CLASS // 2]
    query_item = passing[3]
    query = np.asarray(query_item["vector"], np.float64)
    body = {
        "id": query_item["id"], "k": 10, "threshold": 10.0, "vote": "centroid", "fresh": True,
        "filter": {"or": first_half},
    }  # fmt: skip

    response = client.post("/v1/classify", json=body)

    assert response.status_code == 200, response.text
    expected = centroid_distances(passing, query)
    everything = centroid_distances(items, query)
    for vote in response.json()["votes"]:
        assert vote["centroid_distance"] == pytest.approx(expected[vote["label"]], abs=1e-4)
        assert abs(expected[vote["label"]] - everything[vote["label"]]) > 1e-6


def test_an_image_query_is_embedded_for_its_centroids_even_when_its_neighbours_are_cached(
    client: TestClient, served: Served
) -> None:
    image = {"image": b64(served.digits.pngs[21]), "k": 8, "threshold": 10.0, "vote": "centroid"}

    first = client.post("/v1/classify", json=image)
    hits = cache_count("hit")
    second = client.post("/v1/classify", json=image)

    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert cache_count("hit") == hits + 1
    assert first.json()["votes"] == second.json()["votes"]
    assert all(v["centroid_distance"] is not None for v in second.json()["votes"])


def test_the_centroid_rule_prefers_the_label_whose_mean_is_nearest_over_the_nearest_voter() -> None:
    rows = [
        {"id": "a", "distance": 0.10, "label": "big", "metadata": {}},
        {"id": "b", "distance": 0.20, "label": "few", "metadata": {}},
        {"id": "c", "distance": 0.30, "label": "gone", "metadata": {}},
        {"id": "d", "distance": 0.90, "label": "far", "metadata": {}},
    ]
    centroids = {"big": 0.40, "few": 0.25, "far": 0.01}  # "gone": deleted since the search

    label, votes, _ = Classifier.vote(rows, 0.5, "centroid", centroids)
    nearest, _, _ = Classifier.vote(rows, 0.5, "nearest", centroids)

    assert (label, nearest) == ("few", "big")
    assert [(v["label"], v["centroid_distance"]) for v in votes] == [
        ("few", 0.25),
        ("big", 0.40),
        ("gone", None),
    ]  # "far" is beyond the threshold: not a voter, however near its mean
