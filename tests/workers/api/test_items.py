"""Writes through the API, read-your-writes with tokens, item reads, images and samples."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from simstream.wire import ImagePayload, WriteToken
from tests.workers.api.conftest import Served, embed_pending, png

pytestmark = pytest.mark.services


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_image(seed: int) -> np.ndarray:
    """An 8×8 image unlike any digit (random pixels)."""
    return np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)


def test_an_upsert_is_published_and_answers_a_write_token(
    client: TestClient, served: Served
) -> None:
    response = client.post(
        "/v1/items",
        json={"id": "written-1", "image": b64(png(new_image(1))), "label": "7"},
    )

    assert response.status_code == 202, response.text
    body = response.json()
    token = WriteToken.decode(body["token"])
    assert (token.topic, token.partition, token.offset) == (
        served.settings.topic_items,
        body["partition"],
        body["offset"],
    )
    assert body["op"] == "upsert"


def test_a_posted_image_is_decoded_once_to_be_checked_and_published(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png(new_image(6))
    text = b64(data)
    decoded: list[str] = []
    parsed: list[bytes] = []
    pixels: list[bytes] = []
    b64decode, post_init, to_array = (
        base64.b64decode,
        ImagePayload.__post_init__,
        ImagePayload.to_array,
    )

    def spy_b64decode(s: str, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(s)
        return b64decode(s, *args, **kwargs)

    def spy_post_init(self: ImagePayload) -> None:
        parsed.append(self.data)
        post_init(self)

    def spy_to_array(self: ImagePayload, *args: Any, **kwargs: Any) -> np.ndarray:
        pixels.append(self.data)
        return to_array(self, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", spy_b64decode)
    monkeypatch.setattr(ImagePayload, "__post_init__", spy_post_init)
    monkeypatch.setattr(ImagePayload, "to_array", spy_to_array)

    response = client.post("/v1/items", json={"id": "decoded-once", "image": text})

    assert response.status_code == 202, response.text
    assert (decoded.count(text), parsed.count(data), pixels.count(data)) == (1, 1, 1)


def test_a_lookup_after_a_token_waits_for_the_write_and_then_finds_the_item(
    client: TestClient, patient_client: TestClient, served: Served
) -> None:
    image = b64(png(new_image(2)))
    token = client.post("/v1/items", json={"id": "written-2", "image": image, "label": "x"}).json()[
        "token"
    ]

    not_yet = client.post("/v1/lookup", json={"image": image, "k": 1, "after": token})

    assert not_yet.status_code == 503
    assert int(not_yet.headers["Retry-After"]) >= 1
    assert f"has not applied write {token}" in not_yet.json()["detail"]

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            patient_client.post, "/v1/lookup", json={"image": image, "k": 1, "after": token}
        )
        embed_pending(served.settings, served.encoder, served.node)
        found = waiting.result(timeout=30)

    assert found.status_code == 200, found.text
    assert found.json()["neighbors"][0]["id"] == "written-2"
    assert found.json()["neighbors"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    item = client.get("/v1/items/written-2").json()
    assert (item["label"], item["model_version"]) == ("x", served.version)


def test_an_applied_write_moves_the_log_position_so_cached_answers_are_recomputed(
    client: TestClient, served: Served
) -> None:
    query = {"id": "digit-0090", "k": 4}
    assert client.post("/v1/lookup", json=query).headers["X-Cache"] in ("hit", "miss")
    assert client.post("/v1/lookup", json=query).headers["X-Cache"] == "hit"
    epoch = served.node.current().index.epoch

    token = client.post(
        "/v1/items", json={"id": "moves-it", "image": b64(png(new_image(5)))}
    ).json()["token"]
    embed_pending(served.settings, served.encoder, served.node)
    after = client.post("/v1/lookup", json={**query, "after": token})

    assert after.headers["X-Cache"] == "miss"
    assert after.json()["index_epoch"] > epoch


def test_a_delete_is_published_and_the_item_is_gone_after_its_token(
    client: TestClient, served: Served
) -> None:
    client.post("/v1/items", json={"id": "doomed", "image": b64(png(new_image(3)))})
    deleted = client.delete("/v1/items/doomed")

    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["op"] == "delete"
    embed_pending(served.settings, served.encoder, served.node)
    lookup = client.post(
        "/v1/lookup",
        json={"image": b64(png(new_image(3))), "k": 3, "after": deleted.json()["token"]},
    )
    assert lookup.status_code == 200
    assert "doomed" not in [n["id"] for n in lookup.json()["neighbors"]]
    assert client.get("/v1/items/doomed").status_code == 404


def test_an_item_is_read_from_the_serving_index_with_its_embedding_on_request(
    client: TestClient, served: Served
) -> None:
    plain = client.get("/v1/items/digit-0024")
    with_vector = client.get("/v1/items/digit-0024", params={"vector": "true"})

    assert plain.status_code == with_vector.status_code == 200
    body = plain.json()
    assert body["label"] == "2"
    assert body["metadata"] == {"parity": "even", "n": 24}
    assert body["model_version"] == served.version
    assert body["vector"] is None
    assert len(with_vector.json()["vector"]) == served.node.current().dim


def test_an_items_image_is_read_back_from_the_items_topic(
    client: TestClient, served: Served
) -> None:
    response = client.get("/v1/items/digit-0005/image")
    again = client.get(
        "/v1/items/digit-0005/image", headers={"If-None-Match": response.headers["ETag"]}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == served.digits.pngs[served.digits.index_of("digit-0005")]
    assert again.status_code == 304


def test_an_array_payload_is_published_and_its_image_rendered_as_png(
    client: TestClient, served: Served
) -> None:
    pixels = new_image(4)
    token = client.post(
        "/v1/items", json={"id": "as-array", "array": pixels.tolist(), "label": "a"}
    ).json()["token"]
    embed_pending(served.settings, served.encoder, served.node)
    assert client.post("/v1/lookup", json={"id": "as-array", "k": 1, "after": token}).is_success

    image = client.get("/v1/items/as-array/image")

    assert image.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.content))), pixels)


def test_an_id_ending_in_image_is_fetched_with_its_slash_encoded_and_its_image_too(
    client: TestClient, served: Served
) -> None:
    data = png(new_image(7))
    token = client.post("/v1/items", json={"id": "cat/image", "image": b64(data)}).json()["token"]
    embed_pending(served.settings, served.encoder, served.node)
    assert client.post("/v1/lookup", json={"id": "cat/image", "k": 1, "after": token}).is_success

    item = client.get("/v1/items/cat%2Fimage")
    image = client.get("/v1/items/cat%2Fimage/image")

    assert item.status_code == 200, item.text
    assert (item.json()["id"], item.headers["content-type"]) == ("cat/image", "application/json")
    assert image.status_code == 200, image.text
    assert image.content == data


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"id": "x"}, "Expected exactly one of `image` or `array`", id="no payload"),
        pytest.param(
            {"id": "x", "array": [[0.5, 0.25], [1, 2]]},
            "Expected integers 0..255 for an image model",
            id="floats for an image model",
        ),
        pytest.param(
            {"id": "x", "image": b64(b"not an image")},
            "Expected a PNG or JPEG image",
            id="bad image",
        ),
        pytest.param(
            {"id": "x" * 300, "array": [[1, 2], [3, 4]]},
            "Expected an id of at most 256 characters. Received: 300 characters",
            id="id too long",
        ),
        pytest.param(
            {"id": "x", "array": [[1]], "metadata": {"nested": {"a": 1}}},
            "Invalid value for `metadata.nested",
            id="nested metadata",
        ),
    ],
)
def test_an_upsert_that_cannot_be_embedded_or_published_is_refused(
    client: TestClient, body: dict[str, object], message: str
) -> None:
    response = client.post("/v1/items", json=body)

    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["detail"]


def test_a_random_sample_answers_distinct_indexed_items(client: TestClient, served: Served) -> None:
    response = client.get("/v1/items", params={"sample": 5})

    assert response.status_code == 200, response.text
    items = response.json()["items"]
    ids = [item["id"] for item in items]
    assert 1 <= len(ids) <= 5
    assert len(set(ids)) == len(ids)
    # Ids are path segments: one with a slash (another test's "cat/image") is encoded.
    assert all(client.get(f"/v1/items/{quote(i, safe='')}").status_code == 200 for i in ids)
    assert response.json()["model_version"] == served.version
