"""Benchmark of the sharded index against one raw hnswlib index (``simstream bench index``).

For each dataset and shard count it measures, in the same process and run:
recall@10 against exact brute force over several ef values (both indexes),
batched and single-query QPS, insert rate, p50/p99 single-query latency idle
and while a writer inserts, snapshot save and load time, and memory per item.
Results go to a JSON file, and a recall-vs-QPS plot to a PNG beside it.

Datasets: ``mnist`` is the MNIST test set (IDX files) projected to 64
dimensions by PCA (numpy SVD) and L2-normalised, a stand-in for real
embeddings until a trained encoder replaces it; ``random`` is Gaussian vectors,
L2-normalised (harder for graph indexes: no cluster structure).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
from tqdm import tqdm

from bench.common import cpu_count, percentiles_ms, unit_rows, write_json
from model.datasets import load_mnist
from simstream.errors import DatasetError
from simstream.log import get_logger
from workers.index.config import IndexConfig
from workers.index.partitioning import partition_for
from workers.index.record import Mutation
from workers.index.sharded import ShardedIndex, shard_ef
from workers.index.snapshot import SnapshotStore, hnswlib_version

K = 10
MATCHED_RECALL = 0.99
TARGETS = {
    "recall_at_10_real_default_ef": 0.99,
    "insert_rate_ratio": 0.8,
    "qps_single_matched_ratio": 0.5,
    "qps_batched_matched_ratio": 0.8,
    "upsert_single_ratio": 0.5,
    "upsert_batch16_ratio": 0.5,
    "p99_under_paced_writes_over_idle": 3.0,
}
UPSERTS = 2000
_log = get_logger("bench.index")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to run.

    Attributes:
        datasets: any of ``mnist`` and ``random``.
        shards: shard counts (partitions) to compare against one raw index.
        graphs: index layouts to measure at each shard count: ``node`` (every
            shard in one graph, a node's default) and ``partition`` (a graph per
            shard).
        n_queries: held-out queries per dataset (the rest are indexed).
        n_random: vectors in the random dataset (indexed plus queries).
        dim: vector size (PCA target for MNIST).
        efs: ef values of the recall sweep (batched and single-query QPS at each,
            for the recall-matched comparison).
        latency_queries: single queries timed for each latency percentile.
        insert_batch: records per ``apply`` (per partition) when measuring the insert
            rate, as when the index node replays a backlog.
        writer_batch: records per ``apply`` of the flat-out concurrent writer.
        paced_writes_per_s: rate of the paced concurrent writer (batches of 8).
        mnist_dir: directory holding the MNIST test images (IDX, optionally gzipped).
        index: parameters of the sharded index (M, ef_construction, default ef …).
        seed: random seed.
    """

    datasets: tuple[str, ...] = ("mnist", "random")
    shards: tuple[int, ...] = (1, 4, 16)
    graphs: tuple[str, ...] = ("node",)
    n_queries: int = 1000
    n_random: int = 10000
    dim: int = 64
    efs: tuple[int, ...] = (10, 12, 16, 20, 24, 32, 48, 64, 128, 256)
    latency_queries: int = 2000
    insert_batch: int = 4096
    writer_batch: int = 64
    paced_writes_per_s: float = 1000.0
    mnist_dir: Path | None = None
    index: IndexConfig = field(default_factory=lambda: IndexConfig(dim=64))
    seed: int = 0


# --- data ------------------------------------------------------------------------------


def mnist_test_images(directory: Path) -> np.ndarray:
    """MNIST test images from IDX files (plain or ``.gz``), shape (n, rows·cols), uint8."""
    images = load_mnist(directory, split="test").x
    return images.reshape(len(images), -1)


def pca_unit(data: np.ndarray, dim: int) -> np.ndarray:
    """Project onto the top ``dim`` principal components and L2-normalise.

    The components come from the SVD of the covariance matrix (features ×
    features), which is much cheaper than the SVD of the data when there are
    many more rows than features, and gives the same directions.
    """
    x = data.astype(np.float64)
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x.T @ x / len(x), hermitian=True)
    return unit_rows(x @ vt[:dim].T)


def load_dataset(name: str, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """``(base, queries, description)`` of one dataset, unit vectors."""
    rng = np.random.default_rng(cfg.seed)
    if name == "mnist":
        if cfg.mnist_dir is None:
            raise DatasetError(
                "The mnist dataset needs a directory of IDX files: pass --mnist-dir or set "
                "SIMSTREAM_MNIST_DIR."
            )
        vectors = pca_unit(mnist_test_images(Path(cfg.mnist_dir)), cfg.dim)
        description = f"MNIST test set ({len(vectors)} images), PCA to {cfg.dim}-d, L2-normalised"
    elif name == "random":
        vectors = unit_rows(rng.standard_normal((cfg.n_random, cfg.dim)))
        description = f"{cfg.n_random} Gaussian {cfg.dim}-d vectors, L2-normalised"
    else:
        raise DatasetError(f"Unknown dataset. Expected mnist or random. Received: {name!r}")
    order = rng.permutation(len(vectors))
    queries = vectors[order[: cfg.n_queries]]
    base = vectors[order[cfg.n_queries :]]
    return np.ascontiguousarray(base), np.ascontiguousarray(queries), description


# --- measurements ----------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * truth.shape[1])


def _records(base: np.ndarray, prefix: str = "i") -> list[Mutation]:
    return [Mutation.upsert(f"{prefix}{j}", base[j], j) for j in range(len(base))]


def _by_partition(records: Sequence[Mutation], partitions: int) -> dict[int, list[Mutation]]:
    groups: dict[int, list[Mutation]] = {p: [] for p in range(partitions)}
    for r in records:
        groups[partition_for(r.item_id, partitions)].append(r)
    return groups


def _timed_queries(search: Callable[[np.ndarray], Any], queries: np.ndarray, n: int) -> list[float]:
    samples = []
    for i in range(n):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        search(q)
        samples.append(time.perf_counter() - start)
    return samples


def _singles(index: ShardedIndex, queries: np.ndarray, ef: int) -> None:
    for q in queries:
        index.search(q, K, ef=ef)


def _best_qps(fn: Callable[[], Any], count: int, rounds: int) -> float:
    """Queries per second of the fastest of ``rounds`` calls of ``fn`` (``count`` queries each)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return count / min(times)


def _best_at(recall: dict[str, float], qps: dict[str, float], floor: float) -> dict[str, Any]:
    """The highest QPS over the efs whose recall reaches ``floor`` (None: none reaches it)."""
    ok = [e for e in recall if recall[e] >= floor and e in qps]
    if not ok:
        return {"ef": None, "qps": None, "recall": None}
    best = max(ok, key=lambda e: qps[e])
    return {"ef": int(best), "qps": qps[best], "recall": recall[best]}


def matched(out: dict[str, Any], floor: float) -> dict[str, Any]:
    """Recall-matched QPS: each index at its fastest ef with recall@10 ≥ ``floor``.

    Single-query and batched QPS of the sharded and the raw index and their
    ratios; a ratio is None when either index never reached the recall.
    """
    result: dict[str, Any] = {"recall_floor": floor}
    for mode in ("single", "batched"):
        sharded = _best_at(out["recall_at_10"], out[f"qps_{mode}_by_ef"], floor)
        raw = _best_at(out["recall_at_10_raw"], out[f"qps_{mode}_by_ef_raw"], floor)
        ratio = sharded["qps"] / raw["qps"] if sharded["qps"] is not None and raw["qps"] else None
        result[mode] = {"sharded": sharded, "raw": raw, "ratio": ratio}
    return result


def split_raw_qps(
    base: np.ndarray,
    groups: dict[int, list[Mutation]],
    queries: np.ndarray,
    matched_figures: dict[str, Any],
    icfg: IndexConfig,
) -> dict[str, Any]:
    """QPS of bare hnswlib graphs, one per partition: the ceiling of one graph per shard.

    The same items split as the sharded index splits them, each graph searched
    with the ef `shard_ef` gives it at the sharded index's matched ef, and only
    the ``knn_query`` calls timed (no locks, no id lookup, no merge): no index
    made of one graph per partition can answer faster.
    """
    ef = matched_figures["single"]["sharded"]["ef"]
    if ef is None or len(groups) == 1:
        return {"ef": ef, "single": None, "batched": None}
    slots = {f"i{j}": j for j in range(len(base))}
    total = sum(len(g) for g in groups.values())
    graphs = []
    for group in groups.values():
        if not group:
            continue
        labels = np.array([slots[r.item_id] for r in group])
        graph = hnswlib.Index(space=icfg.space, dim=icfg.dim)
        graph.init_index(max_elements=len(group), M=icfg.m, ef_construction=icfg.ef_construction)
        graph.add_items(base[labels], labels, num_threads=icfg.num_threads)
        graph.set_ef(shard_ef(ef, len(group), total))
        graphs.append(graph)

    def singles() -> None:
        for q in queries:
            for graph in graphs:
                graph.knn_query(q, k=K, num_threads=1)

    def batched() -> None:
        for graph in graphs:
            graph.knn_query(queries, k=K, num_threads=icfg.num_threads)

    return {
        "ef": ef,
        "single": _best_qps(singles, len(queries), 2),
        "batched": _best_qps(batched, len(queries), 2),
    }


def upsert_rates(
    index: ShardedIndex, raw: hnswlib.Index, base: np.ndarray, seed: int
) -> dict[str, float]:
    """Upserts per second of new items, one at a time and 16 per call, sharded and raw.

    Records arrive as the index node applies them: already decoded and grouped by
    the partition they were read from (so neither is timed).
    """
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, len(base), 2 * UPSERTS)]
    vectors = unit_rows(rows + 0.05 * rng.standard_normal(rows.shape)).astype(np.float32)
    raw.resize_index(raw.get_max_elements() + 2 * UPSERTS)
    first = raw.get_current_count() + 1_000_000
    out: dict[str, float] = {}
    for name, size, part in (("single", 1, vectors[:UPSERTS]), ("batch16", 16, vectors[UPSERTS:])):
        records = [Mutation.upsert(f"u{name}{j}", v, 20_000_000 + j) for j, v in enumerate(part)]
        calls = [
            (p, group[at : at + size])
            for p, group in _by_partition(records, index.partitions).items()
            for at in range(0, len(group), size)
        ]
        start = time.perf_counter()
        for p, batch in calls:
            index.apply(p, batch)
        out[f"sharded_{name}"] = len(part) / (time.perf_counter() - start)
        labels = [np.arange(first + at, first + at + size) for at in range(0, len(part), size)]
        chunks = [part[at : at + size] for at in range(0, len(part), size)]
        start = time.perf_counter()
        for chunk, label in zip(chunks, labels, strict=True):
            raw.add_items(chunk, label[: len(chunk)])
        out[f"raw_{name}"] = len(part) / (time.perf_counter() - start)
        first += len(part)
    return out


class _Writer(threading.Thread):
    """Inserts fresh items into the index until stopped, flat out or at a set rate."""

    def __init__(
        self,
        index: ShardedIndex,
        base: np.ndarray,
        batch: int,
        seed: int,
        rate: float | None = None,
    ) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.index, self.base, self.batch, self.rate = index, base, batch, rate
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.written = 0
        self.seconds = 0.0

    def _batches(self) -> Iterator[dict[int, list[Mutation]]]:
        j = 0
        while True:
            rows = self.base[self.rng.integers(0, len(self.base), self.batch)]
            vectors = unit_rows(rows + 0.05 * self.rng.standard_normal(rows.shape))
            records = [
                Mutation.upsert(f"w{j + n}", v, 10_000_000 + j + n) for n, v in enumerate(vectors)
            ]
            j += self.batch
            yield _by_partition(records, self.index.partitions)

    def run(self) -> None:
        start = time.perf_counter()
        for groups in self._batches():
            if self.stop.is_set():
                break
            for p, records in groups.items():
                if records:
                    self.index.apply(p, records)
                    self.written += len(records)
            if self.rate:
                ahead = self.written / self.rate - (time.perf_counter() - start)
                if ahead > 0:
                    self.stop.wait(ahead)
        self.seconds = time.perf_counter() - start


def _under_writes(
    index: ShardedIndex,
    base: np.ndarray,
    queries: np.ndarray,
    cfg: BenchmarkConfig,
    rate: float | None,
) -> tuple[float, float, float]:
    """p50 and p99 single-query latency (ms) while a writer inserts; and its writes/s."""
    writer = _Writer(index, base, cfg.writer_batch if rate is None else 8, cfg.seed, rate)
    writer.start()
    while writer.written < 16:
        time.sleep(0.001)
    samples = _timed_queries(lambda q: index.search(q, K), queries, cfg.latency_queries)
    writer.stop.set()
    writer.join()
    p50, p99 = percentiles_ms(samples)
    return p50, p99, writer.written / max(writer.seconds, 1e-9)


_MEMORY_CHILD = """
import gc, json, sys
import numpy as np
from bench.index import build_for_memory
print(json.dumps(build_for_memory(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))))
"""


def build_for_memory(path: str, shards: int, config: dict[str, Any]) -> int:
    """Resident bytes added by building an index over the vectors in ``path``.

    ``shards=0`` builds one raw hnswlib index. Meant to run in a fresh process
    (see `memory_per_item`), where nothing else allocates meanwhile.
    """
    base = np.load(path)
    records = _records(base) if shards else []
    gc.collect()
    before = _rss()
    if shards:
        index = ShardedIndex(IndexConfig(**config), shards)
        for p, group in _by_partition(records, shards).items():
            index.apply(p, group)
    else:
        raw = hnswlib.Index(space=config["space"], dim=config["dim"])
        raw.init_index(
            max_elements=len(base), M=config["m"], ef_construction=config["ef_construction"]
        )
        raw.add_items(base, np.arange(len(base)))
    del records
    gc.collect()
    return _rss() - before


def memory_per_item(base: np.ndarray, shards: int, config: IndexConfig) -> tuple[float, float]:
    """Resident bytes per item of the sharded index and of a raw index.

    Each is built in a fresh Python process, after the vectors (and, for the
    sharded index, the records) are in memory, so only the index is counted.
    """
    with tempfile.TemporaryDirectory(prefix="simstream-bench-") as tmp:
        path = str(Path(tmp) / "base.npy")
        np.save(path, base)
        sizes = []
        for count in (shards, 0):
            child = subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, path, str(count), json.dumps(asdict(config))],
                capture_output=True,
                text=True,
                check=True,
            )
            sizes.append(int(child.stdout.strip().splitlines()[-1]))
    return sizes[0] / len(base), sizes[1] / len(base)


def run_config(
    dataset: str,
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    shards: int,
    cfg: BenchmarkConfig,
    progress: bool,
    graph: str = "node",
) -> dict[str, Any]:
    """All measurements of one dataset at one shard count and layout."""
    icfg = cfg.index.with_(dim=base.shape[1], graph=graph)
    n = len(base)
    steps = tqdm(total=8, desc=f"{dataset} S={shards}", disable=not progress, leave=False)
    out: dict[str, Any] = {"dataset": dataset, "shards": shards, "graph": graph, "n_items": n}
    out["n_queries"] = len(queries)

    # Insert: sharded (one thread per shard, like one consumer per partition) vs raw.
    records = _records(base)
    groups = _by_partition(records, shards)
    index = ShardedIndex(icfg, shards, model_version="bench")
    start = time.perf_counter()
    chunk = cfg.insert_batch
    for at in range(0, max(len(g) for g in groups.values()), chunk):
        index.apply_many({p: g[at : at + chunk] for p, g in groups.items() if g[at : at + chunk]})
    out["insert_rate_sharded"] = n / (time.perf_counter() - start)
    steps.update()

    raw = hnswlib.Index(space=icfg.space, dim=icfg.dim)
    raw.init_index(max_elements=n, M=icfg.m, ef_construction=icfg.ef_construction)
    start = time.perf_counter()
    raw.add_items(base, np.arange(n), num_threads=icfg.num_threads)
    out["insert_rate_raw"] = n / (time.perf_counter() - start)
    steps.update()

    # Recall, batched and single-query QPS over ef, both indexes (best of two rounds).
    ids_of = {f"i{j}": j for j in range(n)}
    for key in ("recall_at_10", "qps_batched_by_ef", "qps_single_by_ef"):
        out[key], out[f"{key}_raw"] = {}, {}
    for ef in cfg.efs:
        e = str(ef)
        found = index.search_batch(queries, K, ef=ef)
        out["recall_at_10"][e] = _recall([[ids_of[i] for i in f.ids] for f in found], truth)
        out["qps_batched_by_ef"][e] = _best_qps(
            partial(index.search_batch, queries, K, ef=ef), len(queries), 2
        )
        out["qps_single_by_ef"][e] = _best_qps(
            partial(_singles, index, queries, ef), len(queries), 2
        )
        raw.set_ef(ef)
        labels, _ = raw.knn_query(queries, k=K, num_threads=icfg.num_threads)
        out["recall_at_10_raw"][e] = _recall(labels.tolist(), truth)
        out["qps_batched_by_ef_raw"][e] = _best_qps(
            lambda: raw.knn_query(queries, k=K, num_threads=icfg.num_threads), len(queries), 2
        )
        out["qps_single_by_ef_raw"][e] = _best_qps(
            lambda: [raw.knn_query(q, k=K, num_threads=1) for q in queries], len(queries), 2
        )
    raw.set_ef(icfg.ef_search)
    default = str(icfg.ef_search)
    if default not in out["recall_at_10"]:
        found = index.search_batch(queries, K)
        out["recall_at_10"][default] = _recall([[ids_of[i] for i in f.ids] for f in found], truth)
    out["recall_at_10_default_ef"] = out["recall_at_10"][default]
    out["matched"] = matched(out, MATCHED_RECALL)
    out["matched"]["split_raw"] = split_raw_qps(base, groups, queries, out["matched"], icfg)
    steps.update()

    # Batched and single-query QPS at the default ef, best of three rounds.
    def best_qps(fn: Callable[[], Any], count: int) -> float:
        return _best_qps(fn, count, 3)

    def singles_sharded() -> None:
        for q in queries:
            index.search(q, K)

    def singles_raw() -> None:
        for q in queries:
            raw.knn_query(q, k=K, num_threads=1)

    out["qps_sharded"] = {
        "batched": best_qps(lambda: index.search_batch(queries, K), len(queries)),
        "single": best_qps(singles_sharded, len(queries)),
    }
    out["qps_raw"] = {
        "batched": best_qps(
            lambda: raw.knn_query(queries, k=K, num_threads=icfg.num_threads), len(queries)
        ),
        "single": best_qps(singles_raw, len(queries)),
    }
    steps.update()

    out["upserts"] = upsert_rates(index, raw, base, cfg.seed)

    # Latency idle and under writes (single queries, default ef).
    def one(q: np.ndarray) -> Any:
        return index.search(q, K)

    _timed_queries(one, queries, min(200, cfg.latency_queries))
    idle = _timed_queries(one, queries, cfg.latency_queries)
    out["p50_ms_idle"], out["p99_ms_idle"] = percentiles_ms(idle)
    steps.update()
    out["p50_ms_under_writes"], out["p99_ms_under_writes"], rate = _under_writes(
        index, base, queries, cfg, None
    )
    out["writes_per_s_during_latency"] = rate
    p50, p99, rate = _under_writes(index, base, queries, cfg, cfg.paced_writes_per_s)
    out["p50_ms_under_paced_writes"], out["p99_ms_under_paced_writes"] = p50, p99
    out["paced_writes_per_s"] = rate
    index.wait_for_rebuilds()
    steps.update()

    # Snapshot save and load.
    with tempfile.TemporaryDirectory(prefix="simstream-bench-") as tmp:
        store = SnapshotStore(tmp, "bench", keep=1)
        start = time.perf_counter()
        path = store.save(index)
        out["snapshot_save_s"] = time.perf_counter() - start
        out["snapshot_bytes"] = sum(f.stat().st_size for f in path.iterdir())
        steps.update()
        start = time.perf_counter()
        loaded = store.load_latest(icfg)
        out["snapshot_load_s"] = time.perf_counter() - start
        out["snapshot_items"] = len(index)
        if loaded is not None:
            loaded[0].close()
    steps.update()
    index.close()
    out["bytes_per_item"], out["bytes_per_item_raw"] = memory_per_item(base, shards, icfg)
    out["ratios"] = {
        "insert_rate": out["insert_rate_sharded"] / out["insert_rate_raw"],
        "qps_batched": out["qps_sharded"]["batched"] / out["qps_raw"]["batched"],
        "qps_single": out["qps_sharded"]["single"] / out["qps_raw"]["single"],
        "p99_under_writes_over_idle": out["p99_ms_under_writes"] / out["p99_ms_idle"],
        "p99_under_paced_writes_over_idle": out["p99_ms_under_paced_writes"] / out["p99_ms_idle"],
        "qps_single_matched": out["matched"]["single"]["ratio"],
        "qps_batched_matched": out["matched"]["batched"]["ratio"],
        "upsert_single": out["upserts"]["sharded_single"] / out["upserts"]["raw_single"],
        "upsert_batch16": out["upserts"]["sharded_batch16"] / out["upserts"]["raw_batch16"],
        "bytes_per_item": out["bytes_per_item"] / max(out["bytes_per_item_raw"], 1e-9),
    }
    steps.update()
    steps.close()
    return out


def _targets(result: dict[str, Any], real: bool) -> dict[str, dict[str, Any]]:
    ratios = result["ratios"]
    at_least = {
        "insert_rate_ratio": ratios["insert_rate"],
        "qps_single_matched_ratio": ratios["qps_single_matched"],
        "qps_batched_matched_ratio": ratios["qps_batched_matched"],
        "upsert_single_ratio": ratios["upsert_single"],
        "upsert_batch16_ratio": ratios["upsert_batch16"],
    }
    if real:
        at_least["recall_at_10_real_default_ef"] = result["recall_at_10_default_ef"]
    checks: dict[str, tuple[float | None, str, float]] = {
        name: (value, ">=", TARGETS[name]) for name, value in at_least.items()
    }
    checks["p99_under_paced_writes_over_idle"] = (
        ratios["p99_under_paced_writes_over_idle"],
        "<=",
        TARGETS["p99_under_paced_writes_over_idle"],
    )
    return {
        name: {
            "value": value,
            "target": f"{op} {target}",
            "met": value is not None and (value >= target if op == ">=" else value <= target),
        }
        for name, (value, op, target) in checks.items()
    }


def config_name(dataset: str, shards: int, graph: str) -> str:
    """A configuration's key in the report: ``mnist/S=4`` (node layout) or
    ``mnist/S=4/partition``."""
    return f"{dataset}/S={shards}" + ("" if graph == "node" else f"/{graph}")


def run(cfg: BenchmarkConfig, progress: bool = True) -> dict[str, Any]:
    """Run every configuration; return the JSON-ready report."""
    from model.evaluation.search import nearest_neighbours

    report: dict[str, Any] = {
        "benchmark": "simstream index",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "hnswlib": hnswlib_version(),
            "numpy": np.__version__,
        },
        "settings": {
            **{k: v for k, v in asdict(cfg).items() if k not in ("index", "mnist_dir")},
            "index": asdict(cfg.index),
            "k": K,
        },
        "targets": TARGETS,
        "dataset": {},
        "configs": {},
    }
    plan = [(d, s, g) for d in cfg.datasets for s in cfg.shards for g in cfg.graphs]
    bar = tqdm(plan, desc="bench index", disable=not progress)
    data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for dataset, shards, graph in bar:
        if dataset not in data:
            base, queries, description = load_dataset(dataset, cfg)
            truth, _ = nearest_neighbours(queries, base, K, "cosine")
            data[dataset] = (base, queries, truth)
            report["dataset"][dataset] = description
        base, queries, truth = data[dataset]
        result = run_config(dataset, base, queries, truth, shards, cfg, progress, graph)
        result["targets"] = _targets(result, real=dataset == "mnist")
        name = config_name(dataset, shards, graph)
        report["configs"][name] = result
        _log.info("bench.index_config_done", config=name)
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    """Recall@10 against batched QPS over ef, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(c["dataset"] for c in report["configs"].values()))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        raw_done = False
        for c in report["configs"].values():
            if c["dataset"] != dataset:
                continue
            efs = list(c["recall_at_10"])
            efs = [e for e in efs if e in c["qps_batched_by_ef"]]
            ax.plot(
                [c["recall_at_10"][e] for e in efs],
                [c["qps_batched_by_ef"][e] for e in efs],
                marker="o",
                label=f"S={c['shards']}, {c.get('graph', 'partition')} graph",
            )
            for e in efs:
                ax.annotate(
                    f"ef={e}",
                    (c["recall_at_10"][e], c["qps_batched_by_ef"][e]),
                    fontsize=6,
                    alpha=0.6,
                )
            if not raw_done:
                ax.plot(
                    [c["recall_at_10_raw"][e] for e in efs],
                    [c["qps_batched_by_ef_raw"][e] for e in efs],
                    marker="s",
                    linestyle="--",
                    color="black",
                    label="raw hnswlib",
                )
                raw_done = True
        ax.set_title(report["dataset"].get(dataset, dataset), fontsize=9)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("batched queries / s")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pair(sharded: float | None, raw: float | None) -> str:
    if sharded is None or raw is None:
        return "–"
    return f"{sharded:,.0f} / {raw:,.0f} ({sharded / raw:.2f})"


def summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configuration with the headline figures (for tables and logs)."""
    rows = []
    for name, c in report["configs"].items():
        m, u = c["matched"], c["upserts"]
        split = m.get("split_raw", {})
        ceiling = (
            "–"
            if split.get("single") is None
            else f"{split['single'] / m['single']['raw']['qps']:.2f}"
            f" / {split['batched'] / m['batched']['raw']['qps']:.2f}"
        )
        rows.append(
            {
                "config": name,
                "ef sharded/raw @0.99": (
                    f"{m['single']['sharded']['ef']}/{m['single']['raw']['ef']}"
                ),
                "QPS single @0.99 sharded/raw": _pair(
                    m["single"]["sharded"]["qps"], m["single"]["raw"]["qps"]
                ),
                "QPS batched @0.99 sharded/raw": _pair(
                    m["batched"]["sharded"]["qps"], m["batched"]["raw"]["qps"]
                ),
                "bare S graphs single/batched": ceiling,
                "upserts/s single sharded/raw": _pair(u["sharded_single"], u["raw_single"]),
                "upserts/s ×16 sharded/raw": _pair(u["sharded_batch16"], u["raw_batch16"]),
                "p99 ms idle / 1,000 writes/s": (
                    f"{c['p99_ms_idle']:.3f} / {c['p99_ms_under_paced_writes']:.3f}"
                    f" ({c['ratios']['p99_under_paced_writes_over_idle']:.1f}×)"
                ),
                "recall@10 (ef default)": round(c["recall_at_10_default_ef"], 4),
                "insert/s bulk sharded/raw": _pair(c["insert_rate_sharded"], c["insert_rate_raw"]),
                "bytes/item": round(c["bytes_per_item"]),
            }
        )
    return rows


def markdown_table(report: dict[str, Any]) -> str:
    """The headline figures as a Markdown table (for docs/benchmarks.md and the console)."""
    rows = summary(report)
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path) -> Path:
    """Write the JSON report and the plot beside it; return the plot's path."""
    write_json(out, report)
    png = out.with_suffix(".png")
    plot(report, png)
    return png
