"""`RetrainConfig`: what retrain runs, their data, their coordination and beat need to know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simstream.kafka import KafkaClientConfig
from simstream.settings import Settings
from simstream.wire import WireLimits


@dataclass(frozen=True, slots=True)
class RetrainConfig(KafkaClientConfig):
    """Retraining's part of the settings, built once at the edge (`from_settings`).

    Attributes:
        kafka: librdkafka properties every client shares (servers, security).
        topic_items: the items topic replayed for training (it also scopes Redis keys).
        partitions: partitions of the items topic.
        limits: the wire limits item events are decoded with.
        registry_dir: the model registry (``runs.jsonl`` lives beside it).
        coordination_url: the coordination Redis (the Celery broker's).
        embed_batch_size: inputs per encoder call when evaluating.
        model_encoder: encoder family when no active model says otherwise.
        model_embedding_dim: embedding size when no active model says otherwise.
        model_loss: loss identifier when no active model says otherwise.
        model_distance: distance identifier when no active model says otherwise.
        model_epochs: training epochs.
        model_seed: random seed (training and the hold-out split).
        retrain_holdout: share of every class held out to judge the candidate.
        retrain_max_per_class: most items per class used.
        retrain_from_scratch: train anew instead of fine-tuning the active model.
        retrain_ssl: self-supervised method run on the unlabelled items before the
            supervised step (``simclr``, ``barlowtwins``, ``vicreg``, ``simsiam``;
            empty: off, unlabelled items are ignored).
        retrain_promote_margin: recall@1 gain over the active model needed to promote.
        retrain_schedule: beat's schedule (empty, seconds or five crontab fields).
        retrain_min_new_items: labelled items since the last run that trigger one (0: off).
        retrain_check_every_s: how often beat counts new labelled items.
        beat_lock_ttl_s: time to live of the beat leader lease.
    """

    topic_items: str
    partitions: int
    limits: WireLimits
    registry_dir: Path
    coordination_url: str
    embed_batch_size: int
    model_encoder: str
    model_embedding_dim: int
    model_loss: str
    model_distance: str
    model_epochs: int
    model_seed: int
    retrain_holdout: float
    retrain_max_per_class: int
    retrain_from_scratch: bool
    retrain_ssl: str
    retrain_promote_margin: float
    retrain_schedule: str
    retrain_min_new_items: int
    retrain_check_every_s: float
    beat_lock_ttl_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrainConfig:
        """The config the settings describe."""
        return cls(
            kafka=settings.kafka_config(),
            topic_items=settings.topic_items,
            partitions=settings.partitions,
            limits=settings.wire_limits(),
            registry_dir=settings.registry_dir,
            coordination_url=settings.celery_broker_url,
            embed_batch_size=settings.embed_batch_size,
            model_encoder=settings.model_encoder,
            model_embedding_dim=settings.model_embedding_dim,
            model_loss=settings.model_loss,
            model_distance=settings.model_distance,
            model_epochs=settings.model_epochs,
            model_seed=settings.model_seed,
            retrain_holdout=settings.retrain_holdout,
            retrain_max_per_class=settings.retrain_max_per_class,
            retrain_from_scratch=settings.retrain_from_scratch,
            retrain_ssl=settings.retrain_ssl,
            retrain_promote_margin=settings.retrain_promote_margin,
            retrain_schedule=settings.retrain_schedule,
            retrain_min_new_items=settings.retrain_min_new_items,
            retrain_check_every_s=settings.retrain_check_every_s,
            beat_lock_ttl_s=settings.beat_lock_ttl_s,
        )
