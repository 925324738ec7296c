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


def fail_next_allocation(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fault injection: the next slot allocation cannot grow hnswlib; returns the list
    that records the failed allocation (empty until it happened)."""
    allocate = Graph.allocate
    faults: list[int] = []

    def fail_once(self: Graph, n: int) -> np.ndarray:
        if not faults:
            faults.append(n)
            raise MemoryError("std::bad_alloc")
        return allocate(self, n)

    monkeypatch.setattr(Graph, "allocate", fail_once)
    return faults


def test_a_shard_whose_batch_failed_is_rebuilt_from_its_snapshot_and_the_log(
    generation: IndexGeneration, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(generation, upserts(0, 100))
    generation.start()
    wait_for(lambda: applied(generation, 100), timeout_s=60, message="the first batch applied")
    generation.snapshot()
    failed = generation.index.shard(0)
    faults = fail_next_allocation(monkeypatch)
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


def test_a_failed_batch_in_a_shared_graph_rebuilds_every_shard_of_that_graph(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = NodeConfig.from_settings(settings)
    fields = {f: getattr(config, f) for f in config.__dataclass_fields__}
    generation = IndexGeneration(NodeConfig(**{**fields, "partitions": 2}), VERSION, dim=8)
    assert generation.index.config.graph == "node"
    ensure_topics(generation.config, [generation.topic])
    producer = Producer(generation.config.kafka_config())

    def send_to(partition: int, records: Sequence[EmbeddingRecord]) -> None:
        for record in records:
            producer.produce(
                generation.topic, record.encode(), key=record.item_id, partition=partition
            )
        assert producer.flush(30) == 0

    def offsets_at_least(wanted: dict[int, int]) -> bool:
        have = generation.index.next_offsets()
        return all(have.get(p, 0) >= o for p, o in wanted.items())

    try:
        send_to(0, upserts(0, 50))
        send_to(1, upserts(1000, 1050))
        generation.start()
        wait_for(lambda: offsets_at_least({0: 50, 1: 50}), timeout_s=60, message="both applied")
        generation.snapshot()
        before = generation.index.shards
        assert before[0].graph is before[1].graph
        faults = fail_next_allocation(monkeypatch)
        send_to(0, upserts(50, 150))
        send_to(1, upserts(1050, 1150))
        wait_for(
            lambda: (
                bool(faults)
                and all(a is not b for a, b in zip(generation.index.shards, before, strict=True))
                and offsets_at_least({0: 150, 1: 150})
            ),
            timeout_s=60,
            message="both shards of the graph rebuilt and caught up",
        )
        after = generation.index.shards
        assert after[0].graph is after[1].graph and generation.error is None
        assert all(s.healthy for s in after)
        for shard, lo in zip(after, (0, 1000), strict=True):
            assert set(shard._entries) == {f"i{j}" for j in range(lo, lo + 150)}
        assert len(generation.index) == after[0].graph.live == 300
        query = upserts(1050, 1150)[50].vector
        assert generation.index.search(query, 1).ids == ["i1100"]
    finally:
        generation.close()


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
