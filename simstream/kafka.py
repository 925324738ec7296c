"""Kafka plumbing shared by producers and workers: topics, true end offsets, log identity.

Tansu quirk (the embedded broker): ListOffsets(latest) answers the base offset
of the last record batch plus one, not the offset after the last record. So
`end_offsets` reads forward from the reported high watermark minus one to find
the real end; on Apache Kafka that read returns at most one record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicCollection, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from simstream.errors import KafkaError, PartitionCountError
from simstream.log import get_logger

log = get_logger("kafka")

_TOPIC_ALREADY_EXISTS = 36

#: Every simstream topic is a log of record: ``items`` is the source of truth that
#: any index is rebuilt from, ``embeddings.<v>`` is the index's write-ahead log and
#: the dead-letter topic holds what still needs a human. None may expire.
LOG_OF_RECORD = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}

#: Properties of every consumer that ``assign()``s explicit offsets (embedder, index
#: node, item images, retrain replay): an offset the log does not hold is an error
#: to handle, never a silent jump to an end of the log.
EXPLICIT_OFFSETS: Final = {"auto.offset.reset": "error"}

_OUT_OF_RANGE: Final = (RdKafkaError._AUTO_OFFSET_RESET, RdKafkaError.OFFSET_OUT_OF_RANGE)


def consume_ready(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to ``max_messages`` messages: wait at most ``timeout_s`` for the first, then
    take what the consumer has already fetched, without waiting for more.

    ``Consumer.consume(n, timeout)`` returns only once it holds ``n`` messages or the
    timeout passed, so a trickle of records waits the whole timeout on every call;
    this returns as soon as one is there (a loop calling it adds no latency).
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]


def out_of_range(error: RdKafkaError | None) -> bool:
    """Whether a consumer error says the assigned offset is not in the log."""
    return error is not None and error.code() in _OUT_OF_RANGE


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
            raise PartitionCountError(topic, count, actual)


def check_partitions(
    settings: TopicSettings,
    topics: Iterable[str],
    prefixes: Iterable[str] = (),
    admin: AdminClient | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Refuse to go on when an existing topic's partition count is not ``settings.partitions``.

    Every process calls it at start: shards, watermarks, dead letters and
    embeddings partitions map 1:1 to the partitions of ``items``. A topic that
    does not exist yet is fine (it is created with the configured count).

    Args:
        settings: client properties and the configured partition count.
        topics: topics to check.
        prefixes: every existing topic whose name starts with one of them is
            checked too (e.g. ``"embeddings."`` for every model version's log).
        admin: an AdminClient to use.
        timeout_s: the metadata request's timeout.

    Raises:
        PartitionCountError: naming the topic and both counts.
    """
    admin = admin or admin_client(settings)
    metadata = admin.list_topics(timeout=timeout_s)
    starts = tuple(prefixes)
    matching = [t for t in sorted(metadata.topics) if starts and t.startswith(starts)]
    for topic in dict.fromkeys([*topics, *matching]):
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            continue
        if len(found.partitions) != settings.partitions:
            raise PartitionCountError(topic, settings.partitions, len(found.partitions))


def partition_count(
    settings: KafkaClientSettings, topic: str, admin: AdminClient | None = None
) -> int:
    """Number of partitions of ``topic`` (0 when it does not exist).

    Reads the metadata of every topic: a request naming a missing topic can make
    the broker auto-create it with its default partition count.
    """
    admin = admin or admin_client(settings)
    found = admin.list_topics(timeout=10).topics.get(topic)
    if found is None or found.error is not None:
        return 0
    return len(found.partitions)


def end_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int], timeout_s: float = 5.0
) -> dict[int, int]:
    """The offset after the last record of each partition, correct on Tansu too.

    Tansu may report a stale high watermark, so the records from the last one it
    reports on are read: every partition's first fetch is waited for (up to
    ``timeout_s``; a slow first fetch under load once ended the read early and
    gave the stale end), then reading stops at the first empty poll.
    ``consumer`` must not be subscribed to a group; its assignment is replaced.
    """
    result: dict[int, int] = {}
    starts = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        result[p] = max(high, 0)
        if result[p] > max(low, 0):  # the record before the watermark is still there
            starts.append(TopicPartition(topic, p, result[p] - 1))
    if starts:
        consumer.assign(starts)
        unread = {tp.partition for tp in starts}
        deadline = time.monotonic() + timeout_s
        while True:
            records = [m for m in consumer.consume(1000, timeout=0.2) if m.error() is None]
            if not records:
                if unread and time.monotonic() < deadline:
                    continue  # a record at the watermark exists: its fetch is on its way
                break
            for m in records:
                partition, offset = m.partition() or 0, m.offset() or 0
                unread.discard(partition)
                result[partition] = max(result[partition], offset + 1)
        consumer.unassign()
    return result


@dataclass(frozen=True, slots=True)
class LogIdentity:
    """What identifies the log a state was built from (recorded in index snapshots).

    Attributes:
        topic: the topic name.
        topic_id: the broker's topic id (a new one when a topic is recreated), or
            "" where the broker gives none.
        cluster_id: the broker's cluster id, or "" where it gives none.
        log_start: per partition, the first offset the log holds.
        log_end: per partition, the offset after its last record.
    """

    topic: str
    topic_id: str = ""
    cluster_id: str = ""
    log_start: dict[int, int] = field(default_factory=dict)
    log_end: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (partition keys as strings)."""
        return {
            "topic": self.topic,
            "topic_id": self.topic_id,
            "cluster_id": self.cluster_id,
            "log_start": {str(p): o for p, o in self.log_start.items()},
            "log_end": {str(p): o for p, o in self.log_end.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogIdentity:
        """The inverse of `to_dict`."""
        return cls(
            topic=str(data.get("topic", "")),
            topic_id=str(data.get("topic_id", "")),
            cluster_id=str(data.get("cluster_id", "")),
            log_start={int(p): int(o) for p, o in dict(data.get("log_start", {})).items()},
            log_end={int(p): int(o) for p, o in dict(data.get("log_end", {})).items()},
        )

    def mismatch(self, recorded: LogIdentity | None, next_offsets: Mapping[int, int]) -> str | None:
        """Why a state built from ``recorded`` up to ``next_offsets`` cannot resume on this log.

        ``self`` is the log as it is now. None when it can: same topic id and
        cluster (where both are known), and every next offset within
        ``[log start, log end]``.
        """
        if recorded is not None:
            if recorded.topic_id and self.topic_id and recorded.topic_id != self.topic_id:
                return (
                    f"topic {self.topic!r} has id {self.topic_id}, the state was built from "
                    f"id {recorded.topic_id} (the topic was recreated)"
                )
            if recorded.cluster_id and self.cluster_id and recorded.cluster_id != self.cluster_id:
                return (
                    f"cluster {self.cluster_id!r} is not {recorded.cluster_id!r}, "
                    "the cluster the state was built from"
                )
        for p, offset in sorted(next_offsets.items()):
            end, start = self.log_end.get(p, 0), self.log_start.get(p, 0)
            if end < offset:
                return (
                    f"{self.topic}[{p}] ends at offset {end}, below the state's next offset "
                    f"{offset} (a fresh broker or a recreated topic)"
                )
            if start > offset:
                return (
                    f"{self.topic}[{p}] starts at offset {start}, past the state's next offset "
                    f"{offset} (records it never applied are gone)"
                )
        return None


def log_identity(
    settings: KafkaClientSettings,
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    admin: AdminClient | None = None,
    timeout_s: float = 10.0,
) -> LogIdentity:
    """The identity of ``topic`` now: topic id, cluster id, log start and true end offsets.

    ``consumer`` must not be subscribed to a group; its assignment is replaced.
    """
    admin = admin or admin_client(settings)
    wanted = list(partitions)
    topic_id = ""
    try:
        described = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout_s)
        found = described[topic].result()
        topic_id = str(found.topic_id) if found.topic_id is not None else ""
    except KafkaException as e:
        log.warning("kafka.topic_id_unavailable", topic=topic, error=str(e))
    cluster_id = admin.list_topics(topic=topic, timeout=timeout_s).cluster_id or ""
    starts = {}
    for p in wanted:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        starts[p] = max(low, 0)
    ends = end_offsets(consumer, topic, wanted, timeout_s)
    return LogIdentity(topic, topic_id, cluster_id, starts, ends)
