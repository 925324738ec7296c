"""The retraining data: replayed from `items`, newest state per id, bounded, split by class."""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka import Producer

from model.inputs import InputSpec
from producers.config import ProducerConfig
from producers.producer import ItemProducer
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import ArrayPayload, ItemEvent, VectorPayload
from workers.retrain.config import RetrainConfig
from workers.retrain.dataset import (
    LabelledItem,
    ReplayStats,
    bound_per_class,
    count_new_labelled,
    fold_events,
    read_labelled,
    stratified_split,
    to_dataset,
    unlabelled_dataset,
)


def _vector(value: float) -> VectorPayload:
    return VectorPayload.from_values([value, 0.0, 1.0])


def _event(item_id: str, label: str | None = "a", value: float = 0.0, ts: int = 1) -> bytes:
    return ItemEvent.upsert(item_id, _vector(value), label=label, event_time_ms=ts).encode()


def _item(item_id: str, label: str, ts: int) -> LabelledItem:
    return LabelledItem(item_id, label, np.zeros(3, np.float32), ts, 0, ts)


def test_folding_keeps_the_newest_labelled_upsert_of_each_id() -> None:
    stats = ReplayStats()
    items = fold_events(
        [
            (0, 0, _event("x", "a", 1.0)),
            (0, 1, _event("y", "b", 2.0)),
            (0, 2, _event("x", "c", 3.0)),  # relabelled: the newest label wins
            (1, 0, _event("z", "a")),
            (1, 1, _event("z", None)),  # now unlabelled: left out
            (1, 2, ItemEvent.delete("y").encode()),  # y lives in partition 0; deletes are by id
            (1, 3, b"not an event"),
        ],
        stats,
    )
    assert sorted(items) == ["x"]
    assert items["x"].label == "c"
    assert items["x"].payload[0] == pytest.approx(3.0)
    assert (items["x"].partition, items["x"].offset) == (0, 2)
    assert stats.to_dict() == {
        "events": 7,
        "undecodable": 1,
        "upserts": 5,
        "deletes": 1,
        "unlabelled": 1,
        "bad_payloads": 0,
    }


def test_asked_for_unlabelled_items_the_fold_keeps_the_newest_ones_apart() -> None:
    unlabelled: dict[str, LabelledItem] = {}
    items = fold_events(
        [
            (0, 0, _event("u", None, 1.0, ts=5)),
            (0, 1, _event("v", None, 2.0, ts=6)),
            (0, 2, _event("w", None, 3.0, ts=7)),
            (0, 3, _event("v", "a", 4.0)),  # labelled now: no longer unlabelled
            (0, 4, ItemEvent.delete("w").encode()),
            (1, 0, _event("x", "b")),
            (1, 1, _event("y", None, 5.0, ts=9)),
        ],
        unlabelled=unlabelled,
    )
    assert sorted(items) == ["v", "x"]
    assert sorted(unlabelled) == ["u", "y"]
    assert unlabelled["y"].payload[0] == pytest.approx(5.0)

    newest = unlabelled_dataset(unlabelled.values(), InputSpec.vector(3), limit=1)
    assert len(newest) == 1 and newest.x[0][0] == pytest.approx(5.0)


def test_an_item_deleted_then_upserted_again_is_back() -> None:
    items = fold_events(
        [(0, 0, _event("x", "a")), (0, 1, ItemEvent.delete("x").encode()), (0, 2, _event("x"))]
    )
    assert list(items) == ["x"]


def test_the_per_class_bound_keeps_the_newest_items_of_each_class() -> None:
    items = [_item(f"a{t}", "a", t) for t in range(10)] + [_item("b0", "b", 0)]
    kept = bound_per_class(items, max_per_class=3)
    assert [i.id for i in kept] == ["a7", "a8", "a9", "b0"]


def test_the_stratified_split_holds_out_a_share_of_every_class_but_never_a_whole_class() -> None:
    counts = {"0": 40, "1": 10, "2": 2, "3": 1}
    items = [
        LabelledItem(f"{c}-{i}", c, np.full(3, i, np.float32), i, 0, i)
        for c, n in counts.items()
        for i in range(n)
    ]
    dataset, ids, rejected = to_dataset(items, InputSpec.vector(3))
    assert rejected == 0 and len(ids) == 53
    train, holdout = stratified_split(dataset, share=0.25, seed=3)
    held = {name: int((holdout.y == n).sum()) for n, name in enumerate(dataset.class_names)}
    kept = {name: int((train.y == n).sum()) for n, name in enumerate(dataset.class_names)}
    assert held == {"0": 10, "1": 2, "2": 1, "3": 0}
    assert kept == {"0": 30, "1": 8, "2": 1, "3": 1}
    again, _ = stratified_split(dataset, share=0.25, seed=3)
    assert np.array_equal(again.x, train.x), "the split is a function of the seed"


def test_payloads_the_input_spec_rejects_are_left_out_and_counted() -> None:
    good = LabelledItem("ok", "a", np.zeros((8, 8), np.uint8), 1, 0, 0)
    wrong_kind = LabelledItem("vec", "a", np.zeros(3, np.float32), 1, 0, 1)
    dataset, ids, rejected = to_dataset([good, wrong_kind], InputSpec.image(8, 8, 1))
    assert ids == ["ok"] and rejected == 1
    assert dataset.x.shape == (1, 8, 8, 1)
    assert dataset.class_names == ("a",)


def test_class_names_sort_numbers_numerically() -> None:
    items = [_item(str(c), str(c), c) for c in (10, 2, 1)] + [_item("z", "zebra", 0)]
    dataset, _, _ = to_dataset(items, InputSpec.vector(3))
    assert dataset.class_names == ("1", "2", "10", "zebra")


@pytest.mark.services
def test_the_replay_reads_the_topic_to_its_end_with_deletes_and_relabels_honoured(
    settings: Settings,
) -> None:
    ensure_topics(settings, [settings.topic_items])
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i in range(60):
            image = np.full((8, 8), i, np.uint8)
            producer.publish(
                ItemEvent.upsert(f"item-{i}", ArrayPayload.from_array(image), str(i % 3))
            )
        producer.flush(30)
        for i in range(0, 10):
            producer.publish(ItemEvent.upsert(f"item-{i}", _vector(1.0), label="vectors"))
        for i in range(10, 20):
            producer.delete(f"item-{i}")
        for i in range(20, 25):
            producer.publish(ItemEvent.upsert(f"item-{i}", _vector(1.0), label=None))
        summary = producer.flush(30)
    assert summary.ok
    raw = Producer(settings.kafka_config())
    raw.produce(settings.topic_items, key=b"junk", value=b"junk")
    raw.flush(10)

    replay = read_labelled(RetrainConfig.from_settings(settings))

    assert sum(replay.end_offsets.values()) == replay.stats.events == 60 + 25 + 1
    assert replay.stats.undecodable == 1
    assert set(replay.items) == {f"item-{i}" for i in [*range(10), *range(25, 60)]}
    assert {replay.items[f"item-{i}"].label for i in range(10)} == {"vectors"}
    assert replay.items["item-30"].label == "0"
    assert replay.items["item-30"].payload.shape == (8, 8)
    _, ids, rejected = to_dataset(list(replay.items.values()), InputSpec.image(8, 8, 1))
    assert rejected == 10 and len(ids) == 35


@pytest.mark.services
def test_new_labelled_upserts_are_counted_from_given_offsets(settings: Settings) -> None:
    ensure_topics(settings, [settings.topic_items])
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i in range(12):
            producer.publish(ItemEvent.upsert(f"old-{i}", _vector(0.0), label="a"))
    replay = read_labelled(RetrainConfig.from_settings(settings))
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i in range(7):
            producer.publish(ItemEvent.upsert(f"new-{i}", _vector(0.0), label="a"))
        for i in range(5):
            producer.publish(ItemEvent.upsert(f"unlabelled-{i}", _vector(0.0)))
        producer.delete("old-0")

    assert count_new_labelled(RetrainConfig.from_settings(settings), replay.end_offsets) == 7
    assert (
        count_new_labelled(RetrainConfig.from_settings(settings), replay.end_offsets, limit=3) == 3
    )
    assert count_new_labelled(RetrainConfig.from_settings(settings), {}) == 19
