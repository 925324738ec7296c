"""Dead letters for operators: read, filter and page the dead-letter topic; replay them.

Used by ``simstream dlq`` and ``GET /v1/admin/dead-letters``. Each record of
the dead-letter topic is a `DlqEntry` named by its own position there,
``p<partition>.o<offset>`` (the id `show` takes and the cursor pages on). An
entry covers the source offsets ``[start, end)`` of ``items``: one offset for
an event that could not be embedded, the whole range for a ``range_failed``
letter (read from the detail `dead_letter_range` writes).

**Each source position once.** A range embedded again after a crash (a worker
killed after its letters were acknowledged, before its task was) or a replay
writes its letters again: the topic is an append-only log and may hold several
records for one source position. Every letter is keyed by the position it names
(`source_key`: topic, partition and offset of an event; the range and model
version of a ``range_failed`` letter), and the reader keeps the *first* record
of each key: `DeadLetterReader.scan`, `page`, `get` and `count` (and so the
CLI, the admin route and replay) see each position once, with the reason it
was first dead-lettered for. Letters of source partition p are in partition p of
the dead-letter topic, so repeats are found within one partition.

Replay re-embeds source offsets, it never re-publishes events: the embed task
reads ``[start, end)`` of ``items`` again and writes embeddings records that
carry the *original* source offsets, so the index applies them by last-writer-
wins exactly as the first time. Replaying twice therefore writes the same
records again and changes nothing, and a newer event of the same id (at a
higher offset) keeps winning over a replayed older one; re-publishing would
give old payloads new offsets and make them win. An event that is still
invalid is dead-lettered again by each replay, under the same key, so listings
are unchanged; the index is not touched by it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Final

from celery import Celery
from celery.result import AsyncResult
from confluent_kafka import Consumer, TopicPartition

from simstream.errors import DecodeError, KafkaError, NotFoundError, RequestError
from simstream.kafka import end_offsets, partition_count
from simstream.log import get_logger
from simstream.wire import DeadLetter
from workers.celery_app import EMBED_QUEUE, EMBED_TASK
from workers.ingest.config import IngestConfig
from workers.ingest.deadletter import source_key

log = get_logger("ingest.dlq")

#: The reason of a letter that names a whole failed embed range.
RANGE_FAILED: Final = "range_failed"

#: The detail `dead_letter_range` writes: ``offsets <first>..<last> of model <v>: <why>``.
_RANGE_DETAIL: Final = re.compile(r"^offsets (\d+)\.\.(\d+) of model (\S+?): ")
_ENTRY_ID: Final = re.compile(r"^p(\d+)\.o(\d+)$")
_KNOWN_FIELDS: Final = frozenset(
    {"source_topic", "partition", "offset", "reason", "raw", "detail", "time_ms"}
)


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters to select; ``None`` selects all.

    Attributes:
        reason: the reason code (e.g. ``bad_magic``, ``range_failed``).
        partition: the source partition.
        from_offset: the first source offset of interest (inclusive).
        to_offset: the last source offset of interest (inclusive).
    """

    reason: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def matches(self, entry: DlqEntry) -> bool:
        """Whether ``entry`` is selected: same reason and partition, offsets overlapping."""
        letter = entry.letter
        last = (entry.end - 1) if entry.end is not None else entry.start
        return (
            (self.reason is None or letter.reason == self.reason)
            and (self.partition is None or letter.partition == self.partition)
            and (self.from_offset is None or last >= self.from_offset)
            and (self.to_offset is None or entry.start <= self.to_offset)
        )


@dataclass(frozen=True)
class DlqEntry:
    """One record of the dead-letter topic and the source offsets it covers.

    Attributes:
        dlq_partition: its partition in the dead-letter topic.
        dlq_offset: its offset there.
        letter: the decoded dead letter.
        start: the first source offset it covers.
        end: the source offset after the last one it covers (``None``: a range
            letter whose detail does not name its range).
        model_version: the model version a failed range was embedded for.
    """

    dlq_partition: int
    dlq_offset: int
    letter: DeadLetter
    start: int
    end: int | None
    model_version: str | None = None

    @property
    def id(self) -> str:
        """Its position in the dead-letter topic, ``p<partition>.o<offset>``."""
        return position_id(self.dlq_partition, self.dlq_offset)

    @property
    def source_key(self) -> str:
        """The source position it names (`source_key`); a range letter whose detail
        does not name its range is its own position."""
        letter = self.letter
        if letter.reason != RANGE_FAILED:
            return source_key(letter.source_topic, letter.partition, letter.offset)
        if self.end is None:
            return f"{letter.source_topic}/{letter.partition}/{self.start}/{self.id}"
        return source_key(
            letter.source_topic, letter.partition, self.start, self.end, self.model_version or ""
        )

    @classmethod
    def of(cls, dlq_partition: int, dlq_offset: int, letter: DeadLetter) -> DlqEntry:
        """The entry of a letter read at ``dlq_partition``/``dlq_offset``."""
        if letter.reason != RANGE_FAILED:
            return cls(dlq_partition, dlq_offset, letter, letter.offset, letter.offset + 1)
        found = _RANGE_DETAIL.match(letter.detail)
        if found is None:
            return cls(dlq_partition, dlq_offset, letter, letter.offset, None)
        first, last, version = int(found[1]), int(found[2]), found[3]
        return cls(dlq_partition, dlq_offset, letter, first, last + 1, version)

    def to_dict(self, raw_prefix_bytes: int = 32) -> dict[str, Any]:
        """JSON-ready: position, source, reason, detail, covered offsets, the raw bytes'
        size and first ``raw_prefix_bytes`` (hex), and any other field of the letter."""
        letter = self.letter
        extra = {
            f.name: _jsonable(getattr(letter, f.name))
            for f in fields(letter)
            if f.name not in _KNOWN_FIELDS
        }
        return {
            "id": self.id,
            "source_topic": letter.source_topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "reason": letter.reason,
            "detail": letter.detail,
            "time_ms": letter.time_ms,
            "start": self.start,
            "end": self.end,
            "model_version": self.model_version,
            "raw_stored_bytes": len(letter.raw),
            "raw_prefix_hex": letter.raw[:raw_prefix_bytes].hex(),
            **extra,
        }


def _jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def position_id(partition: int, offset: int) -> str:
    """The id of the dead-letter record at ``partition``/``offset``."""
    return f"p{partition}.o{offset}"


def parse_position(text: str, what: str = "dead-letter id") -> tuple[int, int]:
    """``(partition, offset)`` of an id or cursor ``p<partition>.o<offset>``.

    Raises:
        RequestError: ``text`` has another form.
    """
    found = _ENTRY_ID.match(text)
    if found is None:
        raise RequestError(f"Invalid {what}. Expected p<partition>.o<offset>. Received: {text!r}")
    return int(found[1]), int(found[2])


@dataclass
class DlqPage:
    """One page of selected dead letters.

    Attributes:
        entries: the selected letters, by dead-letter partition then offset.
        next_cursor: where the next page starts (``None``: nothing after these).
    """

    entries: list[DlqEntry] = field(default_factory=list)
    next_cursor: str | None = None


@dataclass
class DlqCount:
    """How many source positions the selected dead letters name.

    Attributes:
        letters: the selected source positions, each counted once.
        records: the records of the topic naming them (a re-run's repeats included).
        by_reason: letters per reason code (the reason of each position's first record).
    """

    letters: int = 0
    records: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, records: int) -> None:
        """Count one source position with ``reason``, named by ``records`` records."""
        self.letters += 1
        self.records += records
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


class DeadLetterReader:
    """Reads the dead-letter topic by assignment (no consumer group, nothing committed)."""

    def __init__(
        self, config: IngestConfig, consumer: Consumer | None = None, idle_timeout_s: float = 10.0
    ) -> None:
        self.config = config
        self.topic = config.topic_dlq
        self.idle_timeout_s = idle_timeout_s
        self._own = consumer is None
        self._consumer = consumer or Consumer(
            config.kafka_config(
                **{
                    "group.id": "simstream-dlq-reader",
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                }
            )
        )

    def close(self) -> None:
        """Close the consumer if this reader made it."""
        if self._own:
            self._consumer.close()

    def __enter__(self) -> DeadLetterReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def page(
        self, selected: DlqFilter | None = None, cursor: str | None = None, limit: int = 50
    ) -> DlqPage:
        """Up to ``limit`` selected letters from ``cursor`` on (the start: ``None``).

        Raises:
            RequestError: an invalid cursor or limit.
            KafkaError: the topic cannot be read.
        """
        if limit < 1:
            raise RequestError(f"Invalid limit. Expected at least 1. Received: {limit}")
        start = parse_position(cursor, "cursor") if cursor else None
        page = DlqPage()
        for entry in self.scan(selected, start):
            if len(page.entries) == limit:
                page.next_cursor = entry.id
                break
            page.entries.append(entry)
        return page

    def get(self, entry_id: str) -> DlqEntry:
        """The letter at ``entry_id`` (``p<partition>.o<offset>``); for a record that
        repeats an earlier one's source position, that first letter.

        Raises:
            RequestError: a malformed id.
            NotFoundError: no dead letter is there.
        """
        partition, offset = parse_position(entry_id)
        if partition < partition_count(self.config, self.topic):
            end = end_offsets(self._consumer, self.topic, [partition])[partition]
            first: dict[str, DlqEntry] = {}
            for entry in self._entries(partition, min(offset + 1, end)):
                kept = first.setdefault(entry.source_key, entry)
                if entry.dlq_offset == offset:
                    return kept
        raise NotFoundError(
            f"No dead letter at {entry_id} in {self.topic}. Expected the id of a record "
            f"listed by `simstream dlq list`. Received: {entry_id}"
        )

    def scan(
        self,
        selected: DlqFilter | None = None,
        start: tuple[int, int] | None = None,
        partitions: Iterable[int] | None = None,
    ) -> Iterator[DlqEntry]:
        """Every selected letter from ``start`` (partition, offset) on, partition by
        partition: the first record of each source position only.

        Each partition is read from its beginning, so a record repeating a position
        first named before ``start`` is not listed either. A record of the topic
        that is not a dead letter is logged and skipped.
        """
        selected = selected or DlqFilter()
        ends = self._ends(selected, start, partitions)
        for partition, end in ends.items():
            first = start[1] if start is not None and partition == start[0] else 0
            seen: set[str] = set()
            for entry in self._entries(partition, end):
                if entry.source_key in seen:
                    continue
                seen.add(entry.source_key)
                if entry.dlq_offset >= first and selected.matches(entry):
                    yield entry

    def count(self, selected: DlqFilter | None = None) -> DlqCount:
        """How many source positions the selected letters name, and how many records.

        Raises:
            KafkaError: the topic cannot be read.
        """
        selected = selected or DlqFilter()
        counted = DlqCount()
        for partition, end in self._ends(selected).items():
            records: dict[str, tuple[DlqEntry, int]] = {}
            for entry in self._entries(partition, end):
                first, copies = records.get(entry.source_key, (entry, 0))
                records[entry.source_key] = (first, copies + 1)
            for entry, copies in records.values():
                if selected.matches(entry):
                    counted.add(entry.letter.reason, copies)
        return counted

    def _ends(
        self,
        selected: DlqFilter,
        start: tuple[int, int] | None = None,
        partitions: Iterable[int] | None = None,
    ) -> dict[int, int]:
        """The end offset of each partition to read, in order."""
        if partitions is None:
            count = partition_count(self.config, self.topic)
            # Partition p of the dead-letter topic holds what came from partition p.
            partitions = (
                [selected.partition]
                if selected.partition is not None and selected.partition < count
                else range(count)
            )
        wanted = [p for p in partitions if start is None or p >= start[0]]
        if not wanted:
            return {}
        ends = end_offsets(self._consumer, self.topic, wanted)
        return {p: ends[p] for p in wanted}

    def _entries(self, partition: int, end: int) -> Iterator[DlqEntry]:
        """Every dead letter of one partition before ``end``, in order, repeats included."""
        for offset, value in self._read(partition, 0, end):
            try:
                letter = DeadLetter.decode(value)
            except DecodeError as e:
                log.warning(
                    "dlq.record_undecodable",
                    topic=self.topic,
                    partition=partition,
                    offset=offset,
                    error=str(e),
                )
                continue
            yield DlqEntry.of(partition, offset, letter)

    def _read(self, partition: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, value)`` of the records of ``[start, end)`` of one partition, in order."""
        low, _ = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition))
        start = max(start, low)
        if start >= end:
            return
        self._consumer.assign([TopicPartition(self.topic, partition, start)])
        try:
            last, idle_since = start - 1, time.monotonic()
            while last < end - 1:
                records = [m for m in self._consumer.consume(500, 0.2) if m.error() is None]
                if not records:
                    if time.monotonic() - idle_since > self.idle_timeout_s:
                        raise KafkaError(
                            f"Timed out reading {self.topic}[{partition}] offsets "
                            f"{start}..{end - 1}; reached {last}"
                        )
                    continue
                idle_since = time.monotonic()
                for message in records:
                    offset = message.offset() or 0
                    if last < offset < end:
                        last = offset
                        yield offset, message.value() or b""
                    elif offset >= end:
                        last = end - 1
        finally:
            self._consumer.unassign()


@dataclass(frozen=True)
class SourceRange:
    """Source offsets ``[start, end)`` of one partition of the items topic, to embed again."""

    partition: int
    start: int
    end: int


@dataclass
class ReplayPlan:
    """The ranges a replay sends and the letters it cannot replay.

    Attributes:
        ranges: merged, disjoint ranges per partition, each at most the dispatcher's size.
        skipped: letters from another topic, or range letters that do not name their range.
    """

    ranges: list[SourceRange] = field(default_factory=list)
    skipped: list[DlqEntry] = field(default_factory=list)


def plan_replay(entries: Iterable[DlqEntry], items_topic: str, max_items: int) -> ReplayPlan:
    """The source ranges covering ``entries``: overlaps and repeats merged, so a letter
    listed twice (an event dead-lettered again by an earlier replay) is sent once."""
    plan = ReplayPlan()
    spans: dict[int, list[tuple[int, int]]] = {}
    for entry in entries:
        if entry.letter.source_topic != items_topic or entry.end is None:
            plan.skipped.append(entry)
            continue
        spans.setdefault(entry.letter.partition, []).append((entry.start, entry.end))
    for partition in sorted(spans):
        merged: list[list[int]] = []
        for start, end in sorted(spans[partition]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        for start, end in merged:
            for cut in range(start, end, max_items):
                plan.ranges.append(SourceRange(partition, cut, min(end, cut + max_items)))
    return plan


def send_replay(
    celery: Celery, items_topic: str, ranges: Iterable[SourceRange], model_version: str
) -> list[AsyncResult]:
    """Send one ``embed_range`` task per range for ``model_version``, on the embed queue."""
    results = []
    for r in ranges:
        results.append(
            celery.send_task(
                EMBED_TASK,
                args=[items_topic, r.partition, r.start, r.end, model_version],
                queue=EMBED_QUEUE,
            )
        )
        log.info(
            "dlq.range_replayed",
            partition=r.partition,
            start=r.start,
            end=r.end,
            model_version=model_version,
        )
    return results
