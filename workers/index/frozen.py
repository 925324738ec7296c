"""`FrozenShard`: a shard held still for a snapshot, and what the snapshot reads of it.

`Shard.frozen` holds the shard's apply mutex (no batch, no rebuild swap) and
its lock shared (searches go on, since saving an hnswlib index only reads it)
while a `FrozenShard` is in use. `workers.index.snapshot` writes the graph with
`FrozenShard.save_index` and the bookkeeping from `FrozenShard.state`, which
`Shard.restore` reads back (see ``docs/index.md``, "Snapshots").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workers.index.graph import Graph

if TYPE_CHECKING:
    from workers.index.shard import ShardStats


class FrozenShard:
    """A shard held still by `Shard.frozen`: what a snapshot reads.

    Args:
        graph: the shard's graph.
        stats: the shard's counts.
        state: the shard's bookkeeping as JSON-ready columns.
    """

    def __init__(
        self,
        graph: Graph,
        stats: Callable[[], ShardStats],
        state: Callable[[], dict[str, Any]],
    ) -> None:
        self._graph = graph
        self._stats = stats
        self._state = state

    @property
    def stats(self) -> ShardStats:
        """The shard's counts."""
        return self._stats()

    @property
    def element_count(self) -> int:
        """Slots in the graph file (live plus tombstones)."""
        return int(self._graph.index.element_count)

    def save_index(self, path: str) -> None:
        """Write the hnswlib graph to ``path`` (hnswlib's own format)."""
        self._graph.index.save_index(path)

    def state(self) -> dict[str, Any]:
        """The bookkeeping as JSON-ready columns (ids, slots, offsets, labels, metadata)."""
        return self._state()
