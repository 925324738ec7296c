"""Kafka plumbing shared by producers and workers: topics and true end offsets.

Tansu quirk (the embedded broker): ListOffsets(latest) answers the base offset
of the last record batch plus one, not the offset after the last record. So
`end_offsets` reads forward from the reported high watermark minus one to find
the real end; on Apache Kafka that read returns at most one record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from simstream.errors import KafkaError
from simstream.log import get_logger

log = get_logger("kafka")

_TOPIC_ALREADY_EXISTS = 36

#: Every simstream topic is a log of record: ``items`` is the source of truth that
#: any index is rebuilt from, ``embeddings.<v>`` is the index's write-ahead log and
#: the dead-letter topic holds what still needs a human. None may expire.
LOG_OF_RECORD = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


class KafkaClientSettings(Protocol):
    """What gives librdkafka client properties: `Settings`, or a component's own config."""

    def kafka_config(self, **extra: Any) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class KafkaClientConfig:
    """Base of the component configs whose clients share librdkafka properties.

    Attributes:
        kafka: properties every client shares (servers, security, overrides).
    """

    kafka: Mapping[str, Any]

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka properties of one client: the shared ones plus ``extra``."""
        return {**self.kafka, **extra}


class TopicSettings(KafkaClientSettings, Protocol):
    """Client properties plus the partition count and replication of new topics."""

    @property
    def partitions(self) -> int: ...

    @property
    def replication_factor(self) -> int: ...


def admin_client(settings: KafkaClientSettings) -> AdminClient:
    """An AdminClient with the settings' bootstrap servers and security options."""
    return AdminClient(settings.kafka_config())


def ensure_topics(
    settings: TopicSettings,
    topics: Iterable[str],
    partitions: int | None = None,
    admin: AdminClient | None = None,
    timeout_s: float = 10.0,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics that do not exist yet, with the configured partition count.

    New topics get `LOG_OF_RECORD` retention (never expire) unless ``config``
    says otherwise; existing topics keep their configuration.

    Idempotent: an existing topic is left as it is. Raises `KafkaError` when an
    existing topic has another partition count than asked (shards map 1:1 to
    partitions, so a silent mismatch would misroute items).
    """
    admin = admin or admin_client(settings)
    count = partitions or settings.partitions
    wanted = list(dict.fromkeys(topics))
    futures = admin.create_topics(
        [
            NewTopic(t, count, settings.replication_factor, config=config or LOG_OF_RECORD)
            for t in wanted
        ],
        request_timeout=timeout_s,
    )
    for topic, future in futures.items():
        try:
            future.result()
            log.info("kafka.topic_created", topic=topic, partitions=count)
        except KafkaException as e:
            if e.args[0].code() != _TOPIC_ALREADY_EXISTS:
                raise KafkaError(f"Cannot create topic {topic!r}: {e}") from e
    metadata = admin.list_topics(timeout=timeout_s)
    for topic in wanted:
        found = metadata.topics.get(topic)
        actual = len(found.partitions) if found is not None else 0
        if actual != count:
            raise KafkaError(
                f"Topic {topic!r} has the wrong number of partitions. "
                f"Expected {count}. Received: {actual}"
            )


def partition_count(
    settings: KafkaClientSettings, topic: str, admin: AdminClient | None = None
) -> int:
    """Number of partitions of ``topic`` (0 when it does not exist)."""
    admin = admin or admin_client(settings)
    found = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
    if found is None or found.error is not None:
        return 0
    return len(found.partitions)


def end_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int], timeout_s: float = 5.0
) -> dict[int, int]:
    """The offset after the last record of each partition, correct on Tansu too.

    ``consumer`` must not be subscribed to a group; its assignment is replaced.
    """
    result: dict[int, int] = {}
    starts = []
    for p in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        result[p] = max(high, 0)
        if result[p] > 0:
            starts.append(TopicPartition(topic, p, result[p] - 1))
    if starts:
        consumer.assign(starts)
        while True:
            records = [m for m in consumer.consume(1000, timeout=0.2) if m.error() is None]
            if not records:
                break
            for m in records:
                partition, offset = m.partition() or 0, m.offset() or 0
                result[partition] = max(result[partition], offset + 1)
        consumer.unassign()
    return result
