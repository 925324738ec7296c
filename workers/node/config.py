"""`NodeConfig`: what the index node, its generations and the serving alias need to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simstream.kafka import KafkaClientConfig
from simstream.settings import Settings
from simstream.wire import WireLimits
from workers.cluster.config import ClusterConfig
from workers.index.config import IndexConfig


@dataclass(frozen=True, slots=True)
class NodeConfig(KafkaClientConfig):
    """The index node's part of the settings, built once at the edge (`from_settings`).

    Attributes:
        kafka: librdkafka properties every client shares (servers, security).
        topic_items: the source topic of item events (its lag decides readiness).
        topic_embeddings_prefix: embeddings topics are ``<prefix>.<version>``.
        partitions: partitions per topic (= shards per generation).
        replication_factor: replication of the embeddings topics the node creates.
        limits: the wire limits embedding records are decoded with.
        index: the index parameters; each generation sets its model's ``dim``.
        snapshots_dir: where generations keep their snapshots.
        snapshot_keep: complete snapshots kept per generation.
        snapshot_every_s: seconds between snapshots.
        snapshot_every_records: records applied between snapshots.
        delete_marker_retention_s: how long delete markers outlive the snapshot that
            covered them (see `IndexGeneration._prune_floor`).
        registry_dir: the model registry (its active version is the wanted generation).
        data_dir: where the serving alias (``alias.json``) is persisted.
        coordination_url: the coordination Redis (the Celery broker's) for `ServingStatus`.
        reindex_max_lag: source events a new generation may lag when the alias flips.
        reindex_grace_s: how long the previous generation is kept for a rollback.
        reindex_allow_dead_letters: flip even when ranges of the new generation were
            dead-lettered (an operator's decision).
        ready_max_lag: source events the serving generation may lag and be ready.
        cluster: this node's id, partition set and membership timing.
    """

    topic_items: str
    topic_embeddings_prefix: str
    partitions: int
    replication_factor: int
    limits: WireLimits
    index: IndexConfig
    snapshots_dir: Path
    snapshot_keep: int
    snapshot_every_s: float
    snapshot_every_records: int
    registry_dir: Path
    data_dir: Path
    coordination_url: str
    reindex_max_lag: int
    reindex_grace_s: float
    reindex_allow_dead_letters: bool
    ready_max_lag: int
    delete_marker_retention_s: float = 86400.0
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @classmethod
    def from_settings(cls, settings: Settings) -> NodeConfig:
        """The config the settings describe."""
        return cls(
            kafka=settings.kafka_config(),
            topic_items=settings.topic_items,
            topic_embeddings_prefix=settings.topic_embeddings_prefix,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            limits=settings.wire_limits(),
            index=IndexConfig.from_settings(settings),
            snapshots_dir=settings.snapshots_dir,
            snapshot_keep=settings.snapshot_keep,
            snapshot_every_s=settings.snapshot_every_s,
            snapshot_every_records=settings.snapshot_every_records,
            delete_marker_retention_s=settings.delete_marker_retention_s,
            registry_dir=settings.registry_dir,
            data_dir=settings.data_dir,
            coordination_url=settings.celery_broker_url,
            reindex_max_lag=settings.reindex_max_lag,
            reindex_grace_s=settings.reindex_grace_s,
            reindex_allow_dead_letters=settings.reindex_allow_dead_letters,
            ready_max_lag=settings.api_ready_max_lag,
            cluster=ClusterConfig.from_settings(settings),
        )

    @property
    def owned(self) -> tuple[int, ...]:
        """The partitions (shards) this node holds: those of its partition set."""
        return self.cluster.owned(self.partitions)

    def embeddings_topic(self, model_version: str) -> str:
        """Name of the embeddings topic of a model version."""
        return f"{self.topic_embeddings_prefix}.{model_version}"
