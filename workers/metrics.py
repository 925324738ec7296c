"""Every Prometheus metric simstream exports, in one place so dashboards and code agree.

Processes expose them on ``/metrics`` (the API) or on ``SIMSTREAM_METRICS_PORT``
(dispatcher, workers). Names follow Prometheus conventions: ``_total`` counters,
``_seconds`` durations. Counters whose label values are known in advance start
at zero for each of them (`initialise_labels`), so ``rate()`` and alerts see
the first increment. A prefork worker's children write their values to files
in ``PROMETHEUS_MULTIPROC_DIR`` (set by `simstream.cli.ingest.worker` through
`workers.multiproc`), and `serve_metrics` then sums every process's files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

from simstream.wire import Reason

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)

# --- ingest: dispatcher and embed workers ----------------------------------------------
DISPATCHED_RANGES = Counter(
    "simstream_dispatcher_ranges_total", "Embed ranges sent to Celery", ["model_version"]
)
DISPATCHER_INFLIGHT = Gauge(
    "simstream_dispatcher_inflight_ranges",
    "Embed ranges sent and not yet completed",
    multiprocess_mode="max",
)
DISPATCHER_QUEUED = Gauge(
    "simstream_dispatcher_queued_ranges",
    "Embed ranges sent and not yet started by a worker (while any, open ranges grow)",
    multiprocess_mode="max",
)
DISPATCHER_PAUSED = Gauge(
    "simstream_dispatcher_paused",
    "1 while the dispatcher pauses for backpressure",
    multiprocess_mode="max",
)
ITEMS_LAG = Gauge(
    "simstream_items_lag_records",
    "Records of the items topic not yet embedded (end offset minus the dispatcher's commit)",
    ["model_version", "partition"],
)
EMBEDDED_ITEMS = Counter(
    "simstream_embedded_items_total", "Events embedded by workers", ["model_version", "op"]
)
EMBED_SECONDS = Histogram(
    "simstream_embed_batch_seconds", "Encoder time per batch", buckets=LATENCY_BUCKETS
)
DLQ_EVENTS = Counter(
    "simstream_dlq_events_total", "Events sent to the dead-letter topic", ["reason"]
)
OFFSET_OUT_OF_RANGE = Counter(
    "simstream_offset_out_of_range_total",
    "Reads at an assigned offset that the log does not hold (auto.offset.reset=error)",
    ["consumer"],
)

# --- index node ------------------------------------------------------------------------
APPLIED_RECORDS = Counter(
    "simstream_index_applied_records_total", "Embedding records applied", ["generation"]
)
INDEX_LAG = Gauge(
    "simstream_index_lag_records",
    "Records of the embeddings topic not yet applied",
    ["generation", "partition"],
)
SOURCE_LAG = Gauge(
    "simstream_index_source_lag_events",
    "Events of the items topic a generation has not accounted for yet",
    ["generation"],
)
INDEX_ITEMS = Gauge("simstream_index_items", "Items per shard", ["generation", "shard", "state"])
FRESHNESS = Histogram(
    "simstream_freshness_seconds",
    "Event time to searchable",
    ["generation"],
    buckets=FRESHNESS_BUCKETS,
)
SNAPSHOT_AGE = Gauge(
    "simstream_snapshot_age_seconds", "Seconds since the newest snapshot", ["generation"]
)
SNAPSHOT_SECONDS = Histogram(
    "simstream_snapshot_seconds", "Time to write a snapshot", buckets=FRESHNESS_BUCKETS
)
LOG_MISMATCH = Counter(
    "simstream_index_log_mismatch_total",
    "Times a generation found its embeddings log is not the one its state was built "
    "from (a snapshot discarded at restore, or the state rebuilt while running)",
    ["generation", "where"],
)
STALE_LOG_END = Counter(
    "simstream_index_stale_log_end_total",
    "Times an embeddings log end read below what a generation applied was at or above it "
    "when read again (a stale broker answer, no rebuild)",
    ["generation"],
)
MODEL_INFO = Info("simstream_model", "The serving model version (label version)")
#: The keys each info metric sets (its labels), for dashboards' and alerts' checks.
INFO_KEYS: dict[str, tuple[str, ...]] = {"simstream_model": ("version",)}

# --- API and cache ---------------------------------------------------------------------
REQUEST_SECONDS = Histogram(
    "simstream_api_request_seconds",
    "API request latency",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter("simstream_cache_requests_total", "Result cache look-ups", ["result"])
CACHE_LOCAL_HITS = Counter(
    "simstream_cache_local_hits_total",
    "Result cache look-ups answered by the in-process LRU (Redis not asked)",
)
API_INFLIGHT = Gauge(
    "simstream_api_inflight_requests", "API requests in flight per route class", ["route_class"]
)
API_END_OFFSET_REFRESHES = Counter(
    "simstream_api_end_offset_refreshes_total",
    "Reads of the items topic's end offsets from the broker (to check write tokens)",
)
API_SEARCH_SECONDS = Histogram(
    "simstream_api_search_seconds",
    "Index search time per search call of a lookup, batch or classification (hnswlib and "
    "the merge; no HTTP, decoding, embedding or description)",
    buckets=(0.00005, 0.0001, 0.0002, *LATENCY_BUCKETS),
)
API_SEARCH_WAIT = Histogram(
    "simstream_api_search_wait_seconds",
    "Time a costly search waited for a search slot (SIMSTREAM_API_SEARCH_SLOTS)",
)
API_SEARCH_SHED = Counter(
    "simstream_api_search_shed_total",
    "Costly searches answered 429 after waiting SIMSTREAM_API_SEARCH_QUEUE_S for a slot",
)
API_REJECTED = Counter(
    "simstream_api_rejected_requests_total",
    "API requests answered 429 over their route class's concurrency limit "
    "(route_class waiting: over SIMSTREAM_API_MAX_WAITING; client_budget: a client over "
    "its share of the node's CPU time)",
    ["route_class"],
)
API_WAITING = Gauge(
    "simstream_api_waiting_requests",
    "API requests waiting on the event loop for their write token, outside their route class",
)

# --- retraining ------------------------------------------------------------------------
RETRAIN_RUNS = Counter("simstream_retrain_runs_total", "Retrain runs", ["decision"])
REINDEX_PROGRESS = Gauge(
    "simstream_reindex_progress_ratio",
    "Share of items embedded into the new generation",
    multiprocess_mode="max",
)


def serve_metrics(port: int) -> None:
    """Expose the metrics on ``port`` (0 disables).

    With ``PROMETHEUS_MULTIPROC_DIR`` set (a prefork worker), the values of every
    process that wrote there are summed; otherwise this process's registry.
    """
    if not port:
        return
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    start_http_server(port, registry=registry)


# --- dispatcher: ranges retried and given up ----------------------------------------
DISPATCHER_RETRIED_RANGES = Counter(
    "simstream_dispatcher_retried_ranges_total",
    "Embed ranges sent again: failed (after backoff), overdue (queued or its heartbeat stopped)",
    ["model_version", "reason"],
)
DISPATCHER_COMMIT_FAILURES = Counter(
    "simstream_dispatcher_commit_failures_total",
    "Offset commits the broker refused (tried again at the next poll of results)",
    ["model_version"],
)
DISPATCHER_FAILED_RANGES = Counter(
    "simstream_dispatcher_failed_ranges_total",
    "Embed ranges the dispatcher dead-lettered after dispatch_max_attempts failures",
    ["model_version"],
)
DISPATCHER_BACKING_OFF = Gauge(
    "simstream_dispatcher_backing_off_ranges",
    "Failed embed ranges waiting to be sent again",
    multiprocess_mode="max",
)


#: Label values known before anything happens; their counters start at zero.
RETRAIN_DECISIONS = ("promoted", "rejected", "skipped", "failed")
CACHE_RESULTS = ("hit", "miss", "error")
ROUTER_HEDGES = Counter(
    "simstream_router_hedged_requests_total",
    "Requests the router also sent to another replica after the hedge deadline",
)
ROUTER_RETRIES = Counter(
    "simstream_router_replica_failures_total",
    "Replica requests that failed (another replica of the set was asked, if any)",
)
ROUTER_MISSING = Counter(
    "simstream_router_missing_sets_total",
    "Partition sets left without an answer for a query (no replica answered)",
)

ROUTE_CLASSES = ("lookups", "writes", "images", "admin")
CONSUMERS = ("embedder", "node", "item_images")
RETRY_REASONS = ("failed", "overdue")


def initialise_labels() -> None:
    """Create every counter child whose label values are known, at zero."""
    for reason in Reason:
        DLQ_EVENTS.labels(reason.value)
    DLQ_EVENTS.labels("range_failed")
    for decision in RETRAIN_DECISIONS:
        RETRAIN_RUNS.labels(decision)
    for result in CACHE_RESULTS:
        CACHE_REQUESTS.labels(result)
    for route_class in (*ROUTE_CLASSES, "waiting", "client_budget"):
        API_REJECTED.labels(route_class)
    for consumer in CONSUMERS:
        OFFSET_OUT_OF_RANGE.labels(consumer)


def initialise_version(version: str) -> None:
    """Create the counters labelled with a model version at zero, once it is known."""
    DISPATCHED_RANGES.labels(version)
    DISPATCHER_FAILED_RANGES.labels(version)
    DISPATCHER_COMMIT_FAILURES.labels(version)
    for reason in RETRY_REASONS:
        DISPATCHER_RETRIED_RANGES.labels(version, reason)
    EMBEDDED_ITEMS.labels(version, "upsert")


initialise_labels()
