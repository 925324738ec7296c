"""The one settings object, read from ``SIMSTREAM_*`` environment variables.

`Settings.load()` is the only place that reads the environment (and an optional
``.env`` file in the working directory). Components receive a `Settings`
instance in their constructor; nothing else calls `os.environ`.

Every field maps to the variable ``SIMSTREAM_<FIELD NAME IN UPPER CASE>``; for
example ``kafka_bootstrap_servers`` is read from
``SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS``. `Settings.env_names()` lists them all.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from simstream.errors import SettingsError
from simstream.wire.limits import WireLimits

ENV_PREFIX = "SIMSTREAM_"


class Settings(BaseSettings):
    """Every setting of simstream, typed and validated.

    Groups: runtime and logging, Kafka, Redis and Celery, storage, API, embedded
    stack, model defaults, ingest, index, cache, retraining.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- runtime and logging ---------------------------------------------------------
    environment: Literal["development", "production"] = Field(
        "development", description="development (readable logs) or production (JSON logs)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="one of DEBUG, INFO, WARNING, ERROR"
    )
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto (json in production), console or json"
    )

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="comma-separated host:port list"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    )
    kafka_sasl_mechanism: str | None = Field(
        None, description="e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: str | None = Field(None, description="SASL password")
    kafka_ssl_ca_location: str | None = Field(None, description="path of the CA bundle")
    kafka_ssl_certificate_location: str | None = Field(
        None, description="path of the client certificate"
    )
    kafka_ssl_key_location: str | None = Field(None, description="path of the client key")
    kafka_client_config: dict[str, str] = Field(
        default_factory=dict,
        description='a JSON object of extra librdkafka properties, e.g. {"client.rack": "a"}',
    )
    kafka_session_timeout_ms: int = Field(
        6000, ge=1000, description="consumer group session timeout in ms (≥ 1000)"
    )
    kafka_max_poll_interval_ms: int = Field(
        60000, ge=1000, description="consumer max poll interval in ms (≥ 1000)"
    )
    topic_items: str = Field("items", min_length=1, description="topic of item events")
    topic_dlq: str = Field("items.dlq", min_length=1, description="dead-letter topic")
    topic_embeddings_prefix: str = Field(
        "embeddings", min_length=1, description="embeddings topics are <prefix>.<version>"
    )
    partitions: int = Field(4, ge=1, le=1024, description="partitions per topic (1..1024)")
    replication_factor: int = Field(1, ge=1, le=16, description="topic replication (1..16)")

    # --- Redis and Celery ------------------------------------------------------------
    redis_cache_url: str = Field(
        "redis://127.0.0.1:6379/0", description="redis:// URL of the result cache"
    )
    celery_broker_url: str = Field(
        "redis://127.0.0.1:6379/1", description="URL of the Celery broker (not the cache)"
    )
    celery_result_backend: str = Field(
        "redis://127.0.0.1:6379/2", description="URL of the Celery result backend"
    )

    # --- storage ---------------------------------------------------------------------
    data_dir: Path = Field(
        Path("var"), description="directory for snapshots, the model registry and logs"
    )
    mnist_dir: Path | None = Field(
        None, description="directory of MNIST IDX files (used instead of downloading)"
    )

    # --- API -------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="address the API binds to")
    api_port: int = Field(8000, ge=1, le=65535, description="an integer port 1..65535")
    api_read_tokens: str = Field(
        "", description="comma-separated bearer tokens with read scope (empty: no auth)"
    )
    api_admin_tokens: str = Field("", description="comma-separated bearer tokens with admin scope")
    api_read_tokens_file: Path | None = Field(
        None,
        description="file of bearer tokens with read scope, one per line (a mounted secret; "
        "re-read while serving, so tokens rotate without a restart)",
    )
    api_admin_tokens_file: Path | None = Field(
        None,
        description="file of bearer tokens with admin scope, one per line (a mounted secret; "
        "re-read while serving)",
    )
    api_tokens_check_s: float = Field(
        2.0, gt=0, description="seconds between re-reads of the token files"
    )
    api_max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest accepted request body in bytes"
    )
    api_max_k: int = Field(1000, ge=1, description="largest k a lookup may ask for")
    api_max_batch: int = Field(256, ge=1, description="most queries in one batch request")
    api_batch_window_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="milliseconds a single-vector search waits for concurrent ones to "
        "search them in one batch (0: off)",
    )
    api_inline_lookups: bool = Field(
        True,
        description="answer a lookup on the event loop, without the thread hop, when it "
        "cannot wait: by vector or id, no filter, at most the default ef, the cache bypassed, "
        "absent or holding it in the process, and no shard lock busy",
    )
    metrics_port: int = Field(
        9100, ge=0, le=65535, description="Prometheus port of non-API processes (0: off)"
    )
    api_ready_max_lag: int = Field(
        1000,
        ge=0,
        description="events of lag within which a node first becomes ready; above it, "
        "answers say degraded (a node that caught up once stays ready)",
    )
    api_write_wait_s: float = Field(
        10.0, gt=0, description="how long a lookup with `after` waits for the index"
    )
    api_max_concurrent_lookups: int = Field(
        24, ge=1, description="lookups, classifications and reads in flight at once (else 429)"
    )
    api_max_waiting: int = Field(
        256,
        ge=1,
        description="requests waiting for their write token at once, outside their route "
        "class's limit (else 429)",
    )
    api_refusal_delay_s: float = Field(
        0.1,
        ge=0,
        le=5,
        description="decompression-bomb and far-future-token refusals are answered after a "
        "random delay up to this, so a flood of them neither keeps the event loop busy nor "
        "is answered in one burst (0: at once)",
    )
    api_client_busy_per_s: float = Field(
        0.25,
        ge=0,
        description="CPU-seconds of the node each client (bearer token, else address) earns "
        "a second; one over it is refused 429 while other clients compete (0: off)",
    )
    api_client_burst_s: float = Field(
        0.25, gt=0, description="CPU-seconds a client can save up for a burst"
    )
    api_client_max_inflight: int = Field(
        8,
        ge=1,
        description="requests a client holds at once (waiting ones included) while other "
        "clients compete; more are refused 429",
    )
    api_client_tarpit_s: float = Field(
        0.25,
        ge=0,
        le=5,
        description="delay before a client over its budget is answered 429 (a client "
        "ignoring Retry-After cannot spin)",
    )
    api_access_log_per_s: int = Field(
        50,
        ge=0,
        description="most access-log lines a second per route and status; the rest are "
        "counted in the next line's `suppressed` (0: no access log)",
    )
    api_otel: bool = Field(
        False,
        description="FastAPI's own OpenTelemetry spans, metrics and exception logs, where "
        "an OpenTelemetry provider is configured in the process (off: the Prometheus "
        "metrics and structured logs only, and no check of the providers per request)",
    )
    api_max_concurrent_writes: int = Field(
        8, ge=1, description="item writes in flight at once (else 429)"
    )
    api_max_concurrent_images: int = Field(
        8, ge=1, description="item image reads in flight at once (else 429)"
    )
    api_max_concurrent_admin: int = Field(
        2, ge=1, description="admin requests in flight at once (else 429)"
    )
    api_retry_after_s: int = Field(
        1, ge=1, description="Retry-After of a 429 answered over a concurrency limit"
    )
    api_search_slots: int = Field(
        0,
        ge=0,
        description="costly searches (above one lookup at the default ef) running at once, "
        "one thread each; more wait (0: half the CPU cores, at least 1)",
    )
    api_search_queue_s: float = Field(
        2.0, gt=0, description="longest wait of a costly search for a slot (then 429)"
    )
    api_wait_threads: int = Field(
        4, ge=1, description="threads for blocking waits (image reads, end offsets)"
    )
    api_end_offsets_refresh_s: float = Field(
        0.1,
        ge=0,
        description="least seconds between two reads of the items topic's end offsets",
    )
    api_image_read_timeout_s: float = Field(
        2.0, gt=0, description="longest read of one item event for GET /v1/items/{id}/image"
    )
    api_image_pixels_factor: int = Field(
        64,
        ge=1,
        description="largest decoded query image, in multiples of the model input's pixels",
    )
    api_max_image_pixels: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description="cap of the decoded query image pixels, whatever the model input size",
    )
    api_max_batch_images: int = Field(
        32, ge=1, description="most `image` queries in one batch request"
    )
    api_max_write_batch: int = Field(
        500, ge=1, description="most items in one POST /v1/items/batch"
    )
    api_max_write_batch_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="largest POST /v1/items/batch body in bytes (SIMSTREAM_API_MAX_BODY_BYTES "
        "applies too)",
    )
    # --- query router ----------------------------------------------------------------
    router_hedge_ms: float = Field(
        50.0,
        ge=0,
        description="milliseconds the router waits for a replica before asking another "
        "replica of the same partition set too (a hedged request; 0: off)",
    )
    router_timeout_s: float = Field(
        10.0, gt=0, description="longest the router waits for one node's answer"
    )
    classify_threshold: float = Field(
        0.5,
        gt=0,
        description="distance within which neighbours vote in /v1/classify when the "
        "serving model's metrics hold no calibrated threshold",
    )

    # --- cluster of index nodes -----------------------------------------------------
    node_id: str = Field("", description="stable id of this index node (empty: the host name)")
    node_url: str = Field(
        "",
        description="where a router reaches this node's API (empty: http://<api host>:<api port>)",
    )
    partition_sets: int = Field(
        1,
        ge=1,
        le=1024,
        description="partition sets: partition p is held by the nodes of set p % sets "
        "(1: every node holds every partition; at most SIMSTREAM_PARTITIONS)",
    )
    partition_set: int | None = Field(
        None,
        ge=0,
        description="this node's partition set, below SIMSTREAM_PARTITION_SETS (empty: the "
        "ordinal at the end of the node id, name-<n>, modulo the sets; no ordinal: 0)",
    )
    node_heartbeat_s: float = Field(
        2.0, gt=0, description="seconds between two announcements of an index node's record"
    )
    node_ttl_s: float = Field(
        6.0,
        gt=0,
        description="seconds a node's record outlives its last announcement (above the heartbeat)",
    )

    # --- embedded stack --------------------------------------------------------------
    broker_host: str = Field("127.0.0.1", description="host of the embedded Kafka broker")
    broker_port: int = Field(9092, ge=1, le=65535, description="port of the embedded broker")
    valkey_host: str = Field("127.0.0.1", description="host of the embedded Valkey")
    valkey_port: int = Field(6379, ge=1, le=65535, description="port of the embedded Valkey")
    stack_start_timeout_s: float = Field(
        30.0, gt=0, description="seconds each embedded service may take to become healthy"
    )

    # --- model defaults --------------------------------------------------------------
    model_encoder: str = Field("cnn", description="encoder family: cnn, mlp or backbone")
    model_embedding_dim: int = Field(64, ge=2, le=4096, description="embedding size (2..4096)")
    model_loss: str = Field("multisimilarity", description="loss identifier")
    model_distance: str = Field("cosine", description="distance identifier")
    model_epochs: int = Field(10, ge=0, description="training epochs")
    model_seed: int = Field(0, description="random seed")
    model_dataset: str = Field(
        "digits", description="training dataset: digits, mnist, npz:PATH or folder:PATH"
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="where to embed: auto (GPU when present), cpu or gpu"
    )

    # --- ingest ----------------------------------------------------------------------
    max_id_chars: int = Field(256, ge=1, description="longest item id in UTF-8 characters")
    max_payload_bytes: int = Field(
        4 * 1024 * 1024, ge=64, description="largest event payload in bytes"
    )
    max_metadata_bytes: int = Field(
        16 * 1024, ge=64, description="largest metadata object, JSON-encoded, in bytes"
    )
    dispatch_max_items: int = Field(1024, ge=1, description="most events in one embed range")
    dispatch_max_wait_s: float = Field(
        0.1,
        gt=0,
        description="longest wait before a partial range is dispatched while none waits "
        "in the queue unstarted",
    )
    dispatch_busy_max_wait_s: float = Field(
        1.0,
        gt=0,
        description="longest wait before a partial range is dispatched while one waits in "
        "the queue unstarted (it grows instead of queueing behind)",
    )
    dispatch_max_inflight: int = Field(
        32, ge=1, description="most embed ranges in flight before the dispatcher pauses"
    )
    embed_batch_size: int = Field(256, ge=1, description="encoder batch size")
    worker_processes: int = Field(
        0, ge=0, description="encoder processes per embed worker (0: 1 on a GPU, else 1 per core)"
    )
    encoder_threads: int = Field(
        0, ge=0, description="CPU threads per encoder process (0: cores / worker processes)"
    )
    worker_max_encoders: int = Field(
        2,
        ge=1,
        description="encoder versions an embed worker process keeps loaded (least recently "
        "used released first): the active one and the one being re-indexed",
    )
    task_max_retries: int = Field(
        5, ge=0, description="retries of an unexpected task error before its range is dead-lettered"
    )
    task_retry_window_s: float = Field(
        300.0,
        ge=0,
        description="seconds a task retries transient errors (broker, Redis, model not there yet)",
    )
    task_visibility_timeout_s: int = Field(
        300, ge=1, description="seconds before an unacknowledged task is redelivered"
    )
    dispatch_redispatch_s: float = Field(
        120.0,
        gt=0,
        description="seconds after which an unfinished range is sent again (each further "
        "queued copy of a range waits twice as long, up to 16 times this)",
    )
    dispatch_max_attempts: int = Field(
        5, ge=1, description="sends of a failed range before the dispatcher dead-letters it"
    )
    fault_embed_batch_delay_s: float = Field(
        0.0,
        ge=0,
        description="fault injection (tests only): seconds each embed batch waits (0: off)",
    )

    # --- index -----------------------------------------------------------------------
    index_space: Literal["cosine", "l2", "ip"] = Field(
        "cosine", description="hnswlib space: cosine, l2 or ip"
    )
    index_m: int = Field(16, ge=2, le=256, description="hnswlib M (2..256)")
    index_ef_construction: int = Field(200, ge=1, description="hnswlib ef_construction")
    index_ef_search: int = Field(64, ge=1, description="default hnswlib ef at query time")
    index_initial_capacity: int = Field(1024, ge=16, description="initial items per graph")
    index_threads: int = Field(
        -1, ge=-1, description="hnswlib threads per graph operation (-1: all cores)"
    )
    index_tombstone_ratio: float = Field(
        0.2, gt=0, lt=1, description="tombstone share that triggers a graph rebuild (0..1)"
    )
    index_graph: Literal["node", "partition"] = Field(
        "node",
        description="node: one hnswlib graph for all of a node's partitions (a query is one "
        "search); partition: one graph per partition",
    )
    snapshot_every_s: float = Field(30.0, gt=0, description="seconds between snapshots")
    snapshot_every_records: int = Field(
        10000, ge=1, description="records applied between snapshots"
    )
    snapshot_keep: int = Field(3, ge=1, description="snapshots kept per generation")
    delete_marker_retention_s: float = Field(
        86400.0,
        ge=0,
        description="seconds delete markers outlive the snapshot that covered them "
        "(late copies of a range cannot resurrect a deleted id within it)",
    )

    # --- cache -----------------------------------------------------------------------
    cache_ttl_s: float = Field(30.0, ge=0, description="result cache TTL in seconds (0: off)")
    cache_ttl_jitter: float = Field(
        0.1, ge=0, le=1, description="random share added to the TTL (0..1)"
    )
    cache_socket_timeout_s: float = Field(
        0.05, gt=0, description="Redis socket timeout for the cache in seconds"
    )
    cache_local_entries: int = Field(
        4096, ge=0, description="lookup results kept in the process before Redis (0: none)"
    )

    # --- retraining ------------------------------------------------------------------
    retrain_schedule: str = Field(
        "", description="empty (off), seconds between runs, or a crontab 'm h dom mon dow'"
    )
    retrain_min_new_items: int = Field(
        0, ge=0, description="labelled items since the last run that trigger one (0: off)"
    )
    retrain_promote_margin: float = Field(
        0.0, description="recall@1 gain a candidate needs over the active model"
    )
    retrain_from_scratch: bool = Field(False, description="train anew instead of fine-tuning")
    retrain_ssl: str = Field(
        "",
        description="self-supervised pre-training on unlabelled items before a retrain's "
        "supervised step: simclr, barlowtwins, vicreg or simsiam (empty: off)",
    )
    retrain_max_per_class: int = Field(
        1000, ge=2, description="newest labelled items per class a retrain uses (≥ 2)"
    )
    retrain_holdout: float = Field(
        0.2, gt=0, lt=1, description="share of each class held out to compare models (0..1)"
    )
    retrain_check_every_s: float = Field(
        60.0, gt=0, description="seconds between counts of new labelled items (beat)"
    )
    beat_lock_ttl_s: float = Field(
        15.0, ge=1, description="seconds a beat's leader lock outlives its last renewal (≥ 1)"
    )
    reindex_max_lag: int = Field(
        0, ge=0, description="records of lag under which a new generation is promoted"
    )
    reindex_grace_s: float = Field(
        300.0, ge=0, description="seconds the old generation is kept after a flip"
    )
    reindex_allow_dead_letters: bool = Field(
        False,
        description="flip to a new generation even with dead-lettered ranges (an operator choice)",
    )

    @field_validator("partition_sets")
    @classmethod
    def _sets(cls, value: int, info: ValidationInfo) -> int:
        partitions = info.data.get("partitions")
        if partitions is not None and value > partitions:
            raise ValueError(f"expected at most SIMSTREAM_PARTITIONS={partitions} sets")
        return value

    @field_validator("partition_set", mode="before")
    @classmethod
    def _empty_set(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("partition_set")
    @classmethod
    def _set(cls, value: int | None, info: ValidationInfo) -> int | None:
        sets = info.data.get("partition_sets")
        if value is not None and sets is not None and value >= sets:
            raise ValueError(f"expected a set below SIMSTREAM_PARTITION_SETS={sets}")
        return value

    @field_validator("node_ttl_s")
    @classmethod
    def _ttl(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("node_heartbeat_s")
        if heartbeat is not None and value <= heartbeat:
            raise ValueError(f"expected more than SIMSTREAM_NODE_HEARTBEAT_S={heartbeat}")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("expected a comma-separated list of host:port")
        return value

    @field_validator("redis_cache_url", "celery_broker_url", "celery_result_backend")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "amqp://", "memory://")):
            raise ValueError("expected a URL starting with redis://, rediss:// or unix://")
        return value

    @field_validator("kafka_client_config", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                raise ValueError("expected a JSON object") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return {str(k): str(v) for k, v in value.items()}

    @field_validator("api_read_tokens_file", "api_admin_tokens_file", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("index_threads")
    @classmethod
    def _threads(cls, value: int) -> int:
        if value == 0:
            raise ValueError("expected -1 (all cores) or a positive number of threads")
        return value

    @field_validator("retrain_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        text = value.strip()
        if not text:
            return ""
        try:
            if float(text) > 0:
                return text
        except ValueError:
            if len(text.split()) == 5:
                return text
        raise ValueError("expected empty, a positive number of seconds, or 5 crontab fields")

    # --- construction ----------------------------------------------------------------

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment (and ``.env``), apply overrides, validate.

        Raises:
            SettingsError: naming each invalid variable, the expected form and
                the value received.
        """
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise SettingsError(_describe(cls, e)) from None

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable this object reads."""
        return {ENV_PREFIX + name.upper() for name in cls.model_fields}

    def to_env(self, **overrides: Any) -> dict[str, str]:
        """``SIMSTREAM_*`` variables that recreate these settings (plus overrides) in a child."""
        values = self.model_dump()
        values.update(overrides)
        env = {}
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, dict):
                text = json.dumps(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[ENV_PREFIX + name.upper()] = text
        return env

    # --- derived values --------------------------------------------------------------

    @property
    def read_tokens(self) -> frozenset[str]:
        """Bearer tokens with read scope (admin tokens may read too)."""
        return _tokens(self.api_read_tokens) | self.admin_tokens

    @property
    def admin_tokens(self) -> frozenset[str]:
        """Bearer tokens with admin scope."""
        return _tokens(self.api_admin_tokens)

    @property
    def auth_enabled(self) -> bool:
        """Whether the API asks for bearer tokens (a token or a token file is configured)."""
        files = (self.api_read_tokens_file, self.api_admin_tokens_file)
        return bool(self.read_tokens) or any(f is not None for f in files)

    @property
    def json_logs(self) -> bool:
        """Whether logs are rendered as JSON lines."""
        if self.log_format == "auto":
            return self.environment == "production"
        return self.log_format == "json"

    @property
    def cluster_node_id(self) -> str:
        """This index node's id: ``node_id``, else the host name."""
        return self.node_id or socket.gethostname()

    @property
    def cluster_node_url(self) -> str:
        """Where a router reaches this node: ``node_url``, else ``http://<api host>:<api port>``."""
        return self.node_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def snapshots_dir(self) -> Path:
        """Where index snapshots live."""
        return self.data_dir / "snapshots"

    @property
    def registry_dir(self) -> Path:
        """Where model versions live."""
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        """Where the embedded stack writes each child's log."""
        return self.data_dir / "logs"

    def wire_limits(self) -> WireLimits:
        """The size limits of item events, from ``SIMSTREAM_MAX_*``."""
        return WireLimits(
            max_id_chars=self.max_id_chars,
            max_payload_bytes=self.max_payload_bytes,
            max_metadata_bytes=self.max_metadata_bytes,
        )

    def embeddings_topic(self, model_version: str) -> str:
        """Name of the embeddings topic (the index's write-ahead log) of a model version."""
        return f"{self.topic_embeddings_prefix}.{model_version}"

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka properties common to every client, security included."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password,
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
        }
        config.update({k: v for k, v in optional.items() if v})
        config.update(self.kafka_client_config)
        config.update(extra)
        return config


def _tokens(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def _describe(cls: type[Settings], error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        info = cls.model_fields.get(field)
        expected = (info.description if info else None) or item["msg"]
        reason = item["msg"].removeprefix("Value error, ")
        received = item.get("input")
        problems.append(
            f"Invalid value for {ENV_PREFIX}{field.upper()}. Expected {expected} ({reason}). "
            f"Received: {received!r}"
        )
    return problems
