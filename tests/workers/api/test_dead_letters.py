"""`GET /v1/admin/dead-letters` and `/count`: the dead-letter topic, filtered and paged,
each source position once, admin scope only.

The letters are written by the workers' own range embedder over invalid events,
each range embedded twice (as after a worker killed before its task was
acknowledged), so the topic holds every letter twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.stack.local import LocalStack
from simstream.wire import ItemEvent, VectorPayload
from tests.workers.api.conftest import Served, api_settings
from tests.workers.api.test_operations import ADMIN, READ, bearer
from tests.workers.ingest.dead_letters import read_dead_letters
from workers.api import create_app
from workers.ingest.config import IngestConfig
from workers.ingest.embedder import RangeEmbedder

pytestmark = pytest.mark.services

#: Per source partition, the invalid events published there, in order.
BAD = {
    0: [b"junk", ItemEvent.upsert("vec", VectorPayload.from_values([1.0] * 4)).encode(), b"x"],
    1: [b"NOPE", b"still not an event"],
}


@pytest.fixture(scope="module")
def letters_settings(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Own topics on the session stack, holding dead letters written by the range embedder."""
    return api_settings(
        stack.settings,
        Path(tmp_path_factory.mktemp("dead-letters")),
        api_read_tokens=READ,
        api_admin_tokens=ADMIN,
    )


@pytest.fixture(scope="module")
def dead_lettered(served: Served, letters_settings: Settings) -> Settings:
    settings = letters_settings
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    producer = Producer(settings.kafka_config())
    for partition, values in BAD.items():
        for value in values:
            producer.produce(settings.topic_items, value=value, partition=partition)
    assert producer.flush(10) == 0
    embedder = RangeEmbedder(IngestConfig.from_settings(settings), served.encoder)
    try:
        for _ in range(2):
            for partition, values in BAD.items():
                embedder.run(settings.topic_items, partition, 0, len(values), served.version)
    finally:
        embedder.close()
    return settings


@pytest.fixture(scope="module")
def admin(served: Served, dead_lettered: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(dead_lettered, served.node)) as client:
        yield client


def letters(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/admin/dead-letters", params=params, headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_dead_letters_route_lists_every_letter_with_its_reason_and_source(
    admin: TestClient, dead_lettered: Settings
) -> None:
    body = letters(admin)

    found = [(x["partition"], x["offset"], x["reason"]) for x in body["dead_letters"]]
    assert found == [
        (0, 0, "bad_magic"),
        (0, 1, "bad_payload"),
        (0, 2, "bad_magic"),
        (1, 0, "bad_magic"),
        (1, 1, "bad_magic"),
    ]
    assert body["next_cursor"] is None
    first = body["dead_letters"][0]
    assert first["source_topic"] == dead_lettered.topic_items
    assert (first["id"], first["start"], first["end"]) == ("p0.o0", 0, 1)
    assert first["raw_prefix_hex"] == b"junk".hex() and first["raw_stored_bytes"] == 4


def test_the_count_route_counts_each_source_position_once_and_the_records_naming_it(
    admin: TestClient, dead_lettered: Settings
) -> None:
    def count(**params: Any) -> dict[str, Any]:
        response = admin.get("/v1/admin/dead-letters/count", params=params, headers=bearer(ADMIN))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert len(read_dead_letters(dead_lettered)) == 10
    assert count() == {
        "dead_letters": 5,
        "records": 10,
        "by_reason": {"bad_magic": 4, "bad_payload": 1},
    }
    assert count(partition=1) == {"dead_letters": 2, "records": 4, "by_reason": {"bad_magic": 2}}
    assert admin.get("/v1/admin/dead-letters/count", headers=bearer(READ)).status_code == 403


def test_the_dead_letters_route_filters_by_reason_partition_and_source_offsets(
    admin: TestClient,
) -> None:
    def ids(**params: Any) -> list[str]:
        return [x["id"] for x in letters(admin, **params)["dead_letters"]]

    assert ids(reason="bad_magic") == ["p0.o0", "p0.o2", "p1.o0", "p1.o1"]
    assert ids(partition=1) == ["p1.o0", "p1.o1"]
    assert ids(partition=0, from_offset=1, to_offset=1) == ["p0.o1"]
    assert ids(reason="range_failed") == []


def test_the_dead_letters_route_pages_with_a_cursor_until_none_is_left(admin: TestClient) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        body = letters(admin, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [x["id"] for x in body["dead_letters"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p0.o0", "p0.o1", "p0.o2", "p1.o0", "p1.o1"]


def test_the_dead_letters_route_needs_the_admin_scope_and_a_well_formed_cursor(
    admin: TestClient,
) -> None:
    read = admin.get("/v1/admin/dead-letters", headers=bearer(READ))
    bad = admin.get("/v1/admin/dead-letters?cursor=page-2", headers=bearer(ADMIN))

    assert read.status_code == 403
    assert bad.status_code == 400
    assert "Expected p<partition>.o<offset>. Received: 'page-2'" in bad.json()["detail"]
