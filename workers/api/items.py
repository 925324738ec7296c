"""Routes of items: publish upserts and deletes, read indexed items, their images, a sample.

Writes go through the items producer to Kafka and answer ``202`` with a write
token as soon as the broker acknowledged the event; the item becomes
searchable once the embed workers and the index node have processed it. Pass
the token as ``after`` to a lookup to wait for that moment (read-your-writes).
Payloads are checked against the serving model's input spec before publishing,
so an event the workers could not embed is refused here (422) rather than
dead-lettered later.

Ids may hold slashes. ``GET /v1/items/{id}/image`` is an item's image only when
that last slash is a literal ``/`` in the request's raw path: an id ending in
``/image`` is fetched with its slash percent-encoded (``/v1/items/a%2Fimage``),
as ``encodeURIComponent`` writes it.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from workers.api.auth import admin_scope, read_scope
from workers.api.lookup import ERRORS
from workers.api.schemas import ItemResponse, ItemSample, ItemUpsert, WriteAccepted
from workers.api.state import ApiState, get_state

router = APIRouter(prefix="/v1/items", tags=["items"])

ItemId = Path(..., min_length=1, description="The item id.", examples=["item-0042"])
MAX_SAMPLE = 100


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
    return state.items.upsert(body)


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
    return state.items.delete(item_id)


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
    return state.items.sample(sample)


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
async def item_image(
    request: Request,
    item_id: str = ItemId,
    if_none_match: str | None = Header(None),
    vector: bool = Query(False, include_in_schema=False),
    state: ApiState = Depends(get_state),  # noqa: B008
) -> Response:
    """The image payload the item was published with (uint8 arrays rendered as PNG).

    404 when the item is unknown, its payload is not an image, or its event has
    left the items topic. The event is read in the API's wait pool, never in the
    pool of request handlers, for at most SIMSTREAM_API_IMAGE_READ_TIMEOUT_S.
    """
    if not _literal_suffix(request, "/image"):  # an id ending in an encoded "/image"
        item = await to_thread.run_sync(state.items.get, item_id + "/image", vector)
        return JSONResponse(item)
    image = await to_thread.run_sync(
        state.items.image, item_id, if_none_match, limiter=state.wait_pool
    )
    if image.data is None:
        return Response(status_code=304, headers={"ETag": image.etag})
    headers = {"ETag": image.etag, "Cache-Control": "no-cache"}
    return Response(image.data, media_type=image.media_type, headers=headers)


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
    """The item as the serving generation holds it: label, metadata, model version.

    An id ending in ``/image`` needs that slash percent-encoded (``%2F``).
    """
    return state.items.get(item_id, vector)


def _literal_suffix(request: Request, suffix: str) -> bool:
    """Whether the raw (undecoded) request path ends with ``suffix`` as written."""
    raw = request.scope.get("raw_path")
    if not raw:
        return True
    return bytes(raw).split(b"?", 1)[0].endswith(suffix.encode())
