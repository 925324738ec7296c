"""`IndexGeneration`: the index of one model version, fed from its embeddings log.

A generation owns a `ShardedIndex` (shard p ⇐ partition p of
``embeddings.<version>``), a consumer thread that applies records in log order,
the snapshot policy, and per-partition `SourceWatermark`s that tell which
``items`` offsets are visible (read-your-writes). On start it loads the newest
valid snapshot and resumes each partition at the snapshot's next offset, so a
crash loses nothing and — the index being idempotent by source offset —
duplicates nothing.

A batch that fails inside a shard (hnswlib could not grow, say) leaves that
shard unhealthy and its graph partial; the consumer then rebuilds every shard
of that graph (the whole index in the default ``node`` layout, the one shard
in the ``partition`` layout) from the newest snapshot and seeks their
partitions back to the snapshot's offsets, so the log is replayed into them
(`_recover_shards`). After each snapshot, delete markers below the
source watermark of the snapshot before it are forgotten (see
``docs/index.md``, "Delete markers").

A snapshot records the identity of the log it was built from
(`simstream.kafka.LogIdentity`). A snapshot made from another log (the topic
recreated: a new topic id; a fresh in-memory broker: a log that ends below the
snapshot's next offset) is discarded at restore, and the generation rebuilds
from the start of the log. While running, a read at an offset the log does not
hold (``auto.offset.reset=error``) or a log that now ends below what was
applied does the same; a low end offset is confirmed first (`_confirm_shorter`),
since a broker can answer a stale one for a moment. Both are logged
(``node.log_changed``) and counted (``simstream_index_log_mismatch_total``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from simstream.errors import DecodeError
from simstream.kafka import (
    EXPLICIT_OFFSETS,
    LogIdentity,
    consume_ready,
    end_offsets,
    ensure_topics,
    log_identity,
    out_of_range,
)
from simstream.log import get_logger
from simstream.wire import EmbeddingRecord, Op
from workers import metrics
from workers.index.shard import Shard
from workers.index.sharded import ShardedIndex
from workers.index.shared_graph import SharedGraph
from workers.index.snapshot import SnapshotStore
from workers.node.config import NodeConfig
from workers.node.watermark import SourceWatermark

log = get_logger("node")

_FRESHNESS_WINDOW = 10_000
#: A log end read below what was applied is read again after this delay...
_CONFIRM_DELAY_S = 0.5
#: ...and must stay below it in this many measurements in a row before a rebuild.
_CONFIRM_READS = 3


class IndexGeneration:
    """One model version's index, kept fresh from ``embeddings.<version>``.

    Args:
        config: the node config.
        version: the encoder version of every vector in this generation.
        dim: the embedding size.
        consumer: a Kafka consumer to use (tests), else one is made.
        space: the hnswlib space when the version declares its own (a model of
            your own vectors), else None: the config's.
    """

    def __init__(
        self,
        config: NodeConfig,
        version: str,
        dim: int,
        consumer: Consumer | None = None,
        space: str | None = None,
    ) -> None:
        self.config = config
        self.version = version
        self.dim = dim
        self.space = space or config.index.space
        self.topic = config.embeddings_topic(version)
        self.store = SnapshotStore(config.snapshots_dir, version, config.snapshot_keep)
        self.owned = config.owned
        self.index = self._empty_index()
        self.watermarks = {p: SourceWatermark() for p in self.owned}
        self.applied = 0
        self.lag: dict[int, int] = {}
        self.source_end: dict[int, int] = {}
        self.last_snapshot_at: float | None = None
        self.snapshot_path: str | None = None
        self.started_at = time.time()
        self._freshness: deque[float] = deque(maxlen=_FRESHNESS_WINDOW)
        self._consumer = consumer
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since_snapshot = 0
        self._snapshot_lock = threading.Lock()
        self._failed: set[int] = set()
        # (time, next offset per partition) of each snapshot, oldest first (marker pruning).
        self._snapshot_marks: deque[tuple[float, dict[int, int]]] = deque()
        self.error: str | None = None
        #: Whether the lag was ever within ``ready_max_lag`` (readiness holds after that).
        self.caught_up = False
        self.log = log.bind(generation=version)
        self.source = LogIdentity(self.topic)
        self._log_end: dict[int, int] = {}
        self._rebuild_reason: str | None = None
        self._low_reads = 0

    def _empty_index(self) -> ShardedIndex:
        return ShardedIndex(
            self.config.index.with_(dim=self.dim, space=self.space),
            self.config.partitions,
            owned=self.owned,
            model_version=self.version,
        )

    # --- lifecycle -------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the newest valid snapshot made from the log as it is now.

        Returns:
            Whether one was loaded. Snapshots made from another log are
            discarded (logged and counted): the generation rebuilds from the log.
        """
        ensure_topics(self.config, [self.topic])
        self._identify()
        discarded: list[str] = []

        def accept(recorded: Mapping[str, Any], next_offsets: Mapping[int, int]) -> str | None:
            identity = LogIdentity.from_dict(recorded) if recorded else None
            reason = self.source.mismatch(identity, next_offsets)
            if reason is not None:
                discarded.append(reason)
            return reason

        loaded = self.store.load_latest_state(
            self.index.config, self.version, accept=accept, owned=self.owned
        )
        if discarded:
            metrics.LOG_MISMATCH.labels(self.version, "restore").inc()
            self.log.warning(
                "node.log_changed",
                reason=discarded[0],
                discarded_snapshots=len(discarded),
                action="snapshots discarded"
                + ("" if loaded is None else f"; restoring the older {loaded.path.name}"),
            )
        if loaded is None:
            return False
        self.index.close()
        self.index = loaded.index
        marks = loaded.extra.get("watermarks", {})
        for p in self.owned:
            if str(p) in marks:
                self.watermarks[p] = SourceWatermark.from_dict(marks[str(p)])
        self.last_snapshot_at = time.time()
        self.snapshot_path = str(loaded.path)
        self.log.info(
            "node.snapshot_loaded",
            path=str(loaded.path),
            items=len(self.index),
            next_offsets=self.index.next_offsets(),
        )
        return True

    def _identify(self) -> None:
        """Read the identity of the embeddings log as it is now (`source`)."""
        probe = Consumer(self.config.kafka_config(**{"group.id": "simstream-probe"}))
        try:
            self.source = log_identity(self.config, probe, self.topic, self.owned)
        finally:
            probe.close()
        self._log_end = dict(self.source.log_end)

    def start(self) -> None:
        """Create the embeddings topic if needed and start consuming it."""
        ensure_topics(self.config, [self.topic])
        self._thread = threading.Thread(
            target=self._run, name=f"generation-{self.version}", daemon=True
        )
        self._thread.start()

    def stop(self, snapshot: bool = True) -> None:
        """Stop consuming; take a final snapshot unless told not to."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if snapshot and self._since_snapshot:
            self.snapshot()

    def close(self) -> None:
        """Stop and release the index."""
        self.stop(snapshot=False)
        self.index.close()

    # --- consuming -------------------------------------------------------------------

    def _make_consumer(self) -> Consumer:
        return self._consumer or Consumer(
            self.config.kafka_config(
                **{
                    **EXPLICIT_OFFSETS,
                    "group.id": f"simstream-node.{self.version}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 20,
                }
            )
        )

    def _run(self) -> None:
        consumer = self._make_consumer()
        offsets = self.index.next_offsets()
        # A partition never applied starts at the log start, which may be above 0.
        consumer.assign(
            [TopicPartition(self.topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in self.owned]
        )
        lag_thread = threading.Thread(
            target=self._lag_loop, name=f"lag-{self.version}", daemon=True
        )
        lag_thread.start()
        try:
            while not self._stop.is_set():
                messages = consume_ready(consumer, 1000, 0.1)
                gone = next((m for m in messages if out_of_range(m.error())), None)
                if gone is not None:
                    metrics.OFFSET_OUT_OF_RANGE.labels("node").inc()
                    self._rebuild_reason = (
                        f"{self.topic}[{gone.partition()}] does not hold the next offset "
                        f"to read: {gone.error()}"
                    )
                elif messages:
                    self._apply(m for m in messages if m.error() is None)
                if self._rebuild_reason is not None:
                    self._rebuild(consumer, self._rebuild_reason)
                if self._failed:
                    self._recover_shards(consumer)
                self._maybe_snapshot()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.log.exception("node.consumer_crashed")
            raise
        finally:
            consumer.close()
            lag_thread.join(5)

    def _lag_loop(self) -> None:
        """Measure lag beside the consumer: end offsets take broker round trips."""
        probe = Consumer(self.config.kafka_config(**{"group.id": "simstream-probe"}))
        try:
            while not self._stop.is_set():
                try:
                    self._measure_lag(probe)
                except Exception:
                    self.log.exception("node.lag_not_measured")
                self._stop.wait(1.0)
        finally:
            probe.close()

    def _apply(self, messages: Iterable[Message]) -> None:
        by_partition: dict[int, list[tuple[int, EmbeddingRecord]]] = {}
        limits = self.config.limits
        for message in messages:
            try:
                record = EmbeddingRecord.decode(message.value() or b"", limits)
            except DecodeError as e:
                self.log.error("node.bad_record_skipped", reason=e.reason)
                continue
            by_partition.setdefault(message.partition() or 0, []).append(
                (message.offset() or 0, record)
            )
        now_ms = time.time() * 1000
        for partition, items in by_partition.items():
            if partition in self._failed:
                continue  # replayed once the shard is rebuilt
            records = [r for _, r in items if r.op is not Op.RANGE]
            next_offset = items[-1][0] + 1
            try:
                self.index.apply(partition, records, next_offset=next_offset)
            except Exception:
                if self.index.shard(partition).healthy:
                    raise
                # The failed batch may have left its graph partial: every shard in
                # that graph is rebuilt (one per partition in the partition layout).
                self._failed.update(self.index.graph_mates(partition))
                self.log.exception("node.shard_failed", partition=partition)
                continue
            watermark = self.watermarks[partition]
            for _, record in items:
                if record.op is Op.RANGE:
                    watermark.mark(record.range_start, record.range_end, record.dead_lettered)
            freshness = metrics.FRESHNESS.labels(self.version)
            for record in records:
                if record.event_time_ms:
                    seconds = max(0.0, (now_ms - record.event_time_ms) / 1000)
                    self._freshness.append(seconds)
                    freshness.observe(seconds)
            self.applied += len(records)
            self._since_snapshot += len(items)
            metrics.APPLIED_RECORDS.labels(self.version).inc(len(records))
        with self._changed:
            self._changed.notify_all()

    def _recover_shards(self, consumer: Consumer) -> None:
        """Rebuild the graphs of failed shards from the newest snapshot and replay
        their partitions.

        The shards of each such graph (empty ones when no snapshot fits) replace
        the failed graph's shards, their partitions' watermarks go back to the
        snapshot's, and the consumer seeks each partition back to its shard's
        next offset.
        """
        config = self.index.config
        with self._snapshot_lock:
            while self._failed:
                group = self.index.graph_mates(min(self._failed))
                loaded = self.store.load_latest_shards(config, group, self.version)
                if loaded is not None:
                    shards, extra = loaded
                else:
                    graph = SharedGraph(config, group[0]) if len(group) > 1 else None
                    shards, extra = [Shard(config, p, graph) for p in group], {}
                self.index.replace_shards(shards)
                marks = extra.get("watermarks", {})
                for shard in shards:
                    partition = shard.partition
                    mark = marks.get(str(partition))
                    self.watermarks[partition] = (
                        SourceWatermark.from_dict(mark) if mark else SourceWatermark()
                    )
                    offset = shard.next_offset or 0
                    consumer.seek(TopicPartition(self.topic, partition, offset))
                    self.log.warning(
                        "node.shard_rebuilt",
                        partition=partition,
                        live=len(shard),
                        replay_from=offset,
                    )
                self._failed.difference_update(group)

    def _rebuild(self, consumer: Consumer, reason: str) -> None:
        """Drop the state built from a log that is gone and replay the log from its start."""
        self._rebuild_reason = None
        self._low_reads = 0
        self._failed.clear()  # the new index has no failed shard
        self._snapshot_marks.clear()  # markers of the old log say nothing of the new one
        metrics.LOG_MISMATCH.labels(self.version, "consume").inc()
        self.log.warning(
            "node.log_changed",
            reason=reason,
            action="rebuilding from the start of the embeddings log",
        )
        previous = self.index
        self.index = self._empty_index()
        self.watermarks = {p: SourceWatermark() for p in self.owned}
        previous.close()
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.owned])
        self._identify()
        self._since_snapshot += 1  # the next snapshot replaces those of the old log

    def _measure_lag(self, probe: Consumer) -> None:
        partitions = self.owned
        # Applied first: what was applied before the ends were read lies below them.
        applied = self.index.next_offsets()
        ends = end_offsets(probe, self.topic, partitions)
        shorter = [p for p in partitions if ends.get(p, 0) < applied.get(p, 0)]
        if not shorter:
            self._low_reads = 0
        elif self._rebuild_reason is None:
            self._rebuild_reason = self._confirm_shorter(shorter[0], ends, applied)
        # A log holds what was applied from it, unless it changed (then it is rebuilt).
        self._log_end = {p: max(ends.get(p, 0), applied.get(p, 0)) for p in partitions}
        self.lag = {p: max(0, ends.get(p, 0) - applied.get(p, 0)) for p in partitions}
        self.source_end = end_offsets(probe, self.config.topic_items, partitions)
        source_lag = self.source_lag()
        metrics.SOURCE_LAG.labels(self.version).set(source_lag)
        if source_lag <= self.config.ready_max_lag:
            self.caught_up = True
        for p, value in self.lag.items():
            metrics.INDEX_LAG.labels(self.version, str(p)).set(value)
        for shard in self.index.stats().shards:
            metrics.INDEX_ITEMS.labels(self.version, str(shard.partition), "live").set(shard.live)
            metrics.INDEX_ITEMS.labels(self.version, str(shard.partition), "tombstone").set(
                shard.tombstones
            )
        if self.last_snapshot_at is not None:
            metrics.SNAPSHOT_AGE.labels(self.version).set(time.time() - self.last_snapshot_at)

    def _confirm_shorter(
        self, partition: int, ends: Mapping[int, int], applied: Mapping[int, int]
    ) -> str | None:
        """Why the log changed, once a reading below what was applied is confirmed; else None.

        One low reading proves nothing: a broker can answer a stale end offset
        for a moment (Tansu under load). The log is read again with a new
        client after `_CONFIRM_DELAY_S`: a new topic id is a recreated topic at
        once; an end still below what was applied must persist through
        `_CONFIRM_READS` measurements in a row (a truncated log); an end back at
        or above it was a stale reading (logged and counted).
        """
        self._stop.wait(_CONFIRM_DELAY_S)
        probe = Consumer(self.config.kafka_config(**{"group.id": "simstream-probe"}))
        try:
            now = log_identity(self.config, probe, self.topic, range(self.config.partitions))
        finally:
            probe.close()
        was = self.source.topic_id
        if now.topic_id and was and now.topic_id != was:
            return f"{self.topic} has topic id {now.topic_id}, not {was} (the topic was recreated)"
        end = now.log_end.get(partition, 0)
        if end >= applied.get(partition, 0):
            self._low_reads = 0
            metrics.STALE_LOG_END.labels(self.version).inc()
            self.log.warning(
                "node.log_end_stale",
                partition=partition,
                read=ends.get(partition, 0),
                reread=end,
                applied=applied.get(partition, 0),
            )
            return None
        self._low_reads += 1
        if self._low_reads < _CONFIRM_READS:
            return None
        return (
            f"{self.topic}[{partition}] ends at offset {end}, below the applied next offset "
            f"{applied[partition]}, in {self._low_reads} reads in a row (the log was truncated "
            "or recreated)"
        )

    # --- snapshots -------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if not self._since_snapshot:
            return
        # The interval counts from the last snapshot, or from start when there is none.
        since = self.last_snapshot_at or self.started_at
        due_time = time.time() - since >= self.config.snapshot_every_s
        if due_time or self._since_snapshot >= self.config.snapshot_every_records:
            self.snapshot()

    def snapshot(self) -> str:
        """Write a verified snapshot now (queries keep running); return its path."""
        with self._snapshot_lock:
            started = time.perf_counter()
            extra = {"watermarks": {str(p): w.to_dict() for p, w in self.watermarks.items()}}
            source = dataclasses.replace(self.source, log_end=dict(self._log_end))
            path = self.store.save(self.index, extra=extra, source=source.to_dict())
            now = time.time()
            floor = self._prune_floor(now)
            pruned = self.index.prune_markers(floor) if floor else 0
            self._snapshot_marks.append(
                (now, {int(p): mark["next"] for p, mark in extra["watermarks"].items()})
            )
            self._since_snapshot = 0
            self.last_snapshot_at = time.time()
            self.snapshot_path = str(path)
            metrics.SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
            self.log.info(
                "node.snapshot_written",
                path=str(path),
                items=len(self.index),
                markers_pruned=pruned,
            )
            return str(path)

    def _prune_floor(self, now: float) -> dict[int, int]:
        """Offsets below which delete markers may go: the watermarks of the newest
        earlier snapshot taken at least ``delete_marker_retention_s`` ago (none: {}).

        A marker only guards against an older upsert of its id arriving late, and a
        late copy of a range (a task redelivered after a crash, a dispatcher that
        restarts from an older commit) can come well after the range completed: so
        markers are kept for the retention time past the snapshot that covered them.
        """
        cutoff = now - self.config.delete_marker_retention_s
        while len(self._snapshot_marks) > 1 and self._snapshot_marks[1][0] <= cutoff:
            self._snapshot_marks.popleft()
        if self._snapshot_marks and self._snapshot_marks[0][0] <= cutoff:
            return self._snapshot_marks[0][1]
        return {}

    # --- reads -----------------------------------------------------------------------

    def visible(self, partition: int, offset: int) -> bool:
        """Whether the source event at ``(partition, offset)`` has been applied."""
        mark = self.watermarks.get(partition)
        return mark is not None and mark.covers(offset)

    def wait_visible(self, partition: int, offset: int, timeout_s: float) -> bool:
        """Wait until `visible`, at most ``timeout_s``; return whether it became visible."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self.visible(partition, offset):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
        return True

    def dead_lettered_ranges(self) -> dict[int, list[tuple[int, int]]]:
        """Per partition, source ranges dead-lettered whole (none: an empty dict)."""
        return {p: w.failed for p, w in self.watermarks.items() if w.failed}

    def source_lag(self) -> int:
        """Events of ``items`` not yet accounted for in this generation (all partitions)."""
        return sum(max(0, end - self.watermarks[p].next) for p, end in self.source_end.items())

    def reset_freshness(self) -> None:
        """Forget the recent freshness samples (a benchmark starts a new phase)."""
        self._freshness.clear()

    def freshness(self) -> dict[str, float | None]:
        """p50 and p99 of event time → searchable over the recent window, in seconds."""
        if not self._freshness:
            return {"p50_s": None, "p99_s": None, "samples": 0}
        values = np.fromiter(self._freshness, dtype=np.float64)
        return {
            "p50_s": float(np.percentile(values, 50)),
            "p99_s": float(np.percentile(values, 99)),
            "samples": float(len(values)),
        }

    def stats(self) -> dict[str, Any]:
        """Counts, lag, freshness and snapshot age for ``/v1/stats``."""
        index_stats = self.index.stats()
        return {
            "version": self.version,
            "partitions": list(self.owned),
            "epoch": self.index.epoch,
            "live": index_stats.live,
            "tombstones": index_stats.tombstones,
            "shards": index_stats.as_dict()["shards"],
            "applied_records": self.applied,
            "lag_records": sum(self.lag.values()),
            "source_lag_events": self.source_lag(),
            "watermarks": {str(p): w.next for p, w in self.watermarks.items()},
            "freshness": self.freshness(),
            "snapshot_age_s": (
                None if self.last_snapshot_at is None else time.time() - self.last_snapshot_at
            ),
            "error": self.error,
        }
