"""The index node's flip decision: a re-index with a dead-lettered range does not flip."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from simstream import heap
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import EmbeddingRecord, ItemEvent
from tests.waiting import wait_for
from tests.workers.conftest import register_encoder
from workers.ingest.config import IngestConfig
from workers.ingest.deadletter import dead_letter_range
from workers.node.config import NodeConfig
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The test's settings with the overrides it is parametrized with (``indirect``)."""
    return Settings.load(**{**settings.model_dump(), **getattr(request, "param", {})})


@pytest.fixture
def reindexing(settings: Settings) -> Iterator[tuple[IndexNode, IndexGeneration]]:
    """A node serving v1 while v2, promoted, builds over 4 events of items partition 0."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    producer = Producer(settings.kafka_config())
    for i in range(4):
        producer.produce(settings.topic_items, ItemEvent.delete(f"d-{i}").encode(), partition=0)
    assert producer.flush(10) == 0
    register_encoder(settings, seed=0)
    node = IndexNode(NodeConfig.from_settings(settings))
    node.start()
    try:
        assert node.current().version == "v1"
        register_encoder(settings, seed=1)
        node.reconcile()
        building = node.generations["v2"]
        ensure_topics(settings, [settings.embeddings_topic("v2")])
        yield node, building
    finally:
        node.stop()


def _marker(settings: Settings, start: int, end: int) -> None:
    """A range marker of v2, as an embed task writes it after embedding the range."""
    producer = Producer(settings.kafka_config())
    marker = EmbeddingRecord.range_marker(start, end, "v2")
    producer.produce(settings.embeddings_topic("v2"), marker.encode(), partition=0)
    assert producer.flush(10) == 0


def _accounted_for(generation: IndexGeneration, end: int) -> None:
    wait_for(
        lambda: generation.watermarks[0].next == end and generation.source_end.get(0) == end,
        message=f"v2 accounted for offsets below {end} and measured its lag",
    )


def test_a_reindex_with_a_dead_lettered_range_does_not_flip_until_it_is_replayed(
    settings: Settings, reindexing: tuple[IndexNode, IndexGeneration]
) -> None:
    node, building = reindexing
    _marker(settings, 0, 2)
    config = IngestConfig.from_settings(settings)
    dead_letter_range(config, settings.topic_items, 0, 2, 4, "v2", "embedding failed")
    _accounted_for(building, 4)

    node.reconcile()

    assert node.current().version == "v1"
    progress = node.reindex_progress()
    assert progress is not None and progress["source_lag"] == 0
    assert progress["dead_lettered_ranges"] == 1
    _marker(settings, 2, 4)  # the range replayed and embedded
    wait_for(lambda: not building.dead_lettered_ranges(), message="the replay seen")
    node.reconcile()
    assert node.current().version == "v2"


@pytest.mark.parametrize(
    "settings", [{"reindex_allow_dead_letters": True}], indirect=True, ids=["allowed"]
)
def test_an_operator_may_let_a_reindex_flip_over_dead_lettered_ranges(
    settings: Settings, reindexing: tuple[IndexNode, IndexGeneration]
) -> None:
    node, building = reindexing
    config = IngestConfig.from_settings(settings)
    dead_letter_range(config, settings.topic_items, 0, 0, 4, "v2", "embedding failed")
    _accounted_for(building, 4)

    node.reconcile()

    assert node.current().version == "v2"


def test_the_heap_is_settled_once_for_each_generation_that_catches_up(
    settings: Settings,
    reindexing: tuple[IndexNode, IndexGeneration],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, building = reindexing
    settled: list[str] = []
    kinds: list[bool] = []

    def settle(reason: str, *, full: bool = True) -> float:
        settled.append(reason)
        kinds.append(full)
        return 0.0

    monkeypatch.setattr(heap, "settle", settle)
    node._settled_full_at = time.monotonic()  # the load's full settle happened
    _marker(settings, 0, 4)
    _accounted_for(building, 4)
    wait_for(lambda: all(g.caught_up for g in node.generations.values()), message="caught up")

    node.reconcile()
    before = list(settled)
    for _ in range(3):
        node.reconcile()

    # v1 may have caught up (and been settled) before the patch; each once, then never again
    assert any("v2" in reason for reason in before), before
    assert settled == before and len(settled) <= 2, settled
    assert not any(kinds), "a settle walked every object while v1 was being served"
