"""`RouterService`: lookups of the whole cluster, answered from one model version.

A request takes the cluster view once and its version once
(`ClusterView.serving_version`: every partition set has a ready replica
serving it), embeds its raw payloads once with that version's encoder, and
sends only vectors, with that version, to one replica of every set
(`Fanout`). The answers are merged (`merge`). So no answer mixes versions:
every node is asked for the same one, and a node that no longer holds it
answers 409 and another replica is asked.

The result cache is shared with the nodes' (same keys and values), with the
cluster's log position in place of one node's: the applied embeddings offset
of every partition on the replica asked first in its set (the same state on
every replica of a set). Answers with a missing set are never cached.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from model.registry import Encoder, Registry
from simstream.errors import NotReadyError, PartitionUnavailableError
from simstream.wire import WriteToken
from workers import metrics
from workers.api.decoding import QueryDecoder
from workers.api.filters import to_filter
from workers.api.schemas import LookupOptions, Query
from workers.api.searcher import CacheStatus, Plan, check_limits, checked_vector
from workers.api.waits import parse_tokens
from workers.cache.cache import CacheKey, NullCache, ResultCache, log_position
from workers.cluster.membership import ClusterView, NodeRecord
from workers.cluster.placement import partitions_of, set_of
from workers.index.centroid import LabelSum, merge_sums
from workers.index.partitioning import partition_for
from workers.router.config import RouterConfig
from workers.router.fanout import Fanout, holds
from workers.router.merge import merge

SEARCH_PATH = "/internal/v1/search"
LABEL_SUMS_PATH = "/internal/v1/label-sums"
ITEMS_PATH = "/internal/v1/items"
_PARTIAL = b"~"


@dataclass(frozen=True, slots=True)
class Target:
    """A query as the router sends it: a vector (None: a payload to embed) and its keys.

    Attributes:
        vector: the embedding, or None until a raw payload is embedded.
        key: the normalised query for cache keys.
        exclude: an id to leave out (query by id).
        payload: the raw-payload query to embed.
    """

    vector: np.ndarray | None
    key: bytes
    exclude: str | None = None
    payload: Query | None = None


@dataclass(frozen=True, slots=True)
class Routed:
    """The merged answer of a request.

    Attributes:
        version: the model version every node searched.
        epoch: the sum of the applied offsets of the cluster position.
        neighbours: one serialised neighbour list per query.
        exhaustive: per query, whether every set's answer was exhaustive.
        cache: the cache status of the request.
        missing: partitions no replica answered for (empty: a complete answer).
        vectors: the queries' embeddings, when asked for (``search(..., embed=True)``).
    """

    version: str
    epoch: int
    neighbours: list[bytes]
    exhaustive: list[bool]
    cache: CacheStatus
    missing: list[int]
    vectors: tuple[np.ndarray, ...] = ()


class RouterService:
    """Fans lookups out over the cluster and merges the answers.

    Args:
        config: the router's config.
        fanout: sends requests to replicas.
        decoder: turns raw payloads into model inputs.
        cache: the result cache (`NullCache` for none).
        registry: the model registry (encoders, dimensions, spaces).
    """

    def __init__(
        self,
        config: RouterConfig,
        fanout: Fanout,
        decoder: QueryDecoder,
        cache: ResultCache | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self.fanout = fanout
        self.decoder = decoder
        self.cache = cache or NullCache()
        self.registry = registry or Registry(config.registry_dir)
        self._encoders: dict[str, Encoder] = {}
        self._shapes: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    # --- models ----------------------------------------------------------------------

    def shape(self, version: str) -> tuple[int, str]:
        """The embedding size and index space of ``version`` (read once)."""
        shape = self._shapes.get(version)
        if shape is None:
            declared = self.registry.get(version).config
            space = str(declared.get("index_space") or self.config.space)
            shape = self._shapes[version] = (int(declared["embedding_dim"]), space)
        return shape

    def encoder(self, version: str) -> Encoder:
        """The encoder of ``version`` (loaded and warmed up once; under one lock, so
        concurrent first queries load it once)."""
        with self._lock:
            if version not in self._encoders:
                loaded = self.registry.load(version)
                loaded.warmup(batch_size=8)
                self._encoders[version] = loaded
        return self._encoders[version]

    # --- requests --------------------------------------------------------------------

    @staticmethod
    def version(view: ClusterView) -> str:
        """The version the whole cluster answers with now: the one every set has a ready
        replica serving, else (mid flip, when one set already serves the new version
        and another still the old) one every set has a ready replica holding complete
        (`held_everywhere`).

        Raises:
            NotReadyError: some partition set has no ready replica, or the sets serve
                no common version.
        """
        version = view.serving_version() or held_everywhere(view)
        if version is None:
            idle = [s for s, nodes in view.sets.items() if not any(n.ready for n in nodes)]
            reason = (
                f"partition sets {idle} have no ready replica"
                if idle
                else "the partition sets serve no common model version"
            )
            raise NotReadyError(f"The cluster cannot answer yet: {reason}.")
        return version

    async def search(
        self,
        view: ClusterView,
        options: LookupOptions,
        queries: Sequence[Query],
        headers: Mapping[str, str],
        partial: bool,
        embed: bool = False,
    ) -> Routed:
        """Answer ``queries`` from one replica of every set, through the cache.

        With ``embed``, raw payloads are embedded even when the cache answers, and
        the answer carries every query's embedding (``Routed.vectors``).

        Raises:
            RequestError: invalid options or query (4xx), as a node would answer.
            NotFoundError: a query by an unknown id.
            NotReadyError: no version is served by the whole cluster, or a write token
                not visible in time.
            PartitionUnavailableError: a set has no replica that answered, and not
                ``partial``.
        """
        version = self.version(view)
        check_limits(self.config.search, options.k, options.ef)
        ef = options.ef if options.ef is not None else self.config.ef_search
        plan = Plan(options.k, ef, to_filter(options.filter), options.max_distance)
        tokens = parse_tokens(self.config.search, options.after) if options.after else ()
        order = {s: self.fanout.replicas(view, s, version) for s in view.sets}
        position, epoch = self.position(order, version)
        targets = [await self.target(view, version, q, headers) for q in queries]
        keys = [
            CacheKey(version, position, t.key, plan.k, plan.ef, plan.filter_key) for t in targets
        ]
        bypass = options.fresh or bool(tokens)
        cached: list[bytes | None] = (
            [None] * len(targets) if bypass else await run_in_threadpool(self.cache.get_many, keys)
        )
        todo = [i for i, value in enumerate(cached) if value is None]
        missing: list[int] = []
        every: list[np.ndarray] = []
        if embed:
            every = await run_in_threadpool(self.vectors, version, targets)
        if todo:
            vectors = (
                [every[i] for i in todo]
                if embed
                else await run_in_threadpool(self.vectors, version, [targets[i] for i in todo])
            )
            base = {
                "version": version,
                "vectors": [v.tolist() for v in vectors],
                "k": plan.k,
                "ef": plan.ef,
                "total_live": total_live(order, version),
                "filter": _filter_body(options),
                "max_distance": plan.max_distance,
                "exclude": [targets[i].exclude for i in todo],
            }
            answers, missing = await self.fan_out(order, base, tokens, headers)
            if missing and not partial:
                raise PartitionUnavailableError(
                    f"No replica answered for partitions {missing} (model {version}). Expected "
                    "a ready replica of every partition set. Retry, or pass `partial: true` "
                    "for the answer of the other partitions",
                    missing,
                )
            computed = [
                _dumps(rows) if full else _PARTIAL + _dumps(rows)
                for rows, full in merge(answers, len(todo), plan.k)
            ]
            for i, value in zip(todo, computed, strict=True):
                cached[i] = value
            if not bypass and not missing:
                pairs = [(keys[i], v) for i, v in zip(todo, computed, strict=True)]
                await run_in_threadpool(self.cache.set_many, pairs)
        values = [v for v in cached if v is not None]
        status: CacheStatus = "bypass" if bypass else ("miss" if todo else "hit")
        return Routed(
            version,
            epoch,
            [v.removeprefix(_PARTIAL) for v in values],
            [not v.startswith(_PARTIAL) for v in values],
            status,
            missing,
            tuple(every),
        )

    async def label_sums(
        self,
        view: ClusterView,
        version: str,
        labels: Sequence[str],
        options: LookupOptions,
        headers: Mapping[str, str],
    ) -> tuple[dict[str, LabelSum], list[int]]:
        """Per label, the sum and count of its stored embeddings in ``version`` over the
        whole cluster (those that pass ``options.filter``): one replica of every set
        asked (a write token only waited for by its set, as in `search`), their
        answers added up.

        Returns:
            The sums (labels with no item are absent), and the partitions of the sets
            no replica answered for.

        Raises:
            PartitionUnavailableError: a set has no replica that answered, and not
                ``partial``.
        """
        if not labels:
            return {}, []
        order = {s: self.fanout.replicas(view, s, version) for s in view.sets}
        tokens = parse_tokens(self.config.search, options.after) if options.after else ()
        body = {"version": version, "labels": list(labels), "filter": _filter_body(options)}
        answers, missing = await self.fan_out(order, body, tokens, headers, LABEL_SUMS_PATH)
        if missing and not options.partial:
            raise unavailable(missing, version)
        parts = [
            {
                label: LabelSum(np.asarray(found["total"], np.float64), int(found["count"]))
                for label, found in answer["sums"].items()
            }
            for answer in answers
        ]
        return merge_sums(parts), missing

    def position(self, order: Mapping[int, Sequence[NodeRecord]], version: str) -> tuple[str, int]:
        """The cluster's log position for cache keys, and its epoch (the offsets' sum)."""
        applied: dict[int, int] = {}
        for replicas in order.values():
            if replicas:
                applied.update(replicas[0].generations[version].applied)
        return log_position(applied), sum(applied.values())

    async def target(
        self, view: ClusterView, version: str, query: Query, headers: Mapping[str, str]
    ) -> Target:
        """A query as a vector (or a payload to embed) with its cache key.

        Raises:
            RequestError: an invalid vector or payload (422).
            NotFoundError: an unknown id.
        """
        kind = query.kind
        if kind == "vector":
            assert query.vector is not None
            dim, space = self.shape(version)
            vector, key = checked_vector(query.vector, dim, space, version)
            return Target(vector, key)
        if kind == "id":
            assert query.id is not None
            vector = await self.stored_vector(view, version, query.id, headers)
            return Target(vector, b"id:" + query.id.encode(), exclude=query.id)
        spec = (await run_in_threadpool(self.encoder, version)).input_spec
        return Target(None, self.decoder.payload_key(query, spec), payload=query)

    async def stored_vector(
        self, view: ClusterView, version: str, item_id: str, headers: Mapping[str, str]
    ) -> np.ndarray:
        """The stored embedding of an item in ``version`` (that version's generation, even
        while the owner serves another), read from an owner of its partition.

        Raises:
            NotFoundError: no owner knows the id (404 passed on).
            NotReadyError: no owner of its partition answered with ``version``.
        """
        replicas = self.owners(view, version, item_id)
        send = self.fanout.get(f"{ITEMS_PATH}/{item_id}", {"version": version}, headers)
        answer = await self.fanout.ask(replicas, send)
        if answer.body is None:
            raise NotReadyError(
                f"No owner of item {item_id!r}'s partition answered for model {version}; "
                "retry (a failover is under way)."
            )
        return np.asarray(answer.body["vector"], dtype=np.float32)

    def owners(self, view: ClusterView, version: str, item_id: str) -> list[NodeRecord]:
        """The replicas of the set that owns ``item_id``'s partition, in the order to ask them."""
        partition = partition_for(item_id, self.config.search.partitions)
        return self.fanout.replicas(view, set_of(partition, view.partition_sets), version)

    def missing_of(self, view: ClusterView, item_id: str) -> list[int]:
        """The partitions of the set that owns ``item_id``'s partition."""
        partitions = self.config.search.partitions
        owner = set_of(partition_for(item_id, partitions), view.partition_sets)
        return list(partitions_of(owner, view.partition_sets, partitions))

    def vectors(self, version: str, targets: Sequence[Target]) -> list[np.ndarray]:
        """The targets' vectors, raw payloads embedded in one batch with ``version``'s encoder.

        Raises:
            RequestError: an invalid payload (400/422).
        """
        pending = [i for i, t in enumerate(targets) if t.vector is None]
        out = [t.vector for t in targets]
        if pending:
            encoder = self.encoder(version)
            inputs = []
            for i in pending:
                payload = targets[i].payload
                assert payload is not None
                inputs.append(self.decoder.model_input(payload, encoder.input_spec, version)[0])
            embedded = encoder.embed(
                np.stack(inputs), batch_size=self.config.search.embed_batch_size
            )
            for i, vector in zip(pending, embedded, strict=True):
                out[i] = vector
        return [v for v in out if v is not None]

    async def fan_out(
        self,
        order: Mapping[int, Sequence[NodeRecord]],
        base: Mapping[str, Any],
        tokens: Sequence[WriteToken],
        headers: Mapping[str, str],
        path: str = SEARCH_PATH,
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """POST ``base`` to ``path`` of one replica of every set; a write token goes only
        to its partition's set.

        Returns:
            The answers of the sets that answered, and the partitions of those that did not.

        Raises:
            NotReadyError: a set whose write token no replica has applied in time
                (the write exists and is on its way: not a partition lost).
        """
        sets = self.config.partition_sets
        calls = []
        for partition_set in sorted(order):
            body = dict(base)
            own = [t for t in tokens if set_of(t.partition, sets) == partition_set]
            timeout_s = None
            if own:
                body["after"] = WriteToken.encode_all(own)
                # The owner may wait up to write_wait_s for the write before it searches.
                timeout_s = self.config.timeout_s + self.config.search.write_wait_s
            send = self.fanout.post(path, body, headers, timeout_s)
            calls.append(self.fanout.ask(order[partition_set], send, partition_set))
        answers = await asyncio.gather(*calls)
        behind = [a.behind for a in answers if a.body is None and a.behind is not None]
        if behind:
            raise NotReadyError(str(behind[0]), retry_after_s=behind[0].retry_after_s)
        missing: list[int] = []
        for answer in answers:
            if answer.body is None:
                metrics.ROUTER_MISSING.inc()
                missing += partitions_of(answer.partition_set, sets, self.config.search.partitions)
        return [a.body for a in answers if a.body is not None], sorted(missing)


def _filter_body(options: LookupOptions) -> dict[str, Any] | None:
    """The request's filter as a node's internal routes take it."""
    if options.filter is None:
        return None
    return options.filter.model_dump(by_alias=True, exclude_none=True)


def unavailable(missing: Sequence[int], version: str) -> PartitionUnavailableError:
    """The error of an answer that misses ``missing`` partitions and was not allowed to."""
    return PartitionUnavailableError(
        f"No replica answered for partitions {list(missing)} (model {version}). Expected "
        "a ready replica of every partition set. Retry, or pass `partial: true` "
        "for the answer of the other partitions",
        list(missing),
    )


def total_live(order: Mapping[int, Sequence[NodeRecord]], version: str) -> int | None:
    """The live items of ``version`` over every set (its first replica's count), or None
    when none is known.

    Each node scales its shards' ef by their share of this total (`shard_ef`), so
    the cluster searches each shard as one node holding every partition would:
    the same work and the same recall, however many nodes the shards are split over.
    """
    live = sum(r[0].generations[version].live for r in order.values() if r)
    return live or None


def held_everywhere(view: ClusterView) -> str | None:
    """A version every partition set has a ready replica holding complete (serving,
    retained, or built and caught up); the one most ready nodes serve, then the greatest."""
    common: set[str] | None = None
    for nodes in view.sets.values():
        held = {v for n in nodes for v in n.generations if holds(n, v)}
        common = held if common is None else common & held
    if not common:
        return None
    serving = [n.serving for n in view.nodes if n.ready]
    return max(common, key=lambda v: (serving.count(v), v))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
