"""`ItemService`: what the item routes do, without HTTP.

Writes are checked against the serving model's input spec (by the shared
`QueryDecoder`), then published through the items producer; the answer is the
write token. Reads come from the serving generation (items, a random sample)
and, for images, from the items topic (`ItemImageReader`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from producers.producer import ItemProducer
from simstream.errors import DeliveryError, InvalidEventError, RequestError
from simstream.wire import ItemEvent, WriteToken
from workers.api.decoding import QueryDecoder
from workers.api.end_offsets import PartitionEnds
from workers.api.item_images import ItemImageReader
from workers.api.schemas import ItemUpsert
from workers.api.searcher import indexed_item
from workers.index.shard import Item
from workers.node.node import IndexNode


@dataclass(frozen=True, slots=True)
class ItemImage:
    """An item's image, or only its tag when the client already holds it.

    Attributes:
        etag: the entity tag (the event's partition and offset, quoted).
        data: the image bytes, or None when ``If-None-Match`` matched (304).
        media_type: ``image/png`` or ``image/jpeg`` (with ``data``).
    """

    etag: str
    data: bytes | None = None
    media_type: str | None = None


class ItemService:
    """Publishes item writes and reads indexed items, their images and samples.

    Args:
        node: the index node whose serving generation is read and checked against.
        decoder: turns posted payloads into wire payloads.
        images: reads item images back from the items topic.
        make_producer: makes the items producer on the first write, when none is given.
        producer: a ready items producer (not flushed on `close`).
        ends: told of each acknowledged write, so its token is known below the end.
    """

    def __init__(
        self,
        node: IndexNode,
        decoder: QueryDecoder,
        images: ItemImageReader,
        make_producer: Callable[[], ItemProducer],
        producer: ItemProducer | None = None,
        ends: PartitionEnds | None = None,
    ) -> None:
        self.node = node
        self.ends = ends
        self.decoder = decoder
        self.images = images
        self._make_producer = make_producer
        self.producer = producer
        self._owns_producer = False
        self._lock = threading.Lock()

    # --- writes ----------------------------------------------------------------------

    def upsert(self, body: ItemUpsert) -> dict[str, Any]:
        """Publish an upsert; its `WriteAccepted` body.

        Raises:
            RequestError: (400/422) an invalid payload or item; (503) not acknowledged.
        """
        serving = self.node.serving
        model = (
            (self.node.encoder(serving.version).input_spec, serving.version)
            if serving is not None
            else None
        )
        payload = self.decoder.item_payload(body, model)
        event = _event(lambda: ItemEvent.upsert(body.id, payload, body.label, body.metadata))
        return _accepted(body.id, "upsert", self._publish(event))

    def delete(self, item_id: str) -> dict[str, Any]:
        """Publish a delete (of an absent id too); its `WriteAccepted` body.

        Raises:
            RequestError: (422) an invalid id; (503) not acknowledged.
        """
        event = _event(lambda: ItemEvent.delete(item_id))
        return _accepted(item_id, "delete", self._publish(event))

    def item_producer(self) -> ItemProducer:
        """The producer of item events (made on first use)."""
        with self._lock:
            if self.producer is None:
                self.producer = self._make_producer()
                self._owns_producer = True
            return self.producer

    def _publish(self, event: ItemEvent) -> WriteToken:
        try:
            token = self.item_producer().publish_sync(event)
        except InvalidEventError as e:
            raise RequestError(f"Invalid item. {e}", 422) from None
        except DeliveryError as e:
            raise RequestError(f"The items topic did not acknowledge the event: {e}", 503) from None
        if self.ends is not None:
            self.ends.observe(token.partition, token.offset + 1)
        return token

    # --- reads -----------------------------------------------------------------------

    def get(self, item_id: str, vector: bool) -> dict[str, Any]:
        """The `ItemResponse` body of an indexed item (with its embedding if ``vector``).

        Raises:
            NotFoundError: no live item has this id.
        """
        generation = self.node.current()
        return _item(indexed_item(generation, item_id), generation.version, vector)

    def sample(self, size: int) -> dict[str, Any]:
        """The `ItemSample` body: the nearest item to each of ``size`` random directions."""
        generation = self.node.current()
        rng = np.random.default_rng()
        index = generation.index
        picked: dict[str, Item] = {}
        if len(index):
            directions = rng.standard_normal((size * 2, generation.dim)).astype(np.float32)
            for found in index.search_batch(directions, 1):
                for item_id in found.ids:
                    item = index.get(item_id)
                    if item is not None and len(picked) < size:
                        picked.setdefault(item_id, item)
        return {
            "model_version": generation.version,
            "items": [_item(i, generation.version, False) for i in picked.values()],
        }

    def image(self, item_id: str, if_none_match: str | None) -> ItemImage:
        """The image an item was published with, or only its tag if ``if_none_match`` is it.

        Raises:
            NotFoundError: no live item has this id.
            RequestError: (404) the payload is no image, or its event left the topic.
        """
        item = indexed_item(self.node.current(), item_id)
        etag = f'"{item.partition}-{item.source_offset}"'
        if if_none_match == etag:
            return ItemImage(etag)
        found = self.images.image(item.partition, item.source_offset)
        if found is None:
            raise RequestError(
                f"Item {item_id!r} has no image. Expected an image or uint8 image-shaped array "
                f"payload at {self.images.topic} partition {item.partition} offset "
                f"{item.source_offset}. Received: another payload kind, or the event is gone",
                404,
            )
        data, media_type = found
        return ItemImage(etag, data, media_type)

    def close(self) -> None:
        """Flush a producer this service made and close the image reader."""
        with self._lock:
            if self.producer is not None and self._owns_producer:
                self.producer.flush(10.0)
        self.images.close()


def _accepted(item_id: str, op: str, token: WriteToken) -> dict[str, Any]:
    return {
        "id": item_id,
        "op": op,
        "token": token.encode(),
        "partition": token.partition,
        "offset": token.offset,
    }


def _event(make: Callable[[], ItemEvent]) -> ItemEvent:
    try:
        return make()
    except InvalidEventError as e:
        raise RequestError(f"Invalid item. {e}", 422) from None


def _item(item: Item, version: str, vector: bool) -> dict[str, Any]:
    return {
        "id": item.item_id,
        "label": None if item.label is None else str(item.label),
        "metadata": dict(item.metadata),
        "model_version": version,
        "partition": item.partition,
        "source_offset": item.source_offset,
        "vector": np.asarray(item.vector, dtype=float).tolist() if vector else None,
    }
