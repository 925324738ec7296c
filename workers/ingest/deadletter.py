"""Dead-lettering of a whole offset range whose embed task failed for good, and the
source position that keys every dead letter."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message, Producer

from simstream.errors import DeliveryError
from simstream.wire import DeadLetter, EmbeddingRecord
from workers import metrics
from workers.ingest.config import IngestConfig

_DELIVERY_TIMEOUT_S = 30.0


def source_key(
    topic: str, partition: int, start: int, end: int | None = None, model_version: str = ""
) -> str:
    """The source position a dead letter names: its Kafka key and its identity.

    ``<topic>/<partition>/<offset>`` for an event; ``<topic>/<partition>/<first>..<last>/
    <model version>`` for a range ``[start, end)`` that failed for ``model_version``.
    A range re-run after a crash writes its letters again under the same keys, so a
    reader keeps the first record of each key (`workers.ingest.dlq`) and a compacted
    topic keeps one.
    """
    if end is None:
        return f"{topic}/{partition}/{start}"
    return f"{topic}/{partition}/{start}..{end - 1}/{model_version}"


def dead_letter_range(
    config: IngestConfig,
    topic: str,
    partition: int,
    start: int,
    end: int,
    model_version: str,
    reason: str,
    producer: Producer | None = None,
) -> None:
    """Record ``[start, end)`` as failed in the dead-letter topic and close the range.

    The events stay in ``items`` (the source of truth); the dead letter names the
    range so an operator can replay it. The range marker, flagged
    ``dead_lettered``, lets read-your-writes waiters on this partition move past
    it and keeps a re-index from flipping over the hole. Returns only once the
    broker acknowledged both records.

    Raises:
        DeliveryError: a record was refused or not acknowledged in time (the
            caller retries; a second letter for the range is harmless).
    """
    producer = producer or Producer(
        config.kafka_config(**{"enable.idempotence": True, "acks": "all"})
    )
    letter = DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=start,
        reason="range_failed",
        raw=b"",
        detail=f"offsets {start}..{end - 1} of model {model_version}: {reason}",
    )
    marker = EmbeddingRecord.range_marker(start, end, model_version, dead_lettered=True)
    failures: list[str] = []

    def delivered(error: Any, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error}")

    where = f"{topic}[{partition}] {start}..{end - 1}"
    try:
        producer.produce(
            config.topic_dlq,
            value=letter.encode(),
            key=source_key(topic, partition, start, end, model_version).encode(),
            partition=partition,
            on_delivery=delivered,
        )
        producer.produce(
            config.embeddings_topic(model_version),
            value=marker.encode(),
            partition=partition,
            on_delivery=delivered,
        )
    except Exception as e:
        raise DeliveryError(f"Dead letter for {where} refused by the client: {e}") from e
    remaining = producer.flush(_DELIVERY_TIMEOUT_S)
    if remaining or failures:
        raise DeliveryError(
            f"Dead letter for {where} not delivered. Expected 2 acknowledged records. "
            f"Received: {remaining} unanswered, failures {failures}"
        )
    metrics.DLQ_EVENTS.labels("range_failed").inc()
