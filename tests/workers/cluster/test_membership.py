"""Node records in the real Valkey: announced with an expiry, withdrawn, listed by topic."""

from __future__ import annotations

import redis

from simstream.settings import Settings
from tests.waiting import wait_for
from workers.cluster.membership import GenerationState, Membership, NodeRecord


def _record(node_id: str, serving: str | None = "v1", **changes: object) -> NodeRecord:
    values: dict[str, object] = {
        "id": node_id,
        "url": f"http://{node_id}:8000",
        "partition_set": 1,
        "partitions": (1, 3),
        "serving": serving,
        "generations": {
            "v1": GenerationState("serving", True, {1: 40, 3: 12}, live=51),
            "v2": GenerationState("building", False, {1: 7}),
        },
        "ready": True,
        "updated_at": 1234.5,
    }
    values.update(changes)
    return NodeRecord(**values)  # type: ignore[arg-type]


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.celery_broker_url)


def test_an_announced_record_is_listed_exactly_as_announced(settings: Settings) -> None:
    membership = Membership(_client(settings), settings.topic_items)
    record = _record("index-1")
    assert membership.announce(record)
    assert membership.nodes() == [record]


def test_a_withdrawn_record_is_gone_at_once(settings: Settings) -> None:
    membership = Membership(_client(settings), settings.topic_items)
    membership.announce(_record("index-0", partition_set=0, partitions=(0, 2)))
    membership.announce(_record("index-1"))
    membership.withdraw("index-0")
    assert [n.id for n in membership.nodes()] == ["index-1"]


def test_a_record_not_announced_again_expires_after_its_ttl(settings: Settings) -> None:
    client = _client(settings)
    membership = Membership(client, settings.topic_items, ttl_s=0.3)
    membership.announce(_record("index-1"))
    assert 0 < client.pttl(membership.key("index-1")) <= 300
    wait_for(lambda: membership.nodes() == [], timeout_s=5, message="the record to expire")


def test_records_of_another_topic_and_unparsable_values_are_not_listed(
    settings: Settings,
) -> None:
    client = _client(settings)
    membership = Membership(client, settings.topic_items)
    other = Membership(client, settings.topic_items + "-other")
    other.announce(_record("elsewhere"))
    client.set(membership.key("broken"), b"{not json")
    client.set(membership.key("half"), b'{"id": "half"}')
    membership.announce(_record("index-1"))
    assert [n.id for n in membership.nodes()] == ["index-1"]


def test_topics_with_glob_characters_list_only_their_own_records(settings: Settings) -> None:
    client = _client(settings)
    starred = Membership(client, settings.topic_items + "*")
    plain = Membership(client, settings.topic_items + "x")
    plain.announce(_record("plain"))
    starred.announce(_record("starred"))
    assert [n.id for n in starred.nodes()] == ["starred"]


def test_redis_down_lists_no_node_and_announcing_reports_failure(settings: Settings) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    membership = Membership(dead, settings.topic_items)
    assert membership.announce(_record("index-1")) is False
    assert membership.nodes() == []
