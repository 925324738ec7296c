"""Request and response bodies of the lookup API (pydantic models, shown in OpenAPI).

Limits that come from settings (``k``, ``ef``, batch size, body size) are
checked by the handlers, whose messages name the configured bounds; the models
check shape and types only.

Vocabulary: a query ``vector`` is an *embedding* (the serving model's output
size); ``image`` and ``array`` are *raw payloads* that the API embeds with the
serving model's encoder, exactly as the embed workers do for items.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MetadataValue = str | int | float | bool

_VECTOR_EXAMPLE: list[Any] = [0.12, -0.03, 0.31, 0.08]
_IMAGE_EXAMPLE = (  # an 8×8 grey digit 0 from scikit-learn's digits, as PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAARklEQVR4nAXBYRVAMBgAwHt7/vsiaGCaLIJGIqyCBp4E"
    "I4E1III7lLYFaG99i0Gelh55T+LqbpI4GUm+WeQP01PqAdZW8QOg+BHxst8QXwAAAABJRU5ErkJggg=="
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests ----------------------------------------------------------------------


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite JSON number (not a boolean)."""

_MAX_CLAUSES = 100


def _pairs(description: str, examples: list[Any]) -> Any:
    return Field(None, min_length=1, description=description, examples=examples)


def _group(alias: str, description: str) -> Any:
    return Field(None, alias=alias, min_length=1, max_length=_MAX_CLAUSES, description=description)


class FilterSpec(_Strict):
    """Which items a lookup may return: every constraint given must hold (an implicit
    ``and``); ``and``, ``or`` and ``not`` take nested filters of the same shape.

    See "Filters" in docs/api.md for the grammar and examples.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"labels": ["3", "5"], "metadata": {"color": "red"}},
                {"in": {"color": ["red", "blue"]}, "gte": {"size": 2}},
                {"or": [{"eq": {"source": "camera"}}, {"not": {"exists": "reviewed"}}]},
            ]
        },
    )

    labels: list[str] | None = Field(
        None,
        max_length=1000,
        description="Allowed item labels (labels are text in simstream). Omit for any label.",
        examples=[["3", "5"]],
    )
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict,
        description="Metadata keys and the exact JSON value each returned item must hold "
        '(1 equals 1.0; 1 differs from "1" and true). A missing key never matches. '
        "The same as `eq`.",
        examples=[{"color": "red"}],
    )
    eq: dict[str, MetadataValue] | None = _pairs(
        "Each key holds a JSON-equal value (a missing key never matches).", [{"color": "red"}]
    )
    ne: dict[str, MetadataValue] | None = _pairs(
        "Each key does not hold that value (`not eq`: a missing key matches).",
        [{"color": "red"}],
    )
    in_: dict[str, Annotated[list[MetadataValue], Field(min_length=1, max_length=1000)]] | None = (
        Field(
            None,
            alias="in",
            min_length=1,
            description="Each key holds one of the values (1 to 1000 values per key).",
            examples=[{"color": ["red", "blue"]}],
        )
    )
    gt: dict[str, Number] | None = _pairs("Each key holds a number above the bound.", [{"n": 3}])
    gte: dict[str, Number] | None = _pairs("Each key holds a number at or above it.", [{"n": 3}])
    lt: dict[str, Number] | None = _pairs("Each key holds a number below the bound.", [{"n": 3}])
    lte: dict[str, Number] | None = _pairs("Each key holds a number at or below it.", [{"n": 3}])
    exists: str | list[str] | None = Field(
        None,
        description="The key (or every key of a list) is present, whatever its value.",
        examples=["reviewed"],
    )
    and_: list[FilterSpec] | None = _group("and", "Every nested filter holds.")
    or_: list[FilterSpec] | None = _group("or", "At least one nested filter holds.")
    not_: FilterSpec | None = Field(None, alias="not", description="The nested filter fails.")


class Query(_Strict):
    """One query: exactly one of ``vector``, ``image``, ``array`` or ``id``."""

    vector: list[float] | None = Field(
        None,
        description="A query embedding: as many finite numbers as the serving model's "
        "embedding size (non-zero in the cosine space).",
        examples=[_VECTOR_EXAMPLE],
    )
    image: str | None = Field(
        None,
        description="A base64-encoded PNG or JPEG image (a data: URL prefix is accepted), "
        "embedded with the serving model. Image models only.",
        examples=[_IMAGE_EXAMPLE],
    )
    array: list[Any] | None = Field(
        None,
        description="A raw payload as nested lists, embedded with the serving model: an "
        "H×W or H×W×C image of integers 0..255 for image models, or a 1-D vector of the "
        "model's input size for vector models.",
        examples=[[[0, 80, 207, 16], [48, 239, 32, 175], [64, 191, 0, 128], [0, 96, 207, 0]]],
    )
    id: str | None = Field(
        None,
        min_length=1,
        description="The id of an indexed item: its stored embedding is the query, and the "
        "item itself is left out of the answer.",
        examples=["digit-0042"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Query:
        fields = ("vector", "image", "array", "id")
        given = [name for name in fields if getattr(self, name) is not None]
        if len(given) != 1:
            received = ", ".join(f"`{n}`" for n in given) or "none of them"
            raise ValueError(
                f"Expected exactly one of `vector`, `image`, `array` or `id`. Received: {received}"
            )
        return self

    @property
    def kind(self) -> Literal["vector", "image", "array", "id"]:
        """Which field holds the query."""
        if self.vector is not None:
            return "vector"
        if self.image is not None:
            return "image"
        if self.array is not None:
            return "array"
        return "id"


class LookupOptions(_Strict):
    """How to search: shared by single, batch and classify requests."""

    k: int = Field(10, description="Neighbours to return: 1 ≤ k ≤ SIMSTREAM_API_MAX_K (1000).")
    ef: int | None = Field(
        None,
        description="hnswlib ef of the whole index (recall/latency trade-off; each shard "
        "searches with it scaled to its size): 1 ≤ ef ≤ 4 × the largest k. "
        "Default: SIMSTREAM_INDEX_EF_SEARCH.",
    )
    filter: FilterSpec | None = Field(None, description="Restrict the items returned.")
    max_distance: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Range search: return only neighbours within this distance (at most "
        "`k` of them), in the units answers report: 1 − cos (cosine), Euclidean (l2), "
        "1 − dot (ip). Omit for the k nearest whatever their distance.",
        examples=[0.25],
    )
    fresh: bool = Field(False, description="Bypass the result cache (neither read nor write).")
    partial: bool = Field(
        False,
        description="Through the query router: when a partition set has no replica that "
        "answers, return the other partitions' answer flagged `partial: true` with the "
        "`missing_partitions` (true) instead of a 503 `partition_unavailable` (false). "
        "A node alone holds every partition and ignores it.",
    )
    after: str | None = Field(
        None,
        description="A write token from POST/DELETE /v1/items: wait (at most "
        "SIMSTREAM_API_WRITE_WAIT_S) until the index has applied that write.",
        examples=["items.p1.o1234"],
    )


class LookupRequest(Query, LookupOptions):
    """A single lookup."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"vector": _VECTOR_EXAMPLE, "k": 5},
                {"id": "digit-0042", "k": 10, "filter": {"labels": ["4"]}},
                {"image": _IMAGE_EXAMPLE, "k": 3, "fresh": True},
            ]
        },
    )


class BatchLookupRequest(LookupOptions):
    """Many queries answered with the same options, in order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"queries": [{"vector": _VECTOR_EXAMPLE}, {"id": "digit-0042"}], "k": 5}]
        },
    )

    queries: list[Query] = Field(
        ..., description="1 ≤ len(queries) ≤ SIMSTREAM_API_MAX_BATCH (256)."
    )


ClassifyVote = Literal["nearest", "majority", "centroid"]
"""How labelled neighbours decide (see `workers.api.classifier.Classifier.vote`)."""


class ClassifyRequest(Query, LookupOptions):
    """k-NN classification of one query."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"image": _IMAGE_EXAMPLE, "k": 10}]},
    )

    threshold: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Neighbours farther than this do not vote. Default: the serving model's "
        "calibrated threshold, else SIMSTREAM_CLASSIFY_THRESHOLD.",
    )
    vote: ClassifyVote = Field(
        "nearest",
        description="nearest: the label of the nearest neighbour within the threshold "
        "(1-NN; a label with many items has more chances to be nearest). majority: the "
        "label with most neighbours within the threshold among k, ties to the nearer "
        "(favours labels with many items much more). centroid: among the labels of the "
        "neighbours within the threshold, the one whose mean embedding over the whole "
        "index (its items that pass the filter) is nearest to the query: every label "
        "counts once however many items it has; for classes added with a few examples, "
        "with k = 50.",
    )


class ItemUpsert(_Strict):
    """An item to add or replace: its raw payload is embedded by the workers."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "digit-9000", "image": _IMAGE_EXAMPLE, "label": "0", "metadata": {"k": 1}}
            ]
        },
    )

    id: str = Field(..., min_length=1, description="The item id (the Kafka key).")
    image: str | None = Field(
        None, description="A base64-encoded PNG or JPEG image (image models)."
    )
    array: list[Any] | None = Field(
        None,
        description="A raw payload as nested lists: an image of integers 0..255 (image "
        "models) or a 1-D vector of the model's input size (vector models).",
    )
    label: str | None = Field(None, description="The item's class label.")
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict, description="A flat object of text, numbers and booleans."
    )

    @model_validator(mode="after")
    def _one_payload(self) -> ItemUpsert:
        if (self.image is None) == (self.array is None):
            both = "both" if self.image is not None else "neither"
            raise ValueError(f"Expected exactly one of `image` or `array`. Received: {both}")
        return self


# --- responses ---------------------------------------------------------------------


_EXHAUSTIVE = (
    "False when fewer than k neighbours came back although more items may pass the "
    "filter: each shard fetches a bounded number of candidates per query. A narrower "
    "filter (one that few items match) is answered exactly."
)


class Neighbor(BaseModel):
    """One result, nearest first."""

    id: str
    distance: float = Field(
        ..., description="In the model's units: 1 − cos (cosine), Euclidean (l2), 1 − dot (ip)."
    )
    label: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


def _degraded() -> Any:
    return Field(
        False,
        description="True when the generation searched lagged more than "
        "SIMSTREAM_API_READY_MAX_LAG events of the items topic: recent writes may be missing.",
    )


def _partial() -> Any:
    return Field(
        False,
        description="Router answers: true when some partitions had no replica that answered "
        "(asked for with `partial: true`); the neighbours come from the other partitions.",
    )


def _missing() -> Any:
    return Field(
        default_factory=list, description="Router answers: the partitions left out (partial)."
    )


class LookupResponse(BaseModel):
    """The neighbours of one query and what produced them."""

    model_version: str = Field(..., description="Encoder version of the generation searched.")
    index_epoch: int = Field(..., description="Index epoch when the search started.")
    degraded: bool = _degraded()
    neighbors: list[Neighbor]
    exhaustive: bool = Field(True, description=_EXHAUSTIVE)
    partial: bool = _partial()
    missing_partitions: list[int] = _missing()


class NeighborList(BaseModel):
    """The neighbours of one query of a batch."""

    neighbors: list[Neighbor]
    exhaustive: bool = Field(True, description=_EXHAUSTIVE)


class BatchLookupResponse(BaseModel):
    """One neighbour list per query, in request order."""

    model_version: str
    index_epoch: int
    degraded: bool = _degraded()
    results: list[NeighborList]
    partial: bool = _partial()
    missing_partitions: list[int] = _missing()


class Vote(BaseModel):
    """The neighbours within the threshold that carry one label."""

    label: str
    votes: int
    nearest_distance: float
    centroid_distance: float | None = Field(
        None,
        description="Distance from the query to the label's mean embedding over the whole "
        "index (vote centroid only).",
    )


class Evidence(Neighbor):
    """A neighbour consulted by the classifier."""

    within_threshold: bool


class ClassifyResponse(BaseModel):
    """A label (or ``unknown``) with the evidence behind it."""

    label: str = Field(..., description='The winning label, or "unknown".')
    known: bool = Field(..., description="False when no labelled neighbour is within threshold.")
    threshold: float
    threshold_source: Literal["request", "model", "settings"]
    vote: ClassifyVote = Field(..., description="The rule that decided.")
    votes: list[Vote] = Field(
        ...,
        description="Labels best first: by nearest distance (vote nearest), by votes, "
        "then nearest distance (vote majority), or by centroid distance (vote centroid).",
    )
    neighbors: list[Evidence]
    model_version: str
    index_epoch: int
    degraded: bool = _degraded()
    partial: bool = _partial()
    missing_partitions: list[int] = _missing()


class WriteAccepted(BaseModel):
    """Where an item event landed; pass ``token`` as ``after`` to read your write."""

    id: str
    op: Literal["upsert", "delete"]
    token: str = Field(..., examples=["items.p1.o1234"])
    partition: int
    offset: int


class ItemResponse(BaseModel):
    """An indexed item as the serving generation holds it."""

    id: str
    label: str | None
    metadata: dict[str, Any]
    model_version: str
    partition: int
    source_offset: int = Field(..., description="Offset of the event in the items topic.")
    vector: list[float] | None = Field(None, description="The embedding, when asked for.")


class ItemSample(BaseModel):
    """Items picked at random (the nearest item to each of random directions)."""

    model_version: str
    items: list[ItemResponse]


class ItemPage(BaseModel):
    """A page of items in id order; pass ``next_cursor`` as ``cursor`` for the next one."""

    model_version: str
    items: list[ItemResponse]
    next_cursor: str | None = Field(
        ...,
        description="The cursor of the next page; null on the last page. Under a filter a "
        "page may hold fewer than `limit` items (even none) and still have a next page.",
    )


class ItemCount(BaseModel):
    """How many indexed items pass the filter."""

    model_version: str
    count: int


class ItemBatch(_Strict):
    """Items to add or replace in one request; each is checked and reported on its own."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"id": "digit-9000", "image": _IMAGE_EXAMPLE, "label": "0"},
                        {"id": "digit-9001", "image": _IMAGE_EXAMPLE, "metadata": {"k": 2}},
                    ]
                }
            ]
        },
    )

    items: list[Any] = Field(
        ...,
        min_length=1,
        description="Upserts shaped as the body of POST /v1/items (`id`, `image` or "
        "`array`, `label`, `metadata`); at most SIMSTREAM_API_MAX_WRITE_BATCH (500).",
    )


class BatchItemAccepted(WriteAccepted):
    """An item of a batch that was published."""

    index: int = Field(..., description="Its position in the request's `items`.")


class BatchItemError(BaseModel):
    """An item of a batch that was not published, and why."""

    index: int = Field(..., description="Its position in the request's `items`.")
    id: str | None = Field(None, description="Its id, when it had a text one.")
    status: int = Field(..., description="The status a single POST /v1/items would answer.")
    detail: str


class BatchWriteAccepted(BaseModel):
    """What a batch published: one token covering every accepted item, and per-item errors."""

    accepted: int
    rejected: int
    token: str | None = Field(
        ...,
        description="A write token naming the highest offset of each partition written "
        "(null when nothing was published): pass it as `after` to read every write.",
        examples=["items.p0.o1234.p1.o987"],
    )
    items: list[BatchItemAccepted]
    errors: list[BatchItemError]


class ModelInfo(BaseModel):
    """A registered model version."""

    version: str
    created_at: str
    embedding_dim: int | None
    distance: str | None
    input_spec: dict[str, Any] | None
    metrics: dict[str, Any]


class ModelsResponse(BaseModel):
    """The registry: versions, the active one, the one serving, and the history."""

    active: str | None
    serving: str | None
    versions: list[ModelInfo]
    history: list[dict[str, Any]]


class StatsResponse(BaseModel):
    """What the node serves and how fresh it is."""

    serving: str | None
    wanted: str | None
    items: int | None = Field(..., description="Live items of the serving generation.")
    index_epoch: int | None
    lag_records: int | None
    source_lag_events: int | None
    degraded: bool = Field(
        False,
        description="The serving generation lags more than SIMSTREAM_API_READY_MAX_LAG "
        "events (answers say so too; the node stays ready once it caught up).",
    )
    freshness: dict[str, Any] | None
    snapshot_age_s: float | None
    generations: dict[str, Any]
    flipped_at: float | None
    reindex: dict[str, Any] | None = Field(
        None, description="The re-index in progress (new model being built), if any."
    )
    cache: dict[str, Any]


class RetrainAccepted(BaseModel):
    """The retrain task sent to Celery."""

    task_id: str
    task: str
    queue: str


class RetrainRuns(BaseModel):
    """Retrain runs as recorded in ``runs.jsonl`` (newest record of each run)."""

    runs: list[dict[str, Any]]


class DeadLetterInfo(BaseModel):
    """One record of the dead-letter topic; later format fields are passed through."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(
        ..., description="Its position in the dead-letter topic, p<partition>.o<offset>."
    )
    source_topic: str
    partition: int = Field(..., description="The source partition.")
    offset: int = Field(..., description="The source offset (a range letter: its first).")
    reason: str = Field(..., description="A reason code; range_failed names a whole range.")
    detail: str
    time_ms: int = Field(..., description="When it was dead-lettered, epoch ms.")
    start: int = Field(..., description="First source offset it covers.")
    end: int | None = Field(..., description="Source offset after the last it covers.")
    model_version: str | None = Field(..., description="The version a failed range was for.")
    raw_stored_bytes: int = Field(..., description="Bytes of the record kept in the letter.")
    raw_prefix_hex: str = Field(..., description="Their first 32 bytes, hex.")


class DeadLetters(BaseModel):
    """A page of dead letters, oldest first per partition."""

    dead_letters: list[DeadLetterInfo]
    next_cursor: str | None = Field(
        ..., description="Pass as `cursor` for the next page; null: no more."
    )


class DeadLetterCount(BaseModel):
    """How many source positions the selected dead letters name."""

    dead_letters: int = Field(..., description="Selected source positions, each once.")
    records: int = Field(..., description="Records naming them (re-run repeats included).")
    by_reason: dict[str, int] = Field(..., description="Dead letters per reason code.")


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Readiness and why not."""

    ready: bool
    reason: str
    node: str | None = Field(None, description="The node's id (SIMSTREAM_NODE_ID).")
    partitions: list[int] | None = Field(
        None, description="The partitions (shards) the node holds: those of its partition set."
    )


class ErrorDetail(BaseModel):
    """One invalid field."""

    field: str
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body."""

    code: str = Field(
        ...,
        description="A stable machine-readable code (see the table in docs/api.md): "
        "invalid_request, invalid_filter, invalid_payload, unsupported_query, unauthorized, "
        "forbidden, not_found, not_owner, method_not_allowed, payload_too_large, "
        "rate_limited, not_ready, unavailable, version_unavailable, partition_unavailable, "
        "internal, or a wire reason code (bad_image, "
        "image_too_large, bad_token …).",
        examples=["invalid_request"],
    )
    detail: str = Field(..., description="What was expected and what was received.")
    errors: list[ErrorDetail] | None = Field(None, description="Per field (422 only).")
    request_id: str | None = None
