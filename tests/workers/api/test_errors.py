"""Bad input is a 4xx whose message says what was expected and what was received."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.workers.api.conftest import EMBEDDING_DIM, Served

pytestmark = pytest.mark.services

ONE_HOT = [1.0] + [0.0] * (EMBEDDING_DIM - 1)
NOT_AN_IMAGE = base64.b64encode(b"GIF89a but not really").decode()

BAD_LOOKUPS: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "k zero",
        {"vector": ONE_HOT, "k": 0},
        422,
        "Invalid value for `k`. Expected 1 ≤ k ≤ 1000. Received: k=0",
    ),
    ("k above the limit", {"vector": ONE_HOT, "k": 1001}, 422, "Received: k=1001"),
    ("ef zero", {"vector": ONE_HOT, "ef": 0}, 422, "Expected 1 ≤ ef ≤ 4000. Received: ef=0"),
    ("k not a number", {"vector": ONE_HOT, "k": "many"}, 422, "Invalid value for `k`."),
    ("no query", {"k": 3}, 422, "Expected exactly one of `vector`, `image`, `array` or `id`"),
    ("two queries", {"vector": ONE_HOT, "id": "digit-0001"}, 422, "Received: `vector`, `id`"),
    ("unknown field", {"vectors": ONE_HOT}, 422, "Unexpected field `vectors`"),
    (
        "wrong dimension",
        {"vector": [1.0, 2.0, 3.0]},
        422,
        f"Expected {EMBEDDING_DIM} numbers (the embedding size of model v1). Received: 3 numbers",
    ),
    ("empty vector", {"vector": []}, 422, "Received: 0 numbers"),
    ("zero vector", {"vector": [0.0] * EMBEDDING_DIM}, 422, "Expected a non-zero vector"),
    (
        "float32 overflow",
        {"vector": [1e39] + [0.0] * (EMBEDDING_DIM - 1)},
        422,
        "Expected finite float32 numbers. Received: 1e+39 at index 0",
    ),
    (
        "not base64",
        {"image": "this is not base64!"},
        400,
        "Expected base64-encoded PNG or JPEG bytes",
    ),
    ("not an image", {"image": NOT_AN_IMAGE}, 400, "Expected a PNG or JPEG image"),
    ("ragged array", {"array": [[1, 2], [3]]}, 422, "Expected a rectangular array of numbers"),
    (
        "array beyond a pixel",
        {"array": [[0, 300], [1, 2]]},
        422,
        "Expected integers 0..255 for an image model",
    ),
    ("array of text", {"array": [["a", "b"]]}, 422, "Expected a rectangular array of numbers"),
    ("array of wrong rank", {"array": [1, 2, 3]}, 422, "Invalid payload for model v1"),
    ("unknown id", {"id": "no-such-item"}, 404, "Unknown item id 'no-such-item'"),
    (
        "malformed token",
        {"id": "digit-0001", "after": "yesterday"},
        400,
        "Invalid value for `after`. Expected a write token like 'items.p3.o1234'",
    ),
    (
        "token of another topic",
        {"id": "digit-0001", "after": "other.p0.o1"},
        400,
        "Expected a write token of topic",
    ),
    (
        "token of a missing partition",
        {"id": "digit-0001", "after": "TOPIC.p7.o1"},
        400,
        "Expected a partition below 2. Received: partition 7",
    ),
    (
        "label filter of numbers",
        {"id": "digit-0001", "filter": {"labels": [3]}},
        422,
        "Invalid value for `filter.labels[0]`",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [pytest.param(b, s, m, id=name) for name, b, s, m in BAD_LOOKUPS],
)
def test_a_bad_lookup_is_a_4xx_that_says_what_was_expected_and_received(
    client: TestClient, served: Served, body: dict[str, Any], status: int, message: str
) -> None:
    if "after" in body:
        body = {**body, "after": body["after"].replace("TOPIC", served.settings.topic_items)}

    response = client.post("/v1/lookup", json=body)

    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert response.json()["request_id"] == response.headers["X-Request-ID"]


def test_nan_and_infinity_in_a_vector_are_refused_with_their_position(
    client: TestClient,
) -> None:
    values = ", ".join(["0.5"] * (EMBEDDING_DIM - 1))
    for literal in ("NaN", "Infinity"):
        response = client.post(
            "/v1/lookup",
            content=f'{{"vector": [{values}, {literal}]}}',
            headers={"Content-Type": "application/json"},
        )

        assert response.status_code == 422, response.text
        assert f"at index {EMBEDDING_DIM - 1}" in response.json()["detail"]


def test_invalid_json_is_a_422_naming_the_problem(client: TestClient) -> None:
    response = client.post(
        "/v1/lookup", content=b'{"vector": [1, 2', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid JSON body")


def test_a_batch_over_the_limit_or_empty_is_refused(client: TestClient, served: Served) -> None:
    most = served.settings.api_max_batch
    too_many = client.post("/v1/lookup/batch", json={"queries": [{"vector": ONE_HOT}] * (most + 1)})
    empty = client.post("/v1/lookup/batch", json={"queries": []})

    assert too_many.status_code == empty.status_code == 422
    assert too_many.json()["detail"] == (
        f"Invalid value for `queries`. Expected 1 ≤ len(queries) ≤ {most}. "
        f"Received: {most + 1} queries"
    )
    assert "Received: 0 queries" in empty.json()["detail"]


def test_a_body_over_the_limit_is_a_413_by_content_length_and_while_streaming(
    client: TestClient, served: Served
) -> None:
    limit = served.settings.api_max_body_bytes
    big = b'{"vector": [' + b"0," * limit + b"1]}"

    declared = client.post("/v1/lookup", content=big, headers={"Content-Type": "application/json"})

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = client.post(
        "/v1/lookup", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert declared.status_code == 413
    assert f"Expected at most {limit} bytes" in declared.json()["detail"]
    assert f"Received: Content-Length {len(big)}" in declared.json()["detail"]
    assert streamed.status_code == 413
    assert f"Received: more than {limit} bytes" in streamed.json()["detail"]


def test_unknown_items_are_404_and_a_sample_or_a_page_is_bounded(client: TestClient) -> None:
    unknown = client.get("/v1/items/no-such-item")
    no_image = client.get("/v1/items/no-such-item/image")
    long_page = client.get("/v1/items", params={"limit": 5000})
    too_many = client.get("/v1/items", params={"sample": 1000})

    assert unknown.status_code == no_image.status_code == 404
    assert "Unknown item id 'no-such-item'" in unknown.json()["detail"]
    assert long_page.status_code == too_many.status_code == 422
    assert "Invalid value for `limit`" in long_page.json()["detail"]
    assert "Invalid value for `sample`" in too_many.json()["detail"]
    assert "Received: '1000'" in too_many.json()["detail"]


def test_an_unexpected_error_is_a_500_whose_body_and_header_carry_the_request_id(
    app: FastAPI, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(served.node, "stats", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/stats", headers={"X-Request-ID": "trace-42"})

    assert response.status_code == 500
    assert response.json()["code"] == "internal"
    assert response.headers["X-Request-ID"] == "trace-42"
    assert response.json()["request_id"] == "trace-42"
    assert "injected" not in response.text


@pytest.mark.parametrize(
    ("threshold", "received"),
    [("Infinity", "'inf'"), ("-Infinity", "'-inf'"), ("NaN", "'nan'"), ("-0.5", "-0.5")],
)
def test_a_classify_threshold_that_is_not_a_positive_finite_number_is_a_422(
    client: TestClient, threshold: str, received: str
) -> None:
    body = '{"id": "digit-0001", "threshold": ' + threshold + "}"

    response = client.post(
        "/v1/classify", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("Invalid value for `threshold`.")
    assert detail.endswith(f"Received: {received}")
