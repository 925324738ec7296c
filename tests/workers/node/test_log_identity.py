"""The source log is not what the snapshot believes: a generation rebuilds from the log.

A second ``make run`` starts a fresh in-memory broker while snapshots from the
first run stay in the data directory: the new embeddings log restarts at low
offsets, has a new topic id, and holds none of the snapshot's items. Exactly
what the new log holds must end up searchable, and watermarks must claim no
write the new log has not accounted for.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from prometheus_client import REGISTRY

from simstream.kafka import LogIdentity
from simstream.settings import Settings
from simstream.stack.local import LocalStack, local_stack_settings
from simstream.wire import EmbeddingRecord, Op
from tests.conftest import unique_settings
from tests.waiting import wait_for
from workers.node import generation as generation_module
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

    def _gone(self) -> Message:
        self.injected = True
        error = RdKafkaError(RdKafkaError._AUTO_OFFSET_RESET, "offset 99 out of range")
        return Message(topic=self.topic, partition=0, offset=99, error=error)

    def poll(self, timeout: float) -> Message | None:
        return self.consumer.poll(timeout) if self.injected else self._gone()

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if not self.injected:
            return [self._gone()]
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


class _StaleEndOnce:
    """Fault injection: once, the embeddings log's end reads 3 below the true end of partition 0."""

    def __init__(self, topic: str, read: Callable[..., dict[int, int]]) -> None:
        self.topic, self.read = topic, read
        self.armed = threading.Event()
        self.reads_after = 0  # reads of the embeddings log after the stale one

    def __call__(
        self, consumer: Consumer, topic: str, partitions: Iterable[int], *args: Any
    ) -> dict[int, int]:
        ends = self.read(consumer, topic, partitions, *args)
        if topic != self.topic:
            return ends
        if self.armed.is_set() and self.reads_after == 0 and ends.get(0, 0) >= 3:
            self.reads_after = 1
            return {**ends, 0: ends[0] - 3}
        if self.reads_after:
            self.reads_after += 1
        return ends


def _stale_end_reads() -> float:
    labels = {"generation": VERSION}
    return REGISTRY.get_sample_value("simstream_index_stale_log_end_total", labels) or 0.0


def test_one_stale_end_offset_reading_does_not_rebuild_the_generation(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = NodeConfig.from_settings(settings)
    stale = _StaleEndOnce(settings.embeddings_topic(VERSION), generation_module.end_offsets)
    monkeypatch.setattr(generation_module, "end_offsets", stale)
    ids = [f"item-{i}" for i in range(40)]
    generation = IndexGeneration(config, VERSION, DIM)
    before, stale_before = _mismatches("consume"), _stale_end_reads()
    try:
        assert not generation.restore()
        generation.start()
        _publish(settings, ids)
        wait_for(lambda: _live_ids(generation, ids) == set(ids), message="items applied")
        applied = generation.applied
        stale.armed.set()
        # The stale reading, then two more measurements (a rebuild is decided on the first).
        wait_for(lambda: stale.reads_after >= 3, timeout_s=30, message="stale end read")
        assert generation.applied == applied == len(ids)  # nothing was replayed
        assert _live_ids(generation, ids) == set(ids)
    finally:
        generation.close()
    assert _mismatches("consume") == before
    assert _stale_end_reads() == stale_before + 1


class _LogEndsLow:
    """Fault injection: while armed, partition 0 of the log ends 3 below its true end.

    Both the generation's measurement (`end_offsets`) and its confirmation
    (`log_identity`) read it so; the confirmation can also see a new topic id.
    """

    def __init__(self, topic: str, topic_id: str = "") -> None:
        self.topic, self.topic_id = topic, topic_id
        self.ends, self.identity = generation_module.end_offsets, generation_module.log_identity
        self.armed = threading.Event()
        self.measured = 0  # low measurements

    def end_offsets(
        self, consumer: Consumer, topic: str, partitions: Iterable[int], *args: Any
    ) -> dict[int, int]:
        ends = self.ends(consumer, topic, partitions, *args)
        if topic != self.topic or not self.armed.is_set():
            return ends
        self.measured += 1
        return {**ends, 0: max(0, ends[0] - 3)}

    def log_identity(self, *args: Any, **kwargs: Any) -> LogIdentity:
        now = self.identity(*args, **kwargs)
        if now.topic != self.topic or not self.armed.is_set():
            return now
        low = {**now.log_end, 0: max(0, now.log_end.get(0, 0) - 3)}
        return dataclasses.replace(now, topic_id=self.topic_id or now.topic_id, log_end=low)


@pytest.mark.parametrize(
    ("topic_id", "reads"),
    [("", range(3, 5)), ("a-new-topic-id", range(1, 3))],
    ids=["truncated-after-three-reads", "recreated-at-once"],
)
def test_a_log_confirmed_to_end_below_what_was_applied_rebuilds_the_generation(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, topic_id: str, reads: range
) -> None:
    low = _LogEndsLow(settings.embeddings_topic(VERSION), topic_id)
    monkeypatch.setattr(generation_module, "end_offsets", low.end_offsets)
    monkeypatch.setattr(generation_module, "log_identity", low.log_identity)
    ids = [f"item-{i}" for i in range(40)]
    generation = IndexGeneration(NodeConfig.from_settings(settings), VERSION, DIM)
    before = _mismatches("consume")
    try:
        assert not generation.restore()
        generation.start()
        _publish(settings, ids)
        wait_for(lambda: _live_ids(generation, ids) == set(ids), message="items applied")
        low.armed.set()
        wait_for(lambda: _mismatches("consume") > before, message="generation rebuilt")
        low.armed.clear()
        assert low.measured in reads  # low measurements before the rebuild
        wait_for(lambda: generation.applied == 2 * len(ids), message="log replayed")
        assert _live_ids(generation, ids) == set(ids)
    finally:
        generation.close()
    assert _mismatches("consume") == before + 1
