"""`IngestConfig`: what the dispatcher, the range embedder and dead-lettering need to know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from simstream.kafka import KafkaClientConfig
from simstream.settings import Settings
from simstream.wire import WireLimits


@dataclass(frozen=True, slots=True)
class IngestConfig(KafkaClientConfig):
    """The ingest path's part of the settings, built once at the edge (`from_settings`).

    Attributes:
        kafka: librdkafka properties every client shares (servers, security).
        topic_items: the source topic of item events.
        topic_dlq: the dead-letter topic.
        topic_embeddings_prefix: embeddings topics are ``<prefix>.<version>``.
        limits: the wire limits events are decoded with.
        registry_dir: the model registry (its active version is dispatched for).
        session_timeout_ms: the dispatcher's consumer group session timeout.
        max_poll_interval_ms: the dispatcher's consumer max poll interval.
        dispatch_max_items: most events in one offset range.
        dispatch_max_wait_s: longest an open range waits before it is sent while no
            range waits in the queue unstarted.
        dispatch_busy_max_wait_s: longest an open range waits while one does (it
            grows instead of queueing behind).
        dispatch_max_inflight: unfinished ranges at which the dispatcher pauses.
        dispatch_redispatch_s: a range queued this long, or running without a heartbeat
            this long, is sent again.
        dispatch_max_attempts: sends of a failed range before the dispatcher dead-letters it.
        task_max_retries: retries of an unexpected task error before the range is dead-lettered.
        task_retry_window_s: seconds a task retries transient errors before it dead-letters.
        embed_batch_size: inputs per encoder call.
        device: where the encoder runs: ``auto``, ``cpu`` or ``gpu``.
        worker_processes: encoder processes of an embed worker (0: decided by `worker_layout`).
        encoder_threads: CPU threads of each encoder (0: decided by `worker_layout`).
        fault_embed_batch_delay_s: fault injection only: a sleep before each encoder call.
        index_space: the index's space; in ``cosine`` and ``ip`` a zero embedding is
            dead-lettered (it has no direction).
    """

    topic_items: str
    topic_dlq: str
    topic_embeddings_prefix: str
    limits: WireLimits
    registry_dir: Path
    session_timeout_ms: int
    max_poll_interval_ms: int
    dispatch_max_items: int
    dispatch_max_wait_s: float
    dispatch_max_inflight: int
    dispatch_redispatch_s: float
    dispatch_max_attempts: int
    task_max_retries: int
    task_retry_window_s: float
    embed_batch_size: int
    device: Literal["auto", "cpu", "gpu"]
    worker_processes: int
    encoder_threads: int
    fault_embed_batch_delay_s: float = 0.0
    dispatch_busy_max_wait_s: float = 1.0
    index_space: Literal["cosine", "l2", "ip"] = "cosine"

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestConfig:
        """The config the settings describe."""
        return cls(
            kafka=settings.kafka_config(),
            topic_items=settings.topic_items,
            topic_dlq=settings.topic_dlq,
            topic_embeddings_prefix=settings.topic_embeddings_prefix,
            limits=settings.wire_limits(),
            registry_dir=settings.registry_dir,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            dispatch_max_items=settings.dispatch_max_items,
            dispatch_max_wait_s=settings.dispatch_max_wait_s,
            dispatch_busy_max_wait_s=settings.dispatch_busy_max_wait_s,
            dispatch_max_inflight=settings.dispatch_max_inflight,
            dispatch_redispatch_s=settings.dispatch_redispatch_s,
            dispatch_max_attempts=settings.dispatch_max_attempts,
            task_max_retries=settings.task_max_retries,
            task_retry_window_s=settings.task_retry_window_s,
            embed_batch_size=settings.embed_batch_size,
            device=settings.device,
            worker_processes=settings.worker_processes,
            encoder_threads=settings.encoder_threads,
            fault_embed_batch_delay_s=settings.fault_embed_batch_delay_s,
            index_space=settings.index_space,
        )

    def embeddings_topic(self, model_version: str) -> str:
        """Name of the embeddings topic of a model version."""
        return f"{self.topic_embeddings_prefix}.{model_version}"
