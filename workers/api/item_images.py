"""`ItemImageReader`: an indexed item's image, read back from the items topic.

The index stores embeddings, labels and metadata, never payloads. But each
item remembers where its event lies in ``items`` (partition and source
offset), and Kafka is the source of truth: so the API can fetch that one
event, decode it and answer its image. Image payloads are served as they were
published (PNG or JPEG); uint8 array payloads of image shape are rendered as
PNG; vectors have no image. Nothing is stored besides a small in-memory LRU of
rendered images (an offset's event never changes, so the LRU is never stale).

If the topic's retention dropped the event, there is no image (404; the read
fails fast with ``auto.offset.reset=error``, logged and counted): the product
expects ``items`` to keep every event (infinite retention or
compaction), as the re-index needs it too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from io import BytesIO

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from PIL import Image

from simstream.errors import DecodeError
from simstream.kafka import out_of_range
from simstream.log import get_logger
from simstream.wire import ArrayPayload, ImagePayload, ItemEvent
from workers import metrics
from workers.api.config import ItemImageConfig

log = get_logger("api")

MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}


class ItemImageReader:
    """Fetches and renders item images from ``items`` (thread-safe).

    Each read takes an idle consumer (or makes one) and gives it back, so reads
    do not queue behind each other; the caller bounds how many run at once (the
    API runs them in its wait pool). The cache lock is never held while reading.

    Args:
        config: the items topic, the consumer's properties, the wire limits and
            the longest read of one event.
        cache_size: rendered images kept in memory.
    """

    def __init__(self, config: ItemImageConfig, cache_size: int = 512) -> None:
        self.config = config
        self.topic = config.topic
        self.timeout_s = config.timeout_s
        self.limits = config.limits
        self._cache: OrderedDict[tuple[int, int], tuple[bytes, str] | None] = OrderedDict()
        self._cache_size = cache_size
        self._idle: list[Consumer] = []
        self._lock = threading.Lock()

    def image(self, partition: int, offset: int) -> tuple[bytes, str] | None:
        """``(bytes, media type)`` of the event at ``(partition, offset)``, or None."""
        key = (partition, offset)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        event = self._read(partition, offset)
        rendered = None if event is None else render(event)
        if event is not None:  # a missing event may still arrive; do not remember it
            with self._lock:
                self._cache[key] = rendered
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return rendered

    def _read(self, partition: int, offset: int) -> ItemEvent | None:
        with self._lock:
            consumer = self._idle.pop() if self._idle else None
        if consumer is None:
            consumer = Consumer(dict(self.config.consumer))
        try:
            return self._read_with(consumer, partition, offset)
        finally:
            with self._lock:
                self._idle.append(consumer)

    def _read_with(self, consumer: Consumer, partition: int, offset: int) -> ItemEvent | None:
        consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + self.timeout_s
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(1, 0.1):
                    if out_of_range(message.error()):
                        metrics.OFFSET_OUT_OF_RANGE.labels("item_images").inc()
                        log.warning(
                            "api.item_image_gone",
                            partition=partition,
                            offset=offset,
                            error=str(message.error()),
                        )
                        return None  # the log does not hold the offset (any more)
                    if message.error() is not None:
                        continue
                    if message.offset() != offset:
                        return None  # the event is gone (retention): the log moved past it
                    try:
                        return ItemEvent.decode(message.value() or b"", self.limits)
                    except DecodeError:
                        return None
            return None
        finally:
            consumer.unassign()

    def close(self) -> None:
        """Close the idle consumers."""
        with self._lock:
            idle, self._idle = self._idle, []
        for consumer in idle:
            consumer.close()


def render(event: ItemEvent) -> tuple[bytes, str] | None:
    """The image of an event's payload, or None when it has none."""
    payload = event.payload
    if isinstance(payload, ImagePayload):
        with Image.open(BytesIO(payload.data)) as image:
            media = MEDIA_TYPES.get(image.format or "", "application/octet-stream")
        return payload.data, media
    if isinstance(payload, ArrayPayload):
        array = payload.to_array()
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        shaped = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
        if payload.dtype != "uint8" or not shaped:
            return None
        buffer = BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    return None
