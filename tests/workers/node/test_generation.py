"""A generation against a real broker: a shard whose batch failed is rebuilt, markers pruned."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from model.registry import Registry
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import EmbeddingRecord, Op
from tests.waiting import wait_for
from workers.index.graph import Graph
from workers.node.config import NodeConfig
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

pytestmark = pytest.mark.services

VERSION = "v1"


@pytest.fixture
def generation(settings: Settings) -> Iterator[IndexGeneration]:
    config = NodeConfig.from_settings(settings)
    config = NodeConfig(
        **{**{f: getattr(config, f) for f in config.__dataclass_fields__}, "partitions": 1}
    )
    generation = IndexGeneration(config, VERSION, dim=8)
    ensure_topics(config, [generation.topic])
    yield generation
    generation.close()


def send(generation: IndexGeneration, records: Sequence[EmbeddingRecord]) -> None:
    producer = Producer(generation.config.kafka_config())
    for record in records:
        producer.produce(generation.topic, record.encode(), key=record.item_id, partition=0)
    assert producer.flush(30) == 0


def upserts(lo: int, hi: int) -> list[EmbeddingRecord]:
    vectors = np.random.default_rng(lo).standard_normal((hi - lo, 8)).astype(np.float32)
    return [
        EmbeddingRecord(Op.UPSERT, f"i{j}", j, VERSION, vectors[j - lo], metadata={"j": j})
        for j in range(lo, hi)
    ]


def applied(generation: IndexGeneration, offset: int) -> bool:
    return generation.index.next_offsets().get(0, 0) >= offset


def test_a_shard_whose_batch_failed_is_rebuilt_from_its_snapshot_and_the_log(
    generation: IndexGeneration, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(generation, upserts(0, 100))
    generation.start()
    wait_for(lambda: applied(generation, 100), timeout_s=60, message="the first batch applied")
    generation.snapshot()
    failed = generation.index.shard(0)
    allocate = Graph.allocate
    faults: list[int] = []

    def fail_once(self: Graph, n: int) -> np.ndarray:
        """Fault injection: the first allocation after the snapshot cannot grow hnswlib."""
        if not faults:
            faults.append(n)
            raise MemoryError("std::bad_alloc")
        return allocate(self, n)

    monkeypatch.setattr(Graph, "allocate", fail_once)
    later = [*upserts(100, 300), EmbeddingRecord(Op.DELETE, "i3", 300, VERSION)]
    send(generation, later)
    wait_for(
        lambda: (
            bool(faults) and generation.index.shard(0) is not failed and applied(generation, 301)
        ),
        timeout_s=60,
        message="the failed shard rebuilt and caught up",
    )
    shard = generation.index.shard(0)
    assert shard.healthy and generation.error is None
    written = [*upserts(0, 100), *upserts(100, 300)]
    expected = {r.item_id: r for r in written if r.item_id != "i3"}
    assert set(shard._entries) == set(expected)
    for item_id, record in expected.items():
        item = shard.get(item_id)
        assert item is not None and item.source_offset == record.source_offset
        assert record.vector is not None
        np.testing.assert_allclose(
            item.vector, record.vector / np.linalg.norm(record.vector), atol=1e-5
        )
    assert shard._deleted_at == {"i3": 300}


def test_a_node_with_an_unhealthy_shard_is_not_ready(
    generation: IndexGeneration, settings: Settings, tmp_path: Path
) -> None:
    node = IndexNode(generation.config, Registry(tmp_path / "registry"))
    node.serving = generation
    generation.index.shard(0).failure = "MemoryError: std::bad_alloc"
    ready, reason = node.ready()
    assert not ready
    assert reason == f"generation {VERSION} is rebuilding shards [0]"


def test_delete_markers_are_pruned_below_the_watermark_of_the_snapshot_before(
    generation: IndexGeneration,
) -> None:
    generation.config = dataclasses.replace(generation.config, delete_marker_retention_s=0)
    send(generation, [*upserts(0, 3), EmbeddingRecord.range_marker(0, 3, VERSION)])
    send(generation, [EmbeddingRecord(Op.DELETE, "i0", 3, VERSION)])
    send(generation, [EmbeddingRecord.range_marker(3, 4, VERSION)])
    generation.start()
    wait_for(lambda: applied(generation, 6), timeout_s=60, message="the records applied")
    shard = generation.index.shard(0)
    generation.snapshot()  # records watermark 4; nothing older to prune against yet
    assert shard._deleted_at == {"i0": 3}
    send(generation, [EmbeddingRecord(Op.DELETE, "i1", 4, VERSION)])
    send(generation, [EmbeddingRecord.range_marker(4, 5, VERSION)])
    wait_for(lambda: applied(generation, 8), timeout_s=60, message="the second delete applied")
    generation.snapshot()  # prunes below the previous snapshot's watermark (4)
    assert shard._deleted_at == {"i1": 4}


def test_a_late_copy_of_an_old_range_cannot_resurrect_an_id_deleted_snapshots_ago(
    generation: IndexGeneration,
) -> None:
    """A range embedded again long after it completed (a task redelivered after a crash,
    a dispatcher restarting from an older commit) re-sends old upserts: within the
    retention time the delete markers are kept, so the deleted id stays deleted."""
    send(generation, [*upserts(0, 3), EmbeddingRecord.range_marker(0, 3, VERSION)])
    send(generation, [EmbeddingRecord(Op.DELETE, "i0", 3, VERSION)])
    send(generation, [EmbeddingRecord.range_marker(3, 4, VERSION)])
    generation.start()
    wait_for(lambda: applied(generation, 6), timeout_s=60, message="the records applied")
    generation.snapshot()
    send(generation, [EmbeddingRecord.range_marker(4, 5, VERSION)])
    wait_for(lambda: applied(generation, 7), timeout_s=60, message="the marker applied")
    generation.snapshot()  # with no retention this would forget i0's marker
    assert generation.index.shard(0)._deleted_at == {"i0": 3}

    send(generation, [*upserts(0, 1), EmbeddingRecord.range_marker(0, 1, VERSION)])  # late copy
    wait_for(lambda: applied(generation, 9), timeout_s=60, message="the late copy applied")
    assert generation.index.get("i0") is None
