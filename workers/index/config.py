"""Parameters of an index: fixed at build time (dim, space, M, ef_construction)
and tunable at run time (ef, capacity growth, tombstone threshold, threads)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from simstream.errors import IndexStoreError
from simstream.settings import Settings

Space = Literal["cosine", "l2", "ip"]
SPACES: tuple[Space, ...] = ("cosine", "l2", "ip")
GraphLayout = Literal["node", "partition"]


def reported_distance(space: str, distance: float) -> float:
    """A distance from hnswlib in ``space``, in the units of the model's distance.

    The one conversion between the index and everything that compares its
    distances with a model's (calibrated thresholds, lookups): hnswlib's ``l2``
    is the *squared* Euclidean distance, while a model's ``l2`` (``euclidean``
    in `model.distances`) is not squared, so ``l2`` distances are reported as
    their square root. ``cosine`` (``1 - cos``) and ``ip`` (``1 - dot``)
    already agree. Tiny negative values (float32 rounding) become 0 except in
    ``ip``, which may be negative.
    """
    if space == "ip":
        return float(distance)
    if space == "l2":
        return math.sqrt(max(0.0, float(distance)))
    return max(0.0, float(distance))


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """What every shard of one index shares.

    Attributes:
        dim: vector size.
        space: hnswlib space. Distances are ``1 - cos`` (cosine), squared
            Euclidean (l2) and ``1 - dot`` (ip); smaller is nearer. The API
            reports them with `reported_distance` (Euclidean for l2).
        m: hnswlib M (graph degree).
        ef_construction: hnswlib ef at insertion.
        ef_search: default ef at query time (hnswlib uses ``max(ef, k)``).
        initial_capacity: slots allocated per shard at creation.
        tombstone_ratio: share of deleted slots that triggers a background rebuild.
        min_tombstones: fewest deleted slots worth a rebuild (tiny shards skip it).
        num_threads: hnswlib threads for bulk inserts and batched queries (-1: all cores).
        write_slice_s: longest a writer holds a shard while searches are running.
        exact_filter_limit: a filtered search whose passing items (the
            intersection of the filter's posting lists) number at most this per
            shard in the graph is answered exactly by brute force over them.
        filter_fetch_limit: the most neighbours a filtered search fetches from a
            graph per query and shard in it (at least k); a query still short of
            k then gets fewer, marked not exhaustive. Bounds a filtered query's
            memory and time per shard.
        fan_out_min_s: searches expected to take longer than this per graph fan
            out to threads; shorter ones run in the calling thread (a thread
            hand-off costs tens of microseconds).
        graph: ``node``: every shard of a new index shares one hnswlib graph, so a
            query is one graph search whatever the partition count; ``partition``:
            one graph per shard (see `workers.index.shared_graph`). A loaded
            snapshot keeps the layout it was saved with.
    """

    dim: int
    space: Space = "cosine"
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    initial_capacity: int = 1024
    tombstone_ratio: float = 0.2
    min_tombstones: int = 64
    num_threads: int = -1
    write_slice_s: float = 0.0002
    exact_filter_limit: int = 2048
    filter_fetch_limit: int = 4096
    fan_out_min_s: float = 0.0002
    graph: GraphLayout = "node"

    def __post_init__(self) -> None:
        checks = [
            (self.dim >= 1, "dim", "dim ≥ 1"),
            (self.space in SPACES, "space", "one of cosine, l2, ip"),
            (self.m >= 2, "m", "m ≥ 2"),
            (self.ef_construction >= 1, "ef_construction", "ef_construction ≥ 1"),
            (self.ef_search >= 1, "ef_search", "ef_search ≥ 1"),
            (self.initial_capacity >= 1, "initial_capacity", "initial_capacity ≥ 1"),
            (0 < self.tombstone_ratio < 1, "tombstone_ratio", "0 < tombstone_ratio < 1"),
            (self.min_tombstones >= 1, "min_tombstones", "min_tombstones ≥ 1"),
            (self.num_threads == -1 or self.num_threads >= 1, "num_threads", "-1 or ≥ 1"),
            (self.write_slice_s > 0, "write_slice_s", "write_slice_s > 0"),
            (self.exact_filter_limit >= 0, "exact_filter_limit", "exact_filter_limit ≥ 0"),
            (self.filter_fetch_limit >= 1, "filter_fetch_limit", "filter_fetch_limit ≥ 1"),
            (self.fan_out_min_s >= 0, "fan_out_min_s", "fan_out_min_s ≥ 0"),
            (self.graph in ("node", "partition"), "graph", "node or partition"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise IndexStoreError(
                    f"Invalid value for `{name}`. Expected {expected}. "
                    f"Received: {name}={getattr(self, name)!r}"
                )

    @classmethod
    def from_settings(cls, settings: Settings, dim: int | None = None) -> IndexConfig:
        """The config the settings describe (``dim`` defaults to the model's embedding size)."""
        return cls(
            dim=settings.model_embedding_dim if dim is None else dim,
            space=settings.index_space,
            m=settings.index_m,
            ef_construction=settings.index_ef_construction,
            ef_search=settings.index_ef_search,
            initial_capacity=settings.index_initial_capacity,
            tombstone_ratio=settings.index_tombstone_ratio,
            num_threads=settings.index_threads,
            graph=settings.index_graph,
        )

    def with_(self, **changes: object) -> IndexConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
