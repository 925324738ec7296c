"""POST /v1/items/batch: per-item errors, one token for all, limits; against the real node."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from simstream.wire import WriteToken
from tests.workers.api.conftest import Served, embed_pending, png
from tests.workers.api.test_items import b64, new_image
from workers.api import create_app

pytestmark = pytest.mark.services


def test_a_mixed_batch_publishes_the_valid_items_and_reports_the_others_by_position(
    client: TestClient, patient_client: TestClient, served: Served
) -> None:
    valid = [f"batch-ok-{n}" for n in range(6)]
    image = b64(png(new_image(400)))
    items = [
        {"id": valid[0], "image": image, "label": "b", "metadata": {"n": 0}},
        {"id": "batch-no-payload"},
        {"id": "batch-bad-base64", "image": "not base64!"},
        5,
        *({"id": i, "array": new_image(401 + n).tolist()} for n, i in enumerate(valid[1:])),
        {"id": "x" * 10_000, "image": image},
    ]

    response = client.post("/v1/items/batch", json={"items": items})

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (6, 4)
    assert [i["id"] for i in body["items"]] == valid
    assert [i["index"] for i in body["items"]] == [0, 4, 5, 6, 7, 8]
    errors = {e["index"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2, 3, 9]
    assert errors[1]["status"] == 422
    assert "Expected exactly one of `image` or `array`" in errors[1]["detail"]
    assert errors[1]["id"] == "batch-no-payload"
    assert errors[2]["status"] == 400
    assert (errors[3]["status"], errors[3]["id"]) == (422, None)
    assert errors[9]["status"] == 422
    assert "characters" in errors[9]["detail"]
    tokens = WriteToken.decode_all(body["token"])
    assert {t.partition for t in tokens} == {0, 1}, "the items landed on both partitions"
    for token in tokens:
        assert token.offset == max(
            i["offset"] for i in body["items"] if i["partition"] == token.partition
        )

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            patient_client.post, "/v1/lookup", json={"image": image, "k": 1, "after": body["token"]}
        )
        embed_pending(served.settings, served.encoder, served.node)
        found = waiting.result(timeout=30)

    assert found.status_code == 200, found.text
    assert found.json()["neighbors"][0]["id"] == valid[0]
    for item_id in valid:
        assert client.get(f"/v1/items/{item_id}").status_code == 200
    assert client.get("/v1/items/batch-no-payload").status_code == 404


def test_a_lookup_after_a_batch_token_waits_for_every_partition_it_names(
    client: TestClient, served: Served
) -> None:
    def write(item_id: str) -> dict[str, Any]:
        item = {"id": item_id, "image": b64(png(new_image(410)))}
        body: dict[str, Any] = client.post("/v1/items", json=item).json()
        return body

    applied = write("batch-wait-applied")
    embed_pending(served.settings, served.encoder, served.node)
    pending = next(
        body
        for n in range(100)
        if (body := write(f"batch-wait-{n}"))["partition"] != applied["partition"]
    )
    token = WriteToken.encode_all(
        [WriteToken.decode(applied["token"]), WriteToken.decode(pending["token"])]
    )

    response = client.post("/v1/lookup", json={"id": "digit-0001", "after": token})

    assert response.status_code == 503, response.text
    assert f"has not applied write {token}" in response.json()["detail"]
    embed_pending(served.settings, served.encoder, served.node)
    assert client.post("/v1/lookup", json={"id": "digit-0001", "after": token}).status_code == 200


def test_a_batch_over_the_configured_count_or_size_is_refused_naming_the_setting(
    served: Served,
) -> None:
    settings = served.settings.model_copy(
        update={"api_max_write_batch": 2, "api_max_write_batch_bytes": 2048}
    )
    item = {"id": "batch-limit", "array": [[0] * 8] * 8}
    with TestClient(create_app(settings, served.node)) as limited:
        many = limited.post("/v1/items/batch", json={"items": [item] * 3})
        large = limited.post(
            "/v1/items/batch", json={"items": [{**item, "metadata": {"pad": "x" * 3000}}]}
        )
        empty = limited.post("/v1/items/batch", json={"items": []})

    assert many.status_code == 422
    assert "SIMSTREAM_API_MAX_WRITE_BATCH)" in many.json()["detail"]
    assert "Received: 3 items" in many.json()["detail"]
    assert large.status_code == 413
    assert "SIMSTREAM_API_MAX_WRITE_BATCH_BYTES" in large.json()["detail"]
    assert empty.status_code == 422
