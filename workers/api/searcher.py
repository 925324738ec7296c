"""`Searcher`: lookups of the serving generation, through the result cache.

It knows nothing of HTTP: it validates options against its config, resolves
each query to an embedding (a given vector, an indexed item's vector, or a raw
payload decoded by `QueryDecoder` and embedded with the generation's own
encoder — never another version's), goes through the result cache, searches,
and serialises the neighbours and the response bodies.

A request takes the serving generation once, at its start (`WriteWaiter`
pins it, waiting for a write token first when one is given), so its answer
comes from exactly one model version even while the alias flips.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from simstream.errors import NotFoundError, RequestError, WouldBlockError
from workers.api.config import SearchConfig
from workers.api.decoding import QueryDecoder
from workers.api.filters import to_filter
from workers.api.microbatch import MicroBatcher
from workers.api.schemas import (
    BatchLookupRequest,
    LookupOptions,
    LookupRequest,
    Query,
)
from workers.api.search_slots import SearchSlots
from workers.cache.cache import CacheKey, NullCache, ResultCache, log_position
from workers.index.config import reported_distance
from workers.index.filter import Filter
from workers.index.rwlock import no_waiting
from workers.index.shard import Item
from workers.metrics import API_SEARCH_SECONDS
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

CacheStatus = Literal["hit", "miss", "bypass"]
_ROUND_DECIMALS = 6
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_PARTIAL = b"~"
"""Prefixes a cached neighbour list that is not exhaustive (a JSON array starts with '[')."""
INLINE_IMAGE_CHARS = 65_536
"""Longest base64 image whose cache key `Searcher.lookup_now` computes on the event
loop (its header checked and a digest of the text: tens of µs at this size)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A query turned into an embedding, or a raw payload still to embed.

    Attributes:
        vector: float32 ``(dim,)``; None for a payload not embedded yet.
        key: the normalised query for cache keys (a payload: a digest of its raw
            form, so a cache hit needs neither decoding nor embedding).
        exclude: an item id to leave out of the answer (query by id).
        payload: the raw-payload query ``vector`` is to be embedded from.
    """

    vector: np.ndarray | None
    key: bytes
    exclude: str | None = None
    payload: Query | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Validated options of one request.

    Attributes:
        k: neighbours per query.
        ef: hnswlib ef (default resolved).
        filter: the filter, or None.
        max_distance: leave out neighbours farther than this (reported units), or None.
        total_live: the cluster's live items of the version when this node holds only
            some partitions (the router's search; see `ShardedIndex.search`), or None.
    """

    k: int
    ef: int
    filter: Filter | None
    max_distance: float | None = None
    total_live: int | None = None

    @property
    def filter_key(self) -> str:
        """The cache-key string of what restricts the answer: the filter and the
        distance bound ("" for neither)."""
        key = self.filter.cache_key() if self.filter is not None else ""
        if self.max_distance is not None:
            key += f"|d<={self.max_distance!r}"
        return key


@dataclass(frozen=True, slots=True)
class Answer:
    """The neighbours of a request's queries and what they were found in.

    Attributes:
        version: the model version of the generation searched.
        epoch: the index epoch, read before searching.
        neighbours: one serialised neighbour list (a JSON array) per query.
        cache: the cache status of the request (a batch is a ``hit`` only when
            every query hit).
        exhaustive: per query, False when fewer than k came back although more
            items may pass the filter (the index capped its search).
        degraded: the generation lagged more than the configured events of ``items``.
        vectors: the queries' embeddings, when asked for (``search(..., embed=True)``).
    """

    version: str
    epoch: int
    neighbours: list[bytes]
    cache: CacheStatus
    exhaustive: list[bool]
    degraded: bool = False
    vectors: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """A serialised response body and its cache status (the ``X-Cache`` header).

    Attributes:
        body: the JSON body.
        cache: ``hit``, ``miss`` or ``bypass``.
    """

    body: bytes
    cache: CacheStatus


class Searcher:
    """Lookups and batches over an `IndexNode`'s serving generation.

    Args:
        config: limits (k, batch, ef), the items topic and the write wait.
        node: the index node.
        decoder: turns raw payloads into model inputs.
        cache: the result cache (`NullCache` for none).
        batcher: coalesces concurrent single-vector searches (default: one with
            the config's window).
        slots: admits costly searches (default: the config's slots and queue).
    """

    def __init__(
        self,
        config: SearchConfig,
        node: IndexNode,
        decoder: QueryDecoder,
        cache: ResultCache | None = None,
        batcher: MicroBatcher | None = None,
        slots: SearchSlots | None = None,
    ) -> None:
        self.config = config
        self.node = node
        self.decoder = decoder
        self.cache = cache or NullCache()
        self.batcher = batcher or MicroBatcher(config.batch_window_s, config.max_batch)
        self.slots = slots or SearchSlots(
            config.search_slots, config.search_queue_s, config.retry_after_s
        )
        self._embed_lock = threading.Lock()

    # --- requests --------------------------------------------------------------------

    def lookup(self, request: LookupRequest, generation: IndexGeneration) -> Reply:
        """The body of a `LookupResponse` for one query, searched in ``generation``.

        Raises:
            RequestError: invalid options or query (400/422).
            NotFoundError: a query by an unknown id (404).
        """
        answer = self.search(request, [request], generation)
        [neighbours] = answer.neighbours
        [exhaustive] = answer.exhaustive
        body = lookup_body(answer.version, answer.epoch, neighbours, answer.degraded, exhaustive)
        return Reply(body, answer.cache)

    def lookup_now(self, request: LookupRequest, generation: IndexGeneration) -> Reply | None:
        """`lookup` answered by a thread that must not wait (the event loop), or None.

        Only a lookup that needs no I/O and no wait qualifies: by vector or by
        an indexed item's id, no filter, ``ef`` and ``k`` within the index's
        default ``ef``, micro-batching off, and the cache bypassed (``fresh``),
        absent, or holding the answer in this process; or by an image of at
        most `INLINE_IMAGE_CHARS` base64 characters whose answer this process's
        cache holds (its key is a digest of the text: no decoding, no model),
        once the generation's encoder is loaded. Reading the item and
        searching run in `no_waiting`: a shard lock that a writer holds or waits
        for, or a search worth other threads, gives None too. A None means:
        call `lookup` where waiting is allowed; nothing was changed.

        Raises:
            RequestError: invalid options or vector (as `lookup`).
            NotFoundError: a query by an unknown id (as `lookup`).
        """
        kind = request.kind
        if (
            not self.config.inline_lookups
            or kind == "array"
            or request.filter is not None
            or self.batcher.window_s > 0
        ):
            return None
        image = kind == "image"
        if image and (
            request.fresh
            or len(request.image or "") > INLINE_IMAGE_CHARS
            or not self.node.has_encoder(generation.version)
        ):
            return None  # embedding a miss takes the thread pool
        plan = self.plan(generation, request)
        extra = 1 if request.kind == "id" else 0  # the item itself is searched past
        if max(plan.ef, plan.k + extra) > generation.index.config.ef_search:
            return None
        position, epoch = state_of(generation)
        try:
            with no_waiting():
                [query] = self.resolve(generation, [request], keyed=not request.fresh)
                status: CacheStatus = "bypass" if request.fresh else "miss"
                value = None
                if not request.fresh:
                    key = CacheKey(
                        generation.version, position, query.key, plan.k, plan.ef, plan.filter_key
                    )
                    value = self.cache.peek(key)
                if value is not None:
                    status = "hit"
                elif image:
                    return None  # a miss is embedded in the thread pool
                elif not request.fresh and self.cache.remote:
                    return None  # the shared cache is asked, and a result stored, off the loop
                else:
                    [(rows, exhaustive)] = self.neighbours(generation, [query], plan)
                    value = _dumps(rows) if exhaustive else _PARTIAL + _dumps(rows)
        except WouldBlockError:
            return None
        degraded = generation.source_lag() > self.config.degraded_lag
        body = lookup_body(
            generation.version, epoch, value.removeprefix(_PARTIAL), degraded,
            not value.startswith(_PARTIAL),
        )  # fmt: skip
        return Reply(body, status)

    def lookup_batch(self, request: BatchLookupRequest, generation: IndexGeneration) -> Reply:
        """The body of a `BatchLookupResponse`: each query answered in order.

        Raises:
            RequestError: as `lookup`, and (422) too many or no queries, or too many images.
            NotFoundError: as `lookup`.
        """
        self.check_batch(request.queries)
        answer = self.search(request, request.queries, generation)
        body = batch_body(
            answer.version, answer.epoch, answer.neighbours, answer.degraded, answer.exhaustive
        )
        return Reply(body, answer.cache)

    def search(
        self,
        options: LookupOptions,
        queries: Sequence[Query],
        generation: IndexGeneration,
        embed: bool = False,
    ) -> Answer:
        """Search ``queries`` in ``generation`` (the request's, pinned), through the cache.

        Validates ``options``, then reads the index's log position and epoch before
        resolving and searching. A write token (``options.after``) must have been
        waited for already (`WriteWaiter`). With ``embed``, raw payloads are
        embedded even when the cache holds their neighbours, and the answer
        carries every query's embedding (``Answer.vectors``).

        Raises:
            RequestError: as `lookup`.
            NotFoundError: as `lookup`.
        """
        plan = self.plan(generation, options)
        position, epoch = state_of(generation)
        degraded = generation.source_lag() > self.config.degraded_lag
        resolved = self.resolve(generation, queries, keyed=not options.fresh)
        if embed:
            resolved = self.embedded(generation, resolved)
        values, status = self.cached_neighbours(generation, position, resolved, plan, options.fresh)
        exhaustive = [not v.startswith(_PARTIAL) for v in values]
        neighbours = [v.removeprefix(_PARTIAL) for v in values]
        vectors = tuple(q.vector for q in resolved if q.vector is not None) if embed else ()
        return Answer(generation.version, epoch, neighbours, status, exhaustive, degraded, vectors)

    # --- validation ------------------------------------------------------------------

    def plan(self, generation: IndexGeneration, options: LookupOptions) -> Plan:
        """Check ``k`` and ``ef`` against the limits and build the filter.

        Raises:
            RequestError: (422) naming the bound and the value received.
        """
        check_limits(self.config, options.k, options.ef)
        ef = options.ef if options.ef is not None else generation.index.config.ef_search
        return Plan(options.k, ef, to_filter(options.filter), options.max_distance)

    def check_batch(self, queries: Sequence[Query]) -> None:
        """Check the number of queries of a batch, and of images among them (`check_batch`)."""
        check_batch(self.config, queries)

    # --- queries ---------------------------------------------------------------------

    def resolve(
        self, generation: IndexGeneration, queries: Sequence[Query], keyed: bool = True
    ) -> list[Resolved]:
        """Turn queries into embeddings; raw payloads only into cache keys (`embedded`).

        Without ``keyed`` (the cache is bypassed), vectors are checked but get no
        cache key (``b""``).

        Raises:
            RequestError: invalid vector or array (422).
            NotFoundError: an unknown id (404).
        """
        given = [q.vector for q in queries if q.kind == "vector"]
        checked = iter(checked_vectors(given, generation.dim, generation.index.space, keyed))
        resolved: list[Resolved] = []
        for query in queries:
            kind = query.kind
            if kind == "vector":
                assert query.vector is not None
                found = next(checked, None)
                if found is None:  # some vector is invalid: checked one by one, in order
                    found = checked_vector(
                        query.vector, generation.dim, generation.index.space, generation.version
                    )
                resolved.append(Resolved(*found))
            elif kind == "id":
                assert query.id is not None
                item = indexed_item(generation, query.id)
                vector = np.asarray(item.vector, dtype=np.float32)
                resolved.append(Resolved(vector, b"id:" + query.id.encode(), exclude=query.id))
            else:
                spec = self.node.encoder(generation.version).input_spec
                key = self.decoder.payload_key(query, spec)
                resolved.append(Resolved(None, key, payload=query))
        return resolved

    def embedded(self, generation: IndexGeneration, queries: Sequence[Resolved]) -> list[Resolved]:
        """``queries`` with their raw payloads decoded and embedded, in one batch.

        Raises:
            RequestError: invalid payload or base64 (400/422).
        """
        pending = [i for i, q in enumerate(queries) if q.vector is None]
        if not pending:
            return list(queries)
        spec = self.node.encoder(generation.version).input_spec
        inputs = []
        for i in pending:
            payload = queries[i].payload
            assert payload is not None
            inputs.append(self.decoder.model_input(payload, spec, generation.version)[0])
        vectors = self.embed(generation, np.stack(inputs))
        out = list(queries)
        for i, vector in zip(pending, vectors, strict=True):
            out[i] = Resolved(vector, queries[i].key)
        return out

    def embed(self, generation: IndexGeneration, inputs: np.ndarray) -> np.ndarray:
        """Embed model inputs with the generation's own encoder (one call at a time)."""
        encoder = self.node.encoder(generation.version)
        with self._embed_lock:
            return encoder.embed(inputs, batch_size=self.config.embed_batch_size)

    # --- searching -------------------------------------------------------------------

    def neighbours(
        self, generation: IndexGeneration, queries: Sequence[Resolved], plan: Plan
    ) -> list[tuple[list[dict[str, Any]], bool]]:
        """Search and describe the neighbours of each query (without cache).

        Returns:
            Per query, its neighbours and whether the answer is exhaustive.
        """
        queries = self.embedded(generation, queries)
        extra = 1 if any(q.exclude is not None for q in queries) else 0
        space = generation.index.space
        cost = len(queries) * max(plan.ef, plan.k + extra)
        with self.slots.hold(cost, light_cost=generation.index.config.ef_search) as threads:
            started = time.perf_counter()
            found = self.batcher.search(
                generation.index,
                np.stack([q.vector for q in queries if q.vector is not None]),
                plan.k + extra,
                ef=plan.ef,
                filter=plan.filter,
                total_live=plan.total_live,
                threads=threads,
            )
            API_SEARCH_SECONDS.observe(time.perf_counter() - started)
        out: list[tuple[list[dict[str, Any]], bool]] = []
        for query, result in zip(queries, found, strict=True):
            kept: list[tuple[str, float]] = []
            for item_id, distance in zip(result.ids, result.distances, strict=True):
                reported = reported_distance(space, float(distance))
                if plan.max_distance is not None and reported > plan.max_distance:
                    break  # nearest first: the rest are farther still
                if item_id != query.exclude:
                    kept.append((item_id, reported))
            rows: list[dict[str, Any]] = []
            described = generation.index.describe([item_id for item_id, _ in kept])
            for (item_id, reported), item in zip(kept, described, strict=True):
                if item is None:  # deleted since the search
                    continue
                rows.append(
                    {
                        "id": item_id,
                        "distance": reported,
                        "label": None if item.label is None else str(item.label),
                        "metadata": dict(item.metadata),
                    }
                )
                if len(rows) == plan.k:
                    break
            out.append((rows, result.exhaustive))
        return out

    def cached_neighbours(
        self,
        generation: IndexGeneration,
        position: str,
        queries: Sequence[Resolved],
        plan: Plan,
        fresh: bool,
    ) -> tuple[list[bytes], CacheStatus]:
        """Serialised neighbour lists through the cache (single-flight for one query).

        Returns:
            One JSON array per query (prefixed with ``_PARTIAL`` when the answer is
            not exhaustive), and the cache status of the request (a batch is a
            ``hit`` only when every query hit).
        """

        def compute(subset: Sequence[Resolved]) -> list[bytes]:
            return [
                _dumps(rows) if exhaustive else _PARTIAL + _dumps(rows)
                for rows, exhaustive in self.neighbours(generation, subset, plan)
            ]

        if fresh:
            return compute(queries), "bypass"
        keys = [
            CacheKey(generation.version, position, q.key, plan.k, plan.ef, plan.filter_key)
            for q in queries
        ]
        if len(queries) == 1:
            value, hit = self.cache.get_or_compute(keys[0], lambda: compute(queries)[0])
            return [value], "hit" if hit else "miss"
        cached = self.cache.get_many(keys)
        missing = [i for i, v in enumerate(cached) if v is None]
        if missing:
            computed = compute([queries[i] for i in missing])
            self.cache.set_many([(keys[i], v) for i, v in zip(missing, computed, strict=True)])
            for i, value in zip(missing, computed, strict=True):
                cached[i] = value
        return [v for v in cached if v is not None], "miss" if missing else "hit"


def check_batch(config: SearchConfig, queries: Sequence[Query]) -> None:
    """Check the number of queries of a batch, and of images among them.

    Raises:
        RequestError: (422) outside ``1 ≤ len(queries) ≤ max_batch``, or more than
            ``max_batch_images`` images.
    """
    most, size = config.max_batch, len(queries)
    if not 1 <= size <= most:
        raise RequestError(
            f"Invalid value for `queries`. Expected 1 ≤ len(queries) ≤ {most}. "
            f"Received: {size} queries",
            422,
        )
    images = sum(q.image is not None for q in queries)
    most_images = config.max_batch_images
    if images > most_images:
        raise RequestError(
            f"Invalid value for `queries`. Expected at most {most_images} `image` queries "
            f"in one batch (SIMSTREAM_API_MAX_BATCH_IMAGES). Received: {images} images",
            422,
        )


def check_limits(config: SearchConfig, k: int, ef: int | None) -> None:
    """Check ``k`` and ``ef`` against the configured limits.

    Raises:
        RequestError: (422) naming the bound and the value received.
    """
    max_k, max_ef = config.max_k, config.max_ef
    if not 1 <= k <= max_k:
        raise RequestError(f"Invalid value for `k`. Expected 1 ≤ k ≤ {max_k}. Received: k={k}", 422)
    if ef is not None and not 1 <= ef <= max_ef:
        raise RequestError(
            f"Invalid value for `ef`. Expected 1 ≤ ef ≤ {max_ef}. Received: ef={ef}", 422
        )


def checked_vectors(
    given: Sequence[Sequence[float] | None], dim: int, space: str, keyed: bool = True
) -> list[tuple[np.ndarray, bytes]]:
    """Query embeddings as float32 and their cache keys (see `checked_vector`; ``b""``
    without ``keyed``), checked together: NumPy calls per batch, not per query. Empty
    when any is invalid: the caller then checks them one by one, so the first invalid
    one in order is reported.
    """
    if not given or any(v is None or len(v) != dim for v in given):
        return []
    try:
        wide = np.asarray(given, dtype=np.float64)  # 3× faster from floats than float32
    except (TypeError, ValueError, OverflowError):
        return []
    if wide.shape != (len(given), dim) or not float(np.abs(wide).max()) <= _FLOAT32_MAX:
        return []  # NaN, an infinity or beyond float32: `checked_vector` says which
    vectors = wide.astype(np.float32)
    norms = _norms(vectors)
    if space == "cosine" and not norms.all():
        return []
    if not keyed:
        return [(vectors[n], b"") for n in range(len(given))]
    keys = _keys(vectors / norms[:, None] if space == "cosine" else vectors)
    return [(vectors[n], keys[n]) for n in range(len(given))]


def _norms(vectors: np.ndarray) -> np.ndarray:
    """Each row's L2 norm, float32; a row's does not depend on the other rows."""
    return np.sqrt((vectors * vectors).sum(axis=1))


def _keys(normalised: np.ndarray) -> list[bytes]:
    """Cache keys of normalised query rows: rounded, so that float noise maps to one key."""
    rounded = (np.round(normalised.astype(np.float64), _ROUND_DECIMALS) + 0.0).astype(np.float32)
    return [b"v:" + row.tobytes() for row in rounded]


def checked_vector(
    values: Sequence[float], dim: int, space: str, version: str
) -> tuple[np.ndarray, bytes]:
    """A query embedding as float32, and its cache key (normalised in the cosine space).

    Raises:
        RequestError: (422) not ``dim`` finite numbers, or all zeros in the cosine space.
    """
    if len(values) != dim:
        raise RequestError(
            f"Invalid value for `vector`. Expected {dim} numbers (the embedding size of "
            f"model {version}). Received: {len(values)} numbers",
            422,
        )
    with np.errstate(over="ignore", invalid="ignore"):
        vector = np.asarray(values, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(vector))
    if len(bad):
        raise RequestError(
            "Invalid value for `vector`. Expected finite float32 numbers. "
            f"Received: {values[int(bad[0])]!r} at index {int(bad[0])}",
            422,
        )
    norm = float(_norms(vector[None, :])[0])
    if space == "cosine":
        if norm == 0.0:
            raise RequestError(
                "Invalid value for `vector`. Expected a non-zero vector (cosine distance "
                "has no direction for zero). Received: all zeros",
                422,
            )
        normalised = vector / norm
    else:
        normalised = vector
    return vector, _keys(normalised[None, :])[0]


def indexed_item(generation: IndexGeneration, item_id: str) -> Item:
    """An indexed item of the generation.

    Raises:
        NotFoundError: no live item has this id.
    """
    item = generation.index.get(item_id)
    if item is None:
        raise NotFoundError(
            f"Unknown item id {item_id!r}. Expected the id of an item indexed by model "
            f"{generation.version}. Received an id that is absent (never written, "
            "deleted, or not indexed yet)"
        )
    return item


def state_of(generation: IndexGeneration) -> tuple[str, int]:
    """The index's log position (for cache keys) and epoch (for answers), read together.

    Read before searching: the search then sees this state or a newer one.
    """
    index = generation.index
    return log_position(index.next_offsets()), index.epoch


def lookup_body(
    version: str, epoch: int, neighbours: bytes, degraded: bool, exhaustive: bool = True
) -> bytes:
    """The JSON of a `LookupResponse` around an already serialised neighbour list."""
    return b'{"model_version":%s,"index_epoch":%d,"degraded":%s,"neighbors":%s,"exhaustive":%s}' % (
        _dumps(version),
        epoch,
        _dumps(degraded),
        neighbours,
        _dumps(exhaustive),
    )


def batch_body(
    version: str,
    epoch: int,
    results: Sequence[bytes],
    degraded: bool,
    exhaustive: Sequence[bool],
) -> bytes:
    """The JSON of a `BatchLookupResponse` around serialised neighbour lists."""
    inner = b",".join(
        b'{"neighbors":%s,"exhaustive":%s}' % (r, _dumps(full))
        for r, full in zip(results, exhaustive, strict=True)
    )
    return b'{"model_version":%s,"index_epoch":%d,"degraded":%s,"results":[%s]}' % (
        _dumps(version),
        epoch,
        _dumps(degraded),
        inner,
    )


def _dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON: orjson, or the standard library for what orjson refuses
    (an integer beyond 64 bits in metadata)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
