"""Routes of lookups: ``POST /v1/lookup``, ``POST /v1/lookup/batch``, ``POST /v1/classify``.

`fast_routes` answers the two lookups without FastAPI's per-request machinery
(`workers.api.fast_route`); the routes here document them and answer what
those hand back (refusals). Handlers are coroutines that first pin the
request's generation, waiting for its write token on the event loop
(`WriteWaiter`: no thread is held while waiting), then run the search in the
thread pool, where the blocking parts (Redis, the encoder, hnswlib, which
releases the GIL) do not stall the loop. No search runs on the loop itself,
however cheap: one blocked on a shard's write lock would hold every request
behind it, health probes included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from workers.api.auth import read_scope
from workers.api.fast_route import FastRoute
from workers.api.json_body import JsonBodyRoute
from workers.api.schemas import (
    BatchLookupRequest,
    BatchLookupResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    LookupRequest,
    LookupResponse,
)
from workers.api.searcher import Reply
from workers.api.state import ApiState, get_state

router = APIRouter(
    prefix="/v1", tags=["lookup"], dependencies=[read_scope], route_class=JsonBodyRoute
)

JSON = "application/json"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed input (base64, image, token), or a token past the end offset.",
    },
    401: {"model": ErrorResponse, "description": "Missing or invalid bearer token."},
    404: {"model": ErrorResponse, "description": "Unknown item id."},
    413: {"model": ErrorResponse, "description": "Body larger than SIMSTREAM_API_MAX_BODY_BYTES."},
    422: {"model": ErrorResponse, "description": "Invalid field or value out of bounds."},
    429: {
        "model": ErrorResponse,
        "description": "Too many requests of this route class in flight (Retry-After).",
    },
    503: {
        "model": ErrorResponse,
        "description": "Not serving yet, or a write token not visible in time (Retry-After).",
    },
}


@router.post(
    "/lookup",
    response_model=LookupResponse,
    responses=ERRORS,
    summary="Nearest neighbours of one query",
)
async def lookup(request: LookupRequest, state: ApiState = Depends(get_state)) -> Response:  # noqa: B008
    """Find the `k` nearest items of a vector, a raw payload or an indexed item.

    Results are cached under (model version, index log position, query, k, ef, filter);
    the `X-Cache` response header says `hit`, `miss` or `bypass` (`fresh: true`).
    With `after`, the lookup first waits until that write is searchable.
    """
    generation = await state.waiter.generation(request.after)
    reply = state.searcher.lookup_now(request, generation)
    if reply is None:
        reply = await run_in_threadpool(state.searcher.lookup, request, generation)
    return _response(reply)


@router.post(
    "/lookup/batch",
    response_model=BatchLookupResponse,
    responses=ERRORS,
    summary="Nearest neighbours of many queries",
)
async def lookup_batch(
    request: BatchLookupRequest,
    state: ApiState = Depends(get_state),  # noqa: B008
) -> Response:
    """Answer up to `SIMSTREAM_API_MAX_BATCH` queries with shared options, in order.

    Raw payloads are embedded in one batch and vectors searched in one call;
    each query has its own cache entry (shared with single lookups).
    """
    generation = await state.waiter.generation(request.after)
    return _response(await run_in_threadpool(state.searcher.lookup_batch, request, generation))


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    summary="k-NN label of one query, or unknown",
)
async def classify(
    request: ClassifyRequest,
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Majority vote of the labelled neighbours within a calibrated distance threshold.

    The threshold is the request's, else the serving model's calibrated one
    (`calibration.threshold` in its registry metrics), else
    `SIMSTREAM_CLASSIFY_THRESHOLD`. No neighbour within it: `"unknown"`. The
    answer lists every neighbour consulted and the votes per label.
    """
    generation = await state.waiter.generation(request.after)
    return await run_in_threadpool(state.classifier.classify, request, generation)


def fast_routes() -> list[FastRoute]:
    """`/v1/lookup` and `/v1/lookup/batch` as `FastRoute`s, to put before this router.

    They answer what the routes above answer, with the same bodies; refusals
    are handed to the routes above.
    """
    documented = {route.path: route for route in router.routes if isinstance(route, APIRoute)}
    return [
        FastRoute(
            documented["/v1/lookup"],
            LookupRequest,
            lambda state, request, generation: state.searcher.lookup(request, generation),
            lambda state, request, generation: state.searcher.lookup_now(request, generation),
        ),
        FastRoute(
            documented["/v1/lookup/batch"],
            BatchLookupRequest,
            lambda state, request, generation: state.searcher.lookup_batch(request, generation),
        ),
    ]


def _response(reply: Reply) -> Response:
    return Response(reply.body, media_type=JSON, headers={"X-Cache": reply.cache})
