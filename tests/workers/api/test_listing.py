"""GET /v1/items by pages and GET /v1/items/count, against the real node and broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.workers.api.conftest import EMBEDDING_DIM, Served, embed_pending, png
from tests.workers.api.test_items import b64, new_image

pytestmark = pytest.mark.services


def scan(
    client: TestClient, limit: int, between: Callable[[int], None] | None = None, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every item page by page (calling ``between(page number)`` after each page); the
    items and the number of pages."""
    items: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/items", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        if between is not None:
            between(pages)


def test_pages_list_every_item_exactly_once_while_new_items_are_inserted(
    client: TestClient, served: Served
) -> None:
    before = {item["id"] for item in scan(client, 1000)[0]}
    inserted: list[str] = []

    def insert(page: int) -> None:
        """Between pages, index one id sorting before the cursor and one after every id."""
        if page > 6:
            return
        batch = [f"aaa-listed-{page}", f"zzz-listed-{page}"]
        items = [{"id": i, "image": b64(png(new_image(300 + page)))} for i in batch]
        token = client.post("/v1/items/batch", json={"items": items}).json()["token"]
        embed_pending(served.settings, served.encoder, served.node)
        assert client.get("/v1/items/count", params={"after": token}).status_code == 200
        inserted.extend(batch)

    items, pages = scan(client, 7, insert)

    ids = [item["id"] for item in items]
    assert pages > 6
    assert ids == sorted(set(ids)), "every item once, in id order"
    assert set(ids) == before | {i for i in inserted if i.startswith("zzz")}
    assert {item["model_version"] for item in items} == {served.version}


def test_a_filtered_listing_holds_exactly_the_matching_items_and_the_count_agrees(
    client: TestClient,
) -> None:
    everything, _ = scan(client, 1000)
    flt = {"labels": ["3", "4"], "metadata": {"parity": "even"}}

    items, _ = scan(client, 5, filter=json.dumps(flt))
    count = client.get("/v1/items/count", params={"filter": json.dumps(flt)})

    expected = [
        i["id"]
        for i in everything
        if i["label"] in ("3", "4") and i["metadata"].get("parity") == "even"
    ]
    assert [i["id"] for i in items] == expected
    assert len(expected) >= 12
    assert count.status_code == 200, count.text
    assert count.json()["count"] == len(expected)
    assert client.get("/v1/items/count").json()["count"] == len(everything)


def test_a_page_carries_the_stored_embeddings_on_request(client: TestClient) -> None:
    body = client.get("/v1/items", params={"limit": 2, "vector": "true"}).json()

    assert [len(item["vector"]) for item in body["items"]] == [EMBEDDING_DIM] * 2
    assert client.get("/v1/items", params={"limit": 2}).json()["items"][0]["vector"] is None


@pytest.mark.parametrize("cursor", ["nonsense", "c1.", "c1.!!!", "c1.gA", "c1.YQ=="])
def test_a_cursor_the_api_did_not_write_is_a_400(client: TestClient, cursor: str) -> None:
    response = client.get("/v1/items", params={"cursor": cursor})

    assert response.status_code == 400
    assert "Invalid value for `cursor`" in response.json()["detail"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Invalid JSON"),
        ('{"labels": "3"}', "`filter.labels`"),
        ('{"x": 1}', "filter.x"),
    ],
)
def test_an_invalid_filter_parameter_is_a_422_naming_it(
    client: TestClient, text: str, message: str
) -> None:
    for path in ("/v1/items", "/v1/items/count"):
        response = client.get(path, params={"filter": text})

        assert response.status_code == 422, response.text
        assert message in response.json()["detail"]


def test_a_sample_is_still_offered_but_not_beside_a_cursor(client: TestClient) -> None:
    sample = client.get("/v1/items", params={"sample": 3})
    first = client.get("/v1/items", params={"limit": 1}).json()
    both = client.get("/v1/items", params={"sample": 3, "cursor": first["next_cursor"]})

    assert sample.status_code == 200
    assert len(sample.json()["items"]) == 3
    assert both.status_code == 400


def test_an_item_named_count_is_read_with_its_name_percent_encoded(
    client: TestClient, served: Served
) -> None:
    token = client.post("/v1/items", json={"id": "count", "image": b64(png(new_image(77)))}).json()[
        "token"
    ]
    embed_pending(served.settings, served.encoder, served.node)

    item = client.get("/v1/items/%63ount", params={"after": token})
    total = client.get("/v1/items/count", params={"after": token})

    assert item.status_code == 200, item.text
    assert item.json()["id"] == "count"
    assert total.json()["count"] == len(served.node.current().index)
