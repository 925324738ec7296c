"""``POST /internal/v1/search``: the router's vector search of one node's generation."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.workers.api.conftest import Served
from tests.workers.api.test_lookup import stored_vector

pytestmark = pytest.mark.services


def _search(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/internal/v1/search", json=body)


def test_an_internal_search_answers_what_a_lookup_answers_for_the_same_vector(
    client: TestClient, served: Served
) -> None:
    vector = stored_vector(client, served.digits.ids[5])
    lookup = client.post("/v1/lookup", json={"vector": vector, "k": 7, "fresh": True}).json()
    response = _search(client, {"version": served.version, "vectors": [vector], "k": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == served.version
    assert body["partitions"] == list(range(served.settings.partitions))
    [result] = body["results"]
    assert result["ids"] == [n["id"] for n in lookup["neighbors"]]
    assert result["distances"] == pytest.approx([n["distance"] for n in lookup["neighbors"]])
    assert result["labels"] == [n["label"] for n in lookup["neighbors"]]
    assert result["metadata"] == [n["metadata"] for n in lookup["neighbors"]]
    assert result["exhaustive"] is True


def test_an_internal_search_leaves_out_the_excluded_id_of_each_query(
    client: TestClient, served: Served
) -> None:
    first, second = served.digits.ids[3], served.digits.ids[40]
    vectors = [stored_vector(client, first), stored_vector(client, second)]
    body = {"version": served.version, "vectors": vectors, "k": 3, "exclude": [first, None]}
    results = _search(client, body).json()["results"]
    assert first not in results[0]["ids"] and len(results[0]["ids"]) == 3
    assert results[1]["ids"][0] == second


def test_an_internal_search_of_a_version_the_node_does_not_hold_is_a_409(
    client: TestClient, served: Served
) -> None:
    vector = stored_vector(client, served.digits.ids[0])
    response = _search(client, {"version": "v999", "vectors": [vector], "k": 1})
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "version_unavailable"
    assert "'v999'" in response.json()["detail"]


def test_an_internal_search_refuses_a_vector_of_another_size_naming_both_sizes(
    client: TestClient, served: Served
) -> None:
    response = _search(client, {"version": served.version, "vectors": [[0.5, 0.5]], "k": 1})
    assert response.status_code == 422
    assert "Expected 16 numbers" in response.json()["detail"]
    assert "Received: 2 numbers" in response.json()["detail"]


def test_an_internal_item_read_answers_the_stored_vector_of_the_asked_version(
    client: TestClient, served: Served
) -> None:
    item_id = served.digits.ids[12]
    response = client.get(f"/internal/v1/items/{item_id}", params={"version": served.version})
    assert response.status_code == 200, response.text
    assert response.json()["vector"] == pytest.approx(stored_vector(client, item_id))
    other = client.get(f"/internal/v1/items/{item_id}", params={"version": "v999"})
    assert other.status_code == 409 and other.json()["code"] == "version_unavailable"
    missing = client.get("/internal/v1/items/nope", params={"version": served.version})
    assert missing.status_code == 404


def test_internal_label_sums_add_up_the_stored_vectors_of_each_label(
    client: TestClient, served: Served
) -> None:
    label = served.digits.labels[7]
    listed = client.get(
        "/v1/items",
        params={"filter": json.dumps({"labels": [label]}), "vector": "true", "limit": 1000},
    ).json()
    assert listed["next_cursor"] is None
    vectors = np.asarray([item["vector"] for item in listed["items"]], np.float64)
    body = {"version": served.version, "labels": [label, "no-such-label"]}

    response = client.post("/internal/v1/label-sums", json=body)
    unknown = client.post("/internal/v1/label-sums", json={**body, "version": "v999"})
    too_many = client.post(
        "/internal/v1/label-sums",
        json={**body, "labels": [str(n) for n in range(served.settings.api_max_k + 1)]},
    )

    assert response.status_code == 200, response.text
    sums = response.json()["sums"]
    assert list(sums) == [label]
    assert sums[label]["count"] == len(vectors) > 1
    assert sums[label]["total"] == pytest.approx(vectors.sum(axis=0).tolist(), abs=1e-4)
    assert unknown.status_code == 409 and unknown.json()["code"] == "version_unavailable"
    assert too_many.status_code == 422 and "at most" in too_many.json()["detail"]
