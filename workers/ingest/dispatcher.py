"""The dispatcher: cuts the ``items`` log into offset ranges and sends one embed task each.

One consumer group per model version (``simstream-dispatch.<version>``): a new
version's group starts at offset 0, which is how a re-index replays ``items``.

Per partition the ranges are contiguous — ``[base, e1), [e1, e2), …`` — so
committing is simple and safe: the committed offset is the end of the longest
prefix of completed ranges, never beyond an unfinished one. After a crash or a
rebalance the group resumes at that offset; ranges completed past it are sent
again, and since the index applies records idempotently (last writer wins by
source offset) a repeated range changes nothing.

Backpressure: with ``dispatch_max_inflight`` ranges unfinished the dispatcher
pauses its partitions (it keeps polling so it stays in the group) and resumes
below half of that. A range unfinished after ``dispatch_redispatch_s`` (a lost
task) is sent again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from confluent_kafka import Consumer, Message, TopicPartition

from simstream.errors import ConfigError
from simstream.kafka import end_offsets, partition_count
from simstream.log import get_logger
from workers import metrics
from workers.celery_app import EMBED_QUEUE, EMBED_TASK
from workers.ingest.config import IngestConfig

log = get_logger("dispatcher")

#: How often the results of ranges in flight are looked up (one Redis GET each).
_RESULT_POLL_S = 0.05


@dataclass
class OffsetRange:
    """A half-open range of source offsets sent to one embed task."""

    partition: int
    start: int
    end: int
    sent_at: float = 0.0
    result: AsyncResult | None = None
    attempts: int = 0
    done: bool = False


@dataclass
class _Open:
    start: int
    end: int
    opened_at: float


@dataclass
class PartitionState:
    """Ranges of one assigned partition, oldest first."""

    next_start: int | None = None
    open: _Open | None = None
    ranges: deque[OffsetRange] = field(default_factory=deque)


Sender = Callable[[OffsetRange], AsyncResult]


class Dispatcher:
    """Consumes ``items`` in a consumer group and dispatches embed ranges to Celery.

    Args:
        config: the ingest config.
        model_version: the version whose embeddings the ranges feed.
        celery_app: the Celery app that sends the embed tasks.
        consumer: a ready consumer (tests), else one in the version's group.
        sender: sends one range instead of ``celery_app`` (tests).

    Raises:
        ConfigError: neither ``celery_app`` nor ``sender`` was given.
    """

    def __init__(
        self,
        config: IngestConfig,
        model_version: str,
        celery_app: Celery | None = None,
        consumer: Consumer | None = None,
        sender: Sender | None = None,
    ) -> None:
        if celery_app is None and sender is None:
            raise ConfigError(
                "Invalid Dispatcher arguments. Expected a celery_app or a sender. Received: neither"
            )
        self.config = config
        self.model_version = model_version
        self.topic = config.topic_items
        self.group_id = f"simstream-dispatch.{model_version}"
        self._consumer = consumer or Consumer(
            config.kafka_config(
                **{
                    "group.id": self.group_id,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "session.timeout.ms": config.session_timeout_ms,
                    "max.poll.interval.ms": config.max_poll_interval_ms,
                    "heartbeat.interval.ms": max(100, config.session_timeout_ms // 6),
                    "partition.assignment.strategy": "range",
                    # Low fetch wait: a range is cut at most dispatch_max_wait_s after
                    # its first event, so the fetch must not hold events back longer.
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        self._celery = celery_app
        self._send = sender or self._send_task
        self._partitions: dict[int, PartitionState] = {}
        self._paused = False
        self._polled_at = 0.0
        self.dispatched = 0
        self.completed = 0
        self.log = log.bind(model_version=model_version)

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Join the consumer group."""
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set, then commit what is complete and leave the group."""
        self.start()
        lag = threading.Thread(target=self._lag_loop, args=(stop,), daemon=True)
        lag.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()
            lag.join(5)

    def lag(self, probe: Consumer) -> dict[int, int]:
        """Per partition: events of ``items`` past this group's committed offset."""
        partitions = range(partition_count(self.config, self.topic))
        ends = end_offsets(probe, self.topic, partitions)
        committed = probe.committed([TopicPartition(self.topic, p) for p in partitions], 10)
        done = {tp.partition: max(tp.offset, 0) for tp in committed}
        return {p: max(0, end - done.get(p, 0)) for p, end in ends.items()}

    def _lag_loop(self, stop: threading.Event) -> None:
        """Export `ITEMS_LAG` every few seconds (a probe in the same group, never subscribed)."""
        probe = Consumer(self.config.kafka_config(**{"group.id": self.group_id}))
        try:
            while not stop.wait(3.0):
                try:
                    for p, value in self.lag(probe).items():
                        metrics.ITEMS_LAG.labels(self.model_version, str(p)).set(value)
                except Exception as e:
                    self.log.warning("dispatcher.lag_not_measured", error=str(e))
        finally:
            probe.close()

    def close(self) -> None:
        """Commit the completed prefix and leave the group."""
        self._poll_results()
        self._commit()
        self._consumer.close()

    def step(self, poll_timeout_s: float = 0.05) -> None:
        """One iteration: poll, cut and send ranges, collect results, commit, backpressure."""
        now = time.monotonic()
        for message in self._consumer.consume(self.config.dispatch_max_items, poll_timeout_s):
            if message.error() is None:
                self._add(message, now)
        self._cut(time.monotonic())
        if time.monotonic() - self._polled_at >= _RESULT_POLL_S and self._poll_results():
            self._commit()
        self._backpressure()

    # --- ranges ----------------------------------------------------------------------

    def _add(self, message: Message, now: float) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        state = self._partitions.setdefault(partition, PartitionState())
        if state.next_start is None:
            state.next_start = offset
        if state.open is None:
            state.open = _Open(start=state.next_start, end=offset + 1, opened_at=now)
        else:
            state.open.end = offset + 1
        if state.open.end - state.open.start >= self.config.dispatch_max_items:
            self._close_open(partition, state)

    def _cut(self, now: float) -> None:
        for partition, state in self._partitions.items():
            if state.open and now - state.open.opened_at >= self.config.dispatch_max_wait_s:
                self._close_open(partition, state)

    def _close_open(self, partition: int, state: PartitionState) -> None:
        assert state.open is not None
        offset_range = OffsetRange(partition, state.open.start, state.open.end)
        state.next_start = state.open.end
        state.open = None
        state.ranges.append(offset_range)
        self._dispatch(offset_range)

    def _dispatch(self, offset_range: OffsetRange) -> None:
        offset_range.result = self._send(offset_range)
        offset_range.sent_at = time.monotonic()
        offset_range.attempts += 1
        self.dispatched += 1
        metrics.DISPATCHED_RANGES.labels(self.model_version).inc()
        self.log.debug(
            "dispatcher.range_dispatched",
            partition=offset_range.partition,
            start=offset_range.start,
            end=offset_range.end,
            attempt=offset_range.attempts,
        )

    def _send_task(self, offset_range: OffsetRange) -> AsyncResult:
        assert self._celery is not None
        return self._celery.send_task(
            EMBED_TASK,
            args=[
                self.topic,
                offset_range.partition,
                offset_range.start,
                offset_range.end,
                self.model_version,
            ],
            queue=EMBED_QUEUE,
        )

    def _poll_results(self) -> bool:
        """Mark finished ranges; send failed or overdue ones again. True if any finished."""
        finished = False
        now = self._polled_at = time.monotonic()
        for state in self._partitions.values():
            for offset_range in state.ranges:
                if offset_range.done or offset_range.result is None:
                    continue
                status = offset_range.result.state
                if status == "SUCCESS":
                    offset_range.done = True
                    offset_range.result.forget()
                    self.completed += 1
                    finished = True
                elif status in ("FAILURE", "REVOKED") or (
                    now - offset_range.sent_at > self.config.dispatch_redispatch_s
                ):
                    self.log.warning(
                        "dispatcher.range_sent_again",
                        partition=offset_range.partition,
                        start=offset_range.start,
                        end=offset_range.end,
                        state=status,
                    )
                    self._dispatch(offset_range)
        metrics.DISPATCHER_INFLIGHT.set(self.inflight)
        return finished

    def _commit(self) -> None:
        offsets = []
        for partition, state in self._partitions.items():
            end = None
            while state.ranges and state.ranges[0].done:
                end = state.ranges.popleft().end
            if end is not None:
                offsets.append(TopicPartition(self.topic, partition, end))
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.log.debug(
                "dispatcher.committed", offsets={tp.partition: tp.offset for tp in offsets}
            )

    @property
    def inflight(self) -> int:
        """Ranges sent and not yet completed."""
        return sum(1 for s in self._partitions.values() for r in s.ranges if not r.done)

    def _backpressure(self) -> None:
        limit = self.config.dispatch_max_inflight
        if not self._paused and self.inflight >= limit:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
            metrics.DISPATCHER_PAUSED.set(1)
            self.log.info("dispatcher.paused", inflight=self.inflight)
        elif self._paused and self.inflight <= limit // 2:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
            metrics.DISPATCHER_PAUSED.set(0)
            self.log.info("dispatcher.resumed", inflight=self.inflight)

    # --- rebalance -------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions[tp.partition] = PartitionState()
        if self._paused:
            consumer.pause(partitions)
        self.log.info(
            "dispatcher.partitions_assigned", partitions=[tp.partition for tp in partitions]
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._poll_results()
        self._commit()
        for tp in partitions:
            self._partitions.pop(tp.partition, None)
        self.log.info(
            "dispatcher.partitions_revoked", partitions=[tp.partition for tp in partitions]
        )

    def stats(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        return {
            "dispatched": self.dispatched,
            "completed": self.completed,
            "inflight": self.inflight,
            "paused": self._paused,
        }
