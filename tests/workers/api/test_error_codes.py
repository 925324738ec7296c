"""Every 4xx and 5xx body carries a stable machine-readable ``code``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.waiting import wait_for
from tests.workers.api.conftest import Served
from tests.workers.api.test_errors import BAD_LOOKUPS
from workers.api import create_app
from workers.api.codes import ErrorCode

pytestmark = pytest.mark.services

#: The code of each bad lookup of `BAD_LOOKUPS`, by its name.
LOOKUP_CODES: dict[str, str] = {
    "k zero": "invalid_request",
    "k above the limit": "invalid_request",
    "ef zero": "invalid_request",
    "k not a number": "invalid_request",
    "no query": "invalid_request",
    "two queries": "invalid_request",
    "unknown field": "invalid_request",
    "wrong dimension": "invalid_request",
    "empty vector": "invalid_request",
    "zero vector": "invalid_request",
    "float32 overflow": "invalid_request",
    "not base64": "invalid_request",
    "not an image": "bad_image",
    "ragged array": "invalid_request",
    "array beyond a pixel": "invalid_request",
    "array of text": "invalid_request",
    "array of wrong rank": "invalid_payload",
    "unknown id": "not_found",
    "malformed token": "bad_token",
    "token of another topic": "bad_token",
    "token of a missing partition": "bad_token",
    "label filter of numbers": "invalid_filter",
}


def _code(response: Any) -> str:
    body = response.json()
    assert body["request_id"] == response.headers["X-Request-ID"], body
    assert body["detail"], body
    code: str = body["code"]
    return code


def test_every_bad_lookup_has_a_code() -> None:
    assert sorted(LOOKUP_CODES) == sorted(name for name, *_ in BAD_LOOKUPS)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [pytest.param(b, s, LOOKUP_CODES[name], id=name) for name, b, s, _ in BAD_LOOKUPS],
)
def test_a_bad_lookup_answers_its_stable_code(
    client: TestClient, served: Served, body: dict[str, Any], status: int, code: str
) -> None:
    if "after" in body:
        body = {**body, "after": body["after"].replace("TOPIC", served.settings.topic_items)}

    response = client.post("/v1/lookup", json=body)

    assert (response.status_code, _code(response)) == (status, code), response.text


def test_http_errors_of_the_framework_answer_the_code_of_their_status(
    client: TestClient,
) -> None:
    unknown_route = client.get("/v1/no-such-route")
    wrong_method = client.put("/v1/lookup", json={})
    invalid_json = client.post(
        "/v1/lookup", content=b'{"vector": [1', headers={"Content-Type": "application/json"}
    )
    bad_length = client.post("/v1/lookup", content=b"{}", headers={"Content-Length": "many"})

    assert (unknown_route.status_code, _code(unknown_route)) == (404, "not_found")
    assert (wrong_method.status_code, _code(wrong_method)) == (405, "method_not_allowed")
    assert (invalid_json.status_code, _code(invalid_json)) == (422, "invalid_request")
    assert (bad_length.status_code, _code(bad_length)) == (400, "invalid_request")


def test_an_unknown_item_is_not_found(client: TestClient) -> None:
    item = client.get("/v1/items/no-such-item")
    image = client.get("/v1/items/no-such-item/image")

    assert (item.status_code, _code(item)) == (404, "not_found")
    assert (image.status_code, _code(image)) == (404, "not_found")


@pytest.fixture
def strict(served: Served) -> Iterator[TestClient]:
    """An app over the shared node with tokens, a small body limit, one lookup waiting for
    its write at a time and short waits for write tokens."""
    settings = served.settings.model_copy(
        update={
            "api_read_tokens": "reader",
            "api_admin_tokens": "admin",
            "api_max_body_bytes": 4096,
            "api_max_waiting": 1,
            "api_write_wait_s": 5.0,  # the rate-limited request must come while it waits
        }
    )
    with TestClient(create_app(settings, served.node)) as client:
        yield client


def _waiting() -> float:
    return REGISTRY.get_sample_value("simstream_api_waiting_requests") or 0.0


def test_auth_size_limit_rate_limit_and_waits_answer_their_codes(strict: TestClient) -> None:
    read, admin = {"Authorization": "Bearer reader"}, {"Authorization": "Bearer admin"}
    missing = strict.post("/v1/lookup", json={"id": "digit-0001"})
    unknown = strict.post(
        "/v1/lookup", json={"id": "digit-0001"}, headers={"Authorization": "Bearer nope"}
    )
    forbidden = strict.delete("/v1/items/some-id", headers=read)
    too_large = strict.post(
        "/v1/lookup", content=b" " * 5000, headers={**read, "Content-Type": "application/json"}
    )
    token = strict.delete("/v1/items/never-written-id", headers=admin).json()["token"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            strict.post, "/v1/lookup", json={"id": "digit-0001", "after": token}, headers=read
        )
        wait_for(lambda: _waiting() >= 1, 10, message="a lookup waiting")
        limited = strict.post("/v1/lookup", json={"id": "digit-0001", "after": token}, headers=read)
        not_ready = waiting.result(timeout=30)

    assert (missing.status_code, _code(missing)) == (401, "unauthorized")
    assert (unknown.status_code, _code(unknown)) == (401, "unauthorized")
    assert (forbidden.status_code, _code(forbidden)) == (403, "forbidden")
    assert (too_large.status_code, _code(too_large)) == (413, "payload_too_large")
    assert (limited.status_code, _code(limited)) == (429, "rate_limited")
    assert (not_ready.status_code, _code(not_ready)) == (503, "not_ready")


def test_the_openapi_schema_documents_the_code_of_every_error() -> None:
    from workers.api.schemas import ErrorResponse

    schema = ErrorResponse.model_json_schema()

    assert "code" in schema["required"]
    for code in ErrorCode:
        if code is not ErrorCode.HTTP_ERROR:
            assert code.value in schema["properties"]["code"]["description"]
