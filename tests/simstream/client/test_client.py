"""`simstream.client.Client` against a real server: every route, waits, retries, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from simstream.client import (
    ApiAuthError,
    ApiBusyError,
    ApiConnectionError,
    ApiNotFoundError,
    ApiRequestError,
    Client,
    RetryPolicy,
)
from simstream.stack.process import free_port
from tests.simstream.client.conftest import ADMIN_TOKEN, READ_TOKEN, Server
from tests.workers.api.conftest import EMBEDDING_DIM, embed_pending, png

pytestmark = pytest.mark.services


@pytest.fixture
def api(server: Server) -> Iterator[Client]:
    with Client(server.url, token=ADMIN_TOKEN) as client:
        yield client


def new_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)


def embed_later(server: Server, delay_s: float) -> threading.Thread:
    """Embed what is pending after ``delay_s`` (the embed workers, emulated), in a thread."""
    served = server.served

    def run() -> None:
        time.sleep(delay_s)  # the write must still be invisible when the client first asks
        embed_pending(served.settings, served.encoder, served.node)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def applied(server: Server, written: dict[str, Any]) -> bool:
    """Whether the serving generation has applied a write (by its partition and offset)."""
    return server.served.node.current().visible(written["partition"], written["offset"])


def test_an_upsert_with_wait_returns_once_the_item_is_searchable(
    api: Client, server: Server
) -> None:
    image = png(new_image(1))
    embedding = embed_later(server, 2.5)  # past the API's 2 s wait: one 503 is retried
    try:
        written = api.upsert("client-1", image=image, label="c", metadata={"n": 1}, wait=True)
        assert applied(server, written), "returned before the write was applied"
    finally:
        embedding.join()

    hits = api.lookup(image=image, k=1)
    assert hits["neighbors"][0]["id"] == "client-1"
    assert api.get_item("client-1")["label"] == "c"
    assert written["token"].startswith(server.served.settings.topic_items)
    assert api.item_image("client-1") == image


def test_a_batch_with_wait_makes_every_valid_item_searchable_and_reports_the_rest(
    api: Client, server: Server
) -> None:
    items = [
        {"id": f"client-batch-{n}", "array": new_image(10 + n), "label": "b"} for n in range(4)
    ]
    items.insert(2, {"id": "client-batch-bad", "image": b"not an image"})
    embedding = embed_later(server, 0.5)
    try:
        answer = api.upsert_batch(items, wait=True)
        assert all(applied(server, item) for item in answer["items"])
    finally:
        embedding.join()

    assert (answer["accepted"], answer["rejected"]) == (4, 1)
    assert answer["errors"][0]["index"] == 2
    assert api.count_items(filter={"labels": ["b"]}) == 4
    assert [i["id"] for i in api.iter_items(limit=3, filter={"labels": ["b"]})] == [
        f"client-batch-{n}" for n in range(4)
    ]


def test_iterating_items_lists_each_once_and_agrees_with_the_count(api: Client) -> None:
    ids = [item["id"] for item in api.iter_items(limit=17)]

    assert ids == sorted(set(ids))
    assert len(ids) == api.count_items()
    page = api.list_items(limit=2, vector=True)
    assert [len(i["vector"]) for i in page["items"]] == [EMBEDDING_DIM] * 2
    assert len(api.sample_items(3)["items"]) == 3


def test_lookups_batches_and_classification_answer_through_the_client(
    api: Client, server: Server
) -> None:
    digits = server.served.digits
    vector = api.get_item(digits.ids[0], vector=True)["vector"]

    by_vector = api.lookup(vector=np.asarray(vector), k=3, filter={"labels": [digits.labels[0]]})
    batch = api.lookup_batch([{"id": digits.ids[1]}, {"image": png(digits.images[2])}], k=2)
    label = api.classify(image=png(digits.images[3]), k=5)
    by_centroid = api.classify(id=digits.ids[3], k=5, threshold=10.0, vote="centroid")

    assert by_vector["neighbors"][0]["id"] == digits.ids[0]
    assert len(batch["results"]) == 2
    assert batch["results"][1]["neighbors"][0]["id"] == digits.ids[2]
    assert "label" in label
    assert by_centroid["vote"] == "centroid"
    assert by_centroid["votes"][0]["centroid_distance"] is not None


def test_a_delete_with_wait_returns_once_the_item_is_gone(api: Client, server: Server) -> None:
    written = api.upsert("client-gone", array=new_image(30))
    embed_pending(server.served.settings, server.served.encoder, server.served.node)
    api.count_items(after=written["token"])
    embedding = embed_later(server, 0.5)
    try:
        deleted = api.delete("client-gone", wait=True)
        assert applied(server, deleted)
    finally:
        embedding.join()

    with pytest.raises(ApiNotFoundError):
        api.get_item("client-gone")


def test_operations_and_health_routes_answer(api: Client) -> None:
    assert api.health() == {"status": "ok"}
    assert api.ready()["ready"] is True
    assert api.stats()["items"] == api.count_items()
    assert api.models()["active"]
    assert "simstream_" in api.metrics()
    assert isinstance(api.retrain_runs(limit=5)["runs"], list)
    assert isinstance(api.dead_letters(limit=5)["dead_letters"], list)


def test_an_error_answer_raises_with_the_servers_status_detail_code_and_request_id(
    api: Client, server: Server
) -> None:
    with pytest.raises(ApiNotFoundError) as missing:
        api.get_item("client-no-such-item")
    raw = httpx.get(
        f"{server.url}/v1/items/client-no-such-item",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()

    error = missing.value
    assert error.status == 404
    assert "client-no-such-item" in error.detail
    assert error.detail == raw["detail"]
    assert error.code == raw.get("code")
    assert error.request_id is not None
    assert len(error.request_id) == 32
    with pytest.raises(ApiRequestError) as invalid:
        api.lookup(vector=[1.0], k=0)
    assert invalid.value.status == 422


def test_a_read_token_cannot_write_and_no_token_cannot_read(server: Server) -> None:
    with Client(server.url, token=READ_TOKEN) as reader, Client(server.url) as anonymous:
        assert reader.count_items() > 0
        with pytest.raises(ApiAuthError) as forbidden:
            reader.upsert("client-forbidden", array=new_image(3))
        with pytest.raises(ApiAuthError) as unauthorised:
            anonymous.count_items()

    assert forbidden.value.status == 403
    assert unauthorised.value.status == 401


class Busy(httpx.BaseTransport):
    """Fault injection: answers 429 with Retry-After to the first ``busy`` requests."""

    def __init__(self, busy: int, retry_after: str) -> None:
        self.real = httpx.HTTPTransport()
        self.busy = busy
        self.retry_after = retry_after
        self.seen: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(time.monotonic())
        if len(self.seen) <= self.busy:
            body = {"detail": "Too many requests", "request_id": "0" * 32}
            return httpx.Response(429, headers={"Retry-After": self.retry_after}, json=body)
        return self.real.handle_request(request)


def test_a_429_is_retried_after_its_retry_after(server: Server) -> None:
    busy = Busy(1, "1")
    http = httpx.Client(
        base_url=server.url, transport=busy, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with Client(http=http, retry=RetryPolicy(backoff_s=0.01)) as client:
        count = client.count_items()

    assert count > 0
    assert len(busy.seen) == 2
    assert busy.seen[1] - busy.seen[0] >= 1.0


def test_a_429_that_lasts_raises_after_the_configured_attempts(server: Server) -> None:
    busy = Busy(10, "0")
    http = httpx.Client(base_url=server.url, transport=busy)
    retry = RetryPolicy(attempts=3, backoff_s=0.01)
    with Client(http=http, retry=retry) as client, pytest.raises(ApiBusyError) as error:
        client.health()

    assert len(busy.seen) == 3
    assert error.value.status == 429
    assert error.value.retry_after_s == 0.0


def test_an_unreachable_server_raises_a_connection_error_after_retries() -> None:
    with (
        Client(
            f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(attempts=2, backoff_s=0.01)
        ) as client,
        pytest.raises(ApiConnectionError) as error,
    ):
        client.health()

    assert error.value.status is None
    assert "/healthz" in str(error.value)
