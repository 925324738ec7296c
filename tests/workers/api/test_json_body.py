"""Request bodies are parsed by orjson; what only the standard library accepts still parses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.workers.api.conftest import EMBEDDING_DIM

pytestmark = pytest.mark.services


def test_a_json_body_is_not_parsed_by_the_standard_library(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    loads = json.loads

    def spying(text: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(text)
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", spying)
    body = json.dumps({"queries": [{"vector": [0.5] * EMBEDDING_DIM}] * 32, "k": 3}).encode()
    response = client.post(
        "/v1/lookup/batch", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 32
    assert body not in parsed, "the standard library parsed the request body"


def test_a_body_only_the_standard_library_accepts_means_what_it_did(client: TestClient) -> None:
    values = ", ".join(["0.5"] * (EMBEDDING_DIM - 1))
    response = client.post(
        "/v1/lookup",
        content=f'{{"vector": [{values}, NaN]}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "finite" in response.text
    broken = client.post(
        "/v1/lookup", content=b'{"vector": [0.5,', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422, broken.text
    assert broken.json()["code"] != "internal_error"
