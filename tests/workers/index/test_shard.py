from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simstream.errors import IndexStoreError
from tests.workers.index.helpers import KnnSpy, Model, distances, unit_vectors
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.graph import Graph, Insert
from workers.index.record import Mutation
from workers.index.shard import Shard


def search_one(shard: Shard, query: np.ndarray, k: int, **kwargs: object) -> list[str]:
    ids, _, _ = shard.search(query[None, :].astype(np.float32), k, **kwargs)  # type: ignore[arg-type]
    return [i for i in ids[0].tolist() if i is not None]


# --- upserts, deletes and source offsets ----------------------------------------------


def test_an_upsert_of_a_new_id_adds_it(small_config: IndexConfig, rng: np.random.Generator) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 1, 8)[0]
    result = shard.apply([Mutation.upsert("a", v, 1, label=3, metadata={"k": "v"})])
    assert result.upserted == 1
    item = shard.get("a")
    assert item is not None
    np.testing.assert_allclose(item.vector, v, atol=1e-6)
    assert (item.label, dict(item.metadata), item.source_offset) == (3, {"k": "v"}, 1)
    assert shard.stats().live == 1


def test_an_upsert_of_an_existing_id_replaces_its_vector_under_a_new_slot(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    old, new = unit_vectors(rng, 2, 8)
    shard.apply([Mutation.upsert("a", old, 1)])
    shard.apply([Mutation.upsert("a", new, 2, label="x")])
    item = shard.get("a")
    assert item is not None
    np.testing.assert_allclose(item.vector, new, atol=1e-6)
    assert item.label == "x"
    assert (shard.stats().live, shard.stats().tombstones) == (1, 1)
    assert search_one(shard, old, 5) == ["a"]


def test_an_event_older_than_the_held_one_is_ignored(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    new, old = unit_vectors(rng, 2, 8)
    shard.apply([Mutation.upsert("a", new, 10)])
    result = shard.apply([Mutation.upsert("a", old, 9), Mutation.upsert("a", old, 10)])
    assert result.stale == 2
    assert not result.changed
    item = shard.get("a")
    assert item is not None
    np.testing.assert_allclose(item.vector, new, atol=1e-6)


def test_a_delete_is_remembered_so_an_older_upsert_arriving_later_does_not_resurrect(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 1, 8)[0]
    shard.apply([Mutation.upsert("a", v, 1)])
    shard.apply([Mutation.delete("a", 5)])
    assert shard.apply([Mutation.upsert("a", v, 4)]).stale == 1
    assert shard.get("a") is None
    assert search_one(shard, v, 3) == []
    assert shard.stats().delete_markers == 1


def test_at_one_source_offset_an_upsert_beats_a_delete_in_either_order(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    """A dead-lettered event leaves a delete at its offset; embedding it later (a replay)
    writes an upsert at the same offset, which must stand, and a late copy of the
    delete must not undo it."""
    shard = Shard(small_config)
    v = unit_vectors(rng, 1, 8)[0]
    shard.apply([Mutation.upsert("a", v, 1)])
    shard.apply([Mutation.delete("a", 7)])
    assert shard.get("a") is None

    assert shard.apply([Mutation.upsert("a", v, 7)]).upserted == 1
    item = shard.get("a")
    assert item is not None and item.source_offset == 7

    assert shard.apply([Mutation.delete("a", 7)]).stale == 1
    assert shard.get("a") is not None
    assert shard.apply([Mutation.upsert("a", v, 7)]).stale == 1  # the same upsert again


def test_a_delete_of_an_unknown_id_still_blocks_older_upserts(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 1, 8)[0]
    shard.apply([Mutation.delete("ghost", 7)])
    shard.apply([Mutation.upsert("ghost", v, 6)])
    assert shard.get("ghost") is None
    shard.apply([Mutation.upsert("ghost", v, 8)])
    assert shard.get("ghost") is not None
    assert shard.stats().delete_markers == 0


def test_only_the_final_state_of_an_id_in_a_batch_reaches_the_graph(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    a, b, c = unit_vectors(rng, 3, 8)
    shard.apply(
        [Mutation.upsert("x", a, 1), Mutation.upsert("x", b, 2), Mutation.upsert("x", c, 3)]
    )
    assert shard.stats().tombstones == 0
    item = shard.get("x")
    assert item is not None
    np.testing.assert_allclose(item.vector, c, atol=1e-6)


def test_invalid_records_are_rejected_with_a_reason_and_the_rest_applied(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    good = unit_vectors(rng, 1, 8)[0]
    result = shard.apply(
        [
            Mutation.upsert("short", [1.0, 2.0], 1),
            Mutation.upsert("nan", [float("nan")] * 8, 2),
            Mutation.upsert("zero", [0.0] * 8, 3),
            Mutation("none", "upsert", 4, None),
            Mutation("odd", "merge", 5, good),
            Mutation.upsert("text", "not numbers", 6),  # type: ignore[arg-type]
            Mutation.upsert("good", good, 7),
        ]
    )
    reasons = dict(result.rejected)
    assert set(reasons) == {"short", "nan", "zero", "none", "odd", "text"}
    assert "expected 8" in reasons["short"]
    assert "NaN" in reasons["nan"]
    assert "zero vector" in reasons["zero"]
    assert "upsert or delete" in reasons["odd"]
    assert result.upserted == 1
    assert len(shard) == 1


def test_a_zero_vector_is_accepted_outside_the_cosine_space(rng: np.random.Generator) -> None:
    shard = Shard(IndexConfig(dim=4, space="l2"))
    assert shard.apply([Mutation.upsert("z", [0.0] * 4, 1)]).upserted == 1


def test_capacity_grows_before_it_is_full(rng: np.random.Generator) -> None:
    shard = Shard(IndexConfig(dim=8, initial_capacity=4))
    vectors = unit_vectors(rng, 100, 8)
    for i in range(0, 100, 7):
        shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(i, min(i + 7, 100))])
    stats = shard.stats()
    assert stats.live == 100
    assert stats.capacity >= 100


def test_the_next_offset_given_with_a_batch_is_kept(small_config: IndexConfig) -> None:
    shard = Shard(small_config)
    assert shard.next_offset is None
    shard.apply([], next_offset=42)
    assert shard.next_offset == 42


# --- searches --------------------------------------------------------------------------


def test_a_query_for_more_than_the_live_count_returns_what_exists(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    vectors = unit_vectors(rng, 5, 8)
    shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(5)])
    shard.apply([Mutation.delete("i0", 10), Mutation.delete("i1", 11)])
    ids, dists, _ = shard.search(vectors[:2], 50)
    assert ids.shape == (2, 3)
    assert all(sorted(row) == ["i2", "i3", "i4"] for row in ids.tolist())
    assert np.all(np.diff(dists, axis=1) >= 0)


def test_an_empty_shard_returns_no_results(small_config: IndexConfig) -> None:
    ids, dists, _ = Shard(small_config).search(np.ones((3, 8), dtype=np.float32), 10)
    assert ids.shape == (3, 0)
    assert dists.shape == (3, 0)


def test_hnswlib_falling_short_of_k_is_answered_exactly(
    small_config: IndexConfig, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = Shard(small_config)
    vectors = unit_vectors(rng, 20, 8)
    shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(20)])
    index = shard.graph.graph.index

    class Failing:
        """Fault injection: hnswlib's "contiguous 2D array" error on every query."""

        def __getattr__(self, name: str) -> object:
            return getattr(index, name)

        def knn_query(self, *args: object, **kwargs: object) -> object:
            raise RuntimeError("Cannot return the results in a contiguous 2D array.")

    monkeypatch.setattr(shard.graph.graph, "index", Failing())
    ids, dists, _ = shard.search(vectors[:3], 4)
    for row, query in enumerate(vectors[:3]):
        d = distances("cosine", query, vectors)
        expected = [f"i{j}" for j in np.argsort(d)[:4]]
        assert ids[row].tolist() == expected
        np.testing.assert_allclose(dists[row], np.sort(d)[:4], atol=1e-5)


def labelled_shard(rng: np.random.Generator, config: IndexConfig) -> tuple[Shard, np.ndarray]:
    shard = Shard(config)
    vectors = unit_vectors(rng, 300, 8)
    shard.apply(
        [
            Mutation.upsert(
                f"i{j}", vectors[j], j, label=j % 10, metadata={"color": ["red", "blue"][j % 2]}
            )
            for j in range(300)
        ]
    )
    return shard, vectors


@pytest.mark.parametrize("exact_filter_limit", [0, 10_000], ids=["over-fetch", "brute-force"])
def test_filters_on_label_and_metadata_return_the_nearest_matching_items(
    rng: np.random.Generator, exact_filter_limit: int
) -> None:
    config = IndexConfig(dim=8, ef_search=400, exact_filter_limit=exact_filter_limit)
    shard, vectors = labelled_shard(rng, config)
    flt = Filter.of(labels=[3, 4], color="red")
    query = vectors[0]
    found = search_one(shard, query, 10, filter=flt)
    matching = [j for j in range(300) if j % 10 in (3, 4) and j % 2 == 0]
    d = distances("cosine", query, vectors[matching])
    assert found == [f"i{matching[j]}" for j in np.argsort(d)[:10]]


def test_a_metadata_only_filter_grows_its_fetch_until_k_items_match(
    rng: np.random.Generator,
) -> None:
    shard, vectors = labelled_shard(rng, IndexConfig(dim=8, ef_search=400, exact_filter_limit=0))
    shard.apply([Mutation.upsert("rare", vectors[5], 1000, metadata={"color": "green"})])
    assert search_one(shard, vectors[0], 5, filter=Filter.of(color="green")) == ["rare"]


def test_a_filter_that_nothing_matches_returns_nothing(rng: np.random.Generator) -> None:
    shard, vectors = labelled_shard(rng, IndexConfig(dim=8))
    assert search_one(shard, vectors[0], 5, filter=Filter.of(labels=["none"])) == []
    assert search_one(shard, vectors[0], 5, filter=Filter.of(color=1)) == []


def test_a_query_with_another_ef_searches_with_that_beam_and_changes_no_shared_state(
    small_config: IndexConfig, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = Shard(small_config)
    vectors = unit_vectors(rng, 300, 8)
    shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(300)])
    index = shard.graph.graph.index
    spy = KnnSpy(index)
    monkeypatch.setattr(shard.graph.graph, "index", spy)
    assert search_one(shard, vectors[7], 1, ef=200) == ["i7"]
    assert search_one(shard, vectors[8], 1) == ["i8"]
    assert search_one(shard, vectors[9], 40, ef=5)[0] == "i9"
    # hnswlib's beam is max(its ef, k): asking for max(k, ef) results is a search at ef.
    assert spy.asked == [200, small_config.ef_search, 40]
    assert index.ef == 1


# --- the model: any sequence of upserts and deletes -----------------------------------

operation = st.tuples(
    st.sampled_from(["upsert", "upsert", "delete"]),
    st.integers(0, 11),  # item id
    st.integers(0, 40),  # source offset (repeats and disorder included)
    st.integers(0, 2**32 - 1),  # vector seed
)


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(operation, max_size=8), min_size=1, max_size=6))
def test_any_sequence_of_upserts_and_deletes_matches_the_brute_force_model(
    space: str, batches: list[list[tuple[str, int, int, int]]]
) -> None:
    config = IndexConfig(
        dim=6,
        space=space,  # type: ignore[arg-type]
        m=16,
        ef_construction=64,
        initial_capacity=2,
        min_tombstones=3,
    )
    shard = Shard(config)
    model = Model()
    for batch in batches:
        records = []
        for op, number, offset, seed in batch:
            if op == "delete":
                records.append(Mutation.delete(f"id{number}", offset))
            else:
                vector = np.random.default_rng(seed).standard_normal(6).astype(np.float32)
                records.append(Mutation.upsert(f"id{number}", vector, offset, label=number % 3))
        shard.apply(records)
        for record in records:
            model.apply(record)
        # Sums are kept once asked: every batch must forget those of the labels it touched.
        assert_label_sums(shard, model, space)
    shard.wait_for_rebuild(10)
    assert {i for i in model.live} == set(shard._entries)
    for item_id, (offset, vector, label, _) in model.live.items():
        item = shard.get(item_id)
        assert item is not None
        assert (item.source_offset, item.label) == (offset, label)
        stored = vector / np.linalg.norm(vector) if space == "cosine" else vector
        np.testing.assert_allclose(item.vector, stored, rtol=1e-5, atol=1e-5)
    n = len(model.live)
    queries = np.random.default_rng(len(batches)).standard_normal((3, 6)).astype(np.float32)
    for k in {1, 3, max(n, 1)}:
        ids, dists, _ = shard.search(queries, k, ef=max(n, 1) + 10)
        for row, query in enumerate(queries):
            # Equal to exact search up to ties (hypothesis likes equal vectors).
            expected_ids, expected_d = model.exact(space, query, k)
            found = ids[row].tolist()
            assert len(found) == len(set(found)) == len(expected_ids)
            np.testing.assert_allclose(dists[row], expected_d, rtol=1e-4, atol=1e-4)
            for item_id, dist in zip(found, dists[row], strict=True):
                true = distances(space, query, model.live[item_id][1][None, :])[0]
                assert true == pytest.approx(dist, rel=1e-4, abs=1e-4)
    shard.close()


def assert_label_sums(shard: Shard, model: Model, space: str) -> None:
    """The shard's label sums equal the model's stored vectors summed per label."""
    expected: dict[str, tuple[np.ndarray, int]] = {}
    for _, vector, label, _ in model.live.values():
        stored = vector / np.linalg.norm(vector) if space == "cosine" else vector
        total, size = expected.get(str(label), (np.zeros(len(vector)), 0))
        expected[str(label)] = (total + stored, size + 1)
    found = shard.label_sums(["0", "1", "2", "absent"])
    assert set(found) == set(expected)
    for label, (total, size) in expected.items():
        assert found[label].size == size
        np.testing.assert_allclose(found[label].total, total, rtol=1e-5, atol=1e-5)


def test_label_sums_join_string_and_integer_labels_and_survive_a_restore(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 4, 8)
    shard.apply(
        [
            Mutation.upsert("a", v[0], 1, label=7),
            Mutation.upsert("b", v[1], 2, label="7"),
            Mutation.upsert("c", v[2], 3, label="07"),
            Mutation.upsert("d", v[3], 4),
        ]
    )

    sums = shard.label_sums(["7", "07", "None"])
    copy = Shard.restore(small_config, 0, shard.graph.graph.index, shard._state())

    assert set(sums) == {"7", "07"}  # an unlabelled item is nobody's
    assert (sums["7"].size, sums["07"].size) == (2, 1)
    np.testing.assert_allclose(sums["7"].total, v[0] + v[1], rtol=1e-6, atol=1e-6)
    restored = copy.label_sums(["7"])
    np.testing.assert_allclose(restored["7"].total, sums["7"].total, rtol=1e-6)


# --- background rebuild ---------------------------------------------------------------


def test_a_rebuild_starts_when_tombstones_pass_the_threshold_and_keeps_every_live_item(
    rng: np.random.Generator,
) -> None:
    shard = Shard(IndexConfig(dim=8, tombstone_ratio=0.2, min_tombstones=10))
    vectors = unit_vectors(rng, 200, 8)
    shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(200)])
    shard.apply([Mutation.delete(f"i{j}", 1000 + j) for j in range(30)])
    assert shard.stats().tombstones == 30
    shard.apply([Mutation.delete(f"i{j}", 1000 + j) for j in range(30, 60)])
    assert shard.wait_for_rebuild(10)
    stats = shard.stats()
    assert (stats.live, stats.tombstones, stats.rebuilds) == (140, 0, 1)
    for j in range(60, 200):
        assert search_one(shard, vectors[j], 1) == [f"i{j}"]
    ids, dists, _ = shard.search(vectors[:1], 200, ef=300)
    d = distances("cosine", vectors[0], vectors[60:])
    order = np.argsort(d)
    assert ids[0].tolist() == [f"i{60 + j}" for j in order]
    np.testing.assert_allclose(dists[0], d[order], atol=1e-5)
    assert len(search_one(shard, vectors[0], 500, ef=500)) == 140


def test_writes_during_a_background_rebuild_are_not_lost(rng: np.random.Generator) -> None:
    config = IndexConfig(dim=16, ef_construction=100, min_tombstones=1)
    shard = Shard(config)
    base = unit_vectors(rng, 2000, 16)
    shard.apply([Mutation.upsert(f"i{j}", base[j], j) for j in range(2000)])
    model = Model()
    for j in range(2000):
        model.apply(Mutation.upsert(f"i{j}", base[j], j))
    fresh = unit_vectors(rng, 40_000, 16)
    shard.rebuild(wait=False)
    offset = 10_000
    during = 0
    j = 0
    while shard.stats().rebuilding or during == 0:
        batch = []
        for _ in range(20):
            offset += 1
            kind = j % 3
            if kind == 0:
                batch.append(Mutation.upsert(f"new{j}", fresh[j % 40_000], offset))
            elif kind == 1:
                batch.append(Mutation.upsert(f"i{j % 2000}", fresh[j % 40_000], offset))
            else:
                batch.append(Mutation.delete(f"i{(j * 13) % 2000}", offset))
            j += 1
        shard.apply(batch)
        for record in batch:
            model.apply(record)
        during += shard.stats().rebuilding
        if j >= 40_000:
            break
    assert shard.wait_for_rebuild(30)
    assert during > 0, "no batch was applied while the rebuild ran"
    assert shard.stats().rebuilds >= 1
    assert set(shard._entries) == set(model.live)
    assert set(shard.graph.graph.slot_of) == set(model.live)
    for item_id, (_, vector, _, _) in list(model.live.items())[::50]:
        item = shard.get(item_id)
        assert item is not None
        np.testing.assert_allclose(item.vector, vector / np.linalg.norm(vector), atol=1e-5)
        assert item_id in search_one(shard, vector, 3)


def test_searches_run_while_a_rebuild_is_swapped_in(rng: np.random.Generator) -> None:
    shard = Shard(IndexConfig(dim=8, min_tombstones=1))
    vectors = unit_vectors(rng, 2000, 8)
    shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(2000)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                j = int(rng.integers(0, 2000))
                assert search_one(shard, vectors[j], 1, ef=64)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    shard.rebuild(wait=True, timeout=30)
    stop.set()
    t.join(10)
    assert not errors
    assert shard.stats().rebuilds == 1


@pytest.mark.parametrize("others", [1, 200], ids=["calling-thread", "helper-thread"])
def test_a_failed_hnswlib_insert_leaves_the_shard_as_it_was(
    small_config: IndexConfig,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    others: int,
) -> None:
    # A small batch inserts in the calling thread, a large one on a helper thread.
    shard = Shard(small_config)
    vectors = unit_vectors(rng, 2 + others, 8)
    shard.apply([Mutation.upsert("a", vectors[0], 1, label=1)])

    def fail(self: Graph, *args: object) -> None:
        raise MemoryError("injected")

    monkeypatch.setattr(Graph, "insert", fail)
    batch = [Mutation.upsert("a", vectors[1], 2)]
    batch += [Mutation.upsert(f"b{j}", vectors[2 + j], 3 + j) for j in range(others)]
    before = shard.label_sums(["1"])["1"]  # kept: the failed batch must forget it
    with pytest.raises(IndexStoreError, match="injected"):
        shard.apply(batch)
    assert shard.label_sums(["1"])["1"].total.tolist() == before.total.tolist()
    item = shard.get("a")
    assert item is not None
    assert (item.source_offset, item.label, len(shard)) == (1, 1, 1)
    assert set(shard.graph.graph.slot_of) == {"a"}
    assert search_one(shard, vectors[0], 5) == ["a"]


# --- bounded filtered searches --------------------------------------------------------


@pytest.fixture(scope="module")
def big_shard() -> tuple[Shard, np.ndarray]:
    """20,000 items: label a/red or b/blue, east or west (by their first coordinate), and 5
    of them ``rare``."""
    config = IndexConfig(dim=8, m=8, ef_construction=32, filter_fetch_limit=256)
    shard = Shard(config)
    vectors = unit_vectors(np.random.default_rng(7), 20_000, 8)
    rare = {j * 3_999 for j in range(5)}
    shard.apply(
        [
            Mutation.upsert(
                f"i{j}",
                vectors[j],
                j,
                label="a" if j % 2 else "b",
                metadata={
                    "color": "red" if j % 2 else "blue",
                    "side": "east" if vectors[j, 0] > 0 else "west",
                    **({"rare": 1} if j in rare else {}),
                },
            )
            for j in range(20_000)
        ]
    )
    return shard, vectors


@pytest.fixture
def spied(
    big_shard: tuple[Shard, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> tuple[Shard, np.ndarray, KnnSpy]:
    """The big shard with its hnswlib index spied on."""
    shard, vectors = big_shard
    spy = KnnSpy(shard.graph.graph.index)
    monkeypatch.setattr(shard.graph.graph, "index", spy)
    return shard, vectors, spy


def test_a_filter_whose_constraints_never_intersect_is_answered_without_a_graph_search(
    spied: tuple[Shard, np.ndarray, KnnSpy],
) -> None:
    shard, vectors, spy = spied
    # Each constraint alone matches 10,000 items; together none.
    ids, dists, exhaustive = shard.search(
        vectors[:256], 20, filter=Filter.of(labels=["a"], color="blue")
    )
    assert spy.asked == []
    assert ids.tolist() == [[None] * 20] * 256
    assert np.isinf(dists).all()
    assert exhaustive.all()


def test_a_filter_no_near_item_passes_fetches_at_most_the_cap_and_says_it_is_not_exhaustive(
    spied: tuple[Shard, np.ndarray, KnnSpy],
) -> None:
    shard, _, spy = spied
    # 10,000 items pass, all in the half of the sphere away from the queries.
    queries = np.zeros((64, 8), dtype=np.float32)
    queries[:, 0] = 1.0
    ids, dists, exhaustive = shard.search(queries, 20, filter=Filter.of(side="west"))
    assert spy.asked and max(spy.asked) <= shard.config.filter_fetch_limit
    assert ids.tolist() == [[None] * 20] * 64
    assert np.isinf(dists).all()
    assert exhaustive.tolist() == [False] * 64


def test_a_filter_on_a_value_no_item_holds_returns_nothing_without_searching_the_graph(
    spied: tuple[Shard, np.ndarray, KnnSpy],
) -> None:
    shard, vectors, spy = spied
    ids, _, exhaustive = shard.search(vectors[:256], 20, filter=Filter.of(nope=1))
    assert spy.asked == []
    assert ids.tolist() == [[None] * 20] * 256
    assert exhaustive.all()


def test_a_selective_filter_is_answered_exactly_from_its_posting_list(
    spied: tuple[Shard, np.ndarray, KnnSpy],
) -> None:
    shard, vectors, spy = spied
    rare = [j * 3_999 for j in range(5)]
    queries = vectors[100:104]
    ids, dists, exhaustive = shard.search(queries, 10, filter=Filter.of(rare=1.0))
    assert spy.asked == []
    for row, query in enumerate(queries):
        d = distances("cosine", query, vectors[rare])
        order = np.argsort(d, kind="stable")
        assert ids[row, :5].tolist() == [f"i{rare[j]}" for j in order]
        np.testing.assert_allclose(dists[row, :5], d[order], atol=1e-5)
        assert ids[row, 5:].tolist() == [None] * 5
    assert exhaustive.all()


def test_posting_lists_follow_upserts_deletes_and_a_restore(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 3, 8)
    shard.apply(
        [
            Mutation.upsert("a", v[0], 1, metadata={"c": "red", "tags": [1, {"x": True}]}),
            Mutation.upsert("b", v[1], 2, metadata={"c": "red"}),
            Mutation.upsert("c", v[2], 3, label=4, metadata={"c": 1}),
        ]
    )
    shard.apply([Mutation.upsert("a", v[0], 4, metadata={"c": "blue"}), Mutation.delete("b", 5)])

    def found(flt: Filter) -> list[str]:
        return search_one(shard, v[0], 5, filter=flt)

    assert found(Filter.of(c="red")) == []
    assert found(Filter.of(c="blue")) == ["a"]
    assert found(Filter.of(c=1.0)) == ["c"]
    assert found(Filter.of(c=True)) == found(Filter.of(c="1")) == []
    assert found(Filter.of(labels=[4], c=1)) == ["c"]
    copy = Shard.restore(small_config, 0, shard.graph.graph.index, shard._state())
    assert copy._postings.matching(Filter.of(c="blue")) == ({"a"}, True)
    assert copy._postings.matching(Filter.of(labels=[4])) == ({"c"}, True)


def test_constraints_the_postings_cannot_look_up_are_checked_item_by_item(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 4, 8)
    nan = float("nan")
    shard.apply(
        [
            Mutation.upsert("a", v[0], 1, label=1, metadata={"x": b"1", "y": nan}),
            Mutation.upsert("b", v[1], 2, label=1, metadata={"x": 1, "y": nan}),
            Mutation.upsert("c", v[2], 3, label=2, metadata={"x": 1}),
            Mutation.upsert("d", v[3], 4, label=1, metadata={"z": nan}),
        ]
    )

    def found(flt: Filter) -> set[str]:
        return set(search_one(shard, v[0], 5, filter=flt))

    assert found(Filter.of(x=1)) == {"b", "c"}  # "x" holds a value that is not JSON
    assert found(Filter.of(labels=[1], x=1)) == {"b"}
    # NaN equals nothing, not even the very same NaN object.
    assert found(Filter.of(y=nan)) == found(Filter.of(z=nan)) == set()
    assert found(Filter.of(labels=[1], z=nan)) == set()


# --- a failed batch -------------------------------------------------------------------


def test_a_failed_resize_releases_the_write_lock_and_marks_the_shard_unhealthy(
    small_config: IndexConfig, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = Shard(small_config.with_(initial_capacity=4))
    vectors = unit_vectors(rng, 40, 8)
    shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(4)])
    graph = shard.graph.graph

    def no_memory(n: int) -> np.ndarray:
        """Fault injection: hnswlib cannot grow the index."""
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(graph, "allocate", no_memory)
    with pytest.raises(MemoryError):
        shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(4, 40)])
    found: list[list[str]] = []
    searcher = threading.Thread(target=lambda: found.append(search_one(shard, vectors[1], 1)))
    searcher.start()
    searcher.join(5)
    assert not searcher.is_alive(), "a search hung on the lock the failed batch held"
    assert found == [["i1"]]
    assert not shard.stats().healthy
    with pytest.raises(IndexStoreError, match="unhealthy"):
        shard.apply([Mutation.upsert("late", vectors[0], 100)])


def test_no_failure_while_an_insert_is_started_leaves_the_lock_held(
    small_config: IndexConfig, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = Shard(small_config)
    vectors = unit_vectors(rng, 100, 8)  # more than a calling-thread insert takes

    def refuse(self: Insert) -> None:
        """Fault injection: the helper thread cannot start."""
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(Insert, "start", refuse)
    with pytest.raises(RuntimeError):
        shard.apply([Mutation.upsert(f"i{j}", vectors[j], j) for j in range(100)])
    searcher = threading.Thread(target=lambda: search_one(shard, vectors[0], 1))
    searcher.start()
    searcher.join(5)
    assert not searcher.is_alive()
    assert not shard.healthy


# --- delete markers -------------------------------------------------------------------


def test_delete_markers_below_the_horizon_are_forgotten_and_newer_ones_kept(
    small_config: IndexConfig, rng: np.random.Generator
) -> None:
    shard = Shard(small_config)
    v = unit_vectors(rng, 3, 8)
    shard.apply([Mutation.upsert(i, v[n], n) for n, i in enumerate("abc")])
    shard.apply([Mutation.delete("a", 10), Mutation.delete("b", 20), Mutation.delete("c", 30)])
    assert shard.prune_markers(20) == 1
    assert shard._deleted_at == {"b": 20, "c": 30}
    assert shard.stats().delete_markers == 2
    # The kept markers still refuse older upserts.
    assert shard.apply([Mutation.upsert("b", v[1], 15)]).stale == 1
    assert "b" not in shard
