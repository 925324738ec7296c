from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from simstream.errors import SnapshotError, SnapshotMismatchError
from simstream.settings import Settings
from tests.workers.index.helpers import unit_vectors
from workers.index.config import IndexConfig
from workers.index.filter import Filter
from workers.index.frozen import FrozenShard
from workers.index.partitioning import partition_for
from workers.index.record import Mutation
from workers.index.sharded import ShardedIndex
from workers.index.snapshot import MANIFEST, SnapshotStore, check_hnsw_file, hnswlib_version

CONFIG = IndexConfig(dim=8, ef_search=200, min_tombstones=1000)


def build(
    rng: np.random.Generator, n: int = 300, partitions: int = 2, graph: str = "node"
) -> ShardedIndex:
    index = ShardedIndex(CONFIG.with_(graph=graph), partitions, model_version="v1")
    vectors = unit_vectors(rng, n, 8)
    batches: dict[int, list[Mutation]] = {}
    for j in range(n):
        record = Mutation.upsert(f"i{j}", vectors[j], j, label=j % 3, metadata={"j": j})
        batches.setdefault(partition_for(record.item_id, partitions), []).append(record)
    for p, batch in batches.items():
        index.apply(p, batch, next_offset=len(batch))
    index.apply(0, [Mutation.delete(r.item_id, 10_000) for r in batches[0][:5]], next_offset=999)
    return index


@pytest.mark.parametrize("graph", ["node", "partition"])
def test_a_loaded_snapshot_answers_like_the_saved_index(
    tmp_path: Path, rng: np.random.Generator, graph: str
) -> None:
    index = build(rng, graph=graph)
    store = SnapshotStore(tmp_path, "v1")
    path = store.save(index)
    graph_files = sorted(f.name for f in path.glob("*.hnsw"))
    assert graph_files == (
        ["shard-0000.hnsw"] if graph == "node" else ["shard-0000.hnsw", "shard-0001.hnsw"]
    )
    loaded = store.load_latest(CONFIG)
    assert loaded is not None
    copy, offsets = loaded
    assert len(copy.graphs) == len(graph_files), "a snapshot keeps the layout it was saved with"
    assert offsets == index.next_offsets() == {0: 999, 1: offsets[1]}
    assert copy.epoch == index.epoch
    assert copy.stats().as_dict()["shards"] == index.stats().as_dict()["shards"]
    queries = unit_vectors(rng, 20, 8)
    assert [n.ids for n in copy.search_batch(queries, 10)] == [
        n.ids for n in index.search_batch(queries, 10)
    ]
    flt = Filter.of(labels=[1], j=4)
    assert copy.search(queries[0], 3, filter=flt).ids == ["i4"]
    original, restored = index.get("i7"), copy.get("i7")
    assert original is not None and restored is not None
    assert (restored.label, dict(restored.metadata), restored.source_offset) == (1, {"j": 7}, 7)
    np.testing.assert_allclose(restored.vector, original.vector)
    assert path.name == "snap-0000000001"


def test_delete_markers_survive_a_snapshot(tmp_path: Path, rng: np.random.Generator) -> None:
    index = build(rng)
    deleted = next(iter(index.shards[0]._deleted_at))
    store = SnapshotStore(tmp_path, "v1")
    store.save(index)
    loaded = store.load_latest(CONFIG)
    assert loaded is not None
    copy = loaded[0]
    result = copy.apply(0, [Mutation.upsert(deleted, np.ones(8), 9_999)])
    assert result.stale == 1
    assert copy.get(deleted) is None


def test_a_loaded_index_takes_new_writes_on_fresh_slots(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    index = build(rng)
    store = SnapshotStore(tmp_path, "v1")
    store.save(index)
    loaded = store.load_latest(CONFIG)
    assert loaded is not None
    copy = loaded[0]
    slots_before = copy.shards[0].graph.graph.next_slot
    v = unit_vectors(rng, 1, 8)[0]
    copy.apply(0, [Mutation.upsert("fresh", v, 50_000)])
    assert copy.shards[0].graph.graph.next_slot == slots_before + 1
    assert copy.search(v, 1).ids == ["fresh"]
    assert len(copy) == len(index) + 1


def test_the_manifest_records_what_contract_2_asks_for(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    index = build(rng)
    path = SnapshotStore(tmp_path, "v1").save(index)
    manifest = json.loads((path / MANIFEST).read_text())
    assert {k: manifest[k] for k in ("dim", "space", "M", "ef_construction")} == {
        "dim": 8,
        "space": "cosine",
        "M": 16,
        "ef_construction": 200,
    }
    assert manifest["hnswlib_version"] == hnswlib_version()
    assert manifest["model_version"] == "v1"
    assert manifest["next_offsets"] == {"0": 999, "1": index.next_offsets()[1]}
    assert manifest["totals"] == {"live": 295, "tombstones": 5}
    assert (
        sorted(manifest["files"]) == sorted(os.listdir(path))[:-1]
        or MANIFEST not in manifest["files"]
    )
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size
        assert len(entry["sha256"]) == 64
    assert not [p for p in tmp_path.glob("v1/.*")]


def test_only_the_last_n_snapshots_are_kept(tmp_path: Path, rng: np.random.Generator) -> None:
    index = build(rng, n=50)
    store = SnapshotStore(tmp_path, "v1", keep=2)
    for _ in range(4):
        store.save(index)
    assert [s.path.name for s in store.list()] == ["snap-0000000004", "snap-0000000003"]


def test_explicit_next_offsets_replace_the_tracked_ones(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    store = SnapshotStore(tmp_path, "v1")
    store.save(build(rng, n=20), next_offsets={0: 5, 1: 6})
    loaded = store.load_latest(CONFIG)
    assert loaded is not None
    assert loaded[1] == {0: 5, 1: 6}


def test_the_callers_extra_state_is_saved_and_loaded_with_the_snapshot(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    store = SnapshotStore(tmp_path, "v1")
    path = store.save(build(rng, n=20), extra={"watermarks": {"0": [1, 2]}})
    loaded = store.load_latest_state(CONFIG)
    assert loaded is not None
    assert (loaded.path, loaded.extra) == (path, {"watermarks": {"0": [1, 2]}})
    assert loaded.next_offsets == loaded.index.next_offsets()


def test_an_empty_store_loads_nothing(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path, "v1").load_latest(CONFIG) is None


@pytest.mark.parametrize(
    ("config", "version", "message"),
    [
        (CONFIG.with_(dim=16), None, "dim 8"),
        (CONFIG.with_(space="l2"), None, "space 'cosine'"),
        (CONFIG, "v2", "encoder version 'v1'"),
    ],
)
def test_a_snapshot_of_another_dim_space_or_encoder_is_refused(
    tmp_path: Path,
    rng: np.random.Generator,
    config: IndexConfig,
    version: str | None,
    message: str,
) -> None:
    store = SnapshotStore(tmp_path, "v1")
    store.save(build(rng, n=20))
    with pytest.raises(SnapshotMismatchError, match=message):
        store.load_latest(config, version)


def test_an_index_of_another_model_version_is_not_saved_under_this_one(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    with pytest.raises(SnapshotMismatchError, match="'v2'"):
        SnapshotStore(tmp_path, "v2").save(build(rng, n=10))


def test_a_model_version_that_is_not_a_safe_directory_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"Received: '\.\./x'"):
        SnapshotStore(tmp_path, "../x")


def test_the_store_follows_the_settings(tmp_path: Path) -> None:
    store = SnapshotStore.from_settings(Settings.load(data_dir=tmp_path, snapshot_keep=5), "v9")
    assert (store.dir, store.keep) == (tmp_path / "snapshots" / "v9", 5)


def test_a_frozen_shard_lets_searches_through_and_holds_writers(
    rng: np.random.Generator,
) -> None:
    index = build(rng, n=100, partitions=1)
    shard = index.shards[0]
    v = unit_vectors(rng, 1, 8)[0]
    searched = threading.Event()
    written = threading.Event()

    def search() -> None:
        index.search(v, 3)
        searched.set()

    def write() -> None:
        index.apply(0, [Mutation.upsert("w", v, 10**6)])
        written.set()

    with shard.frozen():
        threading.Thread(target=search).start()
        threading.Thread(target=write).start()
        assert searched.wait(5)
        time.sleep(0.1)
        assert not written.is_set()
    assert written.wait(5)


def test_a_search_with_another_ef_is_not_held_behind_a_snapshot_save(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = build(rng, n=200, partitions=1)
    store = SnapshotStore(tmp_path, "v1")
    saving, release = threading.Event(), threading.Event()
    save_index = FrozenShard.save_index

    def slow_save(self: FrozenShard, path: str) -> None:
        """Fault injection: a save that lasts until the test releases it."""
        saving.set()
        release.wait(30)
        save_index(self, path)

    monkeypatch.setattr(FrozenShard, "save_index", slow_save)
    saver = threading.Thread(target=store.save, args=(index,))
    saver.start()
    try:
        assert saving.wait(10)
        found: list[list[str]] = []
        query = unit_vectors(rng, 1, 8)[0]
        searcher = threading.Thread(target=lambda: found.append(index.search(query, 5, ef=77).ids))
        searcher.start()
        searcher.join(5)
        assert not searcher.is_alive(), "a search with ef=77 waited for the snapshot save"
        assert len(found[0]) == 5
    finally:
        release.set()
        saver.join(30)
    assert store.list()


def test_a_snapshot_whose_index_file_was_cut_short_is_not_published_and_nothing_is_pruned(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = build(rng)
    store = SnapshotStore(tmp_path, "v1", keep=1)
    good = store.save(index)
    save_index = FrozenShard.save_index

    def short_write(self: FrozenShard, path: str) -> None:
        """Fault injection: hnswlib hits a full disk and says nothing (3 bytes lost)."""
        save_index(self, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 3)

    monkeypatch.setattr(FrozenShard, "save_index", short_write)
    with pytest.raises(SnapshotError, match=r"do not hold the \d+ elements"):
        store.save(index)
    assert [s.path for s in store.list()] == [good]
    assert not [p for p in tmp_path.glob("v1/.*")]
    loaded = store.load_latest_state(CONFIG)
    assert loaded is not None and loaded.path == good


def test_a_complete_index_file_passes_the_check_and_a_wrong_element_count_does_not(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    index = build(rng, n=2000, partitions=1)
    path = SnapshotStore(tmp_path, "v1").save(index) / "shard-0000.hnsw"
    elements = int(index.shards[0].graph.graph.index.element_count)
    check_hnsw_file(path, elements)
    with pytest.raises(SnapshotError, match=f"Expected {elements + 1}"):
        check_hnsw_file(path, elements + 1)


def test_an_unhealthy_shard_is_not_snapshotted(tmp_path: Path, rng: np.random.Generator) -> None:
    index = build(rng, n=50, partitions=1)
    index.shards[0].failure = "RuntimeError: injected"
    store = SnapshotStore(tmp_path, "v1")
    with pytest.raises(SnapshotError, match="unhealthy"):
        store.save(index)
    assert store.list() == []


# --- crashes and corruption, each in its own process ---------------------------------

CHILD_SETUP = """
import json, os, sys, time
import numpy as np
from pathlib import Path
from workers.index.config import IndexConfig
from workers.index.record import Mutation
from workers.index.sharded import ShardedIndex
from workers.index import snapshot
from workers.index.snapshot import SnapshotStore

CONFIG = IndexConfig(dim=8, ef_search=200)
root = Path(sys.argv[1])
store = SnapshotStore(root, "v1", keep=5)
rng = np.random.default_rng(0)
vectors = rng.standard_normal((400, 8)).astype(np.float32)
index = ShardedIndex(CONFIG, 2, model_version="v1")

def fill(lo, hi):
    for p in (0, 1):
        index.apply(p, [Mutation.upsert(f"{p}-{j}", vectors[j], j) for j in range(lo, hi)],
                    next_offset=hi)
"""


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = CHILD_SETUP + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[3],
        check=False,
    )


@pytest.mark.fault
@pytest.mark.parametrize("hook", ["fsync_path", "write_bytes", "publish_dir"])
def test_sigkill_during_a_snapshot_write_leaves_the_previous_snapshot_loadable(
    tmp_path: Path, hook: str
) -> None:
    marker = tmp_path / "inside"
    script = CHILD_SETUP + textwrap.dedent(
        f"""
        fill(0, 100)
        store.save(index)
        fill(100, 200)
        real = snapshot.{hook}
        def stall(*args, **kwargs):
            Path({str(marker)!r}).touch()
            time.sleep(60)
        setattr(snapshot, {hook!r}, stall)
        store.save(index)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "snaps")],
        cwd=Path(__file__).resolve().parents[3],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child exited before reaching the hook"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    store = SnapshotStore(tmp_path / "snaps", "v1")
    assert [p.name for p in store.dir.iterdir() if p.name.startswith(".tmp-")]
    loaded = store.load_latest(IndexConfig(dim=8))
    assert loaded is not None
    index, offsets = loaded
    assert offsets == {0: 100, 1: 100}
    assert len(index) == 200
    store.save(index)
    assert not [p for p in store.dir.iterdir() if p.name.startswith(".tmp-")]


CORRUPT = """
fill(0, 100)
first = store.save(index)
fill(100, 150)
second = store.save(index)
mode = sys.argv[2]
target = second / "shard-0000.hnsw"
manifest = json.loads((second / "MANIFEST.json").read_text())
if mode == "truncated":
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
elif mode == "flipped-byte":
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x40
    target.write_bytes(bytes(data))
elif mode == "flipped-byte-in-bookkeeping":
    state = second / "shard-0001.json"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
elif mode == "flipped-byte-in-manifest":
    raw = (second / "MANIFEST.json").read_bytes().replace(b'"dim":8', b'"dim":9')
    (second / "MANIFEST.json").write_bytes(raw)
elif mode in ("index-from-another-snapshot", "index-and-manifest-from-another-snapshot"):
    target.write_bytes((first / "shard-0000.hnsw").read_bytes())
    if mode == "index-and-manifest-from-another-snapshot":
        import hashlib
        data = target.read_bytes()
        manifest["files"]["shard-0000.hnsw"] = {
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        manifest["manifest_sha256"] = snapshot._manifest_checksum(manifest)
        (second / "MANIFEST.json").write_bytes(snapshot._canonical(manifest))
loaded_files = []
real_load = snapshot._load_hnsw
def spy(path, *args):
    loaded_files.append(str(path))
    return real_load(path, *args)
snapshot._load_hnsw = spy
try:
    store.verify(second)
    reason = None
except snapshot.SnapshotCorruptError as e:
    reason = str(e)
loaded_files.clear()
result = store.load_latest(CONFIG)
print(json.dumps({
    "reason": reason,
    "loaded_files": loaded_files,
    "second": str(second),
    "offsets": result[1] if result else None,
    "live": len(result[0]) if result else None,
}))
"""


@pytest.mark.fault
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("truncated", "has .* bytes. Expected"),
        ("flipped-byte", "does not match its SHA-256"),
        ("flipped-byte-in-bookkeeping", "does not match its SHA-256"),
        ("flipped-byte-in-manifest", "manifest checksum"),
        ("index-from-another-snapshot", "bytes. Expected|SHA-256"),
        ("index-and-manifest-from-another-snapshot", "the index file has elements=200"),
    ],
)
def test_a_damaged_snapshot_is_detected_before_hnswlib_loads_it_and_the_previous_one_is_used(
    tmp_path: Path, mode: str, reason: str
) -> None:
    child = run_child(CORRUPT, str(tmp_path), mode)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["reason"] is not None
    assert re.search(reason, report["reason"]), report["reason"]
    assert not [f for f in report["loaded_files"] if f.startswith(report["second"])]
    assert report["offsets"] == {"0": 100, "1": 100}
    assert report["live"] == 200
    assert "index.snapshot_skipped" in child.stdout + child.stderr


@pytest.mark.parametrize("graph", ["partition", "node"])
def test_a_snapshot_of_a_partition_set_restores_only_for_the_same_partitions(
    tmp_path: Path, rng: np.random.Generator, graph: str
) -> None:
    index = ShardedIndex(CONFIG.with_(graph=graph), 4, model_version="v1", owned=(1, 3))
    vectors = unit_vectors(rng, 2, 8)
    index.apply(1, [Mutation.upsert("a", vectors[0], 0)], next_offset=1)
    index.apply(3, [Mutation.upsert("b", vectors[1], 0)], next_offset=7)
    store = SnapshotStore(tmp_path, "v1")
    path = store.save(index)
    manifest = json.loads((path / MANIFEST).read_text())
    assert (manifest["partitions"], manifest["owned"]) == (4, [1, 3])
    assert [s["partition"] for s in manifest["shards"]] == [1, 3]
    loaded = store.load_latest_state(CONFIG, owned=(1, 3))
    assert loaded is not None
    assert (loaded.index.owned, loaded.next_offsets) == ((1, 3), {1: 1, 3: 7})
    assert store.load_latest_state(CONFIG, owned=(0, 2)) is None
    assert store.load_latest_shards(CONFIG, [2]) is None
    if graph == "partition":
        alone = store.load_latest_shards(CONFIG, [3])
        assert alone is not None and alone[0][0].get("b") is not None
        return
    # One graph holds both partitions: only the two together can be restored.
    assert store.load_latest_shards(CONFIG, [3]) is None
    both = store.load_latest_shards(CONFIG, [1, 3])
    assert both is not None
    one, three = both[0]
    assert one.graph is three.graph and three.get("b") is not None and one.get("a") is not None
    assert [one.next_offset, three.next_offset] == [1, 7]
