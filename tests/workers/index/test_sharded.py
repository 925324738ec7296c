from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from simstream.errors import IndexStoreError, WouldBlockError
from simstream.settings import Settings
from tests.waiting import wait_for
from tests.workers.index.helpers import KnnSpy, distances, unit_vectors
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.partitioning import partition_for
from workers.index.record import Mutation
from workers.index.rwlock import no_waiting
from workers.index.sharded import ShardedIndex, shard_ef


def filled(
    rng: np.random.Generator, n: int = 400, partitions: int = 4, **config: object
) -> tuple[ShardedIndex, np.ndarray]:
    index = ShardedIndex(IndexConfig(dim=8, **config), partitions)  # type: ignore[arg-type]
    vectors = unit_vectors(rng, n, 8)
    batches: dict[int, list[Mutation]] = {}
    for j in range(n):
        record = Mutation.upsert(f"i{j}", vectors[j], j, label=j % 5, metadata={"even": j % 2 == 0})
        batches.setdefault(partition_for(record.item_id, partitions), []).append(record)
    index.apply_many(batches, {p: len(b) for p, b in batches.items()})
    return index, vectors


def test_records_go_to_the_shard_of_the_partition_they_came_from(
    rng: np.random.Generator,
) -> None:
    index = ShardedIndex(IndexConfig(dim=8), 3)
    v = unit_vectors(rng, 1, 8)[0]
    index.apply(2, [Mutation.upsert("x", v, 1)], next_offset=8)
    assert [s.live for s in index.stats().shards] == [0, 0, 1]
    assert index.next_offsets() == {2: 8}
    item = index.get("x")
    assert item is not None
    assert item.partition == 2


def test_an_unknown_partition_is_refused_with_the_valid_range() -> None:
    index = ShardedIndex(IndexConfig(dim=8), 2)
    with pytest.raises(IndexStoreError, match=r"partitions held, \[0, 1\]. Received: partition=2"):
        index.apply(2, [])


@pytest.mark.parametrize(
    ("graph", "fan_out_min_s"),
    [("partition", 0.0), ("partition", 10.0), ("node", 0.0)],
    ids=["threads", "calling-thread", "node-graph"],
)
def test_the_merged_top_k_over_shards_equals_exact_search(
    rng: np.random.Generator, graph: str, fan_out_min_s: float
) -> None:
    index, vectors = filled(rng, graph=graph, fan_out_min_s=fan_out_min_s)
    queries = unit_vectors(rng, 20, 8)
    results = index.search_batch(queries, 10, ef=500)
    for query, found in zip(queries, results, strict=True):
        d = distances("cosine", query, vectors)
        order = np.argsort(d)[:10]
        assert found.ids == [f"i{j}" for j in order]
        np.testing.assert_allclose(found.distances, d[order], atol=1e-5)
    index.close()


def test_a_batched_search_equals_single_searches(rng: np.random.Generator) -> None:
    index, _ = filled(rng)
    queries = unit_vectors(rng, 30, 8)
    batched = index.search_batch(queries, 7)
    singles = [index.search(q, 7) for q in queries]
    assert [b.ids for b in batched] == [s.ids for s in singles]
    index.close()


def test_a_single_query_over_small_and_empty_shards_equals_exact_search(
    rng: np.random.Generator,
) -> None:
    index = ShardedIndex(IndexConfig(dim=8), 4)
    vectors = unit_vectors(rng, 12, 8)
    names = [f"a{j}" for j in range(3)] + [f"b{j}" for j in range(9)]
    index.apply(0, [Mutation.upsert(names[j], vectors[j], j) for j in range(3)])
    index.apply(2, [Mutation.upsert(names[j], vectors[j], j) for j in range(3, 12)])
    for query in unit_vectors(rng, 10, 8):
        found = index.search(query, 5, ef=100)
        d = distances("cosine", query, vectors)
        order = np.argsort(d, kind="stable")[:5]
        assert found.ids == [names[j] for j in order]
        np.testing.assert_allclose(found.distances, d[order], atol=1e-5)
        assert found.exhaustive
        everything = index.search(query, 50)
        assert sorted(everything.ids) == sorted(names)  # k past the live items: all of them
        assert everything.distances == sorted(everything.distances)
    index.close()


def test_a_filtered_search_returns_only_matching_items_over_all_shards(
    rng: np.random.Generator,
) -> None:
    index, vectors = filled(rng, ef_search=200)
    flt = Filter.of(labels=[1, 2], even=True)
    found = index.search(vectors[0], 10, filter=flt)
    matching = [j for j in range(400) if j % 5 in (1, 2) and j % 2 == 0]
    d = distances("cosine", vectors[0], vectors[matching])
    assert found.ids == [f"i{matching[j]}" for j in np.argsort(d)[:10]]
    assert index.search(vectors[0], 10, filter=Filter.of(labels=["nope"])).ids == []
    index.close()


def test_k_larger_than_the_index_returns_every_item(rng: np.random.Generator) -> None:
    index, _ = filled(rng, n=30)
    assert len(index.search(np.ones(8), 1000)) == 30
    index.close()


def test_the_epoch_increments_on_every_batch_that_changes_the_index(
    rng: np.random.Generator,
) -> None:
    index = ShardedIndex(IndexConfig(dim=8), 2)
    v = unit_vectors(rng, 1, 8)[0]
    index.apply(0, [Mutation.upsert("a", v, 1)])
    index.apply(1, [Mutation.delete("b", 1)])
    assert index.epoch == 2
    index.apply(0, [Mutation.upsert("a", v, 1)])  # stale: nothing changes
    index.apply(0, [], next_offset=5)
    assert index.epoch == 2


def test_label_sums_add_up_every_shard(rng: np.random.Generator) -> None:
    index, vectors = filled(rng, n=200, partitions=4)
    labels = np.arange(200) % 5
    holders = {s.partition for s in index.shards if s.label_sums(["3"])}

    sums = index.label_sums(["3", "4", "9"])

    assert len(holders) == 4  # label 3 is spread over every shard
    assert set(sums) == {"3", "4"}
    assert sums["3"].size == int((labels == 3).sum())
    np.testing.assert_allclose(sums["3"].total, vectors[labels == 3].sum(axis=0), atol=1e-5)


def test_get_finds_items_in_any_shard(rng: np.random.Generator) -> None:
    index = ShardedIndex(IndexConfig(dim=8), 4)
    v = unit_vectors(rng, 1, 8)[0]
    other = (partition_for("a", 4) + 1) % 4
    index.apply(other, [Mutation.upsert("a", v, 1)])
    item = index.get("a")
    assert item is not None
    assert item.partition == other
    assert index.get("missing") is None


def test_describe_gives_label_and_metadata_in_order_and_none_for_ids_not_live(
    rng: np.random.Generator,
) -> None:
    index, _ = filled(rng, n=40)
    deleted = "i7"
    index.apply(partition_for(deleted, 4), [Mutation.delete(deleted, 100)])
    asked = ["i12", "missing", deleted, "i3", "i12"]

    described = index.describe(asked)

    assert [None if d is None else (d.label, dict(d.metadata)) for d in described] == [
        (12 % 5, {"even": True}),
        None,
        None,
        (3 % 5, {"even": False}),
        (12 % 5, {"even": True}),
    ]
    assert partition_for("i12", 4) != partition_for("i3", 4)  # read from two shards


@pytest.mark.parametrize("graph", ["partition", "node"])
def test_stats_report_live_tombstones_and_capacity_per_shard(
    rng: np.random.Generator, graph: str
) -> None:
    index, _ = filled(rng, n=100, partitions=2, initial_capacity=16, graph=graph)
    index.apply(0, [Mutation.delete(i, 10_000) for i in index.shards[0]._entries][:3])
    stats = index.stats()
    assert stats.live == 97
    assert [s.live for s in stats.shards] == [len(s) for s in index.shards]
    assert stats.tombstones == 3
    assert stats.capacity >= 100
    if graph == "partition":
        assert all(s.capacity >= s.live + s.tombstones for s in stats.shards)
        assert [s.graph for s in stats.shards] == [0, 1]
    else:
        # One graph: its tombstones and capacity are counted once, on its first shard.
        assert [s.graph for s in stats.shards] == [0, 0]
        assert [s.tombstones for s in stats.shards] == [3, 0]
        assert stats.shards[1].capacity == 0
    as_dict = stats.as_dict()
    assert as_dict["live"] == 97
    assert len(as_dict["shards"]) == 2
    index.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (np.ones(3), "Expected \\(batch ≥ 1, 8\\)"),
        (np.full(8, np.nan), "finite"),
        (np.zeros(8), "non-zero"),
        ("text", "numbers"),
    ],
)
def test_bad_queries_are_refused_with_a_clear_message(query: object, message: str) -> None:
    index = ShardedIndex(IndexConfig(dim=8), 1)
    with pytest.raises(IndexStoreError, match=message):
        index.search(query, 3)


def test_k_and_ef_must_be_positive() -> None:
    index = ShardedIndex(IndexConfig(dim=8), 1)
    with pytest.raises(IndexStoreError, match="k ≥ 1"):
        index.search(np.ones(8), 0)
    with pytest.raises(IndexStoreError, match="ef ≥ 1"):
        index.search(np.ones(8), 1, ef=0)


def test_the_index_is_shaped_by_the_settings() -> None:
    settings = Settings.load(partitions=3, index_space="l2", index_m=8, model_embedding_dim=12)
    index = ShardedIndex.from_settings(settings, "v7")
    assert (index.partitions, index.space, index.dim, index.config.m) == (3, "l2", 12, 8)
    assert index.model_version == "v7"
    index.close()


def test_writers_and_readers_running_together_only_return_items_that_existed_with_correct_distances(
    rng: np.random.Generator,
) -> None:
    """Stress: two writers (upserts, replacements, deletes) and three readers for ~3 s."""
    partitions = 2
    index = ShardedIndex(IndexConfig(dim=8, min_tombstones=20), partitions)
    pool = unit_vectors(rng, 4000, 8)
    ever: dict[str, list[np.ndarray]] = {}
    ever_lock = threading.Lock()
    errors: list[str] = []
    stop = threading.Event()
    checked = [0]

    def writer(partition: int, seed: int) -> None:
        local = np.random.default_rng(seed)
        offset = 0
        while not stop.is_set():
            batch = []
            for _ in range(32):
                offset += 1
                item_id = f"p{partition}-{int(local.integers(0, 300))}"
                if local.random() < 0.25:
                    batch.append(Mutation.delete(item_id, offset))
                else:
                    vector = pool[int(local.integers(0, len(pool)))]
                    with ever_lock:
                        ever.setdefault(item_id, []).append(vector)
                    batch.append(
                        Mutation.upsert(item_id, vector, offset, metadata={"p": partition})
                    )
            index.apply(partition, batch, next_offset=offset + 1)

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            queries = pool[local.integers(0, len(pool), 4)]
            k = int(local.integers(1, 30))
            flt = Filter.of(labels=None) if local.random() < 0.5 else None
            for query, found in zip(
                queries, index.search_batch(queries, k, filter=flt), strict=True
            ):
                if len(found.ids) > k or len(set(found.ids)) != len(found.ids):
                    errors.append(f"bad result size or duplicates: {found.ids}")
                for item_id, dist in zip(found.ids, found.distances, strict=True):
                    with ever_lock:
                        versions = list(ever.get(item_id, []))
                    if not versions:
                        errors.append(f"{item_id} was never written")
                        continue
                    d = distances("cosine", query, np.stack(versions))
                    if not np.isclose(d, dist, atol=1e-4).any():
                        errors.append(f"{item_id}: distance {dist} matches no written version")
                checked[0] += len(found.ids)

    threads = [threading.Thread(target=writer, args=(p, p)) for p in range(partitions)]
    threads += [threading.Thread(target=reader, args=(10 + r,)) for r in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    index.wait_for_rebuilds(30)
    assert not errors, errors[:5]
    assert checked[0] > 1000
    assert index.stats().live > 0
    index.close()


def test_batched_results_are_array_backed_and_read_like_a_list(rng: np.random.Generator) -> None:
    index, vectors = filled(rng, n=50, partitions=1)
    batch = index.search_batch(vectors[:4], 3)
    assert len(batch) == 4
    assert batch.ids.shape == batch.distances.shape == (4, 3)
    assert [n.ids[0] for n in batch] == ["i0", "i1", "i2", "i3"]
    assert [n.ids for n in batch[1:3]] == [batch[1].ids, batch[2].ids]
    assert batch[-1].ids == batch[3].ids


def test_a_search_never_queues_behind_another_requests_shards(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault: every graph's filtered search is stuck (a costly filtered batch) until
    # released; two such batches hold their calling threads and every pool thread.
    index, vectors = filled(rng, graph="partition", fan_out_min_s=0.0)
    index.search(vectors[0], 10)  # a measured search time: later ones fan out to the pool
    release = threading.Event()
    stuck: list[int] = []
    for shard in index._shards:
        original = shard.graph.search

        def search(*args: object, _original=original):  # type: ignore[no-untyped-def]
            if args[3] is not None:  # (queries, k, ef, filter, threads)
                stuck.append(1)
                release.wait(30)
            return _original(*args)

        monkeypatch.setattr(shard.graph, "search", search)
    costly = [
        threading.Thread(
            target=index.search_batch,
            args=(vectors[:64], 10),
            kwargs={"filter": Filter.of(even=True)},
        )
        for _ in range(2)
    ]
    for thread in costly:
        thread.start()
    wait_for(lambda: len(stuck) == 6, message="2 calling threads and 4 pool threads stuck")
    answered = threading.Event()

    def plain_search() -> None:
        index.search(vectors[1], 10)
        answered.set()

    plain = threading.Thread(target=plain_search)
    plain.start()
    try:
        assert answered.wait(5), "a plain search waited for the stuck batch's pool threads"
    finally:
        release.set()
        for thread in [*costly, plain]:
            thread.join()
        index.close()


def test_each_shard_searches_with_the_ef_scaled_by_the_root_of_its_share(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors = filled(rng, graph="partition", n=400, partitions=4, fan_out_min_s=10.0)
    spies = []
    for shard in index.shards:
        spy = KnnSpy(shard.graph.graph.index)
        monkeypatch.setattr(shard.graph.graph, "index", spy)
        spies.append(spy)
    index.search(vectors[0], 5, ef=64)
    sizes = [len(s) for s in index.shards]
    expected = [min(max(5, math.ceil(64 * math.sqrt(n / 400))), n) for n in sizes]
    assert [spy.asked for spy in spies] == [[e] for e in expected]
    assert all(e < 64 for e in expected)
    index.close()


def test_a_partition_sets_shards_search_with_the_ef_one_index_of_every_partition_gives_them(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cluster's live count (``total_live``, sent by the router), a node holding
    partitions 1 and 3 asks each shard for the ef the single node asks it for."""
    full, vectors = filled(rng, graph="partition", n=400, partitions=4, fan_out_min_s=10.0)
    owned = ShardedIndex(IndexConfig(dim=8, fan_out_min_s=10.0, graph="partition"), 4, owned=(1, 3))
    batches: dict[int, list[Mutation]] = {}
    for j, vector in enumerate(vectors):
        partition = partition_for(f"i{j}", 4)
        if partition in owned.owned:
            batches.setdefault(partition, []).append(Mutation.upsert(f"i{j}", vector, j))
    owned.apply_many(batches, {p: len(b) for p, b in batches.items()})
    spies: dict[tuple[str, int], KnnSpy] = {}
    for name, index in (("full", full), ("owned", owned)):
        for shard in index.shards:
            spy = spies[name, shard.partition] = KnnSpy(shard.graph.graph.index)
            monkeypatch.setattr(shard.graph.graph, "index", spy)

    full.search(vectors[0], 5, ef=64)
    owned.search(vectors[0], 5, ef=64, total_live=len(full))
    own_share = owned.search(vectors[0], 5, ef=64)

    for p in (1, 3):
        single, routed = spies["full", p].asked[0], spies["owned", p].asked[0]
        assert routed == single, f"partition {p}"
        assert spies["owned", p].asked[1] > single, "scaled by the node's own share: more work"
    assert len(own_share.ids) == 5
    full.close()
    owned.close()


def test_the_scaled_ef_is_the_full_ef_for_one_shard_and_never_below_one() -> None:
    assert shard_ef(64, 9000, 9000) == 64
    assert shard_ef(64, 2250, 9000) == 32
    assert shard_ef(20, 1, 10**6) == 1
    assert shard_ef(64, 0, 0) == 64


def test_an_index_of_a_partition_set_holds_and_answers_only_its_partitions(
    rng: np.random.Generator,
) -> None:
    index = ShardedIndex(IndexConfig(dim=8), 4, owned=(1, 3))
    vectors = unit_vectors(rng, 2, 8)
    index.apply(3, [Mutation.upsert("x", vectors[0], 1)], next_offset=2)
    index.apply(1, [Mutation.upsert("y", vectors[1], 1)], next_offset=5)
    assert (index.partitions, index.owned) == (4, (1, 3))
    assert [s.partition for s in index.stats().shards] == [1, 3]
    assert index.next_offsets() == {1: 5, 3: 2}
    assert index.search(vectors[0], 2).ids == ["x", "y"]
    assert index.get("y") is not None and index.get("y").partition == 1  # type: ignore[union-attr]
    with pytest.raises(IndexStoreError, match=r"partitions held, \[1, 3\]. Received: partition=0"):
        index.apply(0, [])


def test_owned_partitions_must_be_distinct_ascending_and_below_the_partition_count() -> None:
    for owned in [(), (2, 1), (1, 1), (4,)]:
        with pytest.raises(IndexStoreError, match="Invalid value for `owned`"):
            ShardedIndex(IndexConfig(dim=8), 4, owned=owned)


def test_a_search_capped_to_one_thread_searches_every_shard_in_the_calling_thread(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors = filled(rng, graph="partition", n=400, partitions=4, fan_out_min_s=0.0)
    index.search_batch(vectors[:8], 5)  # a measured search time: later batches fan out
    calls: list[tuple[int, int]] = []
    for shard in index.shards:
        graph = shard.graph.graph.index

        class Spy(KnnSpy):
            def knn_query(self, data: np.ndarray, k: int, num_threads: int) -> object:
                calls.append((threading.get_ident(), num_threads))
                return super().knn_query(data, k, num_threads)

        monkeypatch.setattr(shard.graph.graph, "index", Spy(graph))
    capped = index.search_batch(vectors[:8], 5, threads=1)
    assert calls == [(threading.get_ident(), 1)] * 4
    calls.clear()
    uncapped = index.search_batch(vectors[:8], 5)
    assert len({ident for ident, _ in calls}) > 1, "an uncapped batch fans out to the pool"
    assert [list(n.ids) for n in capped] == [list(n.ids) for n in uncapped]
    with pytest.raises(IndexStoreError, match="threads ≥ 1"):
        index.search_batch(vectors[:1], 5, threads=0)


def test_a_search_that_must_not_wait_refuses_to_hand_shards_to_threads(
    rng: np.random.Generator,
) -> None:
    index, _ = filled(rng, graph="partition", fan_out_min_s=0.0)  # every search is worth threads
    queries = unit_vectors(rng, 2, 8)
    index.search_batch(queries, 5)  # measures a search time above 0
    with no_waiting(), pytest.raises(WouldBlockError, match="threads"):
        index.search_batch(queries, 5)
    # The calling thread's single-query path needs no other thread.
    cheap, _ = filled(rng, graph="partition", fan_out_min_s=10.0)
    with no_waiting():
        found = cheap.search(queries[0], 5)
    assert found.ids == cheap.search(queries[0], 5).ids and len(found.ids) == 5
    index.close()
    cheap.close()


# --- the node layout: one graph for every shard ------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_in_the_node_layout_a_query_is_one_graph_search_whatever_the_partition_count(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    index, vectors = filled(rng, n=400, partitions=partitions, graph="node", ef_search=400)
    assert len(index.graphs) == 1
    assert all(s.graph is index.graphs[0] for s in index.shards)
    assert index.graph_mates(0) == tuple(range(partitions))
    graph = index.graphs[0].graph
    spy = KnnSpy(graph.index)
    monkeypatch.setattr(graph, "index", spy)
    queries = unit_vectors(rng, 8, 8)
    single = index.search(queries[0], 10)
    batch = index.search_batch(queries, 10)
    assert spy.asked == [400, 400], "one knn_query per search, at the whole index's ef"
    # A node holding a quarter of the cluster's items searches at the ef scaled to it.
    spy.asked.clear()
    index.search(queries[0], 10, ef=400, total_live=4 * len(index))
    index.search_batch(queries[:1], 10, ef=400, total_live=4 * len(index))
    assert spy.asked == [200, 200]
    for query, found in zip(queries, batch, strict=True):
        order = np.argsort(distances("cosine", query, vectors))[:10]
        assert found.ids == [f"i{j}" for j in order]
    assert single.ids == batch[0].ids
    index.close()


def nearest_with_label_3(query: np.ndarray, vectors: np.ndarray) -> list[str]:
    """The ids of the 10 items of `filled` with label 3 nearest ``query``, by brute force."""
    passing = [j for j in range(len(vectors)) if j % 5 == 3]
    d = distances("cosine", query, vectors[passing])
    return [f"i{passing[j]}" for j in np.argsort(d)[:10]]


def test_in_the_node_layout_a_filtered_search_spans_every_shard(
    rng: np.random.Generator,
) -> None:
    index, vectors = filled(rng, n=400, partitions=4, graph="node", exact_filter_limit=0)
    queries = unit_vectors(rng, 5, 8)
    found = index.search_batch(queries, 10, ef=400, filter=Filter.of(labels=3))
    for query, hits in zip(queries, found, strict=True):
        assert hits.ids == nearest_with_label_3(query, vectors)
    owners = {partition_for(f"i{j}", 4) for j in range(3, 200, 5)}
    assert len(owners) > 1, "the passing items are spread over shards"
    index.close()


def test_in_the_node_layout_writes_to_each_partition_land_in_its_shard(
    rng: np.random.Generator,
) -> None:
    index = ShardedIndex(IndexConfig(dim=8, graph="node"), 3)
    v = unit_vectors(rng, 3, 8)
    index.apply(2, [Mutation.upsert("x", v[0], 1)], next_offset=8)
    index.apply(0, [Mutation.upsert("y", v[1], 4), Mutation.upsert("z", v[2], 5)])
    index.apply(0, [Mutation.delete("y", 6)], next_offset=3)
    assert [len(s) for s in index.shards] == [1, 0, 1]
    assert index.next_offsets() == {0: 3, 2: 8}
    item = index.get("x")
    assert item is not None and item.partition == 2
    assert index.search(v[1], 5).ids[:2] in (["z", "x"], ["x", "z"])
    # A shard searched on its own (it shares the graph) answers from its items only.
    own = index.shard(0).search(v[0][None, :], 5)
    assert [i for i in own.ids[0] if i is not None] == ["z"]
    index.close()


def test_in_the_node_layout_a_rebuild_reclaims_tombstones_of_every_shard(
    rng: np.random.Generator,
) -> None:
    index, vectors = filled(rng, n=200, partitions=4, graph="node", min_tombstones=1000)
    gone = [f"i{j}" for j in range(0, 200, 2)]
    for p in range(4):
        index.apply(
            p,
            [Mutation.delete(i, 10_000) for i in gone if partition_for(i, 4) == p],
        )
    index.shards[2].rebuild(wait=True, timeout=30)
    stats = index.stats()
    assert stats.tombstones == 0 and stats.live == 100
    assert sum(s.rebuilds for s in stats.shards) == 1
    found = index.search(vectors[1], 5, ef=200)
    assert found.ids[0] == "i1" and not set(found.ids) & set(gone)
    index.close()


def test_shards_of_a_shared_graph_are_replaced_together(rng: np.random.Generator) -> None:
    index, _ = filled(rng, n=40, partitions=2, graph="node")
    alone = ShardedIndex(IndexConfig(dim=8, graph="partition"), 2)
    with pytest.raises(IndexStoreError, match="every shard of their graphs"):
        index.replace_shard(alone.shards[0])
    fresh = ShardedIndex(IndexConfig(dim=8, graph="node"), 2)
    with pytest.raises(IndexStoreError, match="every shard of their graphs"):
        alone.replace_shard(fresh.shards[0])
    index.replace_shards(fresh.shards)
    assert len(index) == 0 and len(index.graphs) == 1
    index.close()


@pytest.mark.parametrize(("limit", "exact"), [(20, True), (19, False)])
def test_a_shared_graph_answers_a_filter_exactly_up_to_the_limit_times_its_shards(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, limit: int, exact: bool
) -> None:
    # 80 of the 400 items pass (label 3); 4 shards share the graph: exact up to 4 × 20.
    index, vectors = filled(rng, n=400, partitions=4, graph="node", exact_filter_limit=limit)
    graph = index.graphs[0].graph
    spy = KnnSpy(graph.index)
    monkeypatch.setattr(graph, "index", spy)
    query = unit_vectors(rng, 1, 8)[0]
    found = index.search(query, 10, ef=400, filter=Filter.of(labels=3))
    assert (spy.asked == []) is exact
    assert found.ids == nearest_with_label_3(query, vectors)
    index.close()


def test_in_a_shared_graph_a_partition_cannot_write_or_delete_another_partitions_item(
    rng: np.random.Generator,
) -> None:
    index = ShardedIndex(IndexConfig(dim=8, graph="node"), 2)
    v = unit_vectors(rng, 2, 8)
    index.apply(0, [Mutation.upsert("x", v[0], 5)])
    # The same id read from another partition (a producer that did not key by id):
    result = index.apply(1, [Mutation.upsert("x", v[1], 9)])
    assert result.upserted == 0
    assert [i for i, _ in result.rejected] == ["x"]
    assert "another partition" in result.rejected[0][1]
    index.apply(1, [Mutation.delete("x", 10)])
    item = index.get("x")
    assert item is not None and item.partition == 0
    np.testing.assert_allclose(item.vector, v[0], atol=1e-6)
    assert index.search(v[0], 1).ids == ["x"]
    assert [len(s) for s in index.shards] == [1, 0] and index.graphs[0].live == 1
    index.close()
