"""``POST /internal/v1/search``: the router's search of this node's partitions.

(And ``POST /internal/v1/label-sums``: the sums of some labels' stored
embeddings in this node's partitions, from which the router computes class
centroids for ``/v1/classify`` with ``vote="centroid"``.)

The query router (``simstream router``) embeds a query once, with the model
version it chose for the whole cluster, and sends only vectors to one replica
of each partition set. This route searches this node's generation of exactly
that version (serving, building or retained), never another one: a node
without it answers 409 ``version_unavailable`` and the router asks another
replica. A write token (``after``) is waited for in that generation; the
router sends it only to the owners of its partitions. No result cache here
(the router caches whole answers); the same bearer tokens as ``/v1`` (read
scope).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from simstream.errors import RequestError, VersionUnavailableError
from workers.api.auth import read_scope
from workers.api.filters import to_filter
from workers.api.json_body import JsonBodyRoute
from workers.api.schemas import ErrorResponse, FilterSpec
from workers.api.searcher import (
    Plan,
    Resolved,
    Searcher,
    check_limits,
    checked_vector,
    indexed_item,
)
from workers.api.state import ApiState, get_state
from workers.node.generation import IndexGeneration

router = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[read_scope], route_class=JsonBodyRoute
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InternalSearch(_Strict):
    """Vectors to search in one model version's generation of this node."""

    version: str = Field(..., min_length=1, description="The model version to search.")
    vectors: list[list[float]] = Field(..., min_length=1, description="Query embeddings.")
    k: int = Field(10, description="Neighbours per query.")
    ef: int | None = Field(None, description="hnswlib ef (default: the node's).")
    total_live: int | None = Field(
        None,
        ge=1,
        description="Live items of this version over the whole cluster: each shard's ef "
        "is scaled by its share of them, as in one node holding every partition "
        "(default: this node's own live items).",
    )
    filter: FilterSpec | None = None
    max_distance: float | None = Field(None, allow_inf_nan=False)
    exclude: list[str | None] | None = Field(
        None, description="Per query, an id to leave out of its answer (query by id)."
    )
    after: str | None = Field(
        None, description="A write token of this node's partitions: wait until it is applied."
    )


class ShardResult(_Strict):
    """The neighbours of one query in this node's partitions, nearest first."""

    ids: list[str]
    distances: list[float]
    labels: list[str | None]
    metadata: list[dict[str, Any]]
    exhaustive: bool


class InternalResults(_Strict):
    """The answer of a node: its version, its partitions and one result per query."""

    version: str
    partitions: list[int]
    results: list[ShardResult]


class LabelSumsRequest(_Strict):
    """Labels whose stored embeddings to sum in one model version's generation."""

    version: str = Field(..., min_length=1, description="The model version to read.")
    labels: list[str] = Field(
        ..., min_length=1, description="Labels as answers name them (at most max k)."
    )
    filter: FilterSpec | None = Field(None, description="Only items that pass it count.")
    after: str | None = Field(
        None, description="A write token of this node's partitions: wait until it is applied."
    )


class LabelSumOut(_Strict):
    """The sum of a label's stored embeddings in this node's partitions, and their count."""

    total: list[float]
    count: int


class LabelSums(_Strict):
    """The answer of a node: its version, its partitions and the sums of the labels it holds."""

    version: str
    partitions: list[int]
    sums: dict[str, LabelSumOut]


class StoredVector(_Strict):
    """An item's stored embedding in one model version's generation."""

    id: str
    version: str
    vector: list[float]


@router.get(
    "/items/{item_id:path}",
    response_model=StoredVector,
    responses={
        404: {"model": ErrorResponse, "description": "No live item with this id."},
        409: {"model": ErrorResponse, "description": "No generation of that version."},
    },
    summary="An item's embedding in one model version (router to node; query by id)",
)
async def stored_vector(
    item_id: str,
    version: str,
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """The embedding of `item_id` in this node's generation of `version`."""
    item = indexed_item(_generation(state, version), item_id)
    vector = [float(x) for x in item.vector]
    return {"id": item_id, "version": version, "vector": vector}


def _generation(state: ApiState, version: str) -> IndexGeneration:
    generation = state.node.generations.get(version)
    if generation is None:
        held = sorted(state.node.generations)
        raise VersionUnavailableError(
            f"Model version {version!r} is not held by this node. Expected one of "
            f"its generations {held}. Received: {version!r}"
        )
    return generation


@router.post(
    "/search",
    response_model=InternalResults,
    responses={409: {"model": ErrorResponse, "description": "No generation of that version."}},
    summary="Search this node's partitions with vectors (router to node)",
)
async def search(request: InternalSearch, state: ApiState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Search the vectors in this node's generation of `version`."""
    generation = _generation(state, request.version)
    if request.after is not None:
        await state.waiter.wait_in(generation, request.after)
    return await run_in_threadpool(search_generation, state.searcher, generation, request)


def search_generation(
    searcher: Searcher, generation: IndexGeneration, request: InternalSearch
) -> dict[str, Any]:
    """The body of `InternalResults` for ``request`` searched in ``generation``.

    Raises:
        RequestError: (422) a vector of the wrong size, k or ef out of bounds, or
            ``exclude`` not one entry per vector.
    """
    check_limits(searcher.config, request.k, request.ef)
    excluded = request.exclude or [None] * len(request.vectors)
    if len(excluded) != len(request.vectors):
        raise RequestError(
            f"Invalid value for `exclude`. Expected one entry per vector "
            f"({len(request.vectors)}). Received: {len(excluded)} entries",
            422,
        )
    space = generation.index.space
    queries = [
        Resolved(checked_vector(values, generation.dim, space, generation.version)[0], b"", ex)
        for values, ex in zip(request.vectors, excluded, strict=True)
    ]
    ef = request.ef if request.ef is not None else generation.index.config.ef_search
    plan = Plan(request.k, ef, to_filter(request.filter), request.max_distance, request.total_live)
    results = []
    for rows, exhaustive in searcher.neighbours(generation, queries, plan):
        results.append(
            {
                "ids": [r["id"] for r in rows],
                "distances": [r["distance"] for r in rows],
                "labels": [r["label"] for r in rows],
                "metadata": [r["metadata"] for r in rows],
                "exhaustive": exhaustive,
            }
        )
    partitions = sorted(s.partition for s in generation.index.shards)
    return {"version": generation.version, "partitions": partitions, "results": results}


@router.post(
    "/label-sums",
    response_model=LabelSums,
    responses={409: {"model": ErrorResponse, "description": "No generation of that version."}},
    summary="Sums of labels' stored embeddings in this node's partitions (router to node)",
)
async def label_sums(
    request: LabelSumsRequest,
    state: ApiState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Per label, the sum and count of its stored embeddings in this node's generation of
    `version` (labels it holds no item of are absent)."""
    generation = _generation(state, request.version)
    if request.after is not None:
        await state.waiter.wait_in(generation, request.after)
    max_k = state.searcher.config.max_k
    if len(request.labels) > max_k:
        raise RequestError(
            f"Invalid value for `labels`. Expected at most {max_k} labels (max k). "
            f"Received: {len(request.labels)}",
            422,
        )
    flt = to_filter(request.filter)
    sums = await run_in_threadpool(generation.index.label_sums, request.labels, flt)
    partitions = sorted(s.partition for s in generation.index.shards)
    return {
        "version": generation.version,
        "partitions": partitions,
        "sums": {
            label: {"total": found.total.tolist(), "count": found.size}
            for label, found in sums.items()
        },
    }
