"""The source log is not what the snapshot believes: a generation rebuilds from the log.

A second ``make run`` starts a fresh in-memory broker while snapshots from the
first run stay in the data directory: the new embeddings log restarts at low
offsets, has a new topic id, and holds none of the snapshot's items. Exactly
what the new log holds must end up searchable, and watermarks must claim no
write the new log has not accounted for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from prometheus_client import REGISTRY

from simstream.settings import Settings
from simstream.stack.local import LocalStack, local_stack_settings
from simstream.wire import EmbeddingRecord, Op
from tests.conftest import unique_settings
from tests.waiting import wait_for
from workers.node.config import NodeConfig
from workers.node.generation import IndexGeneration

pytestmark = pytest.mark.services

VERSION = "v1"
DIM = 8


def _publish(settings: Settings, ids: list[str]) -> dict[int, int]:
    """Upserts of ``ids`` into the embeddings log, one range marker per partition.

    Returns:
        Per partition, the source offset after the last upsert (the marker's end).
    """
    producer = Producer(settings.kafka_config())
    topic = settings.embeddings_topic(VERSION)
    ends: dict[int, int] = {}
    for i, item_id in enumerate(ids):
        p = i % settings.partitions
        ends[p] = ends.get(p, 0) + 1
        vector = np.random.default_rng(i).normal(size=DIM).astype(np.float32)
        record = EmbeddingRecord(
            op=Op.UPSERT,
            item_id=item_id,
            source_offset=ends[p] - 1,
            model_version=VERSION,
            vector=vector,
        )
        producer.produce(topic, record.encode(), item_id.encode(), partition=p)
    for p, end in ends.items():
        producer.produce(topic, EmbeddingRecord.range_marker(0, end, VERSION).encode(), partition=p)
    assert producer.flush(10) == 0
    return ends


def _live_ids(generation: IndexGeneration, candidates: list[str]) -> set[str]:
    return {i for i in candidates if generation.index.get(i) is not None}


def _mismatches(where: str) -> float:
    labels = {"generation": VERSION, "where": where}
    return REGISTRY.get_sample_value("simstream_index_log_mismatch_total", labels) or 0.0


@pytest.fixture
def first_run(settings: Settings) -> Iterator[Settings]:
    """A generation that applied 40 items on the session's broker and snapshotted them."""
    generation = IndexGeneration(NodeConfig.from_settings(settings), VERSION, DIM)
    assert not generation.restore()
    generation.start()
    old = [f"old-{i}" for i in range(40)]
    _publish(settings, old)
    wait_for(lambda: len(generation.index) == 40, message="40 items applied")
    generation.stop()  # final snapshot
    generation.index.close()
    assert generation.store.list()
    yield settings


@pytest.mark.parametrize("new_count", [6, 60], ids=["below-next-offsets", "past-next-offsets"])
def test_a_second_run_on_a_fresh_broker_serves_exactly_the_newly_published_items(
    first_run: Settings, tmp_path: Path, new_count: int
) -> None:
    before = _mismatches("restore")
    with LocalStack(local_stack_settings(tmp_path / "second"), services_only=True) as fresh:
        settings = unique_settings(
            fresh.settings,
            first_run.data_dir,
            topic_items=first_run.topic_items,
            topic_dlq=first_run.topic_dlq,
            topic_embeddings_prefix=first_run.topic_embeddings_prefix,
        )
        generation = IndexGeneration(NodeConfig.from_settings(settings), VERSION, DIM)
        try:
            assert not generation.restore()  # the snapshot belongs to the first broker's log
            generation.start()
            new = [f"new-{i}" for i in range(new_count)]
            ends = _publish(settings, new)
            wait_for(lambda: len(generation.index) == new_count, message="new items applied")
            wait_for(lambda: all(generation.visible(p, e - 1) for p, e in ends.items()))
            assert _live_ids(generation, new) == set(new)
            assert not _live_ids(generation, [f"old-{i}" for i in range(40)])
            assert {p: w.next for p, w in generation.watermarks.items() if w.next} == ends
            path = generation.snapshot()
        finally:
            generation.close()
    assert _mismatches("restore") == before + 1
    source = generation.store.verify(path)["source"]
    assert source["topic_id"] == generation.source.topic_id != ""
    assert source["cluster_id"] and source["topic"] == settings.embeddings_topic(VERSION)
    assert set(source["log_start"]) == set(source["log_end"]) == {"0", "1", "2", "3"}


def test_a_snapshot_of_the_same_log_is_restored_and_resumed(first_run: Settings) -> None:
    generation = IndexGeneration(NodeConfig.from_settings(first_run), VERSION, DIM)
    try:
        assert generation.restore()
        assert len(generation.index) == 40
    finally:
        generation.close()


class _OffsetGoneOnce:
    """Fault injection: once, the broker answers that the next offset is not in its log."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self.consumer, self.topic, self.injected = consumer, topic, False

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.consumer.assign(partitions)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if not self.injected:
            self.injected = True
            error = RdKafkaError(RdKafkaError._AUTO_OFFSET_RESET, "offset 99 out of range")
            return [Message(topic=self.topic, partition=0, offset=99, error=error)]
        return list(self.consumer.consume(num_messages, timeout))

    def close(self) -> None:
        self.consumer.close()


def test_an_offset_the_log_does_not_hold_rebuilds_the_generation_from_the_log(
    settings: Settings,
) -> None:
    config = NodeConfig.from_settings(settings)
    topic = settings.embeddings_topic(VERSION)
    ids = [f"item-{i}" for i in range(12)]
    _publish(settings, ids)
    consumer = Consumer(settings.kafka_config(**{"group.id": "node-test"}))
    injected = _OffsetGoneOnce(consumer, topic)
    generation = IndexGeneration(config, VERSION, DIM, consumer=injected)  # type: ignore[arg-type]
    # State that the log does not hold: it must not survive the rebuild.
    ghost = EmbeddingRecord(
        op=Op.UPSERT,
        item_id="ghost",
        source_offset=0,
        model_version=VERSION,
        vector=np.ones(DIM, np.float32),
    )
    generation.index.apply(0, [ghost], next_offset=2)
    before = _mismatches("consume")
    try:
        generation.start()
        wait_for(lambda: _live_ids(generation, ids) == set(ids), message="log replayed")
        assert generation.index.get("ghost") is None
        assert len(generation.index) == len(ids)
    finally:
        generation.close()
    assert _mismatches("consume") == before + 1
