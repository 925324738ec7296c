"""Kafka plumbing: consuming what is there without waiting for a full batch."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from simstream.kafka import consume_ready, ensure_topics
from simstream.settings import Settings

pytestmark = pytest.mark.services

TIMEOUT_S = 10.0


def _consumer(settings: Settings) -> Consumer:
    consumer = Consumer(
        settings.kafka_config(**{"group.id": "test-consume-ready", "enable.auto.commit": False})
    )
    consumer.assign([TopicPartition(settings.topic_items, 0, 0)])
    return consumer


def test_consume_ready_returns_the_records_there_without_waiting_for_a_full_batch(
    settings: Settings,
) -> None:
    ensure_topics(settings, [settings.topic_items], partitions=1)
    producer = Producer(settings.kafka_config())
    for n in range(3):
        producer.produce(settings.topic_items, value=b"%d" % n, partition=0)
    producer.flush(30)
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
