"""Listing the index by pages in id order: every item once, filters, counts, restores."""

from __future__ import annotations

import threading
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from simstream.errors import IndexStoreError
from tests.waiting import wait_for
from tests.workers.index.helpers import unit_vectors
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.listing import Page
from workers.index.partitioning import partition_for
from workers.index.record import Mutation
from workers.index.shard import SCAN_BUDGET, Shard
from workers.index.sharded import ShardedIndex

DIM = 8


def upsert(index: ShardedIndex, ids: list[str], offset: int, rng: np.random.Generator) -> None:
    vectors = unit_vectors(rng, len(ids), DIM)
    batches: dict[int, list[Mutation]] = {}
    for n, item_id in enumerate(ids):
        number = int(item_id.removeprefix("i"))
        record = Mutation.upsert(
            item_id, vectors[n], offset + n, label=number % 5, metadata={"even": number % 2 == 0}
        )
        batches.setdefault(partition_for(item_id, index.partitions), []).append(record)
    index.apply_many(batches)


def scan(
    index: ShardedIndex,
    limit: int,
    flt: Filter | None = None,
    after: str | None = None,
    budget: int = SCAN_BUDGET,
) -> list[Page]:
    pages = []
    while True:
        page = index.page(after, limit, flt, budget=budget)
        pages.append(page)
        if page.after is None:
            return pages
        after = page.after


@pytest.fixture
def index(rng: np.random.Generator) -> ShardedIndex:
    index = ShardedIndex(IndexConfig(dim=DIM), 4)
    upsert(index, [f"i{j}" for j in range(400)], 0, rng)
    return index


def test_pages_list_every_item_once_in_id_order(index: ShardedIndex) -> None:
    pages = scan(index, 37)

    ids = [item.item_id for page in pages for item in page.items]
    assert ids == sorted(f"i{j}" for j in range(400))
    assert all(len(page.items) == 37 for page in pages[:-1])


def test_ids_added_ahead_of_the_cursor_are_listed_and_deleted_ones_are_not(
    index: ShardedIndex, rng: np.random.Generator
) -> None:
    first = index.page(None, 100)
    upsert(index, ["i9999", "i0"], 1000, rng)  # i0 (a new version) sorts before the cursor
    index.apply_many({partition_for("i99", 4): [Mutation.delete("i99", 2000)]})

    rest = [item.item_id for page in scan(index, 100, after=first.after) for item in page.items]
    ids = [item.item_id for item in first.items] + rest

    assert ids == sorted({f"i{j}" for j in range(400)} - {"i99"} | {"i9999"})


def test_a_scan_lists_every_item_once_while_another_thread_inserts_and_deletes(
    index: ShardedIndex, rng: np.random.Generator
) -> None:
    stop = threading.Event()
    written: list[str] = []
    deleted: list[str] = []

    def write() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            batch = [f"i{1000 + n + j}" for j in range(20)]
            upsert(index, batch, 10_000 + n, rng)
            gone = f"i{n // 5}"
            index.apply_many({partition_for(gone, 4): [Mutation.delete(gone, 100_000 + n)]})
            written.extend(batch)
            deleted.append(gone)
            n += 20

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: len(written) >= 20, 10, message="a first batch")
        ids = [item.item_id for page in scan(index, 13) for item in page.items]
    finally:
        stop.set()
        writer.join()

    original = {f"i{j}" for j in range(400)}
    assert ids == sorted(set(ids)), "each id once, in order"
    assert original - set(deleted) <= set(ids) <= original | set(written)
    assert set(written[:20]) <= set(ids), "written before the scan started"


def test_a_filtered_listing_holds_exactly_the_passing_items(index: ShardedIndex) -> None:
    flt = Filter(labels=frozenset({2, 3}), metadata={"even": True})

    ids = [item.item_id for page in scan(index, 7, flt) for item in page.items]

    expected = sorted(f"i{j}" for j in range(400) if j % 5 in (2, 3) and j % 2 == 0)
    assert ids == expected
    assert index.count(flt) == len(expected)


def test_a_scan_budget_cuts_filtered_pages_short_without_skipping_an_item(
    index: ShardedIndex,
) -> None:
    flt = Filter(metadata={"even": True})  # half the items: too many to sort per page

    pages = scan(index, 50, flt, budget=8)

    ids = [item.item_id for page in pages for item in page.items]
    assert ids == sorted(f"i{j}" for j in range(0, 400, 2))
    assert any(len(page.items) < 50 for page in pages[:-1])


def test_a_count_without_a_filter_is_every_live_item(index: ShardedIndex) -> None:
    index.apply_many({partition_for("i5", 4): [Mutation.delete("i5", 2000)]})

    assert index.count() == 399


def test_a_page_reads_vectors_only_when_asked(index: ShardedIndex) -> None:
    with_vectors = index.page(None, 3, vectors=True).items
    without = index.page(None, 3).items

    assert [len(item.vector) for item in with_vectors] == [DIM] * 3
    assert [len(item.vector) for item in without] == [0] * 3
    expected = index.get(with_vectors[0].item_id)
    assert expected is not None
    np.testing.assert_array_equal(with_vectors[0].vector, expected.vector)


def test_a_restored_shard_lists_its_items_in_order(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    config = IndexConfig(dim=DIM)
    shard = Shard(config)
    vectors = unit_vectors(rng, 50, DIM)
    shard.apply([Mutation.upsert(f"s{j}", vectors[j], j) for j in range(50)])
    with shard.frozen() as frozen:
        state = frozen.state()
        frozen.save_index(str(tmp_path / "graph.bin"))
    graph = hnswlib.Index(space=config.space, dim=DIM)
    graph.load_index(str(tmp_path / "graph.bin"))

    restored = Shard.restore(config, 0, graph, state)

    expected = sorted(f"s{j}" for j in range(50))
    assert restored.page("s1", 5).ids == expected[2:7]


def test_a_limit_below_one_is_refused(index: ShardedIndex) -> None:
    with pytest.raises(IndexStoreError, match=r"limit ≥ 1"):
        index.page(None, 0)
