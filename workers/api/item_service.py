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
from pydantic import ValidationError

from model.inputs import InputSpec
from producers.producer import ItemProducer
from simstream.errors import (
    DecodeError,
    DeliveryError,
    InvalidEventError,
    PayloadError,
    RequestError,
)
from simstream.wire import ItemEvent, WriteToken
from workers.api.config import WriteBatchConfig
from workers.api.cursor import decode_cursor, encode_cursor
from workers.api.decoding import QueryDecoder
from workers.api.end_offsets import PartitionEnds
from workers.api.filters import to_filter
from workers.api.handlers import describe
from workers.api.item_images import ItemImageReader
from workers.api.schemas import FilterSpec, ItemUpsert
from workers.api.searcher import indexed_item
from workers.index.shard import Item
from workers.node.generation import IndexGeneration
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
        batch: the limits of a batch of writes.
    """

    def __init__(
        self,
        node: IndexNode,
        decoder: QueryDecoder,
        images: ItemImageReader,
        make_producer: Callable[[], ItemProducer],
        producer: ItemProducer | None = None,
        ends: PartitionEnds | None = None,
        batch: WriteBatchConfig | None = None,
    ) -> None:
        self.node = node
        self.batch = batch or WriteBatchConfig()
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
        event = self._upsert_event(body, self._serving_model())
        return _accepted(body.id, "upsert", self._publish(event))

    def upsert_batch(self, raw_items: list[Any]) -> dict[str, Any]:
        """Check each upsert on its own, publish the valid ones together; the
        `BatchWriteAccepted` body (per-item errors by position, one token for all).

        Raises:
            RequestError: (422) more items than ``SIMSTREAM_API_MAX_WRITE_BATCH``.
        """
        limit = self.batch.max_items
        if len(raw_items) > limit:
            raise RequestError(
                f"Invalid value for `items`. Expected at most {limit} items in one batch "
                f"(SIMSTREAM_API_MAX_WRITE_BATCH). Received: {len(raw_items)} items",
                422,
            )
        model = self._serving_model()
        errors: list[dict[str, Any]] = []
        valid: list[tuple[int, ItemEvent]] = []
        for n, raw in enumerate(raw_items):
            try:
                valid.append((n, self._upsert_event(ItemUpsert.model_validate(raw), model)))
            except ValidationError as e:
                errors.append(
                    _item_error(n, raw, 422, describe([dict(err) for err in e.errors()])[0])
                )
            except (RequestError, DecodeError, PayloadError, InvalidEventError) as e:
                errors.append(_item_error(n, raw, *_status(e)))
        accepted: list[dict[str, Any]] = []
        tokens: list[WriteToken] = []
        outcomes = self.item_producer().publish_all_sync([e for _, e in valid]) if valid else []
        for (n, event), outcome in zip(valid, outcomes, strict=True):
            if isinstance(outcome, WriteToken):
                self._observe(outcome)
                tokens.append(outcome)
                accepted.append({"index": n, **_accepted(event.id, "upsert", outcome)})
            else:
                errors.append(_item_error(n, raw_items[n], *_status(outcome)))
        errors.sort(key=lambda e: e["index"])
        return {
            "accepted": len(accepted),
            "rejected": len(errors),
            "token": WriteToken.encode_all(tokens) if tokens else None,
            "items": accepted,
            "errors": errors,
        }

    def _serving_model(self) -> tuple[InputSpec, str] | None:
        """The serving model's input spec and version (None before a generation serves)."""
        serving = self.node.serving
        if serving is None:
            return None
        return self.node.encoder(serving.version).input_spec, serving.version

    def _upsert_event(self, body: ItemUpsert, model: tuple[InputSpec, str] | None) -> ItemEvent:
        payload = self.decoder.item_payload(body, model)
        return _event(lambda: ItemEvent.upsert(body.id, payload, body.label, body.metadata))

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
        self._observe(token)
        return token

    def _observe(self, token: WriteToken) -> None:
        """Tell the end offsets of an acknowledged write (its token is then below the end)."""
        if self.ends is not None:
            self.ends.observe(token.partition, token.offset + 1)

    # --- reads -----------------------------------------------------------------------

    def get(self, item_id: str, vector: bool) -> dict[str, Any]:
        """The `ItemResponse` body of an indexed item (with its embedding if ``vector``).

        Raises:
            NotFoundError: no live item has this id.
        """
        generation = self.node.current()
        return _item(indexed_item(generation, item_id), generation.version, vector)

    def page(
        self,
        generation: IndexGeneration,
        cursor: str | None,
        limit: int,
        spec: FilterSpec | None,
        vector: bool,
    ) -> dict[str, Any]:
        """The `ItemPage` body: up to ``limit`` items after ``cursor`` in id order.

        Raises:
            RequestError: (400) a cursor this API did not write.
        """
        after = None if cursor is None else decode_cursor(cursor)
        page = generation.index.page(after, limit, to_filter(spec), vectors=vector)
        return {
            "model_version": generation.version,
            "items": [_item(i, generation.version, vector) for i in page.items],
            "next_cursor": None if page.after is None else encode_cursor(page.after),
        }

    def count(self, generation: IndexGeneration, spec: FilterSpec | None) -> dict[str, Any]:
        """The `ItemCount` body: how many items of ``generation`` pass the filter."""
        return {
            "model_version": generation.version,
            "count": generation.index.count(to_filter(spec)),
        }

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


def _status(error: Exception) -> tuple[int, str]:
    """The status and detail a single write would answer for ``error``."""
    if isinstance(error, RequestError):
        return error.status, str(error)
    if isinstance(error, DecodeError):
        return 400, error.detail or error.reason
    if isinstance(error, DeliveryError):
        return 503, f"The items topic did not acknowledge the event: {error}"
    return 422, f"Invalid item. {error}"


def _item_error(index: int, raw: Any, status: int, detail: str) -> dict[str, Any]:
    item_id = raw.get("id") if isinstance(raw, dict) else None
    return {
        "index": index,
        "id": item_id if isinstance(item_id, str) else None,
        "status": status,
        "detail": detail,
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
