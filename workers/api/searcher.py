"""`Searcher`: turns lookup requests into searches of the serving generation.

It knows nothing of HTTP: it validates options against the settings, resolves
each query to an embedding (a given vector, an indexed item's vector, or a raw
payload embedded with the generation's own encoder — never another version's),
goes through the result cache, searches, and serialises the neighbours.

A request takes the serving generation once, at its start, so its answer comes
from exactly one model version even while the alias flips.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from producers.wire import ImagePayload, WireLimits, WriteToken
from simstream.errors import (
    DecodeError,
    InvalidEventError,
    NotFoundError,
    NotReadyError,
    PayloadError,
    RegistryError,
    RequestError,
)
from simstream.log import get_logger
from simstream.settings import Settings
from workers.api.schemas import ClassifyRequest, FilterSpec, LookupOptions, Query
from workers.cache.cache import CacheKey, NullCache, ResultCache, log_position
from workers.index.filter import Filter, ItemLabel
from workers.index.shard import Item
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

log = get_logger("api.searcher")

CacheStatus = Literal["hit", "miss", "bypass"]
UNKNOWN_LABEL = "unknown"
_THRESHOLD_KEYS = ("threshold", "calibration_threshold", "distance_threshold")
_ROUND_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Resolved:
    """A query turned into an embedding.

    Attributes:
        vector: float32 ``(dim,)``.
        key: the normalised query for cache keys.
        exclude: an item id to leave out of the answer (query by id).
    """

    vector: np.ndarray
    key: bytes
    exclude: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Validated options of one request.

    Attributes:
        k: neighbours per query.
        ef: hnswlib ef (default resolved).
        filter: the filter, or None.
    """

    k: int
    ef: int
    filter: Filter | None

    @property
    def filter_key(self) -> str:
        """The filter's cache-key string ("" for none)."""
        return self.filter.cache_key() if self.filter is not None else ""


class Searcher:
    """Lookups, batches and classification over an `IndexNode`'s serving generation.

    Args:
        settings: limits (k, batch, ef), the write wait and the classify threshold.
        node: the index node.
        cache: the result cache (`NullCache` for none).
    """

    def __init__(
        self, settings: Settings, node: IndexNode, cache: ResultCache | None = None
    ) -> None:
        self.settings = settings
        self.node = node
        self.cache = cache or NullCache()
        self.max_ef = 4 * settings.api_max_k
        self.limits = WireLimits.from_settings(settings)
        self._embed_lock = threading.Lock()
        self._thresholds: dict[str, tuple[float, Literal["model", "settings"]]] = {}

    # --- validation ------------------------------------------------------------------

    def plan(self, generation: IndexGeneration, options: LookupOptions) -> Plan:
        """Check ``k`` and ``ef`` against the limits and build the filter.

        Raises:
            RequestError: (422) naming the bound and the value received.
        """
        max_k = self.settings.api_max_k
        if not 1 <= options.k <= max_k:
            raise RequestError(
                f"Invalid value for `k`. Expected 1 ≤ k ≤ {max_k}. Received: k={options.k}", 422
            )
        if options.ef is not None and not 1 <= options.ef <= self.max_ef:
            raise RequestError(
                f"Invalid value for `ef`. Expected 1 ≤ ef ≤ {self.max_ef}. "
                f"Received: ef={options.ef}",
                422,
            )
        ef = options.ef if options.ef is not None else generation.index.config.ef_search
        return Plan(options.k, ef, _filter(options.filter))

    def check_batch(self, size: int) -> None:
        """Check the number of queries of a batch.

        Raises:
            RequestError: (422) outside ``1 ≤ size ≤ api_max_batch``.
        """
        most = self.settings.api_max_batch
        if not 1 <= size <= most:
            raise RequestError(
                f"Invalid value for `queries`. Expected 1 ≤ len(queries) ≤ {most}. "
                f"Received: {size} queries",
                422,
            )

    # --- read-your-writes ------------------------------------------------------------

    def wait_for(self, generation: IndexGeneration, after: str) -> None:
        """Block until the write named by token ``after`` is visible in ``generation``.

        Raises:
            RequestError: (400) the token is malformed, of another topic or partition.
            NotReadyError: (503) not visible within ``api_write_wait_s``.
        """
        try:
            token = WriteToken.decode(after)
        except DecodeError as e:
            raise RequestError(f"Invalid value for `after`. {e.detail or e.reason}", 400) from None
        topic = self.settings.topic_items
        if token.topic != topic:
            raise RequestError(
                f"Invalid value for `after`. Expected a write token of topic {topic!r}. "
                f"Received: a token of topic {token.topic!r}",
                400,
            )
        if token.partition >= self.settings.partitions:
            raise RequestError(
                f"Invalid value for `after`. Expected a partition below "
                f"{self.settings.partitions}. Received: partition {token.partition}",
                400,
            )
        wait_s = self.settings.api_write_wait_s
        if not generation.wait_visible(token.partition, token.offset, wait_s):
            raise NotReadyError(
                f"The index (model {generation.version}) has not applied write {after} "
                f"within {wait_s:g} s. Expected it to be embedded and indexed; it may still "
                "be on its way — retry later.",
                retry_after_s=max(1.0, wait_s / 2),
            )

    # --- queries ---------------------------------------------------------------------

    def resolve(self, generation: IndexGeneration, queries: Sequence[Query]) -> list[Resolved]:
        """Turn queries into embeddings; raw payloads are embedded in one batch.

        Raises:
            RequestError: invalid vector, payload or base64 (400/422).
            NotFoundError: an unknown id (404).
        """
        resolved: list[Resolved | None] = [None] * len(queries)
        pending: list[tuple[int, np.ndarray, bytes]] = []
        for i, query in enumerate(queries):
            kind = query.kind
            if kind == "vector":
                assert query.vector is not None
                resolved[i] = self._vector(generation, query.vector)
            elif kind == "id":
                assert query.id is not None
                item = self.item(generation, query.id)
                vector = np.asarray(item.vector, dtype=np.float32)
                resolved[i] = Resolved(vector, b"id:" + query.id.encode(), exclude=query.id)
            else:
                model_input, digest = self.model_input(generation, query)
                pending.append((i, model_input, digest))
        if pending:
            vectors = self.embed(generation, np.stack([p[1] for p in pending]))
            for (i, _, digest), vector in zip(pending, vectors, strict=True):
                resolved[i] = Resolved(vector, digest)
        return [r for r in resolved if r is not None]

    def _vector(self, generation: IndexGeneration, values: Sequence[float]) -> Resolved:
        dim = generation.dim
        if len(values) != dim:
            raise RequestError(
                f"Invalid value for `vector`. Expected {dim} numbers (the embedding size of "
                f"model {generation.version}). Received: {len(values)} numbers",
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
        norm = float(np.linalg.norm(vector))
        space = generation.index.space
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
        rounded = np.round(normalised.astype(np.float64), _ROUND_DECIMALS) + 0.0
        return Resolved(vector, b"v:" + rounded.astype(np.float32).tobytes())

    def model_input(self, generation: IndexGeneration, query: Query) -> tuple[np.ndarray, bytes]:
        """The model input of a raw-payload query and a digest of it for cache keys."""
        spec = self.node.encoder(generation.version).input_spec
        if query.image is not None:
            array = self.decode_image(query.image, generation.version, spec.kind, spec.shape)
        else:
            assert query.array is not None
            array = self.decode_array(query.array, spec.kind)
        try:
            model_input = spec.to_model_input(array)
        except PayloadError as e:
            raise RequestError(
                f"Invalid payload for model {generation.version}. {_strip(str(e))}", 422
            ) from None
        digest = _blake(model_input.tobytes() + str(model_input.shape).encode())
        return model_input, b"p:" + digest

    def decode_image(
        self, text: str, version: str, kind: str, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Decode a base64 PNG/JPEG into a uint8 array (HxW or HxWxC).

        Raises:
            RequestError: (400) not base64 or not an image; (422) the model takes
                vectors, or the image is too large.
        """
        if kind != "image":
            raise RequestError(
                f"Invalid value for `image`. Model {version} takes vectors of shape {shape}, "
                "not images. Send `array` (a raw vector) or `vector` (an embedding)",
                422,
            )
        data = decode_base64(text, "image")
        try:
            payload = ImagePayload(data)
        except InvalidEventError as e:
            raise RequestError(f"Invalid value for `image`. {e}", 400) from None
        width, height = payload.size
        if width * height > self.limits.max_image_pixels:
            raise RequestError(
                f"Invalid value for `image`. Expected at most {self.limits.max_image_pixels} "
                f"pixels. Received: {width}x{height}",
                422,
            )
        try:
            return payload.to_array()
        except PayloadError as e:
            raise RequestError(f"Invalid value for `image`. {e}", 400) from None

    @staticmethod
    def decode_array(values: list[Any], kind: str) -> np.ndarray:
        """Nested lists as a uint8 image (image models) or a float vector (vector models).

        Raises:
            RequestError: (422) ragged lists, non-numbers, or values an image cannot hold.
        """
        try:
            array = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise RequestError(
                "Invalid value for `array`. Expected a rectangular array of numbers "
                "(nested lists of equal length). Received: ragged lists or non-numbers",
                422,
            ) from None
        if array.size == 0:
            raise RequestError("Invalid value for `array`. Expected values. Received: empty", 422)
        if kind == "image":
            integral = np.isfinite(array).all() and bool(np.all(array == np.round(array)))
            if not integral or array.min() < 0 or array.max() > 255:
                raise RequestError(
                    "Invalid value for `array`. Expected integers 0..255 for an image model. "
                    f"Received: values from {array.min()!r} to {array.max()!r}",
                    422,
                )
            return array.astype(np.uint8)
        return array

    def embed(self, generation: IndexGeneration, inputs: np.ndarray) -> np.ndarray:
        """Embed model inputs with the generation's own encoder (one call at a time)."""
        encoder = self.node.encoder(generation.version)
        with self._embed_lock:
            return encoder.embed(inputs, batch_size=self.settings.embed_batch_size)

    def item(self, generation: IndexGeneration, item_id: str) -> Item:
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

    # --- searching -------------------------------------------------------------------

    def neighbours(
        self, generation: IndexGeneration, queries: Sequence[Resolved], plan: Plan
    ) -> list[list[dict[str, Any]]]:
        """Search and describe the neighbours of each query (without cache)."""
        extra = 1 if any(q.exclude is not None for q in queries) else 0
        # cosine and l2 distances are ≥ 0; float32 rounding can dip just below.
        floor = -math.inf if generation.index.space == "ip" else 0.0
        found = generation.index.search_batch(
            np.stack([q.vector for q in queries]), plan.k + extra, ef=plan.ef, filter=plan.filter
        )
        out: list[list[dict[str, Any]]] = []
        for query, result in zip(queries, found, strict=True):
            rows: list[dict[str, Any]] = []
            for item_id, distance in zip(result.ids, result.distances, strict=True):
                if item_id == query.exclude:
                    continue
                item = generation.index.get(item_id)
                if item is None:  # deleted since the search
                    continue
                rows.append(
                    {
                        "id": item_id,
                        "distance": max(floor, float(distance)),
                        "label": None if item.label is None else str(item.label),
                        "metadata": dict(item.metadata),
                    }
                )
                if len(rows) == plan.k:
                    break
            out.append(rows)
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
            One JSON array per query, and the cache status of the request (a batch is
            a ``hit`` only when every query hit).
        """

        def compute(subset: Sequence[Resolved]) -> list[bytes]:
            return [_dumps(rows) for rows in self.neighbours(generation, subset, plan)]

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

    # --- classification --------------------------------------------------------------

    def threshold(
        self, version: str, requested: float | None
    ) -> tuple[float, Literal["request", "model", "settings"]]:
        """The distance threshold of classification and where it came from.

        The serving model's ``metrics.json`` is read once per version: its
        ``calibration.threshold`` (what the benchmark and retraining record), else a
        top-level ``threshold``/``calibration_threshold``/``distance_threshold``;
        failing those, ``settings.classify_threshold``.
        """
        if requested is not None:
            return requested, "request"
        if version not in self._thresholds:
            try:
                metrics = self.node.registry.get(version).metrics
            except RegistryError:
                metrics = {}
            found = _calibrated(metrics)
            self._thresholds[version] = (
                (found, "model")
                if found is not None
                else (self.settings.classify_threshold, "settings")
            )
        return self._thresholds[version]

    @staticmethod
    def vote(
        rows: Sequence[dict[str, Any]], threshold: float
    ) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        """Majority vote of the labelled neighbours within ``threshold``.

        Ties go to the label whose nearest voter is nearer. No voter: ``unknown``.

        Returns:
            ``(label, votes, evidence)``: votes sorted best first; every neighbour
            with a ``within_threshold`` flag.
        """
        evidence = [{**row, "within_threshold": row["distance"] <= threshold} for row in rows]
        voters = [e for e in evidence if e["within_threshold"] and e["label"] is not None]
        counts = Counter(str(e["label"]) for e in voters)
        nearest: dict[str, float] = {}
        for e in voters:
            nearest.setdefault(str(e["label"]), float(e["distance"]))
        ranked = sorted(counts.items(), key=lambda lv: (-lv[1], nearest[lv[0]]))
        votes = [
            {"label": label, "votes": n, "nearest_distance": nearest[label]} for label, n in ranked
        ]
        label = ranked[0][0] if ranked else UNKNOWN_LABEL
        return label, votes, evidence

    def classify(self, generation: IndexGeneration, request: ClassifyRequest) -> dict[str, Any]:
        """Classify one query (the caller has waited for ``after`` if given)."""
        plan = self.plan(generation, request)
        position, epoch = state_of(generation)
        [query] = self.resolve(generation, [request])
        [raw], _ = self.cached_neighbours(generation, position, [query], plan, request.fresh)
        threshold, source = self.threshold(generation.version, request.threshold)
        label, votes, evidence = self.vote(json.loads(raw), threshold)
        return {
            "label": label,
            "known": bool(votes),
            "threshold": threshold,
            "threshold_source": source,
            "votes": votes,
            "neighbors": evidence,
            "model_version": generation.version,
            "index_epoch": epoch,
        }


def state_of(generation: IndexGeneration) -> tuple[str, int]:
    """The index's log position (for cache keys) and epoch (for answers), read together.

    Read before searching: the search then sees this state or a newer one.
    """
    index = generation.index
    return log_position(index.next_offsets()), index.epoch


def lookup_body(version: str, epoch: int, neighbours: bytes) -> bytes:
    """The JSON of a `LookupResponse` around an already serialised neighbour list."""
    return b'{"model_version":%s,"index_epoch":%d,"neighbors":%s}' % (
        _dumps(version),
        epoch,
        neighbours,
    )


def batch_body(version: str, epoch: int, results: Sequence[bytes]) -> bytes:
    """The JSON of a `BatchLookupResponse` around serialised neighbour lists."""
    inner = b",".join(b'{"neighbors":%s}' % r for r in results)
    return b'{"model_version":%s,"index_epoch":%d,"results":[%s]}' % (
        _dumps(version),
        epoch,
        inner,
    )


def decode_base64(text: str, field: str) -> bytes:
    """Decode standard base64 (an optional ``data:…;base64,`` prefix is dropped).

    Raises:
        RequestError: (400) not base64, or empty.
    """
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            f"Invalid value for `{field}`. Expected base64-encoded PNG or JPEG bytes. "
            f"Received: {len(text)} characters that are not valid base64",
            400,
        ) from None
    if not data:
        raise RequestError(
            f"Invalid value for `{field}`. Expected base64-encoded PNG or JPEG bytes. "
            "Received: nothing",
            400,
        )
    return data


def _filter(spec: FilterSpec | None) -> Filter | None:
    if spec is None or (spec.labels is None and not spec.metadata):
        return None
    labels = None if spec.labels is None else frozenset[ItemLabel](spec.labels)
    return Filter(labels=labels, metadata=dict(spec.metadata))


def _calibrated(metrics: dict[str, Any]) -> float | None:
    candidates: list[Any] = []
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict):
        candidates.append(calibration.get("threshold"))
    candidates += [metrics.get(key) for key in _THRESHOLD_KEYS]
    for value in candidates:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and math.isfinite(value) and value > 0:
            return float(value)
    return None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _strip(message: str) -> str:
    return message.removeprefix("Invalid vector payload. ").removeprefix("Invalid image payload. ")
