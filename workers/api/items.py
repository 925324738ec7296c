"""Routes of items: publish upserts and deletes, read indexed items, their images, a sample.

Writes go through the items producer to Kafka and answer ``202`` with a write
token as soon as the broker acknowledged the event; the item becomes
searchable once the embed workers and the index node have processed it. Pass
the token as ``after`` to a lookup to wait for that moment (read-your-writes).
Payloads are checked against the serving model's input spec before publishing,
so an event the workers could not embed is refused here (422) rather than
dead-lettered later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import Response

from model.inputs import InputSpec
from simstream.errors import DeliveryError, InvalidEventError, PayloadError, RequestError
from simstream.wire import ArrayPayload, ImagePayload, ItemEvent, Payload, WriteToken
from workers.api.auth import admin_scope, read_scope
from workers.api.lookup import ERRORS
from workers.api.schemas import ItemResponse, ItemSample, ItemUpsert, WriteAccepted
from workers.api.searcher import decode_base64
from workers.api.state import ApiState, get_state
from workers.index.shard import Item

router = APIRouter(prefix="/v1/items", tags=["items"])

ItemId = Path(..., min_length=1, description="The item id.", examples=["item-0042"])
MAX_SAMPLE = 100


def _accepted(item_id: str, op: str, token: WriteToken) -> dict[str, Any]:
    return {
        "id": item_id,
        "op": op,
        "token": token.encode(),
        "partition": token.partition,
        "offset": token.offset,
    }


def _publish(state: ApiState, event: ItemEvent) -> WriteToken:
    try:
        return state.item_producer().publish_sync(event)
    except InvalidEventError as e:
        raise RequestError(f"Invalid item. {e}", 422) from None
    except DeliveryError as e:
        raise RequestError(f"The items topic did not acknowledge the event: {e}", 503) from None


def _payload(state: ApiState, body: ItemUpsert) -> Payload:
    """The wire payload of an upsert, checked against the serving model when there is one."""
    serving = state.node.serving
    spec = state.node.encoder(serving.version).input_spec if serving is not None else None
    if body.image is not None:
        data = decode_base64(body.image, "image")
        try:
            payload: Payload = ImagePayload(data)
        except InvalidEventError as e:
            raise RequestError(f"Invalid value for `image`. {e}", 400) from None
        if spec is not None and serving is not None:
            array = state.searcher.decode_image(body.image, serving.version, spec.kind, spec.shape)
            _check(spec, array, serving.version)
        return payload
    assert body.array is not None
    kind = spec.kind if spec is not None else "vector"
    array = state.searcher.decode_array(body.array, kind)
    array = array if array.dtype == np.uint8 else array.astype(np.float32)
    if spec is not None and serving is not None:
        _check(spec, array, serving.version)
    return ArrayPayload.from_array(array)


def _check(spec: InputSpec, array: np.ndarray, version: str) -> None:
    try:
        spec.to_model_input(array)
    except PayloadError as e:
        raise RequestError(
            f"Invalid payload for model {version}: the workers could not embed it. {e}", 422
        ) from None


@router.post(
    "",
    status_code=202,
    response_model=WriteAccepted,
    responses=ERRORS,
    dependencies=[admin_scope],
    summary="Publish an upsert",
)
def upsert_item(body: ItemUpsert, state: ApiState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Publish an upsert of one item to the items topic; answer its write token."""
    payload = _payload(state, body)
    event = _event(lambda: ItemEvent.upsert(body.id, payload, body.label, body.metadata))
    return _accepted(body.id, "upsert", _publish(state, event))


@router.delete(
    "/{item_id:path}",
    status_code=202,
    response_model=WriteAccepted,
    responses=ERRORS,
    dependencies=[admin_scope],
    summary="Publish a delete",
)
def delete_item(
    item_id: str = ItemId,
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Publish a delete of one item; answer its write token (deleting an absent id is fine)."""
    event = _event(lambda: ItemEvent.delete(item_id))
    return _accepted(item_id, "delete", _publish(state, event))


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


@router.get(
    "",
    response_model=ItemSample,
    responses=ERRORS,
    dependencies=[read_scope],
    summary="A random sample of indexed items",
)
def sample_items(
    sample: int = Query(..., ge=1, le=MAX_SAMPLE, description=f"How many items (1..{MAX_SAMPLE})."),
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Items picked at random: the nearest item to each of `sample` random directions.

    Listing every item is not offered (the index is not a database). The pick
    favours items at the edge of the embedding cloud; it is meant for demos and
    smoke tests, not for statistics.
    """
    generation = state.node.current()
    rng = np.random.default_rng()
    index = generation.index
    picked: dict[str, Item] = {}
    if len(index):
        directions = rng.standard_normal((sample * 2, generation.dim)).astype(np.float32)
        for found in index.search_batch(directions, 1):
            for item_id in found.ids:
                item = index.get(item_id)
                if item is not None and len(picked) < sample:
                    picked.setdefault(item_id, item)
    return {
        "model_version": generation.version,
        "items": [_item(i, generation.version, False) for i in picked.values()],
    }


@router.get(
    "/{item_id:path}/image",
    responses={
        **ERRORS,
        200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "The image."},
    },
    response_class=Response,
    dependencies=[read_scope],
    summary="An item's image, read back from the items topic",
)
def item_image(
    item_id: str = ItemId,
    if_none_match: str | None = Header(None),
    state: ApiState = Depends(get_state),  # noqa: B008
) -> Response:
    """The image payload the item was published with (uint8 arrays rendered as PNG).

    404 when the item is unknown, its payload is not an image, or its event has
    left the items topic.
    """
    generation = state.node.current()
    item = state.searcher.item(generation, item_id)
    etag = f'"{item.partition}-{item.source_offset}"'
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    found = state.images.image(item.partition, item.source_offset)
    if found is None:
        raise RequestError(
            f"Item {item_id!r} has no image. Expected an image or uint8 image-shaped array "
            f"payload at {state.settings.topic_items} partition {item.partition} offset "
            f"{item.source_offset}. Received: another payload kind, or the event is gone",
            404,
        )
    data, media_type = found
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    return Response(data, media_type=media_type, headers=headers)


@router.get(
    "/{item_id:path}",
    response_model=ItemResponse,
    responses=ERRORS,
    dependencies=[read_scope],
    summary="An indexed item",
)
def get_item(
    item_id: str = ItemId,
    vector: bool = Query(False, description="Include the stored embedding."),
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """The item as the serving generation holds it: label, metadata, model version."""
    generation = state.node.current()
    return _item(state.searcher.item(generation, item_id), generation.version, vector)
