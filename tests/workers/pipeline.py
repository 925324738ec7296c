"""Helpers to drive the ingest pipeline in tests: publish, expect, wait, compare."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from producers.config import ProducerConfig
from producers.producer import ItemProducer
from simstream.kafka import end_offsets
from simstream.settings import Settings
from simstream.wire import DeadLetter, ItemEvent, VectorPayload
from workers.index.sharded import ShardedIndex
from workers.node.generation import IndexGeneration


@dataclass
class Expected:
    """The state the index must reach: newest revision per live id, deleted ids."""

    live: dict[str, int] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def upsert(self, item_id: str, rev: int, vector: np.ndarray) -> None:
        self.live[item_id] = rev
        self.vectors[item_id] = vector
        self.deleted.discard(item_id)

    def delete(self, item_id: str) -> None:
        self.live.pop(item_id, None)
        self.vectors.pop(item_id, None)
        self.deleted.add(item_id)


def vector_for(item_id: str, rev: int, dim: int) -> np.ndarray:
    """A deterministic payload vector per (id, revision)."""
    seed = abs(hash((item_id, rev))) % (2**32)
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def publish(
    settings: Settings,
    expected: Expected,
    upserts: Iterable[tuple[str, int]] = (),
    deletes: Iterable[str] = (),
    dim: int = 16,
) -> None:
    """Publish upserts (id, revision) and deletes, recording what must result."""
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for item_id, rev in upserts:
            vector = vector_for(item_id, rev, dim)
            producer.publish(
                ItemEvent.upsert(
                    item_id,
                    VectorPayload.from_values(vector),
                    label=f"c{int(item_id.split('-')[-1]) % 10}",
                    metadata={"rev": rev},
                )
            )
            expected.upsert(item_id, rev, vector)
        for item_id in deletes:
            producer.delete(item_id)
            expected.delete(item_id)
        summary = producer.flush(60)
    assert summary.ok, summary


def items_end(settings: Settings) -> dict[int, int]:
    """True end offsets of every items partition."""
    return topic_end(settings, settings.topic_items)


def topic_end(settings: Settings, topic: str) -> dict[int, int]:
    """True end offsets of every partition of ``topic``."""
    consumer = Consumer(settings.kafka_config(**{"group.id": "test-probe"}))
    try:
        return end_offsets(consumer, topic, range(settings.partitions))
    finally:
        consumer.close()


def read_dead_letters(settings: Settings, count: int, timeout_s: float = 10.0) -> list[DeadLetter]:
    """The dead-letter topic's records, read until ``count`` arrived (or the time is up)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": "dlq-reader"}))
    consumer.assign([TopicPartition(settings.topic_dlq, p, 0) for p in range(settings.partitions)])
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(letters) < count and time.monotonic() < deadline:
            letters += [
                DeadLetter.decode(m.value() or b"")
                for m in consumer.consume(100, 0.2)
                if not m.error()
            ]
    finally:
        consumer.close()
    return letters


def assert_index_matches(index: ShardedIndex, expected: Expected, embed: object = None) -> None:
    """Every live id exactly once with its newest revision; deleted ids absent."""
    stats = index.stats()
    missing = sorted(i for i in expected.live if index.get(i) is None)
    assert stats.live == len(expected.live), (stats.live, len(expected.live), missing[:10])
    wrong_rev = []
    for item_id, rev in expected.live.items():
        item = index.get(item_id)
        assert item is not None, f"{item_id} missing"
        if dict(item.metadata or {}).get("rev") != rev:
            wrong_rev.append((item_id, dict(item.metadata or {}), rev))
    assert not wrong_rev, wrong_rev[:5]
    for item_id in expected.deleted:
        assert index.get(item_id) is None, f"{item_id} should be deleted"


def wait_until_caught_up(
    settings: Settings, generation: IndexGeneration, timeout_s: float = 120
) -> None:
    """Wait until the generation's watermarks pass the end of every items partition."""
    ends = items_end(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(generation.visible(p, end - 1) for p, end in ends.items() if end > 0):
            return
        time.sleep(0.1)
    marks = {p: w.next for p, w in generation.watermarks.items()}
    raise TimeoutError(f"not caught up: ends {ends}, watermarks {marks}")
