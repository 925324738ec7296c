"""Helpers of the crash tests: quick recovery, a slowed embed worker, kills that land mid-range.

A kill proves something only when it interrupts work. The helpers slow every
embed batch (``SIMSTREAM_FAULT_EMBED_BATCH_DELAY_S``), watch the pipeline from
outside (the embeddings log, the dispatcher's committed offsets) and kill only
once a range is in flight; the caller then checks that the kill did interrupt it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, TopicPartition

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import EmbeddingRecord, Op
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.pipeline import Expected, publish

T = TypeVar("T")

#: Redelivery, re-dispatch and snapshots within seconds; ranges of 4 slowed batches.
FAST_RECOVERY = {
    "task_visibility_timeout_s": 5,
    "dispatch_redispatch_s": 6.0,
    "snapshot_every_s": 0.5,
    "dispatch_max_items": 100,
    "embed_batch_size": 25,
    "fault_embed_batch_delay_s": 0.25,
}

#: Events of the three waves: upserts, then updates of the first ones, then deletes.
UPSERTS, UPDATES, DELETES = 800, 200, 200


def with_fast_recovery(settings: Settings, **overrides: object) -> Settings:
    """``settings`` with `FAST_RECOVERY` and ``overrides`` applied."""
    return Settings.load(**{**settings.model_dump(), **FAST_RECOVERY, **overrides})


def simstream_argv(*args: str) -> list[str]:
    """The command line of a ``simstream`` sub-command in this interpreter."""
    return [sys.executable, "-m", "simstream.cli.main", *args]


def ingest_with_kill(
    settings: Settings,
    child: Child,
    mid_range: Callable[[], T | None],
    interrupted: Callable[[T], T],
) -> tuple[Expected, T]:
    """Publish three waves; kill ``child`` once ``mid_range`` sees work in flight, restart it.

    Args:
        settings: the test's settings.
        child: the process to kill.
        mid_range: polled until it returns what it saw in flight (not None).
        interrupted: called with that after the kill and before the restart; asserts
            that the kill interrupted work (it raises, and the test fails, if not)
            and returns the part of it the kill interrupted.

    Returns:
        The state the index must reach, and what ``interrupted`` returned.
    """
    expected = Expected()
    done = threading.Event()

    def produce() -> None:
        publish(settings, expected, upserts=[(f"item-{i}", 0) for i in range(UPSERTS)])
        publish(settings, expected, upserts=[(f"item-{i}", 1) for i in range(UPDATES)])
        deleted = range(UPDATES, UPDATES + DELETES)
        publish(settings, expected, deletes=[f"item-{i}" for i in deleted])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        seen = wait_for(mid_range, timeout_s=120, interval_s=0.01, message="work in flight")
        assert seen is not None
        child.kill()
        cut = interrupted(seen)
        child.start()
    finally:
        producer.join(120)
    assert done.is_set()
    return expected, cut


class EmbeddingsLog:
    """The embeddings log of one model version, read from outside from its start.

    `poll` reads what arrived; `in_flight` names the source offsets whose records
    were written but whose range has no ``RANGE`` marker yet: a range started
    and not completed.
    """

    def __init__(self, settings: Settings, model_version: str) -> None:
        self.topic = settings.embeddings_topic(model_version)
        # Created now (as the node would), so the reader sees the topic's first record.
        ensure_topics(settings, [self.topic])
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": "test-embeddings-reader",
                    "enable.auto.commit": False,
                    # Records must show up within a batch's delay, not a fetch's default wait.
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        self._consumer.assign(
            [TopicPartition(self.topic, p, 0) for p in range(settings.partitions)]
        )
        #: Per partition and source offset: how many item records the log holds.
        self.copies: dict[int, dict[int, int]] = {}
        #: Per partition: the ``[start, end)`` of every range marker.
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        #: Per partition: the offset after the last record read.
        self.ends: dict[int, int] = {}

    def poll(self) -> EmbeddingsLog:
        """Read every record that arrived since the last poll; return self."""
        while messages := self._consumer.consume(1000, 0.05):
            for message in messages:
                if message.error() is not None:
                    continue
                partition = message.partition() or 0
                self.ends[partition] = (message.offset() or 0) + 1
                record = EmbeddingRecord.decode(message.value() or b"")
                if record.op is Op.RANGE:
                    marker = (record.range_start, record.range_end)
                    self.ranges.setdefault(partition, []).append(marker)
                else:
                    copies = self.copies.setdefault(partition, {})
                    copies[record.source_offset] = copies.get(record.source_offset, 0) + 1
        return self

    def completed(self) -> int:
        """How many range markers the log holds."""
        return sum(len(markers) for markers in self.ranges.values())

    def covered(self, partition: int, offset: int) -> bool:
        """Whether a range marker covers ``offset`` of ``partition``."""
        return any(start <= offset < end for start, end in self.ranges.get(partition, []))

    def accounts_for(self, items_end: dict[int, int]) -> bool:
        """Whether range markers cover every ``items`` offset below ``items_end``."""
        return all(self.covered(p, o) for p, end in items_end.items() for o in range(end))

    def in_flight(self) -> dict[int, list[int]]:
        """Per partition: source offsets with records and no range marker yet."""
        found = {}
        for partition, copies in self.copies.items():
            offsets = sorted(o for o in copies if not self.covered(partition, o))
            if offsets:
                found[partition] = offsets
        return found

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()


class CommittedOffsets:
    """The offsets of ``items`` a consumer group committed, read from outside."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self._probe = Consumer(settings.kafka_config(**{"group.id": group_id}))
        self._partitions = [
            TopicPartition(settings.topic_items, p) for p in range(settings.partitions)
        ]

    def read(self) -> dict[int, int]:
        """Per partition: the committed offset (0: none yet)."""
        return {
            tp.partition: max(tp.offset, 0) for tp in self._probe.committed(self._partitions, 10)
        }

    def close(self) -> None:
        """Release the probe."""
        self._probe.close()
