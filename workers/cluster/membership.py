"""Membership: index nodes announce themselves in Redis; `ClusterView` is what they add up to.

Each node writes its `NodeRecord` every heartbeat under
``simstream:nodes:<items topic>:<node id>`` with an expiry (``SET … PX``): a
node that stops announcing (crashed, partitioned away) drops out of the view
when its record expires, and a node stopped cleanly withdraws its record at
once. Nothing assumes a fixed node list: the view is whatever records are live.

The view answers what the cluster as a whole may do: which model version every
partition set can serve (`ClusterView.serving_version`), whether a version is
caught up on at least one owner of every set (the flip rule, see
``docs/architecture.md``), and which versions the dispatcher must embed for
(`ClusterView.versions_needed`: the union over live nodes, so two replicas in
different states never make it start and stop a version's dispatcher).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis

from simstream.log import get_logger

log = get_logger("cluster")

PREFIX = "simstream:nodes"

State = Literal["building", "serving", "retained"]
_STATES = ("building", "serving", "retained")


@dataclass(frozen=True, slots=True)
class GenerationState:
    """One generation of a node as announced.

    Attributes:
        state: ``serving`` (answers queries), ``building`` (a re-index or a
            rollback catching up) or ``retained`` (the previous generation, kept
            for a rollback and for nodes that have not flipped yet).
        caught_up: whether it may serve (lag within the re-index bound, no hole).
        applied: next embeddings-log offset per owned partition applied so far.
        live: the live items it holds (the router scales each node's search by it).
    """

    state: State
    caught_up: bool = False
    applied: Mapping[int, int] = field(default_factory=dict)
    live: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (partition keys as strings)."""
        return {
            "state": self.state,
            "caught_up": self.caught_up,
            "applied": {str(p): int(o) for p, o in sorted(self.applied.items())},
            "live": self.live,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationState:
        """Inverse of `to_dict`.

        Raises:
            ValueError: an unknown state.
        """
        state = data["state"]
        if state not in _STATES:
            raise ValueError(f"Expected a state in {_STATES}. Received: {state!r}")
        applied = {int(p): int(o) for p, o in dict(data.get("applied", {})).items()}
        live = int(data.get("live", 0))
        return cls(state, bool(data.get("caught_up", False)), applied, live)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What an index node announces about itself.

    Attributes:
        id: the node's stable id (``SIMSTREAM_NODE_ID``).
        url: where its API answers (``SIMSTREAM_NODE_URL``).
        partition_set: the partition set it belongs to.
        partitions: the partitions (shards) it holds, ascending.
        serving: the model version it answers queries with (None: none yet).
        generations: every generation it holds, by model version.
        ready: its readiness (``/readyz``).
        updated_at: wall-clock time of the announcement.
    """

    id: str
    url: str
    partition_set: int
    partitions: tuple[int, ...]
    serving: str | None = None
    generations: Mapping[str, GenerationState] = field(default_factory=dict)
    ready: bool = False
    updated_at: float = 0.0

    def to_json(self) -> str:
        """Compact JSON (the value of the node's key)."""
        return json.dumps(
            {
                "id": self.id,
                "url": self.url,
                "partition_set": self.partition_set,
                "partitions": list(self.partitions),
                "serving": self.serving,
                "generations": {v: g.to_dict() for v, g in self.generations.items()},
                "ready": self.ready,
                "updated_at": self.updated_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeRecord:
        """Inverse of `to_json`.

        Raises:
            ValueError: not JSON, or a field is missing or of the wrong type.
        """
        try:
            data = json.loads(text)
            return cls(
                id=str(data["id"]),
                url=str(data["url"]),
                partition_set=int(data["partition_set"]),
                partitions=tuple(sorted(int(p) for p in data["partitions"])),
                serving=None if data.get("serving") is None else str(data["serving"]),
                generations={
                    str(v): GenerationState.from_dict(g)
                    for v, g in dict(data.get("generations", {})).items()
                },
                ready=bool(data.get("ready", False)),
                updated_at=float(data.get("updated_at", 0.0)),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"Expected a node record. Received: {text!r} ({e!r})") from None

    def caught_up(self, version: str) -> bool:
        """Whether this node holds ``version`` caught up."""
        generation = self.generations.get(version)
        return generation is not None and generation.caught_up

    def versions(self) -> set[str]:
        """Every version this node serves or holds."""
        held = set(self.generations)
        return held | {self.serving} if self.serving else held


@dataclass(frozen=True)
class ClusterView:
    """The live nodes at one moment, grouped by partition set.

    Args:
        nodes: the live records (one per node id).
        partition_sets: how many partition sets the cluster has
            (``SIMSTREAM_PARTITION_SETS``): a set without any live node still counts.
    """

    nodes: tuple[NodeRecord, ...]
    partition_sets: int

    @property
    def sets(self) -> dict[int, list[NodeRecord]]:
        """Live nodes of every partition set (an empty list: none is live)."""
        grouped: dict[int, list[NodeRecord]] = {s: [] for s in range(self.partition_sets)}
        for node in self.nodes:
            grouped.setdefault(node.partition_set, []).append(node)
        return grouped

    def with_node(self, record: NodeRecord) -> ClusterView:
        """This view with ``record`` in place of any record of the same id (a node's own,
        fresher than what Redis holds)."""
        others = tuple(n for n in self.nodes if n.id != record.id)
        return replace(self, nodes=(*others, record))

    def owners(self, partition: int) -> list[NodeRecord]:
        """The live nodes that hold ``partition``."""
        return [n for n in self.nodes if partition in n.partitions]

    def versions_needed(self) -> set[str]:
        """Versions some live node serves, builds or retains: the dispatcher embeds for
        all of them."""
        return {v for node in self.nodes for v in node.versions()}

    def caught_up_everywhere(self, version: str) -> bool:
        """Whether every partition set has at least one live owner with ``version`` caught up
        (the condition for any node to flip to it)."""
        return all(any(n.caught_up(version) for n in nodes) for nodes in self.sets.values())

    def everyone_serves(self, version: str) -> bool:
        """Whether every live node serves ``version`` (the previous one may then go)."""
        return all(n.serving == version for n in self.nodes)

    def serving_version(self, prefer: str | None = None) -> str | None:
        """The version every partition set has a ready replica serving, or None.

        None when a set has no ready node, or when the sets serve no common
        version. During a flip two versions may qualify: ``prefer`` when it is
        one of them, else the one served by the most ready nodes (ties: the
        greatest version name).
        """
        common: set[str] | None = None
        for nodes in self.sets.values():
            served = {n.serving for n in nodes if n.ready and n.serving}
            common = served if common is None else common & served
        if not common:
            return None
        if prefer in common:
            return prefer
        counts = Counter(n.serving for n in self.nodes if n.ready and n.serving in common)
        return max(common, key=lambda v: (counts[v], v))


class Membership:
    """Announces, withdraws and lists node records in the coordination Redis.

    Args:
        client: the coordination Redis (the Celery broker's).
        topic_items: the items topic: clusters of different topics never mix.
        ttl_s: how long a record outlives its last announcement.
    """

    def __init__(self, client: redis.Redis, topic_items: str, ttl_s: float = 6.0) -> None:
        self._redis = client
        self.prefix = f"{PREFIX}:{topic_items}:"
        self.ttl_s = ttl_s

    @classmethod
    def connect(
        cls, url: str, topic_items: str, ttl_s: float = 6.0, client: redis.Redis | None = None
    ) -> Membership:
        """Membership of ``topic_items``'s cluster in the Redis at ``url`` (or ``client``)."""
        return cls(
            client or redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2),
            topic_items,
            ttl_s,
        )

    def key(self, node_id: str) -> str:
        """The Redis key of a node's record."""
        return self.prefix + node_id

    def announce(self, record: NodeRecord) -> bool:
        """Write ``record`` with the expiry; return whether Redis took it (best effort:
        an error is logged)."""
        try:
            self._redis.set(
                self.key(record.id), record.to_json(), px=max(1, int(self.ttl_s * 1000))
            )
        except redis.RedisError as e:
            log.warning("cluster.announce_failed", node=record.id, error=str(e))
            return False
        return True

    def withdraw(self, node_id: str) -> None:
        """Remove a node's record now (a clean stop; best effort)."""
        try:
            self._redis.delete(self.key(node_id))
        except redis.RedisError as e:
            log.warning("cluster.withdraw_failed", node=node_id, error=str(e))

    def nodes(self) -> list[NodeRecord]:
        """Every live record, by node id (unparsable ones skipped; Redis down: none)."""
        try:
            keys = sorted(self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=500))
            values = self._redis.mget(keys) if keys else []
        except redis.RedisError as e:
            log.warning("cluster.nodes_unreadable", error=str(e))
            return []
        return list(_parse(zip(keys, values, strict=True)))

    def view(self, partition_sets: int = 1) -> ClusterView:
        """The `ClusterView` of the live records (``partition_sets`` matters only to the
        questions about sets)."""
        return ClusterView(tuple(self.nodes()), partition_sets)


def _parse(pairs: Iterable[tuple[bytes | str, bytes | str | None]]) -> Iterable[NodeRecord]:
    for key, value in pairs:
        if value is None:
            continue  # expired between SCAN and MGET
        try:
            yield NodeRecord.from_json(value)
        except ValueError as e:
            log.warning("cluster.record_skipped", key=str(key), error=str(e))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
