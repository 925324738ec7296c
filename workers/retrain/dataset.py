"""The retraining data: the labelled items as they stand now, replayed from ``items``.

`read_labelled` replays the items topic from the beginning up to its end offsets
taken when the run starts (`simstream.kafka.end_offsets`), with ``assign`` (no
consumer group, nothing committed), and `fold_events` keeps the newest state of
each id: an id lives in one partition, so log order is event order; a delete
removes the item and an upsert without a label makes it unlabelled (left out
of the labelled items; kept apart, with its payload, when the run asks for
them: `unlabelled_dataset` turns the newest of them into the data of a
self-supervised pre-training).
`bound_per_class` keeps the newest ``retrain_max_per_class`` items of each
class, `to_dataset` turns them into a `model.datasets.Dataset` of raw payloads
for an input spec (payloads the spec rejects are skipped) and
`stratified_split` holds out a share of every class.

Memory: the replay holds the newest payload of every labelled item before the
per-class bound applies, so the labelled state of the topic must fit in memory
(64 bytes per digit, 784 per MNIST image).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from model.datasets import Dataset
from model.inputs import InputSpec
from simstream.errors import DecodeError, KafkaError, OffsetOutOfRangeError, PayloadError
from simstream.kafka import EXPLICIT_OFFSETS, end_offsets, out_of_range
from simstream.log import get_logger
from simstream.wire import ItemEvent, Op, WireLimits
from workers.retrain.config import RetrainConfig

UNLABELLED = ""
"""The label of an unlabelled item kept for self-supervised training."""

log = get_logger("retrain.dataset")

CONSUMER_GROUP = "simstream-retrain"


@dataclass(frozen=True, eq=False)
class LabelledItem:
    """The newest state of one labelled item.

    Attributes:
        id: the item id.
        label: its class label.
        payload: the raw payload (uint8 image or float vector).
        event_time_ms: when its newest upsert was made.
        partition: the items partition holding it.
        offset: the offset of its newest upsert.
    """

    id: str
    label: str
    payload: np.ndarray
    event_time_ms: int
    partition: int
    offset: int


@dataclass
class ReplayStats:
    """What a replay read.

    Attributes:
        events: records read.
        undecodable: records that are not valid item events.
        upserts: upsert events.
        deletes: delete events.
        unlabelled: upserts without a label.
        bad_payloads: labelled upserts whose payload cannot be decoded.
    """

    events: int = 0
    undecodable: int = 0
    upserts: int = 0
    deletes: int = 0
    unlabelled: int = 0
    bad_payloads: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return dict(vars(self))


@dataclass
class Replay:
    """The labelled items of the topic up to ``end_offsets``.

    Attributes:
        items: id → newest labelled state.
        end_offsets: the offset after the last record read, per partition.
        stats: what was read.
        unlabelled: id → newest state of items whose newest event is an upsert
            without a label but with a payload (label `UNLABELLED`); filled only
            when asked for.
    """

    items: dict[str, LabelledItem]
    end_offsets: dict[int, int]
    stats: ReplayStats = field(default_factory=ReplayStats)
    unlabelled: dict[str, LabelledItem] = field(default_factory=dict)


def fold_events(
    records: Iterable[tuple[int, int, bytes | None]],
    stats: ReplayStats | None = None,
    limits: WireLimits | None = None,
    unlabelled: dict[str, LabelledItem] | None = None,
) -> dict[str, LabelledItem]:
    """Fold ``(partition, offset, value)`` records, in log order, into the labelled items.

    Args:
        records: the items log, each partition in offset order.
        stats: counts to update.
        limits: the wire limits events are checked against.
        unlabelled: when given, filled with the items whose newest event is an
            upsert with a payload and no label (label `UNLABELLED`).

    Returns:
        id → newest labelled state, for ids whose newest event is a labelled upsert.
    """
    stats = stats if stats is not None else ReplayStats()
    latest: dict[str, LabelledItem] = {}
    others: dict[str, LabelledItem] = unlabelled if unlabelled is not None else {}
    for partition, offset, value in records:
        stats.events += 1
        try:
            event = ItemEvent.decode(value or b"", limits)
        except DecodeError:
            stats.undecodable += 1
            continue
        others.pop(event.id, None)
        if event.op is Op.DELETE:
            stats.deletes += 1
            latest.pop(event.id, None)
            continue
        stats.upserts += 1
        if event.label is None or event.payload is None:
            stats.unlabelled += 1
            latest.pop(event.id, None)
            if unlabelled is not None and event.payload is not None:
                try:
                    raw = event.payload.to_array()
                except PayloadError:
                    stats.bad_payloads += 1
                    continue
                unlabelled[event.id] = LabelledItem(
                    event.id, UNLABELLED, raw, event.event_time_ms, partition, offset
                )
            continue
        try:
            raw = event.payload.to_array()
        except PayloadError:
            stats.bad_payloads += 1
            latest.pop(event.id, None)
            continue
        latest[event.id] = LabelledItem(
            event.id, event.label, raw, event.event_time_ms, partition, offset
        )
    return latest


def read_labelled(
    config: RetrainConfig,
    consumer: Consumer | None = None,
    idle_timeout_s: float = 60.0,
    unlabelled: bool = False,
) -> Replay:
    """Replay ``items`` from the beginning to its current end into the labelled items.

    With ``unlabelled``, the unlabelled items with a payload are kept too
    (`Replay.unlabelled`).

    Raises:
        KafkaError: when the topic cannot be read (or stalls ``idle_timeout_s``).
    """
    own = consumer is None
    consumer = consumer or make_consumer(config)
    try:
        ends = end_offsets(consumer, config.topic_items, range(config.partitions))
        stats = ReplayStats()
        records = read_range(consumer, config.topic_items, {}, ends, idle_timeout_s)
        others: dict[str, LabelledItem] | None = {} if unlabelled else None
        items = fold_events(records, stats, config.limits, others)
    finally:
        if own:
            consumer.close()
    log.info(
        "retrain.items_replayed",
        topic=config.topic_items,
        labelled=len(items),
        end_offsets=ends,
        **stats.to_dict(),
    )
    return Replay(items, ends, stats, others or {})


def count_new_labelled(
    config: RetrainConfig,
    since: Mapping[int, int],
    limit: int | None = None,
    consumer: Consumer | None = None,
    idle_timeout_s: float = 60.0,
) -> int:
    """Labelled upserts in ``items`` from ``since`` offsets to the end (stops at ``limit``)."""
    own = consumer is None
    consumer = consumer or make_consumer(config)
    limits = config.limits
    count = 0
    try:
        ends = end_offsets(consumer, config.topic_items, range(config.partitions))
        for _, _, value in read_range(
            consumer, config.topic_items, dict(since), ends, idle_timeout_s
        ):
            try:
                event = ItemEvent.decode(value or b"", limits)
            except DecodeError:
                continue
            if event.op is Op.UPSERT and event.label is not None:
                count += 1
                if limit is not None and count >= limit:
                    break
    finally:
        if own:
            consumer.close()
    return count


def make_consumer(config: RetrainConfig) -> Consumer:
    """A consumer for reading ``items`` by assignment (its group never commits)."""
    return Consumer(
        config.kafka_config(
            **{
                **EXPLICIT_OFFSETS,
                "group.id": CONSUMER_GROUP,
                "enable.auto.commit": False,
            }
        )
    )


def read_range(
    consumer: Consumer,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    idle_timeout_s: float = 60.0,
) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(partition, offset, value)`` of ``[starts[p], ends[p])`` of each partition.

    A missing start is the beginning of the partition (its earliest retained record).

    Raises:
        KafkaError: on a consumer error, or no progress for ``idle_timeout_s``.
    """
    pending = {p: end for p, end in ends.items() if end > starts.get(p, 0)}
    if not pending:
        return
    consumer.assign(
        [TopicPartition(topic, p, starts.get(p) or OFFSET_BEGINNING) for p in sorted(pending)]
    )
    last_progress = time.monotonic()
    try:
        while pending:
            messages = consumer.consume(1000, timeout=0.5)
            if not messages:
                # Compaction or retention may leave no record at end - 1: ask positions.
                positions = consumer.position([TopicPartition(topic, p) for p in pending])
                for tp in positions:
                    if tp.offset >= pending.get(tp.partition, 0):
                        pending.pop(tp.partition, None)
                if time.monotonic() - last_progress > idle_timeout_s:
                    raise KafkaError(
                        f"Reading {topic!r} stalled for {idle_timeout_s:.0f} s. Expected records "
                        f"up to {pending}. Received: none"
                    )
                continue
            last_progress = time.monotonic()
            for message in messages:
                if out_of_range(message.error()):
                    raise OffsetOutOfRangeError(
                        f"Cannot replay {topic}[{message.partition()}]. Expected the log to hold "
                        f"offsets from {starts.get(message.partition() or 0, 'its start')}. "
                        f"Received: {message.error()} (records removed, or the topic recreated)"
                    )
                if message.error() is not None:
                    raise KafkaError(f"Cannot read {topic!r}: {message.error()}")
                partition, offset = message.partition() or 0, message.offset() or 0
                end = pending.get(partition)
                if end is None:
                    continue
                if offset < end:
                    yield partition, offset, message.value()
                if offset + 1 >= end:
                    pending.pop(partition)
    finally:
        consumer.unassign()


def bound_per_class(items: Iterable[LabelledItem], max_per_class: int) -> list[LabelledItem]:
    """The newest ``max_per_class`` items of each class (by event time), sorted by id."""
    by_class: dict[str, list[LabelledItem]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    kept: list[LabelledItem] = []
    for members in by_class.values():
        members.sort(key=lambda i: (i.event_time_ms, i.partition, i.offset), reverse=True)
        kept += members[:max_per_class]
    return sorted(kept, key=lambda i: i.id)


def unlabelled_dataset(
    items: Iterable[LabelledItem], spec: InputSpec, limit: int, name: str = "unlabelled"
) -> Dataset:
    """The newest ``limit`` unlabelled items (by event time) as a `Dataset` ``spec`` accepts.

    Every example has label 0 (class `UNLABELLED`): a self-supervised method
    never reads it.
    """
    newest = sorted(items, key=lambda i: (i.event_time_ms, i.partition, i.offset), reverse=True)
    return to_dataset(sorted(newest[:limit], key=lambda i: i.id), spec, name=name)[0]


def infer_spec(items: Sequence[LabelledItem]) -> InputSpec:
    """An input spec for payloads like the first item's (when no model exists yet).

    Raises:
        PayloadError: when there is no item or its payload is neither an image
            (uint8 H×W or H×W×C) nor a vector.
    """
    if not items:
        raise PayloadError("Cannot infer an input spec. Expected labelled items. Received: none")
    raw = items[0].payload
    if raw.dtype == np.uint8 and raw.ndim in (2, 3):
        channels = 1 if raw.ndim == 2 or raw.shape[2] == 1 else 3
        return InputSpec.image(raw.shape[0], raw.shape[1], channels)
    if raw.ndim == 1:
        return InputSpec.vector(raw.shape[0])
    raise PayloadError(
        "Cannot infer an input spec. Expected a uint8 image or a 1-d vector. "
        f"Received: {raw.dtype} {raw.shape}"
    )


def to_dataset(
    items: Sequence[LabelledItem], spec: InputSpec, name: str = "items"
) -> tuple[Dataset, list[str], int]:
    """The items as a `Dataset` of raw payloads that ``spec`` accepts.

    Returns:
        The dataset (classes sorted, numbers numerically), the ids of its
        examples in order, and how many items ``spec`` rejected.
    """
    kept: list[LabelledItem] = []
    rejected = 0
    for item in items:
        try:
            spec.to_model_input(item.payload)
        except PayloadError:
            rejected += 1
            continue
        kept.append(item)
    class_names = tuple(sorted({i.label for i in kept}, key=_label_order))
    index = {c: n for n, c in enumerate(class_names)}
    y = np.array([index[i.label] for i in kept], dtype=np.int64)
    x = _stack([i.payload for i in kept], spec)
    dataset = Dataset(x=x, y=y, class_names=class_names, input_spec=spec, name=name)
    return dataset, [i.id for i in kept], rejected


def stratified_split(dataset: Dataset, share: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out ``share`` of every class (at least one, never all) as ``(train, holdout)``.

    Classes with a single example stay in the training part only.
    """
    rng = np.random.default_rng([seed, 7])
    held = np.zeros(len(dataset), dtype=bool)
    for c in np.unique(dataset.y):
        members = np.flatnonzero(dataset.y == c)
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, round(share * len(members))))
        held[rng.choice(members, size=take, replace=False)] = True
    return (
        dataset.subset(~held, name=dataset.name),
        dataset.subset(held, name=f"{dataset.name} (hold-out)"),
    )


def _stack(raws: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    if raws and all(r.shape == raws[0].shape and r.dtype == raws[0].dtype for r in raws):
        batch = np.stack(raws)
        if spec.kind == "image" and batch.ndim == 3:
            batch = batch[..., None]
        return batch
    out = np.empty(len(raws), dtype=object)
    for i, raw in enumerate(raws):
        out[i] = raw
    return out


def _label_order(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.isascii() and label.isdigit() else (1, label)
