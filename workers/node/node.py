"""`IndexNode`: serves one generation and builds the next beside it (blue-green).

The node holds the partitions (shards) of its partition set only
(`workers.cluster.placement`) and announces itself every heartbeat
(`workers.cluster.membership`): id, URL, partitions, generations with their
applied offsets, readiness.

The model registry's active version is the *wanted* generation. When it differs
from the *serving* one, the node builds the wanted generation beside it (the
dispatcher embeds ``items`` from offset 0 into ``embeddings.<wanted>``). The
generation is *caught up* once it has accounted for all but ``reindex_max_lag``
events of ``items`` of the node's partitions and none of its ranges was
dead-lettered whole (unless ``reindex_allow_dead_letters``: an operator accepts
the hole). The node flips its alias only when it has the wanted generation
caught up **and** the cluster view shows every partition set with a live owner
that has it caught up, so no node serves a version before every partition can
be answered with it; a rollback follows the same rule. Queries take the serving
generation once, at their start, so every answer comes from exactly one model
version. The previous generation is kept, and announced as ``retained``, until
every live node serves the new one and ``reindex_grace_s`` has passed, then
closed. The alias is persisted (``<data dir>/alias.json``) so a restart serves
the same generation.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from model.registry import Encoder, Registry
from simstream import heap
from simstream.durable import atomic_write_bytes
from simstream.errors import NotReadyError
from simstream.kafka import check_partitions
from simstream.log import get_logger
from workers import metrics
from workers.cluster.membership import ClusterView, GenerationState, Membership, NodeRecord
from workers.node.config import NodeConfig
from workers.node.generation import IndexGeneration

log = get_logger("node")


class IndexNode:
    """The generations of this node, the serving alias, and the encoders for queries."""

    def __init__(
        self,
        config: NodeConfig,
        registry: Registry | None = None,
        membership: Membership | None = None,
        control_interval_s: float = 0.5,
    ) -> None:
        self.config = config
        self.registry = registry or Registry(config.registry_dir)
        self.membership = membership or Membership.connect(
            config.coordination_url, config.topic_items, config.cluster.ttl_s
        )
        self.control_interval_s = control_interval_s
        self.view = ClusterView((), config.cluster.partition_sets)
        self._announced: tuple[Any, ...] | None = None
        self._announced_at = 0.0
        self._waiting: set[str] = set()
        self.generations: dict[str, IndexGeneration] = {}
        self.serving: IndexGeneration | None = None
        self.flipped_at: float | None = None
        self._retired: dict[str, float] = {}
        self._held: set[str] = set()
        self._settled: set[str] = set()
        self._settled_at_applied = 0
        self._settled_full_at = -float("inf")
        self._encoders: dict[str, Encoder] = {}
        self._lock = threading.RLock()
        self._encoder_lock = threading.Lock()
        self._announce_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._alias_path = config.data_dir / "alias.json"

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Restore the serving generation (and the wanted one) and start the control loop.

        Raises:
            PartitionCountError: ``items`` or an embeddings topic has another
                partition count than the config's.
        """
        check_partitions(
            self.config,
            [self.config.topic_items],
            prefixes=[f"{self.config.topic_embeddings_prefix}."],
        )
        alias = self._read_alias()
        if alias:
            self.serving = self._open(alias)
            self.preload(alias)
        self.reconcile()
        for target, name in ((self._control, "node-control"), (self._heartbeat, "node-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Withdraw from the cluster, then stop every generation with a final snapshot."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self.membership.withdraw(self.config.cluster.node_id)
        with self._lock:
            for generation in self.generations.values():
                generation.stop(snapshot=True)
                generation.index.close()
            self.generations.clear()

    def _control(self) -> None:
        while not self._stop.wait(self.control_interval_s):
            try:
                self.reconcile()
            except Exception:
                log.exception("node.control_failed")

    def _heartbeat(self) -> None:
        """Announce every heartbeat on a thread of its own, so that slow control work
        (restoring a snapshot, loading a model under the node lock) never lets the
        record expire while the node still serves."""
        while not self._stop.wait(self.config.cluster.heartbeat_s / 2):
            try:
                self._announce(time.time())
            except Exception:
                log.exception("node.heartbeat_failed")

    # --- reconciliation --------------------------------------------------------------

    def reconcile(self) -> None:
        """Open the wanted generation, flip when the cluster has it caught up, drop
        expired ones, announce."""
        wanted = self.registry.active()
        with self._lock:
            others = self.membership.view(self.config.cluster.partition_sets)
            if self.serving is None:
                # A node joining mid re-index first serves what the cluster serves.
                start = _most_served(others) or wanted
                for version in (start, wanted):
                    if version and version not in self.generations:
                        self._open(version)
                if start:
                    self._flip(self.generations[start])
            elif wanted and self.serving.version != wanted:
                if wanted not in self.generations:
                    self._open(wanted)
                    self.preload(wanted)
                candidate = self.generations[wanted]
                if self.caught_up(candidate) and self._cluster_has(others, wanted):
                    self._flip(candidate)
            self._settle_heap()
            self.view = others.with_node(self.record())
            now = time.time()
            serving = self.serving.version if self.serving else None
            for version, since in list(self._retired.items()):
                if version in (wanted, serving):
                    self._retired.pop(version)
                elif (
                    now - since >= self.config.reindex_grace_s
                    and serving is not None
                    and self.view.everyone_serves(serving)
                ):
                    self._drop(version)
            progress = self.reindex_progress()
            metrics.REINDEX_PROGRESS.set(1.0 if progress is None else progress["done"] or 0.0)
            self._announce(now)

    def _settle_heap(self) -> None:
        """Settle the heap (`simstream.heap`) when a generation first catches up and when
        a quarter of the index is new since the last settle, so the garbage collector's
        full passes stop walking the index's entries; fully only while nothing is served
        or hourly (`heap.full_due`), so a re-index does not pause the serving generation."""
        applied = sum(sum(g.index.next_offsets().values()) for g in self.generations.values())
        live = sum(len(g.index) for g in self.generations.values())
        self._settled_at_applied = min(self._settled_at_applied, applied)  # one dropped
        caught_up = [v for v, g in self.generations.items() if g.caught_up]
        new = [v for v in caught_up if v not in self._settled]
        if new or heap.due(applied - self._settled_at_applied, live):
            self._settled.update(caught_up)
            self._settled_at_applied = applied
            reason = f"caught up: {', '.join(new)}" if new else "a quarter of the index is new"
            now = time.monotonic()
            full = heap.full_due(self.serving is not None, self._settled_full_at, now)
            if full:
                self._settled_full_at = now
            heap.settle(reason, full=full)

    def _cluster_has(self, others: ClusterView, version: str) -> bool:
        """Whether every partition set has a live owner with ``version`` caught up (this
        node's own, current record counts); logs once per version while it waits."""
        view = others.with_node(self.record())
        if view.caught_up_everywhere(version):
            self._waiting.discard(version)
            return True
        if version not in self._waiting:
            self._waiting.add(version)
            lacking = [
                s for s, nodes in view.sets.items() if not any(n.caught_up(version) for n in nodes)
            ]
            log.info("node.flip_waiting", generation=version, sets_not_caught_up=lacking)
        return False

    def caught_up(self, generation: IndexGeneration) -> bool:
        """Whether ``generation`` may serve: it has accounted for all but
        ``reindex_max_lag`` events, and none of its ranges was dead-lettered whole
        unless ``reindex_allow_dead_letters``."""
        if not generation.source_end or generation.error:
            return False
        if generation.source_lag() > self.config.reindex_max_lag:
            return False
        holes = generation.dead_lettered_ranges()
        if holes and not self.config.reindex_allow_dead_letters:
            if generation is not self.serving and generation.version not in self._held:
                self._held.add(generation.version)
                log.error(
                    "node.flip_held",
                    generation=generation.version,
                    dead_lettered_ranges={p: r[:5] for p, r in holes.items()},
                    hint="replay the ranges, or set SIMSTREAM_REINDEX_ALLOW_DEAD_LETTERS=true",
                )
            return False
        return True

    def _open(self, version: str) -> IndexGeneration:
        declared = self.registry.get(version).config
        # A model of your own vectors declares its index space (model.vectors).
        space = declared.get("index_space")
        generation = IndexGeneration(
            self.config, version, int(declared["embedding_dim"]), space=space
        )
        generation.restore()
        generation.start()
        self.generations[version] = generation
        log.info("node.generation_opened", generation=version, items=len(generation.index))
        return generation

    def _flip(self, generation: IndexGeneration) -> None:
        self.encoder(generation.version)
        previous = self.serving
        self.serving = generation
        self.flipped_at = time.time()
        self._write_alias(generation.version)
        if previous is not None and previous is not generation:
            self._retired[previous.version] = time.time()
        metrics.MODEL_INFO.info({"version": generation.version})
        log.info(
            "node.alias_flipped",
            serving=generation.version,
            previous=previous.version if previous else None,
        )

    def _drop(self, version: str) -> None:
        generation = self.generations.pop(version)
        self._retired.pop(version, None)
        generation.stop(snapshot=True)
        generation.index.close()
        self._encoders.pop(version, None)
        self._settled.discard(version)
        log.info("node.generation_dropped", generation=version)

    def record(self) -> NodeRecord:
        """What this node announces now (see `workers.cluster.membership.NodeRecord`)."""
        serving = self.serving.version if self.serving else None
        retired = dict(self._retired)
        generations = {
            version: GenerationState(
                "serving"
                if version == serving
                else "retained"
                if version in retired
                else "building",
                self.caught_up(generation),
                generation.index.next_offsets(),
                len(generation.index),
            )
            for version, generation in dict(self.generations).items()
        }
        cluster = self.config.cluster
        return NodeRecord(
            id=cluster.node_id,
            url=cluster.node_url,
            partition_set=cluster.partition_set,
            partitions=self.config.owned,
            serving=serving,
            generations=generations,
            ready=self.ready()[0],
            updated_at=time.time(),
        )

    def _announce(self, now: float) -> None:
        """Announce the record every heartbeat, and at once when its state changed (from
        the control loop and the heartbeat thread: one at a time, each with a record
        taken under the same lock, so an older record never overwrites a newer one)."""
        with self._announce_lock:
            record = self.record()
            state = (
                record.serving,
                record.ready,
                sorted((v, g.state, g.caught_up) for v, g in record.generations.items()),
            )
            due = now - self._announced_at >= self.config.cluster.heartbeat_s
            if (due or state != self._announced) and self.membership.announce(record):
                self._announced, self._announced_at = state, now

    # --- alias -----------------------------------------------------------------------

    def _read_alias(self) -> str | None:
        try:
            version = json.loads(self._alias_path.read_text())["serving"]
        except (OSError, ValueError, KeyError):
            return None
        return str(version) if version else None

    def _write_alias(self, version: str) -> None:
        self._alias_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            self._alias_path, json.dumps({"serving": version, "at": time.time()}).encode()
        )

    # --- queries ---------------------------------------------------------------------

    def current(self) -> IndexGeneration:
        """The serving generation (take it once per request).

        Raises:
            NotReadyError: no generation is serving yet.
        """
        generation = self.serving
        if generation is None:
            raise NotReadyError("No index generation is serving yet: no model is active.")
        return generation

    def encoder(self, version: str) -> Encoder:
        """The encoder of ``version`` for embedding queries (loaded once, warmed up).

        A loaded encoder is returned without taking any lock, so queries never wait
        for the node lock (held while a generation restores a snapshot).
        """
        encoder = self._encoders.get(version)
        if encoder is not None:
            return encoder
        with self._encoder_lock:
            encoder = self._encoders.get(version)
            if encoder is None:
                encoder = self.registry.load(version)
                encoder.warmup(batch_size=8)
                self._encoders[version] = encoder
            return encoder

    def has_encoder(self, version: str) -> bool:
        """Whether ``version``'s encoder is loaded (`encoder` then returns at once)."""
        return version in self._encoders

    def preload(self, version: str) -> None:
        """Load and warm ``version``'s encoder on a thread of its own (a generation about
        to serve), so the flip, which needs it, does not load a model under the node
        lock. A failure is logged; the flip then loads it itself."""

        def load() -> None:
            try:
                self.encoder(version)
            except Exception:
                log.exception("node.encoder_preload_failed", generation=version)

        threading.Thread(target=load, name=f"preload-{version}", daemon=True).start()

    def ready(self) -> tuple[bool, str]:
        """Readiness: the node can answer queries correctly.

        A generation serves, its consumer and shards are healthy, and it has caught up (lag ≤
        ``ready_max_lag`` events) at least once. Lag after that (a burst of writes)
        is reported (answers say ``degraded``) but keeps the node ready: otherwise
        a burst would take every replica out of rotation at once. Takes no lock.
        """
        generation = self.serving
        if generation is None:
            return False, "no generation is serving"
        if generation.error:
            return False, f"generation {generation.version} failed: {generation.error}"
        unhealthy = [s.partition for s in generation.index.shards if not s.healthy]
        if unhealthy:
            return False, f"generation {generation.version} is rebuilding shards {unhealthy}"
        if not generation.source_end:
            return False, f"generation {generation.version} has not measured its lag yet"
        lag = generation.source_lag()
        if not generation.caught_up:
            return False, (
                f"generation {generation.version} lags {lag} events and has not caught up "
                f"within {self.config.ready_max_lag} yet"
            )
        if lag > self.config.ready_max_lag:
            return True, f"ok, degraded: generation {generation.version} lags {lag} events"
        return True, "ok"

    def reindex_progress(self) -> dict[str, Any] | None:
        """The re-index in progress (the wanted generation, not serving yet), or None.

        ``done`` is the share of ``items`` events the new generation has accounted
        for (None before its first lag measurement); ``source_lag`` the events left.
        """
        # Copies, not the lock: readers never wait for a restore (dict copies are atomic).
        serving = self.serving.version if self.serving else None
        retired = dict(self._retired)
        generations = dict(self.generations)
        building = [g for v, g in generations.items() if v != serving and v not in retired]
        if not building:
            return None
        generation = building[-1]
        total = sum(generation.source_end.values())
        lag = generation.source_lag()
        done = None
        if generation.source_end:
            done = 1.0 if total == 0 else round(max(0.0, 1.0 - lag / total), 4)
        return {
            "building": generation.version,
            "serving": serving,
            "source_lag": lag,
            "source_events": total,
            "done": done,
            "dead_lettered_ranges": sum(len(r) for r in generation.dead_lettered_ranges().values()),
        }

    def stats(self) -> dict[str, Any]:
        """What ``/v1/stats`` shows about generations (``reindex``: see `reindex_progress`).

        Reads copies without the node lock, so it answers while a generation restores.
        """
        serving = self.serving
        view = self.view
        cluster = self.config.cluster
        return {
            "node": {
                "id": cluster.node_id,
                "url": cluster.node_url,
                "partition_set": cluster.partition_set,
                "partitions": list(self.config.owned),
            },
            "cluster": {
                "partition_sets": view.partition_sets,
                "nodes": sorted(n.id for n in view.nodes),
                "serving": view.serving_version(),
                "versions_needed": sorted(view.versions_needed()),
            },
            "serving": serving.version if serving else None,
            "wanted": self.registry.active(),
            "flipped_at": self.flipped_at,
            "generations": {v: g.stats() for v, g in dict(self.generations).items()},
            "retained": dict(self._retired),
            "reindex": self.reindex_progress(),
            "degraded": serving is not None and serving.source_lag() > self.config.ready_max_lag,
        }


def _most_served(view: ClusterView) -> str | None:
    """The version the most ready live nodes serve (None: none serves)."""
    counts = Counter(n.serving for n in view.nodes if n.ready and n.serving)
    return max(counts, key=lambda v: (counts[v], v)) if counts else None
