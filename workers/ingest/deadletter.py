"""Dead-lettering of a whole offset range whose embed task failed for good."""

from __future__ import annotations

from confluent_kafka import Producer

from simstream.errors import KafkaError
from simstream.wire import DeadLetter, EmbeddingRecord
from workers.ingest.config import IngestConfig


def dead_letter_range(
    config: IngestConfig,
    topic: str,
    partition: int,
    start: int,
    end: int,
    model_version: str,
    reason: str,
) -> None:
    """Record ``[start, end)`` as failed in the dead-letter topic and close the range.

    The events stay in ``items`` (the source of truth); the dead letter names the
    range so an operator can replay it. The range marker lets read-your-writes
    waiters on this partition move past it.
    """
    producer = Producer(config.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    letter = DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=start,
        reason="range_failed",
        raw=b"",
        detail=f"offsets {start}..{end - 1} of model {model_version}: {reason}",
    )
    producer.produce(config.topic_dlq, value=letter.encode(), partition=partition)
    producer.produce(
        config.embeddings_topic(model_version),
        value=EmbeddingRecord.range_marker(start, end, model_version).encode(),
        partition=partition,
    )
    if producer.flush(30):
        raise KafkaError(f"Dead letter for {topic}[{partition}] {start}..{end - 1} not delivered")
