"""The cluster flip rule, in one node: it serves a new version only once every partition set
has a live owner with it caught up, keeps the old one until every node serves the new one,
and rolls back by the same rule. The other set's node is its record in the real Valkey."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from confluent_kafka import Producer

from model.registry import Encoder, Registry
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import EmbeddingRecord, ItemEvent
from tests.waiting import wait_for
from tests.workers.conftest import register_encoder
from workers.cluster.membership import GenerationState, Membership, NodeRecord
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services

EVENTS = 4


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    """Two partition sets; this node is index-0 (set 0: partitions 0 and 2)."""
    return Settings.load(
        **{
            **settings.model_dump(),
            "partition_sets": 2,
            "node_id": "index-0",
            "reindex_grace_s": 0.0,
        }
    )


@pytest.fixture
def membership(cluster_settings: Settings) -> Membership:
    client = redis.Redis.from_url(cluster_settings.celery_broker_url)
    return Membership(client, cluster_settings.topic_items, ttl_s=60)


def _marker(settings: Settings, version: str, partition: int) -> None:
    """The range marker an embed task writes after embedding ``partition``'s events."""
    producer = Producer(settings.kafka_config())
    topic = settings.embeddings_topic(version)
    ensure_topics(settings, [topic])
    marker = EmbeddingRecord.range_marker(0, EVENTS, version)
    producer.produce(topic, marker.encode(), partition=partition)
    assert producer.flush(10) == 0


def _embedded(settings: Settings, node: IndexNode, version: str) -> None:
    """``version``'s events of index-0's partitions embedded, and caught up there."""
    for partition in (0, 2):
        _marker(settings, version, partition)
    wait_for(lambda: node.record().caught_up(version), message=f"{version} caught up on index-0")


def _other_set(serving: str, caught_up: dict[str, bool]) -> NodeRecord:
    """index-1, the only node of set 1 (partitions 1 and 3)."""
    generations = {
        v: GenerationState("serving" if v == serving else "building", c)
        for v, c in caught_up.items()
    }
    return NodeRecord("index-1", "http://index-1", 1, (1, 3), serving, generations, True)


@pytest.fixture
def reindexing(cluster_settings: Settings, membership: Membership) -> Iterator[IndexNode]:
    """index-0 serving v1 (caught up) while v2, promoted, builds; index-1 serves v1."""
    settings = cluster_settings
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    producer = Producer(settings.kafka_config())
    for partition in range(settings.partitions):
        for i in range(EVENTS):
            event = ItemEvent.delete(f"d-{partition}-{i}")
            producer.produce(settings.topic_items, event.encode(), partition=partition)
    assert producer.flush(10) == 0
    register_encoder(settings, seed=0)
    membership.announce(_other_set("v1", {"v1": True}))
    node = IndexNode(NodeConfig.from_settings(settings), membership=membership)
    node.start()
    try:
        _embedded(settings, node, "v1")
        register_encoder(settings, seed=1)
        node.reconcile()
        yield node
    finally:
        node.stop()
        membership.withdraw("index-1")


def test_a_node_holds_and_announces_only_its_partition_sets_partitions(
    reindexing: IndexNode, membership: Membership
) -> None:
    node = reindexing
    [own] = [n for n in membership.nodes() if n.id == "index-0"]
    assert (own.partition_set, own.partitions) == (0, (0, 2))
    assert set(own.generations["v1"].applied) == {0, 2}
    shards = node.stats()["generations"]["v1"]["shards"]
    assert [s["partition"] for s in shards] == [0, 2]
    assert node.stats()["node"]["partitions"] == [0, 2]


def test_a_caught_up_node_keeps_serving_the_old_version_until_every_set_has_the_new_one(
    cluster_settings: Settings, reindexing: IndexNode, membership: Membership
) -> None:
    node = reindexing
    _embedded(cluster_settings, node, "v2")

    node.reconcile()

    assert node.current().version == "v1", "set 1 has not caught up on v2"
    [own] = [n for n in membership.nodes() if n.id == "index-0"]
    assert own.caught_up("v2") and own.serving == "v1"

    membership.announce(_other_set("v1", {"v1": True, "v2": True}))
    node.reconcile()

    assert node.current().version == "v2"
    assert node.record().generations["v1"].state == "retained"
    node.reconcile()  # the grace time (0) is over, but index-1 still serves v1
    assert "v1" in node.generations, "v1 dropped while a node still serves it"

    membership.announce(_other_set("v2", {"v1": True, "v2": True}))
    node.reconcile()
    assert "v1" not in node.generations


def test_a_rollback_flips_back_only_when_every_set_has_the_old_version_caught_up(
    cluster_settings: Settings, reindexing: IndexNode, membership: Membership
) -> None:
    node = reindexing
    membership.announce(_other_set("v2", {"v1": True, "v2": True}))
    _embedded(cluster_settings, node, "v2")
    node.reconcile()
    assert node.current().version == "v2"
    membership.announce(_other_set("v2", {"v1": False, "v2": True}))  # its v1 fell behind

    assert Registry(cluster_settings.registry_dir).rollback() == "v1"
    node.reconcile()  # reopens v1 (dropped: the grace time is 0 and every node served v2)
    wait_for(lambda: node.record().caught_up("v1"), message="v1 caught up on index-0 again")
    node.reconcile()
    assert node.current().version == "v2", "set 1 has not caught up on v1 again"

    membership.announce(_other_set("v2", {"v1": True, "v2": True}))
    node.reconcile()
    assert node.current().version == "v1"


def test_a_node_stopped_cleanly_withdraws_its_record_at_once(
    reindexing: IndexNode, membership: Membership
) -> None:
    assert "index-0" in [n.id for n in membership.nodes()]
    reindexing.stop()
    assert [n.id for n in membership.nodes()] == ["index-1"]


class _SlowRegistry(Registry):
    """A registry whose loads of one version take ``seconds`` (a cold process loading a
    model on a busy machine); ``loading`` is set when such a load starts."""

    def __init__(self, root: object, slow: str, seconds: float) -> None:
        super().__init__(root)  # type: ignore[arg-type]
        self.slow, self.seconds, self.loading = slow, seconds, threading.Event()

    def load(self, version: str | None = None) -> Encoder:
        if version == self.slow:
            self.loading.set()
            time.sleep(self.seconds)
        return super().load(version)


def test_a_node_loading_the_new_model_for_its_flip_stays_announced_throughout(
    cluster_settings: Settings,
) -> None:
    """Loading the flipped-to version's model takes 3 record lifetimes: the node's record
    never expires meanwhile (its set would have no replica: the router would refuse
    every query), and the flip still happens once the model is loaded."""
    settings = Settings.load(
        **{**cluster_settings.model_dump(), "node_heartbeat_s": 0.2, "node_ttl_s": 1.0}
    )
    client = redis.Redis.from_url(settings.celery_broker_url)
    membership = Membership(client, settings.topic_items, ttl_s=settings.node_ttl_s)
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    register_encoder(settings, seed=0)
    registry = _SlowRegistry(settings.registry_dir, slow="v2", seconds=3.0)
    other = Membership(client, settings.topic_items, ttl_s=60)
    other.announce(_other_set("v1", {"v1": True, "v2": True}))
    node = IndexNode(NodeConfig.from_settings(settings), registry=registry, membership=membership)
    node.start()
    try:
        _embedded(settings, node, "v1")
        register_encoder(settings, seed=1)
        for partition in (0, 2):
            _marker(settings, "v2", partition)
        missing = 0
        deadline = time.monotonic() + 30
        while node.current().version != "v2" and time.monotonic() < deadline:
            missing += "index-0" not in [n.id for n in membership.nodes()]
            time.sleep(0.05)
        assert registry.loading.is_set(), "the slow load never ran"
        assert node.current().version == "v2"
        assert missing == 0, f"the record was absent at {missing} polls during the flip"
    finally:
        node.stop()
        other.withdraw("index-1")
