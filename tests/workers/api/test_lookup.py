"""Lookups, batches and classification against a real node (PNG digits, a real CNN)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.workers.api.conftest import CALIBRATED_THRESHOLD, Served, embed_pending, png
from workers.api import create_app
from workers.api.classifier import UNKNOWN_LABEL, Classifier
from workers.api.searcher import Searcher
from workers.cache import CacheConfig, LocalFirstCache, open_result_cache

pytestmark = pytest.mark.services


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stored_vector(client: TestClient, item_id: str) -> list[float]:
    response = client.get(f"/v1/items/{item_id}", params={"vector": "true"})
    assert response.status_code == 200, response.text
    vector: list[float] = response.json()["vector"]
    return vector


def cache_count(result: str) -> float:
    value = REGISTRY.get_sample_value("simstream_cache_requests_total", {"result": result})
    return value or 0.0


def test_a_lookup_by_vector_answers_the_k_nearest_items_with_labels_and_metadata(
    client: TestClient, served: Served
) -> None:
    vector = stored_vector(client, "digit-0007")

    response = client.post("/v1/lookup", json={"vector": vector, "k": 5, "fresh": True})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == served.version
    assert body["index_epoch"] == served.node.current().index.epoch
    neighbours = body["neighbors"]
    assert len(neighbours) == 5
    assert neighbours[0]["id"] == "digit-0007"
    assert neighbours[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)
    first = served.digits.index_of("digit-0007")
    label = served.digits.labels[first]
    assert neighbours[0]["label"] == label
    parity = "even" if int(label) % 2 == 0 else "odd"
    assert neighbours[0]["metadata"] == {"parity": parity, "n": first}


def test_a_lookup_by_id_leaves_the_item_itself_out(client: TestClient) -> None:
    by_id = client.post("/v1/lookup", json={"id": "digit-0007", "k": 4}).json()["neighbors"]
    by_vector = client.post(
        "/v1/lookup", json={"vector": stored_vector(client, "digit-0007"), "k": 5}
    ).json()["neighbors"]

    assert "digit-0007" not in [n["id"] for n in by_id]
    assert [n["id"] for n in by_id] == [n["id"] for n in by_vector[1:]]


def test_a_lookup_by_image_embeds_it_with_the_serving_models_encoder(
    client: TestClient, served: Served
) -> None:
    position = served.digits.index_of("digit-0042")
    expected = served.encoder.embed(
        served.encoder.input_spec.to_model_batch(served.digits.images[position : position + 1])
    )[0]

    response = client.post("/v1/lookup", json={"image": b64(served.digits.pngs[position]), "k": 3})

    assert response.status_code == 200, response.text
    top = response.json()["neighbors"][0]
    assert top["id"] == "digit-0042"
    np.testing.assert_allclose(stored_vector(client, "digit-0042"), expected, atol=1e-5)


def test_a_lookup_by_array_answers_like_the_same_image_and_a_data_url_is_accepted(
    client: TestClient, served: Served
) -> None:
    position = served.digits.index_of("digit-0099")
    as_array = client.post(
        "/v1/lookup", json={"array": served.digits.images[position].tolist(), "k": 5}
    )
    data_url = "data:image/png;base64," + b64(served.digits.pngs[position])
    as_image = client.post("/v1/lookup", json={"image": data_url, "k": 5})

    assert as_array.status_code == as_image.status_code == 200
    assert as_array.json()["neighbors"] == as_image.json()["neighbors"]
    assert as_array.json()["neighbors"][0]["id"] == "digit-0099"


def test_a_filter_returns_only_items_with_the_label_and_metadata(client: TestClient) -> None:
    response = client.post(
        "/v1/lookup",
        json={
            "id": "digit-0000",
            "k": 20,
            "filter": {"labels": ["3", "4"], "metadata": {"parity": "even"}},
        },
    )

    assert response.status_code == 200, response.text
    neighbours = response.json()["neighbors"]
    assert neighbours, "label 4 is even: there must be results"
    assert {n["label"] for n in neighbours} == {"4"}
    assert all(n["metadata"]["parity"] == "even" for n in neighbours)


def test_a_filter_past_the_fetch_cap_answers_fewer_and_says_it_is_not_exhaustive(
    client: TestClient, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    for shard in served.node.current().index.shards:
        # The limits of a far larger index: every filter goes to the graph, capped at k.
        small = shard.config.with_(exact_filter_limit=0, filter_fetch_limit=1)
        monkeypatch.setattr(shard, "config", small)
        monkeypatch.setattr(shard.graph.graph, "config", small)
    # Every 3 passes, but a 0's nearest neighbour is not a 3, and no shard may fetch
    # more than k to look further.
    unmatched = {"labels": ["3"], "metadata": {"parity": "odd"}}
    request = {"id": "digit-0000", "k": 1, "filter": unmatched}

    single = [client.post("/v1/lookup", json=request) for _ in range(2)]
    batch = client.post(
        "/v1/lookup/batch", json={"queries": [{"id": "digit-0000"}], "k": 1, "filter": unmatched}
    )
    everything = client.post("/v1/lookup", json={"id": "digit-0000", "k": 1, "fresh": True})

    for response in single:  # a miss, then a cache hit
        assert response.status_code == 200, response.text
        assert (response.json()["neighbors"], response.json()["exhaustive"]) == ([], False)
    assert [h for h in (r.headers["X-Cache"] for r in single)] == ["miss", "hit"]
    assert batch.json()["results"] == [{"neighbors": [], "exhaustive": False}]
    assert everything.json()["exhaustive"] is True


def test_a_batch_answers_each_query_in_order_like_single_lookups(
    client: TestClient, served: Served
) -> None:
    queries: list[dict[str, Any]] = [
        {"id": "digit-0010"},
        {"vector": stored_vector(client, "digit-0050")},
        {"image": b64(served.digits.pngs[served.digits.index_of("digit-0080")])},
    ]

    batch = client.post("/v1/lookup/batch", json={"queries": queries, "k": 3, "fresh": True})

    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert len(results) == 3
    for query, result in zip(queries, results, strict=True):
        single = client.post("/v1/lookup", json={**query, "k": 3, "fresh": True}).json()
        assert result["neighbors"] == single["neighbors"]
    assert results[1]["neighbors"][0]["id"] == "digit-0050"


def test_classify_answers_the_label_of_an_indexed_image_with_the_calibrated_threshold(
    client: TestClient, served: Served
) -> None:
    position = served.digits.index_of("digit-0030")

    response = client.post(
        "/v1/classify", json={"image": b64(served.digits.pngs[position]), "k": 5}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == CALIBRATED_THRESHOLD
    assert body["threshold_source"] == "model"
    assert body["known"] is True
    assert body["label"] == served.digits.labels[position]
    assert body["votes"][0]["label"] == body["label"]
    assert len(body["neighbors"]) == 5
    assert body["neighbors"][0]["within_threshold"] is True


def test_classify_answers_unknown_when_no_neighbour_is_within_the_threshold(
    client: TestClient,
) -> None:
    response = client.post("/v1/classify", json={"id": "digit-0030", "k": 5, "threshold": 1e-9})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == UNKNOWN_LABEL
    assert body["known"] is False
    assert body["threshold_source"] == "request"
    assert body["votes"] == []
    assert not any(n["within_threshold"] for n in body["neighbors"])


def test_the_vote_is_a_majority_within_the_threshold_and_ties_go_to_the_nearest() -> None:
    rows = [
        {"id": "a", "distance": 0.10, "label": "cat", "metadata": {}},
        {"id": "b", "distance": 0.20, "label": "dog", "metadata": {}},
        {"id": "c", "distance": 0.25, "label": "dog", "metadata": {}},
        {"id": "d", "distance": 0.30, "label": "cat", "metadata": {}},
        {"id": "e", "distance": 0.35, "label": None, "metadata": {}},
        {"id": "f", "distance": 0.90, "label": "dog", "metadata": {}},
    ]

    tie, tie_votes, evidence = Classifier.vote(rows, threshold=0.5, rule="majority")
    majority, _, _ = Classifier.vote(rows, threshold=1.0, rule="majority")
    nothing, no_votes, _ = Classifier.vote(rows, threshold=0.05, rule="majority")

    assert (tie, [v["votes"] for v in tie_votes]) == ("cat", [2, 2])
    assert [e["within_threshold"] for e in evidence] == [True] * 5 + [False]
    assert majority == "dog"
    assert (nothing, no_votes) == (UNKNOWN_LABEL, [])


def test_the_nearest_vote_picks_a_five_item_label_over_a_farther_crowd() -> None:
    # A new label indexed with 5 examples, one of them nearest; a large label fills
    # the rest of k = 10 just behind it. A majority answers the crowd.
    rows = [
        {"id": "new-0", "distance": 0.10, "label": "new", "metadata": {}},
        *({"id": f"old-{i}", "distance": 0.12 + i / 100, "label": "old", "metadata": {}}
          for i in range(6)),
        *({"id": f"new-{i}", "distance": 0.20 + i / 100, "label": "new", "metadata": {}}
          for i in range(1, 4)),
    ]  # fmt: skip

    nearest, votes, _ = Classifier.vote(rows, threshold=1.0)
    majority, _, _ = Classifier.vote(rows, threshold=1.0, rule="majority")

    assert nearest == "new"
    assert votes == [
        {"label": "new", "votes": 4, "nearest_distance": 0.10, "centroid_distance": None},
        {"label": "old", "votes": 6, "nearest_distance": 0.12, "centroid_distance": None},
    ]
    assert majority == "old"


def test_classify_says_which_vote_decided_and_refuses_an_unknown_one(client: TestClient) -> None:
    query = {"id": "digit-0030", "k": 5, "fresh": True}

    default = client.post("/v1/classify", json=query)
    majority = client.post("/v1/classify", json={**query, "vote": "majority"})
    invalid = client.post("/v1/classify", json={**query, "vote": "plurality"})

    assert default.status_code == majority.status_code == 200, (default.text, majority.text)
    assert (default.json()["vote"], majority.json()["vote"]) == ("nearest", "majority")
    assert default.json()["neighbors"] == majority.json()["neighbors"]
    assert invalid.status_code == 422


def test_a_repeated_lookup_is_a_cache_hit_and_fresh_bypasses_the_cache(
    client: TestClient,
) -> None:
    query = {"vector": stored_vector(client, "digit-0061"), "k": 7, "ef": 33}
    hits = cache_count("hit")

    first = client.post("/v1/lookup", json=query)
    second = client.post("/v1/lookup", json=query)
    bypass = client.post("/v1/lookup", json={**query, "fresh": True})

    assert [first.headers["X-Cache"], second.headers["X-Cache"]] == ["miss", "hit"]
    assert bypass.headers["X-Cache"] == "bypass"
    assert first.json() == second.json() == bypass.json()
    assert cache_count("hit") == hits + 1


def test_equal_queries_share_a_cache_entry_whatever_the_vector_scale_or_the_default_ef(
    client: TestClient, served: Served
) -> None:
    vector = np.asarray(stored_vector(client, "digit-0062"))
    ef = served.settings.index_ef_search

    first = client.post("/v1/lookup", json={"vector": vector.tolist(), "k": 6})
    scaled = client.post("/v1/lookup", json={"vector": (vector * 3).tolist(), "k": 6, "ef": ef})

    assert first.headers["X-Cache"] == "miss"
    assert scaled.headers["X-Cache"] == "hit"


def test_the_vectors_of_a_batch_share_cache_entries_with_single_lookups(
    client: TestClient,
) -> None:
    # The batch's vectors are checked and keyed together (one NumPy call for all),
    # a single lookup's alone: the keys must still agree, whatever the scale.
    vectors = [np.asarray(stored_vector(client, f"digit-00{n}")) for n in (63, 64, 65)]
    sent = [vectors[0], vectors[1] * 3.0, vectors[2] * 0.5]

    batch = client.post(
        "/v1/lookup/batch", json={"queries": [{"vector": v.tolist()} for v in sent], "k": 4}
    )
    singles = [client.post("/v1/lookup", json={"vector": v.tolist(), "k": 4}) for v in sent]

    assert batch.headers["X-Cache"] == "miss", batch.text
    assert [r.headers["X-Cache"] for r in singles] == ["hit"] * 3
    assert [r.json()["neighbors"] for r in singles] == [
        result["neighbors"] for result in batch.json()["results"]
    ]


def test_an_invalid_vector_of_a_batch_is_refused_as_a_single_lookup_of_it_is(
    client: TestClient, served: Served
) -> None:
    good = stored_vector(client, "digit-0066")
    dim = len(good)
    for bad in (good[:3], [0.0] * dim, [*good[:-1], 1e39]):
        single = client.post("/v1/lookup", json={"vector": bad, "k": 2})
        batch = client.post(
            "/v1/lookup/batch", json={"queries": [{"vector": good}, {"vector": bad}], "k": 2}
        )

        assert (single.status_code, batch.status_code) == (422, 422), batch.text
        assert batch.json()["detail"] == single.json()["detail"]
        assert single.json()["detail"].startswith("Invalid value for `vector`. Expected")


@pytest.fixture
def tiered_client(served: Served) -> Iterator[TestClient]:
    """An app over the shared node whose cache is the in-process LRU before Valkey."""
    cache = open_result_cache(CacheConfig.from_settings(served.settings))
    assert isinstance(cache, LocalFirstCache)
    with TestClient(create_app(served.settings, served.node, cache=cache)) as client:
        yield client


def new_png(seed: int) -> str:
    """A base64 PNG of random 8×8 pixels, unlike any query sent before."""
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return b64(png(pixels))


def test_a_repeated_image_query_is_answered_from_the_cache_without_embedding_it(
    tiered_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[int] = []
    original = Searcher.embed

    def counting(self: Searcher, generation: Any, inputs: np.ndarray) -> np.ndarray:
        embedded.append(len(inputs))
        return original(self, generation, inputs)

    monkeypatch.setattr(Searcher, "embed", counting)
    image = {"image": new_png(1801)}
    query = {**image, "k": 3}

    first = tiered_client.post("/v1/lookup", json=query)
    second = tiered_client.post("/v1/lookup", json=query)
    batch = tiered_client.post("/v1/lookup/batch", json={"queries": [image, image], "k": 3})

    assert [first.headers["X-Cache"], second.headers["X-Cache"]] == ["miss", "hit"]
    assert batch.status_code == 200, batch.text
    assert batch.headers["X-Cache"] == "hit"
    assert first.json() == second.json()
    assert embedded == [1]


def test_the_in_process_cache_is_invalidated_by_a_new_write(
    tiered_client: TestClient, served: Served
) -> None:
    local_hits = REGISTRY.get_sample_value("simstream_cache_local_hits_total") or 0.0
    image = new_png(1802)
    query = {"image": image, "k": 1}
    assert tiered_client.post("/v1/lookup", json=query).headers["X-Cache"] == "miss"
    assert tiered_client.post("/v1/lookup", json=query).headers["X-Cache"] == "hit"
    assert REGISTRY.get_sample_value("simstream_cache_local_hits_total") == local_hits + 1

    token = tiered_client.post("/v1/items", json={"id": "lru-moved", "image": image}).json()[
        "token"
    ]
    embed_pending(served.settings, served.encoder, served.node)
    after = tiered_client.post("/v1/lookup", json={**query, "after": token})

    assert after.headers["X-Cache"] == "miss"
    assert [n["id"] for n in after.json()["neighbors"]] == ["lru-moved"]


def _searches() -> tuple[float, float]:
    get = REGISTRY.get_sample_value
    return (
        get("simstream_api_search_seconds_count") or 0.0,
        get("simstream_api_search_seconds_sum") or 0.0,
    )


def test_the_search_metric_counts_each_index_search_and_no_cache_hit(client: TestClient) -> None:
    vector = stored_vector(client, "digit-0011")
    body = {"vector": vector, "k": 3}
    client.post("/v1/lookup", json=body)  # cached from here on
    count, total = _searches()

    fresh = client.post("/v1/lookup", json={**body, "fresh": True})
    hit = client.post("/v1/lookup", json=body)
    queries = [{"vector": vector}, {"id": "digit-0012"}, {"id": "digit-0013"}]
    batch = client.post("/v1/lookup/batch", json={"queries": queries, "k": 3, "fresh": True})

    assert fresh.status_code == hit.status_code == batch.status_code == 200
    assert hit.headers["x-cache"] == "hit"
    count_after, total_after = _searches()
    assert count_after - count == 2, "a fresh lookup and a batch searched, a hit did not"
    assert 0 < total_after - total < 5
