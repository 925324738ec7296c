"""`RouterConfig`: what the query router takes from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workers.api.config import SearchConfig

if TYPE_CHECKING:
    from simstream.settings import Settings


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """How the router fans out, and the limits it checks before it does.

    Attributes:
        search: the lookup limits (k, ef, batch), the items topic and its partitions.
        registry_dir: the model registry (encoders of raw-payload queries).
        hedge_s: seconds to wait for a replica before asking another one too (0: off).
        timeout_s: longest wait for one node's answer.
        refresh_s: seconds between two reads of the cluster's membership.
        space: the index space of models that declare none.
        ef_search: the default ``ef`` (sent to every node, so all search alike).
        partition_sets: the cluster's partition sets (``SIMSTREAM_PARTITION_SETS``).
        coordination_url: the Redis the nodes announce themselves in (the Celery broker's).
        node_ttl_s: how long a node's record outlives its last announcement.
    """

    search: SearchConfig
    registry_dir: Path
    hedge_s: float
    timeout_s: float
    refresh_s: float
    space: str
    ef_search: int
    partition_sets: int
    coordination_url: str
    node_ttl_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterConfig:
        """The config ``SIMSTREAM_ROUTER_*`` and the API and index settings describe."""
        return cls(
            search=SearchConfig.from_settings(settings),
            registry_dir=settings.registry_dir,
            hedge_s=settings.router_hedge_ms / 1000.0,
            timeout_s=settings.router_timeout_s,
            refresh_s=0.5,
            space=settings.index_space,
            ef_search=settings.index_ef_search,
            partition_sets=settings.partition_sets,
            coordination_url=settings.celery_broker_url,
            node_ttl_s=settings.node_ttl_s,
        )
