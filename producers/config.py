"""`ProducerConfig`: what the items producer takes from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from simstream.kafka import KafkaClientConfig
from simstream.settings import Settings
from simstream.wire import WireLimits


@dataclass(frozen=True, slots=True)
class ProducerConfig(KafkaClientConfig):
    """Where item events go and how large they may be, built once at the edge (`from_settings`).

    Attributes:
        kafka: librdkafka properties every client shares (servers, security, overrides).
        topic_items: the topic item events are published to.
        limits: the wire limits every event is checked against before it is sent.
    """

    topic_items: str
    limits: WireLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> ProducerConfig:
        """The config the settings describe."""
        return cls(
            kafka=settings.kafka_config(),
            topic_items=settings.topic_items,
            limits=settings.wire_limits(),
        )
