"""Every Prometheus metric simstream exports, in one place so dashboards and code agree.

Processes expose them on ``/metrics`` (the API) or on ``SIMSTREAM_METRICS_PORT``
(dispatcher, workers). Names follow Prometheus conventions: ``_total`` counters,
``_seconds`` durations.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)

# --- ingest: dispatcher and embed workers ----------------------------------------------
DISPATCHED_RANGES = Counter(
    "simstream_dispatcher_ranges_total", "Embed ranges sent to Celery", ["model_version"]
)
DISPATCHER_INFLIGHT = Gauge(
    "simstream_dispatcher_inflight_ranges", "Embed ranges sent and not yet completed"
)
DISPATCHER_PAUSED = Gauge(
    "simstream_dispatcher_paused", "1 while the dispatcher pauses for backpressure"
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
ACTIVE_MODEL = Gauge("simstream_active_model_version", "Numeric id of the serving model")

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
API_REJECTED = Counter(
    "simstream_api_rejected_requests_total",
    "API requests answered 429 over their route class's concurrency limit",
    ["route_class"],
)

# --- retraining ------------------------------------------------------------------------
RETRAIN_RUNS = Counter("simstream_retrain_runs_total", "Retrain runs", ["decision"])
REINDEX_PROGRESS = Gauge(
    "simstream_reindex_progress_ratio", "Share of items embedded into the new generation"
)


def serve_metrics(port: int) -> None:
    """Expose the default registry on ``port`` (0 disables)."""
    if port:
        start_http_server(port)


# --- dispatcher: ranges retried and given up ----------------------------------------
DISPATCHER_RETRIED_RANGES = Counter(
    "simstream_dispatcher_retried_ranges_total",
    "Embed ranges sent again: failed (after backoff), overdue (queued or its heartbeat stopped)",
    ["model_version", "reason"],
)
DISPATCHER_FAILED_RANGES = Counter(
    "simstream_dispatcher_failed_ranges_total",
    "Embed ranges the dispatcher dead-lettered after dispatch_max_attempts failures",
    ["model_version"],
)
DISPATCHER_BACKING_OFF = Gauge(
    "simstream_dispatcher_backing_off_ranges", "Failed embed ranges waiting to be sent again"
)
