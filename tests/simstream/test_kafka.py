"""Kafka plumbing: consuming what is there without waiting for a full batch; end offsets."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from simstream.kafka import consume_ready, end_offsets, ensure_topics
from simstream.settings import Settings

pytestmark = pytest.mark.services

TIMEOUT_S = 10.0


def _consumer(settings: Settings) -> Consumer:
    consumer = Consumer(
        settings.kafka_config(**{"group.id": "test-consume-ready", "enable.auto.commit": False})
    )
    consumer.assign([TopicPartition(settings.topic_items, 0, 0)])
    return consumer


def _publish(settings: Settings, count: int) -> None:
    """``count`` records ``b"0"``, ``b"1"``, … to partition 0 of a one-partition items topic."""
    ensure_topics(settings, [settings.topic_items], partitions=1)
    producer = Producer(settings.kafka_config())
    for n in range(count):
        producer.produce(settings.topic_items, value=b"%d" % n, partition=0)
    producer.flush(30)


def test_consume_ready_returns_the_records_there_without_waiting_for_a_full_batch(
    settings: Settings,
) -> None:
    _publish(settings, 3)
    consumer = _consumer(settings)
    try:
        received: list[bytes] = []
        started = time.monotonic()
        while len(received) < 3 and time.monotonic() - started < 3 * TIMEOUT_S:
            received += [m.value() or b"" for m in consume_ready(consumer, 1000, TIMEOUT_S)]
        elapsed = time.monotonic() - started
    finally:
        consumer.close()

    assert received == [b"0", b"1", b"2"]
    # consume(1000, timeout) would have waited the whole timeout for 1000 records.
    assert elapsed < TIMEOUT_S / 2


def test_consume_ready_returns_nothing_after_its_timeout_on_an_empty_log(
    settings: Settings,
) -> None:
    ensure_topics(settings, [settings.topic_items], partitions=1)
    consumer = _consumer(settings)
    try:
        started = time.monotonic()
        assert consume_ready(consumer, 1000, 0.5) == []
        assert time.monotonic() - started >= 0.4
    finally:
        consumer.close()


class SlowStaleConsumer:
    """A real consumer behind two injected faults: the broker reports a stale high
    watermark (as Tansu may), and the first ``empty`` fetches come back empty (a
    slow first fetch on a loaded machine)."""

    def __init__(self, consumer: Consumer, stale_high: int, empty: int) -> None:
        self.consumer = consumer
        self.stale_high = stale_high
        self.empty = empty
        self.empty_returned = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        low, _ = self.consumer.get_watermark_offsets(tp, timeout=timeout)
        return low, self.stale_high

    def consume(self, num_messages: int, timeout: float) -> list:
        if self.empty_returned < self.empty:
            self.empty_returned += 1
            time.sleep(timeout)
            return []
        return self.consumer.consume(num_messages, timeout=timeout)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.consumer.assign(partitions)

    def unassign(self) -> None:
        self.consumer.unassign()


def test_end_offsets_are_true_under_a_stale_watermark_and_a_slow_first_fetch(
    settings: Settings,
) -> None:
    _publish(settings, 5)
    consumer = Consumer(settings.kafka_config(**{"group.id": "test-end-offsets"}))
    faulty = SlowStaleConsumer(consumer, stale_high=1, empty=3)
    try:
        ends = end_offsets(faulty, settings.topic_items, [0], timeout_s=TIMEOUT_S)  # type: ignore[arg-type]
    finally:
        consumer.close()

    assert faulty.empty_returned == 3, "the slow fetches were injected"
    assert ends == {0: 5}
