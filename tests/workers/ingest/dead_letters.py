"""Read the dead-letter topic from outside, as an operator would."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from simstream.settings import Settings
from simstream.wire import DeadLetter


def read_dead_letter_records(
    settings: Settings, idle_polls: int = 5
) -> list[tuple[bytes | None, DeadLetter]]:
    """Every record of every partition, as (Kafka key, dead letter), read until
    ``idle_polls`` polls bring nothing."""
    consumer = Consumer(settings.kafka_config(**{"group.id": "test-dlq-reader"}))
    consumer.assign([TopicPartition(settings.topic_dlq, p, 0) for p in range(settings.partitions)])
    records: list[tuple[bytes | None, DeadLetter]] = []
    idle = 0
    try:
        while idle < idle_polls:
            batch = [m for m in consumer.consume(1000, 0.2) if m.error() is None]
            idle = 0 if batch else idle + 1
            records += [(m.key(), DeadLetter.decode(m.value() or b"")) for m in batch]
    finally:
        consumer.close()
    return records


def read_dead_letters(settings: Settings, idle_polls: int = 5) -> list[DeadLetter]:
    """Every dead letter of every partition, read until ``idle_polls`` polls bring nothing."""
    return [letter for _, letter in read_dead_letter_records(settings, idle_polls)]
