"""End to end on the embedded stack: producer → Kafka → dispatcher → Celery → log → index."""

from __future__ import annotations

import numpy as np
import pytest

from simstream.settings import Settings
from simstream.wire import ArrayPayload, ItemEvent, Reason, VectorPayload
from tests.workers.pipeline import (
    Expected,
    assert_index_matches,
    publish,
    read_dead_letters,
    wait_until_caught_up,
)
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a small payload limit, so oversize events are cheap."""
    return Settings.load(**{**settings.model_dump(), "max_payload_bytes": 4096})


@pytest.mark.slow
def test_thousands_of_upserts_updates_and_deletes_end_exactly_as_published(
    settings: Settings, pipeline: IndexNode
) -> None:
    expected = Expected()
    publish(settings, expected, upserts=[(f"item-{i}", 0) for i in range(5000)])
    publish(settings, expected, upserts=[(f"item-{i}", 1) for i in range(0, 500)])
    publish(settings, expected, deletes=[f"item-{i}" for i in range(500, 1000)])
    generation = pipeline.current()
    wait_until_caught_up(settings, generation, timeout_s=240)
    assert_index_matches(generation.index, expected)
    assert generation.freshness()["samples"]


def test_malformed_events_land_in_the_dead_letter_topic_and_their_neighbours_are_indexed(
    settings: Settings, pipeline: IndexNode
) -> None:
    from confluent_kafka import Producer

    expected = Expected()
    publish(settings, expected, upserts=[(f"ok-{i}", 0) for i in range(5)])
    raw = Producer(settings.kafka_config())
    good = ItemEvent.upsert("ok-5", VectorPayload.from_values([1.0] * 16)).encode()
    wrong_dim = ItemEvent.upsert("bad-dim", VectorPayload.from_values([1.0] * 3)).encode()
    oversize = ItemEvent.upsert("big", ArrayPayload.from_array(np.zeros(2048, np.float32))).encode()
    for key, value in [
        (b"junk", b"not an event at all"),
        (b"bad-dim", wrong_dim),
        (b"trunc", good[: len(good) // 2]),
        (b"op", good.replace(b'"upsert"', b'"upsart"')),
        (b"big", oversize),
    ]:
        raw.produce(settings.topic_items, key=key, value=value)
    raw.flush(10)
    publish(settings, expected, upserts=[(f"ok-{i}", 0) for i in range(6, 10)])
    generation = pipeline.current()
    wait_until_caught_up(settings, generation)
    assert set(expected.live) == {f"ok-{i}" for i in range(10) if i != 5}
    assert_index_matches(generation.index, expected)
    assert all(generation.index.get(key) is None for key in ("junk", "bad-dim", "big", "ok-5"))
    letters = read_dead_letters(settings, 5)
    assert len(letters) == 5
    assert all(letter.reason and letter.source_topic == settings.topic_items for letter in letters)
    reasons = {letter.reason for letter in letters}
    assert {"bad_payload", "payload_too_large", "unknown_op", "truncated"} <= reasons, reasons
    publish(settings, expected, deletes=["ok-0"])
    wait_until_caught_up(settings, generation)
    assert_index_matches(generation.index, expected)
    live = {f"ok-{i}" for i in range(1, 10) if i != 5}
    probe = generation.index.get("ok-1")
    assert probe is not None
    found = generation.index.search(probe.vector, k=50)
    assert found.ids[0] == "ok-1" and set(found.ids) == live


def test_an_update_that_is_infinite_once_cast_is_dead_lettered_and_removes_the_stale_version(
    settings: Settings, pipeline: IndexNode
) -> None:
    from producers.config import ProducerConfig
    from producers.producer import ItemProducer

    expected = Expected()
    publish(settings, expected, upserts=[("kept-0", 0), ("updated-1", 0)])
    generation = pipeline.current()
    wait_until_caught_up(settings, generation)
    assert generation.index.get("updated-1") is not None
    # float64 1e300 decodes as an array payload and becomes inf as the model's float32.
    huge = ArrayPayload.from_array(np.full(16, 1e300, dtype=np.float64))
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        token = producer.publish_sync(ItemEvent.upsert("updated-1", huge, metadata={"rev": 1}))
    expected.delete("updated-1")
    publish(settings, expected, upserts=[("kept-2", 0)])
    wait_until_caught_up(settings, generation)
    assert_index_matches(generation.index, expected)
    letters = read_dead_letters(settings, 1)
    assert [(x.reason, x.partition, x.offset) for x in letters] == [
        (Reason.NON_FINITE_INPUT, token.partition, token.offset)
    ]
