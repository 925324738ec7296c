"""Dead letters on the embedded stack: listed with filters, shown, paged and replayed.

The letters come from the real pipeline (dispatcher, Celery worker, range
embedder): invalid events, and whole ranges whose task failed for good (the
fault injected: the encoder's files fail verification). Replay goes through
``simstream dlq replay`` and the same Celery worker.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from celery import Celery
from confluent_kafka import Consumer, Producer
from typer.testing import CliRunner, Result

from simstream.cli.main import app
from simstream.errors import ModelIntegrityError
from simstream.kafka import end_offsets, ensure_topics
from simstream.settings import Settings
from simstream.wire import ArrayPayload, ItemEvent
from tests.waiting import wait_for
from tests.workers.ingest.dead_letters import read_dead_letter_records, read_dead_letters
from tests.workers.pipeline import (
    Expected,
    assert_index_matches,
    items_end,
    publish,
    topic_end,
    wait_until_caught_up,
)
from workers.celery_app import EMBED_TASK
from workers.ingest.config import IngestConfig
from workers.ingest.deadletter import dead_letter_range
from workers.ingest.dlq import DeadLetterReader, DlqEntry, DlqFilter, plan_replay
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a payload limit of 100 bytes: a 16-d float32 vector
    (64 bytes) passes, the same vector as float64 (128 bytes) is too large."""
    return Settings.load(**{**settings.model_dump(), "max_payload_bytes": 100})


def dlq(settings: Settings, *args: str) -> Result:
    result = CliRunner().invoke(app, ["dlq", *args], env={**settings.to_env(), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def listed(settings: Settings, *args: str) -> list[dict[str, Any]]:
    output = dlq(settings, "list", "--json", "--limit", "1000", *args).output
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def all_applied(settings: Settings, generation: IndexGeneration, version: str) -> bool:
    """Whether the node applied every record of the version's embeddings topic."""
    consumer = Consumer(settings.kafka_config(**{"group.id": "test-probe"}))
    try:
        topic = f"{settings.topic_embeddings_prefix}.{version}"
        ends = end_offsets(consumer, topic, range(settings.partitions))
    finally:
        consumer.close()
    applied = generation.index.next_offsets()
    return all(applied.get(p, 0) >= end for p, end in ends.items())


def index_state(generation: IndexGeneration, ids: list[str]) -> dict[str, Any]:
    """Every id's metadata and vector, and the index's counts per shard."""
    shards = generation.index.stats().shards
    state: dict[str, Any] = {
        "shards": [(s.partition, s.live, s.tombstones, s.delete_markers) for s in shards]
    }
    for item_id in ids:
        item = generation.index.get(item_id)
        state[item_id] = (
            None if item is None else (dict(item.metadata or {}), item.vector.tobytes())
        )
    return state


def test_dead_letters_are_listed_shown_and_replayed_into_the_index_once_the_cause_is_fixed(
    settings: Settings, pipeline: IndexNode, encoder_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tasks import configure

    generation = pipeline.current()
    expected = Expected()
    publish(settings, expected, upserts=[(f"item-{i}", 1) for i in range(20)])
    raw = Producer(settings.kafka_config())
    oversize = ItemEvent.upsert(
        "big", ArrayPayload.from_array(np.ones(16, np.float64)), metadata={"rev": 0}
    )
    raw.produce(settings.topic_items, key=b"big", value=oversize.encode())
    raw.produce(settings.topic_items, key=b"junk", value=b"not an event at all")
    assert raw.flush(10) == 0
    wait_until_caught_up(settings, generation)

    # A range whose task fails for good: its items are not indexed, the range is dead-lettered.
    with monkeypatch.context() as patch:
        patch.setattr("workers.tasks.embedder_for", _corrupt)
        failed = Expected()
        publish(settings, failed, upserts=[(f"item-{i}", 2) for i in range(5)])
        publish(settings, failed, upserts=[(f"item-{i}", 1) for i in range(20, 25)])
        wait_until_caught_up(settings, generation)
    assert all(generation.index.get(f"item-{i}") is None for i in range(20, 25))
    # A newer event of item-0 after the failed range: a replay must not undo it.
    publish(settings, expected, upserts=[("item-0", 3)])
    wait_until_caught_up(settings, generation)
    assert_index_matches(generation.index, expected)

    everything = listed(settings)
    reasons = sorted(letter["reason"] for letter in everything)
    ranges = [letter for letter in everything if letter["reason"] == "range_failed"]
    assert reasons.count("payload_too_large") == 1 and reasons.count("bad_magic") == 1, reasons
    assert ranges and all(letter["model_version"] == encoder_version for letter in ranges)
    assert sum(letter["end"] - letter["start"] for letter in ranges) == 10

    [big] = listed(settings, "--reason", "payload_too_large")
    assert (big["end"] - big["start"], big["raw_stored_bytes"]) == (1, len(oversize.encode()))
    p, o = str(big["partition"]), str(big["offset"])
    assert big["id"] in {x["id"] for x in listed(settings, "--partition", p, "--from-offset", o)}
    before_big = listed(settings, "--partition", p, "--to-offset", str(int(o) - 1))
    assert big["id"] not in {x["id"] for x in before_big}
    shown = json.loads(dlq(settings, "show", big["id"]).output)
    assert shown["raw_prefix_hex"] == oversize.encode()[:256].hex()
    first = dlq(settings, "list", "--limit", "1").output
    cursor = first.split("next: --cursor ")[1].split()[0]
    rest = listed(settings, "--cursor", cursor)
    assert [x["id"] for x in everything] == [first.split()[0]] + [x["id"] for x in rest]

    # Fix the causes (a sound encoder, a larger payload limit), then replay everything.
    configure(Settings.load(**{**settings.model_dump(), "max_payload_bytes": 1 << 20}))
    replayed = dlq(settings, "replay", "--wait")
    assert "range(s) to embed again" in replayed.output
    expected.upsert("big", 0, np.ones(16, np.float32))
    for item_id, rev in failed.live.items():
        if item_id != "item-0":
            expected.upsert(item_id, rev, failed.vectors[item_id])
    wait_for(lambda: all_applied(settings, generation, encoder_version), message="replay applied")
    assert_index_matches(generation.index, expected)
    assert dict(generation.index.get("item-0").metadata or {})["rev"] == 3  # type: ignore[union-attr]
    assert generation.index.get("junk") is None

    # Replaying twice changes nothing in the index.
    ids = [*sorted(expected.live), "junk"]
    before = index_state(generation, ids)
    dlq(settings, "replay", "--wait")
    wait_for(lambda: all_applied(settings, generation, encoder_version), message="replay applied")
    assert index_state(generation, ids) == before


def test_a_poison_event_whose_range_is_embedded_again_is_listed_counted_shown_and_replayed_once(
    settings: Settings, pipeline: IndexNode, encoder_version: str, celery_worker: Celery
) -> None:
    generation = pipeline.current()
    publish(settings, Expected(), upserts=[(f"item-{i}", 1) for i in range(6)])
    raw = Producer(settings.kafka_config())
    raw.produce(settings.topic_items, key=b"junk", value=b"not an event at all")
    assert raw.flush(10) == 0
    wait_until_caught_up(settings, generation)
    [first] = listed(settings)
    partition = first["partition"]

    # The range embedded again, as when a worker is killed after its dead letters were
    # acknowledged and before its task was: the redelivered task runs the same range.
    end = items_end(settings)[partition]
    again = celery_worker.send_task(
        EMBED_TASK, args=[settings.topic_items, partition, 0, end, encoder_version], queue="embed"
    )
    assert again.get(timeout=120)["dead_letters"] == 1
    dlq(settings, "replay", "--wait")  # a replay of a still invalid event: one more record

    records = [x for x in read_dead_letters(settings) if x.offset == first["offset"]]
    assert len(records) == 3 and {x.partition for x in records} == {partition}
    assert listed(settings) == [first]
    assert listed(settings, "--reason", "bad_magic") == [first]
    counted = json.loads(dlq(settings, "count", "--json").output)
    assert counted == {"letters": 1, "records": 3, "by_reason": {"bad_magic": 1}}
    last = f"p{partition}.o{topic_end(settings, settings.topic_dlq)[partition] - 1}"
    assert last != first["id"]
    assert json.loads(dlq(settings, "show", last).output)["id"] == first["id"]
    plan = dlq(settings, "replay", "--dry-run").output
    assert "1 dead letter(s), 1 range(s) to embed again" in plan, plan


def test_a_range_dead_lettered_twice_is_one_letter_per_model_version_keyed_by_its_offsets(
    settings: Settings,
) -> None:
    config = IngestConfig.from_settings(settings)
    versions = ("v1", "v1", "v2")  # a retried task's second letter, then another version
    topics = [config.embeddings_topic(v) for v in versions]
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq, *topics])
    for version in versions:
        dead_letter_range(config, settings.topic_items, 1, 10, 20, version, "model missing")

    with DeadLetterReader(config) as reader:
        entries = list(reader.scan())
        counted = reader.count()
        repeat = reader.get("p1.o1")

    assert [(e.id, e.start, e.end, e.model_version) for e in entries] == [
        ("p1.o0", 10, 20, "v1"),
        ("p1.o2", 10, 20, "v2"),
    ]
    assert (counted.letters, counted.records, counted.by_reason) == (2, 3, {"range_failed": 2})
    assert repeat.id == "p1.o0"
    keys = [key for key, _ in read_dead_letter_records(settings)]
    topic = settings.topic_items
    assert keys == [f"{topic}/1/10..19/{v}".encode() for v in versions]


def _corrupt(model_version: str) -> Any:
    raise ModelIntegrityError(f"model {model_version}: weights.h5 hash mismatch")


def _entry(partition: int, start: int, end: int, topic: str = "items") -> DlqEntry:
    from simstream.wire import DeadLetter

    letter = DeadLetter(
        topic, partition, start, "range_failed", b"", f"offsets {start}..{end - 1} of model v1: x"
    )
    return DlqEntry.of(partition, start, letter)


def test_a_replay_plan_merges_repeated_and_overlapping_letters_and_cuts_long_ranges() -> None:
    entries = [_entry(0, 0, 10), _entry(0, 5, 12), _entry(0, 0, 10), _entry(1, 3, 4)]
    entries.append(_entry(0, 40, 41, topic="other"))

    plan = plan_replay(entries, "items", max_items=5)

    assert [(r.partition, r.start, r.end) for r in plan.ranges] == [
        (0, 0, 5),
        (0, 5, 10),
        (0, 10, 12),
        (1, 3, 4),
    ]
    assert [e.letter.source_topic for e in plan.skipped] == ["other"]


def test_a_filter_selects_letters_whose_source_offsets_overlap_its_bounds() -> None:
    entry = _entry(2, 10, 20)
    assert DlqFilter(partition=2, from_offset=19, to_offset=30).matches(entry)
    assert not DlqFilter(from_offset=20).matches(entry)
    assert not DlqFilter(to_offset=9).matches(entry)
    assert not DlqFilter(reason="bad_magic").matches(entry)
