"""The dispatcher: cuts the ``items`` log into offset ranges and sends one embed task each.

One consumer group per items topic and model version
(``simstream-dispatch.<items topic>.<version>``, `dispatch_group`): a new
version's group starts at offset 0, which is how a re-index replays ``items``;
the topic in the name keeps deployments that share a Kafka cluster (or tests
that share a broker) out of each other's groups.

Per partition the ranges are contiguous — ``[base, e1), [e1, e2), …`` — so
committing is simple and safe: the committed offset is the end of the longest
prefix of completed ranges, never beyond an unfinished one. After a crash or a
rebalance the group resumes at that offset; ranges completed past it are sent
again, and since the index applies records idempotently (last writer wins by
source offset) a repeated range changes nothing.

A partition's first range starts at the group's committed offset (0 when it has
none), not at the first offset delivered, and a range cut when the partition is
idle ends at the consumer's position: offsets that hold no record (transaction
markers, a log start above 0, compacted records) are covered too, so the index's
watermarks stay contiguous.

Ranges grow while the workers are busy: an open range is sent
``dispatch_max_wait_s`` after its first event only while none of this
dispatcher's ranges waits in the queue unstarted; while one does, sending
another would only queue it behind, so the open range keeps growing until the
queue drains (a worker took the waiting range), it holds
``dispatch_max_items`` events, or it is ``dispatch_busy_max_wait_s`` old. An
idle pipeline sends a trickle at once; a loaded one sends fewer, larger ranges,
so the fixed cost of a task (a Kafka read, a produce and flush, a result write:
about 0.05 s) is not paid per 0.1 s of events while the queue grows behind it.

Backpressure: with ``dispatch_max_inflight`` ranges unfinished the dispatcher
pauses its partitions (it keeps polling so it stays in the group) and resumes
below half of that.

Every send of a range is a copy; the first copy that succeeds completes the
range and the others are revoked. A range is sent again when no copy is alive:
queued longer than ``dispatch_redispatch_s`` (a lost message), started with a
heartbeat older than that (a dead worker), or failed. Each further queued copy
of a range waits twice as long as the one before (`overdue_after`): behind a
backlog longer than ``dispatch_redispatch_s`` (a re-index on slow workers, a
dispatcher restarted behind its predecessor's tasks) every queued range would
otherwise be sent again each period, faster than the workers drain the queue,
and the queue would grow without end. Failed ranges wait with exponential
backoff; after ``dispatch_max_attempts`` failures the dispatcher dead-letters
the range itself and moves on.
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
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from simstream.errors import ConfigError, DeliveryError
from simstream.kafka import consume_ready, end_offsets, partition_count
from simstream.log import get_logger
from workers import metrics
from workers.celery_app import EMBED_QUEUE, EMBED_TASK
from workers.ingest.config import IngestConfig
from workers.ingest.deadletter import dead_letter_range

log = get_logger("dispatcher")

#: How often the results of ranges in flight are looked up (one Redis GET per copy).
_RESULT_POLL_S = 0.05
#: Longest wait before a failed range is sent again.
_MAX_BACKOFF_S = 30.0
#: A queued copy waits at most this many times ``dispatch_redispatch_s`` (`overdue_after`).
_MAX_OVERDUE_SCALE = 16


def overdue_after(redispatch_s: float, copies: int) -> float:
    """Seconds a range's newest queued copy may wait before it is taken as lost.

    ``redispatch_s`` for the first copy, doubling with each copy already sent
    (at most `_MAX_OVERDUE_SCALE` times): a range queued behind a long backlog
    gets O(log wait) copies, not one per ``redispatch_s``.
    """
    return redispatch_s * min(2 ** max(copies - 1, 0), _MAX_OVERDUE_SCALE)


@dataclass
class Copy:
    """One send of a range: its task's result and when it was sent."""

    result: AsyncResult
    sent_at: float


@dataclass
class OffsetRange:
    """A half-open range of source offsets, sent to embed tasks until one succeeds.

    Attributes:
        partition: the items partition.
        start: first offset.
        end: offset after the range.
        copies: every send still unresolved, oldest first.
        attempts: sends so far.
        failures: sends that failed.
        retry_at: a failed range is sent again at this monotonic time.
        error: the last failure, for the dead letter.
        done: a copy succeeded (or the dispatcher dead-lettered the range).
    """

    partition: int
    start: int
    end: int
    copies: list[Copy] = field(default_factory=list)
    attempts: int = 0
    failures: int = 0
    retry_at: float | None = None
    error: str = ""
    done: bool = False

    @property
    def sent_at(self) -> float:
        """When the newest copy was sent (0 before the first)."""
        return self.copies[-1].sent_at if self.copies else 0.0


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
    #: The end of the completed prefix, until a commit of it succeeds.
    committable: int | None = None


Sender = Callable[[OffsetRange], AsyncResult]


def dispatch_group(topic_items: str, model_version: str) -> str:
    """The consumer group that dispatches ``topic_items`` for ``model_version``.

    Two deployments on one Kafka cluster (other items topics) never share it: a
    member of one would join the other's rebalances and hold up its assignment.
    """
    return f"simstream-dispatch.{topic_items}.{model_version}"


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
        metrics.initialise_version(model_version)
        self.topic = config.topic_items
        self.group_id = dispatch_group(config.topic_items, model_version)
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
        self._queued = 0
        self._dead_letter_producer: Producer | None = None
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
        """Commit the completed prefix and leave the group (whether the commit succeeds or not)."""
        try:
            self._poll_results()
            self._commit()
        finally:
            self._consumer.close()
            if self._dead_letter_producer is not None:
                self._dead_letter_producer.flush(5)

    def step(self, poll_timeout_s: float = 0.05) -> None:
        """One iteration: poll, cut and send ranges, collect results, commit, backpressure."""
        now = time.monotonic()
        for message in consume_ready(
            self._consumer, self.config.dispatch_max_items, poll_timeout_s
        ):
            if message.error() is None:
                self._add(message, now)
        self._cut(time.monotonic())
        due = time.monotonic() - self._polled_at >= _RESULT_POLL_S
        if due and (self._poll_results() or self._uncommitted()):
            self._commit()
        self._backpressure()

    # --- ranges ----------------------------------------------------------------------

    def _add(self, message: Message, now: float) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        state = self._partitions.setdefault(partition, PartitionState())
        if state.next_start is None:
            state.next_start = self._committed([partition])[partition]
        if state.open is None:
            state.open = _Open(start=state.next_start, end=offset + 1, opened_at=now)
        else:
            state.open.end = offset + 1
        if state.open.end - state.open.start >= self.config.dispatch_max_items:
            self._close_open(partition, state)

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offset of each partition; 0 where it has none (offsets
        below the log start are gone, and a first range accounts for them)."""
        found = self._consumer.committed([TopicPartition(self.topic, p) for p in partitions], 10)
        return {tp.partition: max(tp.offset, 0) for tp in found}

    def _cut(self, now: float) -> None:
        """Send open ranges that waited long enough (`wait_before_cut`), each ending
        at the consumer's position; open a range over offsets the consumer passed
        without a record (a trailing transaction marker)."""
        positions = self._positions()
        wait = self.wait_before_cut
        for partition, state in self._partitions.items():
            position = positions.get(partition, -1)
            passed = state.next_start is not None and position > state.next_start
            if state.open is None and passed:
                assert state.next_start is not None
                state.open = _Open(start=state.next_start, end=position, opened_at=now)
            if state.open and now - state.open.opened_at >= wait:
                state.open.end = max(state.open.end, position)
                self._close_open(partition, state)

    def _positions(self) -> dict[int, int]:
        """The consumer's position per assigned partition (a local call; < 0 unknown)."""
        if not self._partitions:
            return {}
        wanted = [TopicPartition(self.topic, p) for p in self._partitions]
        return {tp.partition: tp.offset for tp in self._consumer.position(wanted)}

    def _close_open(self, partition: int, state: PartitionState) -> None:
        assert state.open is not None
        offset_range = OffsetRange(partition, state.open.start, state.open.end)
        state.next_start = state.open.end
        state.open = None
        state.ranges.append(offset_range)
        self._dispatch(offset_range)

    def _dispatch(self, offset_range: OffsetRange) -> None:
        now = time.monotonic()
        offset_range.copies.append(Copy(self._send(offset_range), now))
        offset_range.attempts += 1
        offset_range.retry_at = None
        self.dispatched += 1
        metrics.DISPATCHED_RANGES.labels(self.model_version).inc()
        self._log_range(
            "debug", "dispatcher.range_dispatched", offset_range, attempt=offset_range.attempts
        )

    def _log_range(self, level: str, event: str, offset_range: OffsetRange, **fields: Any) -> None:
        getattr(self.log, level)(
            event,
            partition=offset_range.partition,
            start=offset_range.start,
            end=offset_range.end,
            **fields,
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

    @property
    def wait_before_cut(self) -> float:
        """How old an open range must be to be sent: ``dispatch_max_wait_s`` while no
        range of this dispatcher waits in the queue unstarted, else
        ``dispatch_busy_max_wait_s`` (see the module docstring)."""
        if self._queued:
            return max(self.config.dispatch_busy_max_wait_s, self.config.dispatch_max_wait_s)
        return self.config.dispatch_max_wait_s

    def _poll_results(self) -> bool:
        """Settle every unfinished range (see the module docstring) and count those
        queued unstarted. True if any completed."""
        finished = False
        queued = 0
        now = self._polled_at = time.monotonic()
        for state in self._partitions.values():
            for offset_range in state.ranges:
                if offset_range.done or not offset_range.copies:
                    continue
                if offset_range.retry_at is not None:
                    if now >= offset_range.retry_at:
                        self._send_again(offset_range, "failed")
                    continue
                statuses: list[str] = []
                finished |= self._settle(offset_range, now, statuses)
                queued += not offset_range.done and all(s == "PENDING" for s in statuses)
        self._queued = queued
        metrics.DISPATCHER_INFLIGHT.set(self.inflight)
        metrics.DISPATCHER_QUEUED.set(queued)
        metrics.DISPATCHER_BACKING_OFF.set(self.backing_off)
        return finished

    def _settle(self, offset_range: OffsetRange, now: float, statuses: list[str]) -> bool:
        """Look at every copy of a range: complete it, back off, or send it again.
        Appends each copy's task status to ``statuses``."""
        alive = failed = False
        for copy in offset_range.copies:
            meta = copy.result.backend.get_task_meta(copy.result.id)
            status = meta.get("status", "PENDING")
            statuses.append(status)
            if status == "SUCCESS":
                self._complete(offset_range, copy)
                return True
            if status in ("FAILURE", "REVOKED"):
                offset_range.error = f"{status}: {meta.get('result')}"
                failed = True
            else:
                alive |= self._alive(status, meta.get("result"), copy, now, offset_range)
        if alive:
            return False
        if failed:
            self._failed(offset_range, now)
        else:
            self._send_again(offset_range, "overdue")
        return False

    def _alive(
        self, status: str, info: Any, copy: Copy, now: float, offset_range: OffsetRange
    ) -> bool:
        """Whether an unfinished copy may still complete: started with a recent
        heartbeat, or queued (or retrying) for less than `overdue_after` its range's
        copies."""
        if status == "STARTED":
            beat = info.get("beat") if isinstance(info, dict) else None
            if isinstance(beat, int | float):
                return time.time() - beat <= self.config.dispatch_redispatch_s
        limit = overdue_after(self.config.dispatch_redispatch_s, len(offset_range.copies))
        if status == "RETRY":
            limit += self.config.task_retry_window_s
        return now - copy.sent_at <= limit

    def _complete(self, offset_range: OffsetRange, winner: Copy) -> None:
        offset_range.done = True
        self.completed += 1
        others = [c.result.id for c in offset_range.copies if c is not winner]
        if others and self._celery is not None:
            try:
                self._celery.control.revoke(others)
            except Exception as e:  # a duplicate that runs anyway changes nothing
                self.log.warning("dispatcher.revoke_failed", error=str(e))
        for copy in offset_range.copies:
            copy.result.forget()
        offset_range.copies.clear()

    def _failed(self, offset_range: OffsetRange, now: float) -> None:
        """Every copy failed: back off, or dead-letter the range after the last attempt."""
        offset_range.failures += 1
        for copy in offset_range.copies:
            copy.result.forget()
        if offset_range.failures >= self.config.dispatch_max_attempts:
            self._dead_letter(offset_range, now)
            return
        backoff = min(_MAX_BACKOFF_S, 2.0 ** (offset_range.failures - 1))
        offset_range.retry_at = now + backoff
        self._log_range(
            "warning",
            "dispatcher.range_failed",
            offset_range,
            failures=offset_range.failures,
            retry_in_s=backoff,
            error=offset_range.error[:500],
        )

    def _dead_letter(self, offset_range: OffsetRange, now: float) -> None:
        if self._dead_letter_producer is None:
            self._dead_letter_producer = Producer(
                self.config.kafka_config(**{"enable.idempotence": True, "acks": "all"})
            )
        reason = (
            f"the dispatcher gave up after {offset_range.failures} failed attempts: "
            f"{offset_range.error[:1000]}"
        )
        try:
            dead_letter_range(
                self.config,
                self.topic,
                offset_range.partition,
                offset_range.start,
                offset_range.end,
                self.model_version,
                reason,
                producer=self._dead_letter_producer,
            )
        except DeliveryError as e:
            offset_range.retry_at = now + _MAX_BACKOFF_S
            offset_range.failures -= 1
            self.log.error("dispatcher.dead_letter_failed", error=str(e))
            return
        offset_range.done = True
        offset_range.copies.clear()
        self.completed += 1
        metrics.DISPATCHER_FAILED_RANGES.labels(self.model_version).inc()
        error = offset_range.error[:500]
        failures = offset_range.failures
        self._log_range(
            "error", "dispatcher.range_dead_lettered", offset_range, error=error, failures=failures
        )

    def _send_again(self, offset_range: OffsetRange, reason: str) -> None:
        if reason == "failed":
            offset_range.copies.clear()
        self._log_range(
            "warning",
            "dispatcher.range_sent_again",
            offset_range,
            reason=reason,
            attempt=offset_range.attempts + 1,
        )
        metrics.DISPATCHER_RETRIED_RANGES.labels(self.model_version, reason).inc()
        self._dispatch(offset_range)

    def _uncommitted(self) -> bool:
        return any(s.committable is not None for s in self._partitions.values())

    def _commit(self) -> None:
        """Commit the end of each partition's completed prefix.

        A commit the broker refuses (a rebalance in progress, a request timed
        out under load) is logged and tried again at the next poll of results;
        it never ends the dispatcher, which would leave its partitions
        uncommitted until the process is restarted.
        """
        offsets = []
        for partition, state in self._partitions.items():
            while state.ranges and state.ranges[0].done:
                state.committable = state.ranges.popleft().end
            if state.committable is not None:
                offsets.append(TopicPartition(self.topic, partition, state.committable))
        if not offsets:
            return
        committed = {tp.partition: tp.offset for tp in offsets}
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            metrics.DISPATCHER_COMMIT_FAILURES.labels(self.model_version).inc()
            self.log.warning("dispatcher.commit_failed", offsets=committed, error=str(e))
            return
        for partition, offset in committed.items():
            done = self._partitions.get(partition)
            if done is not None and done.committable == offset:
                done.committable = None
        self.log.debug("dispatcher.committed", offsets=committed)

    @property
    def inflight(self) -> int:
        """Ranges sent and not yet completed."""
        return sum(1 for s in self._partitions.values() for r in s.ranges if not r.done)

    @property
    def backing_off(self) -> int:
        """Failed ranges waiting to be sent again."""
        return sum(1 for s in self._partitions.values() for r in s.ranges if r.retry_at is not None)

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
        try:
            for partition, start in self._committed([tp.partition for tp in partitions]).items():
                self._partitions[partition].next_start = start
        except Exception as e:  # looked up again at the partition's first record
            self.log.warning("dispatcher.committed_not_read", error=str(e))
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
            "queued": self._queued,
            "backing_off": self.backing_off,
            "paused": self._paused,
        }
