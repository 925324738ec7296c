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
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from simstream.errors import RequestError
from workers.api.auth import admin_scope, read_scope
from workers.api.handlers import describe
from workers.api.json_body import JsonBodyRoute
from workers.api.lookup import ERRORS
from workers.api.schemas import (
    BatchWriteAccepted,
    FilterSpec,
    ItemBatch,
    ItemCount,
    ItemPage,
    ItemResponse,
    ItemSample,
    ItemUpsert,
    WriteAccepted,
)
from workers.api.state import ApiState, get_state

router = APIRouter(prefix="/v1/items", tags=["items"], route_class=JsonBodyRoute)

ItemId = Path(..., min_length=1, description="The item id.", examples=["item-0042"])
MAX_SAMPLE = 100
MAX_PAGE = 1000


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


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchWriteAccepted,
    responses=ERRORS,
    dependencies=[admin_scope],
    summary="Publish many upserts",
)
async def upsert_batch(
    body: ItemBatch,
    request: Request,
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Check every upsert on its own and publish the valid ones together.

    One answer for all: the items published (each with its partition and offset),
    the ones refused by position in `items` with the status and detail a single
    POST /v1/items would have answered, and one write token covering every
    published item (pass it as `after`). At most SIMSTREAM_API_MAX_WRITE_BATCH
    items and SIMSTREAM_API_MAX_WRITE_BATCH_BYTES bytes.
    """
    size, limit = len(await request.body()), state.items.batch.max_bytes
    if size > limit:
        raise RequestError(
            f"Request body too large. Expected at most {limit} bytes in one batch "
            f"(SIMSTREAM_API_MAX_WRITE_BATCH_BYTES). Received: {size} bytes",
            413,
        )
    return await run_in_threadpool(state.items.upsert_batch, body.items)


@router.get(
    "",
    response_model=ItemPage | ItemSample,
    responses=ERRORS,
    dependencies=[read_scope],
    summary="Items by pages in id order, or a random sample",
)
async def list_items(
    limit: int = Query(100, ge=1, le=MAX_PAGE, description=f"Items per page (1..{MAX_PAGE})."),
    cursor: str | None = Query(
        None, description="The `next_cursor` of the previous page (omit for the first)."
    ),
    filter: str | None = Query(
        None,
        description="A lookup `filter` as JSON, URL-encoded, e.g. "
        '`{"labels":["3"],"metadata":{"color":"red"}}`.',
    ),
    vector: bool = Query(False, description="Include the stored embeddings."),
    after: str | None = Query(
        None, description="A write token: wait until that write is applied first."
    ),
    sample: int | None = Query(
        None,
        ge=1,
        le=MAX_SAMPLE,
        description=f"Instead of a page, this many items at random (1..{MAX_SAMPLE}).",
    ),
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Every item, page by page in id order (the server keeps nothing between pages).

    Follow `next_cursor` until it is null. Items written during a scan are
    listed when their id sorts after the cursor; deleted ones disappear. Under
    a filter a page may hold fewer than `limit` items, even none, and still have
    a next page (each shard looks at a bounded number of ids per page).

    With `sample`, items picked at random instead: the nearest item to each of
    `sample` random directions (favours items at the edge of the embedding
    cloud; for demos and smoke tests, not statistics).
    """
    if sample is not None:
        if cursor is not None or filter is not None:
            raise RequestError(
                "Invalid query. Expected either `sample` or a page (`cursor`, `filter`). "
                "Received: both",
                400,
            )
        return await run_in_threadpool(state.items.sample, sample)
    spec = filter_param(filter)
    generation = await state.waiter.generation(after)
    return await run_in_threadpool(state.items.page, generation, cursor, limit, spec, vector)


@router.get(
    "/count",
    response_model=ItemCount,
    responses=ERRORS,
    dependencies=[read_scope],
    summary="How many items pass a filter",
)
async def count_items(
    request: Request,
    filter: str | None = Query(
        None, description="A lookup `filter` as JSON, URL-encoded (omit to count all)."
    ),
    after: str | None = Query(
        None, description="A write token: wait until that write is applied first."
    ),
    state: ApiState = Depends(get_state),  # noqa: B008
) -> Any:
    """The number of indexed items that pass `filter`, in the serving generation.

    With `after`, answers once that write is applied (the client's way to wait
    for a write). An item whose id is `count` is read as `/v1/items/%63ount`.
    """
    if not _literal_suffix(request, "/count"):
        return JSONResponse(await run_in_threadpool(state.items.get, "count", False))
    spec = filter_param(filter)
    generation = await state.waiter.generation(after)
    return await run_in_threadpool(state.items.count, generation, spec)


def filter_param(text: str | None) -> FilterSpec | None:
    """The filter of a query parameter (JSON text, as in a lookup body).

    Raises:
        RequestError: (422) not JSON, or not a valid filter.
    """
    if text is None:
        return None
    try:
        return FilterSpec.model_validate_json(text)
    except ValidationError as e:
        errors = [{**err, "loc": ("filter", *err.get("loc", ()))} for err in e.errors()]
        raise RequestError(describe(errors)[0], 422) from None


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
