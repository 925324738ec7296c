"""`create_router_app`: the query router's API (``simstream router``), as a FastAPI app.

The router is stateless: it reads the cluster's membership from Redis
(refreshed every ``refresh_s``), and answers ``/v1/lookup``,
``/v1/lookup/batch``, ``/v1/classify`` and ``GET /v1/items/{id}`` for the whole
cluster (`RouterService`), with the nodes' error shape
(``detail``, ``code``, ``request_id``) and their bearer tokens, which it
passes on to the nodes. ``/readyz`` is ready when every partition set has a
ready replica serving a common model version.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Query as Param
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

import simstream
from model.registry import Registry
from simstream.errors import NotReadyError, PartitionUnavailableError
from simstream.settings import Settings
from workers.api import handlers, health
from workers.api.auth import TokenStore, read_scope
from workers.api.classifier import Thresholds, candidates, centroid_distances, verdict
from workers.api.config import AuthConfig, ClassifierConfig, ImageLimits
from workers.api.decoding import QueryDecoder
from workers.api.json_body import JsonBodyRoute
from workers.api.lookup import ERRORS
from workers.api.middleware import BodyLimitMiddleware, RequestContextMiddleware, request_id
from workers.api.schemas import (
    BatchLookupRequest,
    BatchLookupResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ItemResponse,
    LookupRequest,
    LookupResponse,
)
from workers.api.searcher import batch_body, check_batch, lookup_body
from workers.cache.cache import NullCache, ResultCache
from workers.cluster.membership import ClusterView, Membership
from workers.router.config import RouterConfig
from workers.router.fanout import Fanout
from workers.router.service import Routed, RouterService

JSON = "application/json"
ViewSource = Callable[[], ClusterView]


class Views:
    """The cluster view, read again when older than ``refresh_s`` (one read at a time).

    Args:
        read: reads the view (blocking: Redis).
        refresh_s: how long a view is used.
    """

    def __init__(self, read: ViewSource, refresh_s: float) -> None:
        self.read = read
        self.refresh_s = refresh_s
        self._view: ClusterView | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> ClusterView:
        """The view, refreshed first when stale."""
        if self._view is None or time.monotonic() - self._at >= self.refresh_s:
            async with self._lock:
                if self._view is None or time.monotonic() - self._at >= self.refresh_s:
                    self._view = await run_in_threadpool(self.read)
                    self._at = time.monotonic()
        assert self._view is not None
        return self._view


@dataclass
class RouterState:
    """What the router's routes share.

    Attributes:
        config: the router's config.
        tokens: the bearer tokens of each scope (checked here, passed on to nodes).
        views: the cluster view.
        service: fans out and merges.
        thresholds: classification thresholds per model version.
        client: the pooled HTTP client to the nodes.
    """

    config: RouterConfig
    tokens: TokenStore
    views: Views
    service: RouterService
    thresholds: Thresholds
    client: httpx.AsyncClient


async def _state(request: Request) -> RouterState:
    state: RouterState = request.app.state.api
    return state


def _forwarded(request: Request) -> dict[str, str]:
    headers = {"X-Request-ID": request_id(request.scope) or ""}
    auth = request.headers.get("authorization")
    if auth:
        headers["Authorization"] = auth
    return headers


def _flags(routed: Routed) -> bytes:
    missing = ",".join(str(p) for p in routed.missing).encode()
    return b',"partial":%s,"missing_partitions":[%s]}' % (
        b"true" if routed.missing else b"false",
        missing,
    )


def _reply(body: bytes, routed: Routed) -> Response:
    return Response(body[:-1] + _flags(routed), media_type=JSON, headers={"X-Cache": routed.cache})


lookups = APIRouter(
    prefix="/v1", tags=["lookup"], dependencies=[read_scope], route_class=JsonBodyRoute
)
ROUTER_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    503: {
        "model": ErrorResponse,
        "description": "No version served by every partition set, a write token not visible "
        "in time, or a partition set without a replica that answered (`partition_unavailable`, "
        "with `missing_partitions`; see `partial`).",
    },
}


@lookups.post("/lookup", response_model=LookupResponse, responses=ROUTER_ERRORS)
async def lookup(
    body: LookupRequest,
    request: Request,
    state: RouterState = Depends(_state),  # noqa: B008
) -> Response:
    """The `k` nearest items of the whole cluster (see the node's `/v1/lookup`)."""
    view = await state.views.current()
    routed = await state.service.search(view, body, [body], _forwarded(request), body.partial)
    [neighbours], [full] = routed.neighbours, routed.exhaustive
    return _reply(lookup_body(routed.version, routed.epoch, neighbours, False, full), routed)


@lookups.post("/lookup/batch", response_model=BatchLookupResponse, responses=ROUTER_ERRORS)
async def lookup_batch(
    body: BatchLookupRequest,
    request: Request,
    state: RouterState = Depends(_state),  # noqa: B008
) -> Response:
    """Many queries answered by the whole cluster, in order."""
    check_batch(state.config.search, body.queries)
    view = await state.views.current()
    routed = await state.service.search(view, body, body.queries, _forwarded(request), body.partial)
    out = batch_body(routed.version, routed.epoch, routed.neighbours, False, routed.exhaustive)
    return _reply(out, routed)


@lookups.post("/classify", response_model=ClassifyResponse, responses=ROUTER_ERRORS)
async def classify(
    body: ClassifyRequest,
    request: Request,
    state: RouterState = Depends(_state),  # noqa: B008
) -> Response:
    """k-NN label of one query over the whole cluster (see the node's `/v1/classify`)."""
    view = await state.views.current()
    by_centroid = body.vote == "centroid"
    headers = _forwarded(request)
    routed = await state.service.search(view, body, [body], headers, body.partial, by_centroid)
    threshold, source = await run_in_threadpool(
        state.thresholds.threshold, routed.version, body.threshold
    )
    rows = json.loads(routed.neighbours[0])
    centroids = None
    if by_centroid:
        sums, missing = await state.service.label_sums(
            view, routed.version, candidates(rows, threshold), body, headers
        )
        [vector] = routed.vectors
        centroids = centroid_distances(vector, sums, state.service.shape(routed.version)[1])
        if missing:
            routed = replace(routed, missing=sorted(set(routed.missing) | set(missing)))
    answer = verdict(rows, threshold, source, routed.version, routed.epoch, body.vote, centroids)
    answer |= {"degraded": False}
    return _reply(json.dumps(answer, separators=(",", ":")).encode(), routed)


@lookups.get(
    "/items/{item_id:path}",
    response_model=ItemResponse,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    tags=["items"],
)
async def get_item(
    item_id: str,
    request: Request,
    vector: bool = Param(False, description="Include the stored embedding."),
    state: RouterState = Depends(_state),  # noqa: B008
) -> dict[str, Any]:
    """An item, read from a replica of the partition set that owns its partition."""
    view = await state.views.current()
    version = state.service.version(view)
    replicas = state.service.owners(view, version, item_id)
    send = state.service.fanout.get(
        f"/v1/items/{item_id}", {"vector": str(vector).lower()}, _forwarded(request)
    )
    answer = await state.service.fanout.ask(replicas, send)
    if answer.body is None:
        raise PartitionUnavailableError(
            f"No replica of item {item_id!r}'s partition answered. Expected a ready replica "
            "of its partition set. Retry later",
            state.service.missing_of(view, item_id),
        )
    return answer.body


probes = APIRouter(tags=["health"])


@probes.get("/readyz", summary="Readiness")
async def readyz(state: RouterState = Depends(_state)) -> JSONResponse:  # noqa: B008
    """Ready when every partition set has a ready replica serving a common model version."""
    view = await state.views.current()
    try:
        version = state.service.version(view)
    except NotReadyError as e:
        return JSONResponse({"ready": False, "reason": str(e)}, status_code=503)
    return JSONResponse({"ready": True, "reason": f"ok: model {version}"})


def create_router_app(
    settings: Settings,
    views: ViewSource | None = None,
    cache: ResultCache | None = None,
) -> FastAPI:
    """Build the query router.

    Args:
        settings: limits, auth tokens, topics, the cluster's partition sets.
        views: reads the cluster view (default: the membership in the coordination Redis).
        cache: the result cache (`NullCache` if None).

    Returns:
        The app; its lifespan closes the HTTP client (the caller closes ``cache``).
    """
    config = RouterConfig.from_settings(settings)
    if views is None:
        membership = Membership.connect(
            config.coordination_url, config.search.items_topic, config.node_ttl_s
        )

        def read() -> ClusterView:
            return membership.view(config.partition_sets)

        views = read
    client = httpx.AsyncClient(
        timeout=config.timeout_s,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )
    decoder = QueryDecoder(settings.wire_limits(), ImageLimits.from_settings(settings))
    registry = Registry(config.registry_dir)
    service = RouterService(
        config,
        Fanout(client, config.hedge_s, config.search.partitions),
        decoder,
        cache or NullCache(),
        registry,
    )
    state = RouterState(
        config=config,
        tokens=TokenStore(AuthConfig.from_settings(settings)),
        views=Views(views, config.refresh_s),
        service=service,
        thresholds=Thresholds(ClassifierConfig.from_settings(settings), registry),
        client=client,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(
        title="simstream query router",
        version=simstream.__version__,
        summary="Lookups over every index node of a cluster.",
        lifespan=lifespan,
    )
    app.state.api = state
    handlers.install(app)

    @app.exception_handler(PartitionUnavailableError)
    async def _unavailable(request: Request, exc: PartitionUnavailableError) -> JSONResponse:
        body = {
            "code": exc.code,
            "detail": str(exc),
            "missing_partitions": exc.missing,
            "request_id": request_id(request.scope),
        }
        return JSONResponse(body, status_code=exc.status, headers={"Retry-After": "1"})

    app.include_router(lookups)
    app.include_router(probes)
    app.add_api_route("/healthz", health.healthz, methods=["GET"], tags=["health"])
    app.add_api_route("/metrics", health.prometheus, methods=["GET"], tags=["health"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestContextMiddleware, access_log_per_s=settings.api_access_log_per_s)
    return app
