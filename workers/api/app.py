"""`create_app`: the lookup API of one index node, as a FastAPI application.

Topology: the API runs inside the index node process (``simstream serve``), so
a lookup searches the in-memory shards without a network hop; reads scale by
running more node replicas, each a full copy built from the embeddings log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

import simstream
from producers.config import ProducerConfig
from producers.producer import ItemProducer
from simstream.settings import Settings
from workers.api import admin, handlers, health, internal, items, lookup, page
from workers.api.auth import TokenStore
from workers.api.classifier import Classifier
from workers.api.client_budget import ClientBudgetMiddleware
from workers.api.config import (
    AuthConfig,
    ClassifierConfig,
    ClientBudgetConfig,
    ConcurrencyConfig,
    EndOffsetsConfig,
    ImageLimits,
    ItemImageConfig,
    SearchConfig,
    WriteBatchConfig,
)
from workers.api.decoding import QueryDecoder
from workers.api.end_offsets import PartitionEnds
from workers.api.item_images import ItemImageReader
from workers.api.item_service import ItemService
from workers.api.limits import ConcurrencyLimitMiddleware
from workers.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from workers.api.searcher import Searcher
from workers.api.state import ApiState
from workers.api.waits import WriteWaiter
from workers.cache.cache import NullCache, ResultCache
from workers.node.node import IndexNode

DESCRIPTION = """\
Similarity lookups over a sharded hnswlib index kept fresh from Kafka.

* **Lookups** by embedding (`vector`), raw payload (`image`, `array`) or indexed `id`;
  batches; k-NN classification with a calibrated distance threshold.
* **Items**: publish upserts and deletes (answered with a *write token*), read items.
  Pass a token as `after` to a lookup to read your own write.
* **Cache**: results are cached in Redis under (model version, index log position,
  query, k, ef, filter); any index change moves the position, so a cached answer is
  never older than the index it is served for. `fresh: true` bypasses it.
* **Auth**: `Authorization: Bearer <token>`; read scope for lookups and reads, admin
  scope for writes and `/v1/admin/*` (off when no token is configured).

Errors are `{"code": ..., "detail": ..., "request_id": ...}` with a 4xx status:
`code` is stable and machine-readable, `detail` says what was expected and what was
received.
"""

TAGS = [
    {"name": "lookup", "description": "Nearest neighbours and classification."},
    {"name": "items", "description": "Publish and read items."},
    {"name": "operations", "description": "Statistics, models and retraining."},
    {"name": "health", "description": "Probes and Prometheus metrics (no auth)."},
]


def create_app(
    settings: Settings,
    node: IndexNode,
    producer: ItemProducer | None = None,
    cache: ResultCache | None = None,
) -> FastAPI:
    """Build the API of a started `IndexNode`.

    Args:
        settings: limits, auth tokens, topics.
        node: the index node whose serving generation answers lookups.
        producer: publishes item writes (made from settings on the first write if None).
        cache: the result cache (`NullCache` if None).

    Returns:
        The app; its lifespan closes what it made (a producer is flushed).

    Raises:
        ConfigError: a token file cannot be read.
    """
    tokens = TokenStore(AuthConfig.from_settings(settings))
    result_cache = cache or NullCache()
    decoder = QueryDecoder(settings.wire_limits(), ImageLimits.from_settings(settings))
    search_config = SearchConfig.from_settings(settings)
    searcher = Searcher(search_config, node, decoder, result_cache)
    concurrency = ConcurrencyConfig.from_settings(settings)
    wait_pool = CapacityLimiter(concurrency.wait_threads)
    ends = PartitionEnds(EndOffsetsConfig.from_settings(settings), wait_pool)
    state = ApiState(
        settings=settings,
        node=node,
        cache=result_cache,
        searcher=searcher,
        classifier=Classifier(ClassifierConfig.from_settings(settings), searcher, node.registry),
        items=ItemService(
            node,
            decoder,
            ItemImageReader(ItemImageConfig.from_settings(settings)),
            make_producer=lambda: ItemProducer(ProducerConfig.from_settings(settings)),
            producer=producer,
            ends=ends,
            batch=WriteBatchConfig.from_settings(settings),
        ),
        tokens=tokens,
        waiter=WriteWaiter(search_config, node, ends),
        ends=ends,
        wait_pool=wait_pool,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        title="simstream lookup API",
        version=simstream.__version__,
        summary="Similarity search over streams of items.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        telemetry=_telemetry(settings.api_otel),
    )
    app.state.api = state
    handlers.install(app)
    for module in (lookup, items, admin, health, page, internal):
        app.include_router(module.router)
    app.router.routes[:0] = lookup.fast_routes()
    app.mount("/static", page.static_files(), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        limits=concurrency.limits,
        retry_after_s=concurrency.retry_after_s,
        max_waiting=concurrency.max_waiting,
    )
    app.add_middleware(
        ClientBudgetMiddleware,
        config=ClientBudgetConfig.from_settings(settings),
        known_token=tokens.known,
        retry_after_s=concurrency.retry_after_s,
    )
    app.add_middleware(RequestContextMiddleware, access_log_per_s=settings.api_access_log_per_s)
    return app


def _telemetry(enabled: bool) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry, all on or all off (``SIMSTREAM_API_OTEL``).

    On, FastAPI reports to whichever providers the process configured; off, it
    does not look them up per request.
    """
    return {"tracing": enabled, "metrics": enabled, "logs": enabled}
