"""What the API's components take from the settings: one small frozen config each.

`create_app` builds them from `Settings` once; the components never see the
whole settings object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from simstream.kafka import EXPLICIT_OFFSETS
from simstream.wire import WireLimits

if TYPE_CHECKING:
    from simstream.settings import Settings

IMAGES_GROUP = "simstream-api-payloads"
ENDS_GROUP = "simstream-api-ends"

RouteClass = Literal["lookups", "writes", "images", "admin"]


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
        max_batch_images: most ``image`` queries in one batch.
        degraded_lag: source events of lag above which answers say ``degraded``.
        batch_window_s: how long a single-vector search waits for concurrent ones
            to be searched with them in one batch (0: off; see `MicroBatcher`).
        search_slots: costly searches running at once (`SearchSlots`).
        search_queue_s: longest wait of a costly search for a slot.
        retry_after_s: the ``Retry-After`` of a search refused for want of a slot.
        inline_lookups: answer the lookups that cannot wait on the event loop
            (`Searcher.lookup_now`).
    """

    max_k: int
    max_batch: int
    items_topic: str
    partitions: int
    write_wait_s: float
    embed_batch_size: int
    max_batch_images: int = 32
    degraded_lag: int = 1000
    batch_window_s: float = 0.0
    search_slots: int = 2
    search_queue_s: float = 2.0
    retry_after_s: int = 1
    inline_lookups: bool = True

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
            max_batch_images=settings.api_max_batch_images,
            degraded_lag=settings.api_ready_max_lag,
            batch_window_s=settings.api_batch_window_ms / 1000,
            search_slots=settings.api_search_slots or max(1, (os.cpu_count() or 1) // 2),
            search_queue_s=settings.api_search_queue_s,
            retry_after_s=settings.api_retry_after_s,
            inline_lookups=settings.api_inline_lookups,
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
        timeout_s: longest read of one event.
    """

    topic: str
    consumer: Mapping[str, Any] = field(repr=False)
    limits: WireLimits
    timeout_s: float = 2.0

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
        return cls(
            settings.topic_items,
            consumer,
            settings.wire_limits(),
            timeout_s=settings.api_image_read_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """How large a query image may decode: a multiple of the model input, capped.

    Attributes:
        pixels_factor: largest decoded image in multiples of the model input's pixels.
        max_pixels: the cap, whatever the model input size.
    """

    pixels_factor: int = 64
    max_pixels: int = 4 * 1024 * 1024

    def pixels_for(self, height: int, width: int) -> int:
        """The largest decoded image (width × height) for a model input of this size."""
        return min(self.max_pixels, self.pixels_factor * height * width)

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The limits ``SIMSTREAM_API_IMAGE_PIXELS_FACTOR`` and ``…_MAX_IMAGE_PIXELS`` set."""
        return cls(settings.api_image_pixels_factor, settings.api_max_image_pixels)


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    """Requests in flight at once per route class, and the pool blocking waits run in.

    Attributes:
        limits: most requests in flight per route class (more are answered 429).
        retry_after_s: the ``Retry-After`` of such a 429.
        wait_threads: threads for blocking waits (image reads, end offsets), apart
            from the pool that runs request handlers.
        max_waiting: most requests waiting for their write token at once.
    """

    limits: Mapping[RouteClass, int]
    retry_after_s: int = 1
    wait_threads: int = 4
    max_waiting: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> ConcurrencyConfig:
        """The config ``SIMSTREAM_API_MAX_CONCURRENT_*`` and the wait pool describe."""
        return cls(
            limits={
                "lookups": settings.api_max_concurrent_lookups,
                "writes": settings.api_max_concurrent_writes,
                "images": settings.api_max_concurrent_images,
                "admin": settings.api_max_concurrent_admin,
            },
            retry_after_s=settings.api_retry_after_s,
            wait_threads=settings.api_wait_threads,
            max_waiting=settings.api_max_waiting,
        )


@dataclass(frozen=True, slots=True)
class ClientBudgetConfig:
    """Each client's share of the node's CPU time while clients compete
    (`ClientBudgetMiddleware`).

    Attributes:
        busy_per_s: CPU-seconds a client earns a second (0: no budget).
        burst_s: most CPU-seconds it can save up (and most debt it can run).
        tarpit_s: delay before a refusal is answered.
        max_inflight: most requests a client holds at once while clients compete.
        contended_s: a client is refused only if another was seen this recently.
    """

    busy_per_s: float = 0.25
    burst_s: float = 0.25
    tarpit_s: float = 0.25
    max_inflight: int = 8
    contended_s: float = 1.0

    @property
    def enabled(self) -> bool:
        """Whether budgets are kept."""
        return self.busy_per_s > 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientBudgetConfig:
        """The config ``SIMSTREAM_API_CLIENT_*`` describe."""
        return cls(
            busy_per_s=settings.api_client_busy_per_s,
            burst_s=settings.api_client_burst_s,
            tarpit_s=settings.api_client_tarpit_s,
            max_inflight=settings.api_client_max_inflight,
        )


@dataclass(frozen=True, slots=True)
class EndOffsetsConfig:
    """Where the end offsets of the items topic are read (to check write tokens).

    Attributes:
        topic: the items topic.
        partitions: its partitions.
        consumer: librdkafka properties of the probing consumer (no group joined).
        timeout_s: longest broker round trip.
        refresh_s: least time between two reads (a token past the known end waits
            for the next one, shared by every such request).
    """

    topic: str
    partitions: int
    consumer: Mapping[str, Any] = field(repr=False)
    timeout_s: float = 2.0
    refresh_s: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> EndOffsetsConfig:
        """The config the Kafka settings and the items topic describe."""
        consumer = settings.kafka_config(
            **{"group.id": ENDS_GROUP, "enable.auto.commit": False, "fetch.wait.max.ms": 10}
        )
        return cls(
            settings.topic_items,
            settings.partitions,
            consumer,
            refresh_s=settings.api_end_offsets_refresh_s,
        )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Who may call the API, and where it is reachable from.

    Attributes:
        read_tokens: tokens with read scope given inline (the admin ones included).
        admin_tokens: tokens with admin scope given inline.
        read_tokens_file: a file of read tokens, re-read while serving (None: none).
        admin_tokens_file: a file of admin tokens, re-read while serving (None: none).
        check_s: seconds between re-reads of the token files.
        host: the address the API binds to.
        production: whether it runs with ``SIMSTREAM_ENVIRONMENT=production``.
    """

    read_tokens: frozenset[str] = field(repr=False)
    admin_tokens: frozenset[str] = field(repr=False)
    read_tokens_file: Path | None
    admin_tokens_file: Path | None
    check_s: float
    host: str
    production: bool

    @property
    def enabled(self) -> bool:
        """Whether requests need a token (one is given inline or a token file is set)."""
        files = (self.read_tokens_file, self.admin_tokens_file)
        return bool(self.read_tokens or self.admin_tokens) or any(f is not None for f in files)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthConfig:
        """The config ``SIMSTREAM_API_*TOKENS*``, the bind address and the environment describe."""
        return cls(
            read_tokens=settings.read_tokens,
            admin_tokens=settings.admin_tokens,
            read_tokens_file=settings.api_read_tokens_file,
            admin_tokens_file=settings.api_admin_tokens_file,
            check_s=settings.api_tokens_check_s,
            host=settings.api_host,
            production=settings.environment == "production",
        )


@dataclass(frozen=True, slots=True)
class WriteBatchConfig:
    """How large a batch of item writes may be.

    Attributes:
        max_items: most items in one ``POST /v1/items/batch``.
        max_bytes: largest body of one, in bytes.
    """

    max_items: int = 500
    max_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> WriteBatchConfig:
        """The config ``SIMSTREAM_API_MAX_WRITE_BATCH[_BYTES]`` describe."""
        return cls(settings.api_max_write_batch, settings.api_max_write_batch_bytes)
