"""What the API's components take from the settings: one small frozen config each.

`create_app` builds them from `Settings` once; the components never see the
whole settings object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simstream.kafka import EXPLICIT_OFFSETS
from simstream.wire import WireLimits

if TYPE_CHECKING:
    from simstream.settings import Settings

IMAGES_GROUP = "simstream-api-payloads"


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Limits of lookups and the read-your-writes wait.

    Attributes:
        max_k: largest ``k`` a lookup may ask for (``ef`` may be 4 × this).
        max_batch: most queries in one batch.
        items_topic: the topic write tokens must name.
        partitions: partitions of that topic (a token's partition is below this).
        write_wait_s: longest wait for a write token to become visible.
        embed_batch_size: encoder batch size for raw-payload queries.
    """

    max_k: int
    max_batch: int
    items_topic: str
    partitions: int
    write_wait_s: float
    embed_batch_size: int

    @property
    def max_ef(self) -> int:
        """Largest ``ef`` a lookup may ask for."""
        return 4 * self.max_k

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchConfig:
        """The config ``SIMSTREAM_API_*``, the items topic and the encoder batch describe."""
        return cls(
            max_k=settings.api_max_k,
            max_batch=settings.api_max_batch,
            items_topic=settings.topic_items,
            partitions=settings.partitions,
            write_wait_s=settings.api_write_wait_s,
            embed_batch_size=settings.embed_batch_size,
        )


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """How classification votes.

    Attributes:
        default_threshold: the distance threshold when neither the request nor the
            serving model's metrics give one.
    """

    default_threshold: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ClassifierConfig:
        """The config ``SIMSTREAM_CLASSIFY_THRESHOLD`` describes."""
        return cls(default_threshold=settings.classify_threshold)


@dataclass(frozen=True, slots=True)
class ItemImageConfig:
    """Where item events are read back from.

    Attributes:
        topic: the items topic.
        consumer: librdkafka properties of the reading consumer (no commits).
        limits: the wire limits events are decoded with.
    """

    topic: str
    consumer: Mapping[str, Any] = field(repr=False)
    limits: WireLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> ItemImageConfig:
        """The config the Kafka settings and the items topic describe."""
        consumer = settings.kafka_config(
            **{
                **EXPLICIT_OFFSETS,
                "group.id": IMAGES_GROUP,
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        return cls(settings.topic_items, consumer, settings.wire_limits())
