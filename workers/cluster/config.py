"""`ClusterConfig`: who this index node is in the cluster, built once at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from simstream.settings import Settings
from workers.cluster.placement import derive_set, partitions_of


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A node's identity and placement, and the membership timing.

    Attributes:
        node_id: the node's stable id (its membership key).
        node_url: where a router reaches its API.
        partition_sets: partition sets of the cluster (1: every node holds every partition).
        partition_set: this node's set.
        heartbeat_s: seconds between two announcements of its record.
        ttl_s: how long its record outlives the last announcement.
    """

    node_id: str = "local"
    node_url: str = "http://127.0.0.1:8000"
    partition_sets: int = 1
    partition_set: int = 0
    heartbeat_s: float = 2.0
    ttl_s: float = 6.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterConfig:
        """The config the settings describe (the set derived from the node id when not given)."""
        node_id = settings.cluster_node_id
        return cls(
            node_id=node_id,
            node_url=settings.cluster_node_url,
            partition_sets=settings.partition_sets,
            partition_set=derive_set(node_id, settings.partition_sets, settings.partition_set),
            heartbeat_s=settings.node_heartbeat_s,
            ttl_s=settings.node_ttl_s,
        )

    def owned(self, partitions: int) -> tuple[int, ...]:
        """The partitions this node holds among ``partitions``."""
        return partitions_of(self.partition_set, self.partition_sets, partitions)
