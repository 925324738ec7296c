"""The cluster benchmark (``simstream bench cluster``): the query router over 1, 2 and 4 nodes.

Protocol, one run on one machine:

1. Start an embedded broker and Valkey on free ports; register an encoder over
   ``dim``-d vectors; write ``items`` random unit vectors straight into the
   embeddings log (4 partitions, with range markers); start an in-process
   `IndexNode` over every partition: the **in-process** baseline searches its
   `ShardedIndex` directly (same shards, same ef, no HTTP).
2. Exact top-10 of ``queries`` random unit queries by brute force (cosine).
3. For 1, 2 and 4 node processes (``simstream serve``, partition sets = nodes,
   one replica each: every item on exactly one node) and the router
   (`create_router_app`, uvicorn in this process, no result cache):
   RSS of every node, recall@10 through the router, and a load generator in a
   *separate process* measuring p50/p99 with one client and QPS with
   ``concurrency`` clients (uncached: ``fresh: true``).
4. **Failover**: 2 partition sets × 2 replicas and a query stream from one
   client; one replica gets SIGKILL. Reported: failed queries, the slowest
   query after the kill, and the seconds until the router's view dropped the
   dead node (its record's expiry, ``SIMSTREAM_NODE_TTL_S``).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.api import K, load, served_node
from bench.common import cpu_count, percentiles_ms, unit_rows, write_json
from simstream.log import get_logger

log = get_logger("bench.cluster")

HEARTBEAT_S = 0.5
TTL_S = 2.0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _embeddings_end(settings: Any) -> dict[int, int]:
    """The end offset of every partition of the active version's embeddings topic."""
    from confluent_kafka import Consumer

    from model.registry import Registry
    from simstream.kafka import end_offsets

    version = Registry(settings.registry_dir).active()
    assert version is not None
    consumer = Consumer(settings.kafka_config(**{"group.id": "bench-cluster-probe"}))
    try:
        return end_offsets(consumer, settings.embeddings_topic(version), range(settings.partitions))
    finally:
        consumer.close()


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: {what} not reached within {timeout_s:g} s")
        time.sleep(0.2)


def node_process_env(
    settings: Any, data: Path, node_id: str, sets: int, **overrides: Any
) -> tuple[str, dict[str, str]]:
    """The URL and environment of a ``simstream serve`` process of a cluster: its own data
    directory (with a copy of the registry), a free port, a fast heartbeat.

    Args:
        settings: the stack's settings.
        data: the node's data directory (created).
        node_id: its id (an ordinal at the end picks its set).
        sets: the cluster's partition sets.
        overrides: more settings for the node.
    """
    from simstream.stack.process import free_port

    port = free_port()
    shutil.copytree(settings.registry_dir, data / "models")
    url = f"http://127.0.0.1:{port}"
    env = settings.to_env(
        data_dir=data,
        api_port=port,
        node_id=node_id,
        node_url=url,
        partition_sets=sets,
        node_heartbeat_s=HEARTBEAT_S,
        node_ttl_s=TTL_S,
        **overrides,
    )
    return url, env


@contextmanager
def nodes(settings: Any, root: Path, count: int, sets: int) -> Iterator[list[tuple[str, Any]]]:
    """``count`` node processes in ``sets`` partition sets; yields (id, process) pairs once
    every node is ready and announced."""
    from workers.cluster.membership import Membership

    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    membership = Membership.connect(settings.celery_broker_url, settings.topic_items)
    urls = []
    try:
        for i in range(count):
            node_id = f"bench-node-{i}"
            data = root / f"{node_id}-{sets}x{count // sets}"
            url, env = node_process_env(settings, data, node_id, sets, log_level="WARNING")
            with (data / "node.log").open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "simstream.cli.main", "serve"],
                    env={**os.environ, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append((node_id, process))
            urls.append(url)
        ids = {node_id for node_id, _ in started}

        ends = _embeddings_end(settings)

        def all_ready() -> bool:
            dead = [n for n, p in started if p.poll() is not None]
            if dead:
                raise RuntimeError(f"benchmark: nodes {dead} exited (see their node.log)")
            # Ready and every owned partition applied to the end of the log (a node is
            # ready once it caught up with `items`, which this benchmark leaves empty).
            done = {
                r.id
                for r in membership.nodes()
                if r.ready
                and all(
                    g.applied.get(p, 0) >= ends[p]
                    for g in r.generations.values()
                    for p in r.partitions
                )
            }
            return ids <= done and all(_ready(u) for u in urls)

        _wait(all_ready, 900, f"{count} nodes ready")
        yield started
    finally:
        for _, process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def router(settings: Any, sets: int) -> Iterator[str]:
    """The query router over ``sets`` partition sets, served on a free port; yields its URL."""
    from simstream.stack.process import free_port
    from workers.api.server import ThreadedServer
    from workers.router import create_router_app

    port = free_port()
    app = create_router_app(settings.model_copy(update={"partition_sets": sets}))
    with ThreadedServer(app, "127.0.0.1", port):
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(url), 60, "router ready")
        yield url


def _recall(found: Sequence[Sequence[str]], truth: np.ndarray) -> float:
    hits = sum(
        len({f"item-{t}" for t in row} & set(ids)) for ids, row in zip(found, truth, strict=True)
    )
    return hits / truth.size


def _lookups(url: str, queries: np.ndarray) -> list[list[str]]:
    import httpx

    out = []
    with httpx.Client(timeout=30) as client:
        for vector in queries:
            body = {"vector": vector.tolist(), "k": K, "fresh": True}
            response = client.post(url + "/v1/lookup", json=body)
            response.raise_for_status()
            out.append([n["id"] for n in response.json()["neighbors"]])
    return out


def _direct(index: Any, queries: np.ndarray, duration_s: float) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.monotonic() + duration_s
    started = time.monotonic()
    i = 0
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        index.search(queries[i % len(queries)], K)
        latencies.append(time.perf_counter() - began)
        i += 1
    p50, p99 = percentiles_ms(latencies)
    return {"qps": len(latencies) / (time.monotonic() - started), "p50_ms": p50, "p99_ms": p99}


def _load(
    pool: Any, url: str, bodies: list[bytes], concurrency: int, duration_s: float
) -> dict[str, float]:
    result = pool.submit(load, url + "/v1/lookup", bodies, concurrency, duration_s).result()
    p50, p99 = percentiles_ms(result["latencies"])
    return {
        "qps": len(result["latencies"]) / result["wall_s"],
        "p50_ms": p50,
        "p99_ms": p99,
        "failures": result["failures"],
    }


def _failover(settings: Any, root: Path, queries: np.ndarray) -> dict[str, Any]:
    """2 sets × 2 replicas; SIGKILL one replica during a query stream."""
    import httpx

    from workers.cluster.membership import Membership

    membership = Membership.connect(settings.celery_broker_url, settings.topic_items)
    with nodes(settings, root, 4, 2) as started, router(settings, 2) as url:
        samples: list[tuple[float, float, int]] = []
        stop = threading.Event()

        def stream() -> None:
            with httpx.Client(timeout=30) as client:
                i = 0
                while not stop.is_set():
                    body = {"vector": queries[i % len(queries)].tolist(), "k": K, "fresh": True}
                    began = time.perf_counter()
                    try:
                        status = client.post(url + "/v1/lookup", json=body).status_code
                    except httpx.HTTPError:
                        status = 0
                    samples.append((time.monotonic(), time.perf_counter() - began, status))
                    i += 1

        thread = threading.Thread(target=stream)
        thread.start()
        _wait(lambda: len(samples) >= 50, 300, "a steady stream before the kill")
        victim_id, victim = started[0]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        _wait(lambda: victim_id not in {r.id for r in membership.nodes()}, 60, "record expiry")
        dropped_s = time.monotonic() - killed_at
        _wait(lambda: sum(t >= killed_at for t, _, _ in list(samples)) >= 100, 300, "queries after")
        stop.set()
        thread.join(30)
    after = [(t, d, s) for t, d, s in samples if t >= killed_at]
    before = [d for t, d, _ in samples if t < killed_at]
    return {
        "layout": "2 partition sets x 2 replicas",
        "queries_after_kill": len(after),
        "failed_after_kill": sum(1 for _, _, s in after if s != 200),
        "slowest_after_kill_ms": 1000 * max((d for _, d, _ in after), default=0.0),
        "p50_before_ms": percentiles_ms(before)[0] if before else None,
        "view_dropped_node_s": dropped_s,
        "node_ttl_s": TTL_S,
    }


def run(
    out: Path | str,
    items: int = 100_000,
    dim: int = 64,
    queries: int = 200,
    concurrency: int = 4,
    duration_s: float = 5.0,
    counts: Sequence[int] = (1, 2, 4),
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark, write ``out`` (JSON) and return the figures (see the module docstring)."""
    import tempfile

    from bench.api import _body

    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {
        "setup": {
            "items": items,
            "dim": dim,
            "queries": queries,
            "k": K,
            "concurrency": concurrency,
            "duration_s": duration_s,
            "cpus": cpu_count(),
            "partitions": 4,
        },
        "nodes": {},
    }
    with (
        served_node(items, dim, rng, seed, "bench-cluster") as served,
        tempfile.TemporaryDirectory(prefix="simstream-bench-cluster-") as tmp,
    ):
        generation = served.generation
        # The nodes and the router announce and read membership in their own Redis
        # database: the in-process baseline node is no member of their cluster.
        url = served.settings.celery_broker_url.rsplit("/", 1)[0] + "/5"
        settings = served.settings.model_copy(update={"celery_broker_url": url})
        root = Path(tmp)
        base = _stored(generation, items, dim)
        query = unit_rows(rng.standard_normal((queries, dim)).astype(np.float32))
        truth = np.argsort(-(query @ base.T), axis=1)[:, :K]
        inproc = [list(r.ids) for r in (generation.index.search(q, K) for q in query)]
        report["in_process"] = {
            "recall_at_10": _recall(inproc, truth),
            **_direct(generation.index, query, duration_s),
        }
        bodies = [_body(v, fresh=True) for v in query]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            for count in counts:
                with nodes(settings, root, count, count) as started, router(settings, count) as url:
                    rss = {node_id: _rss(p.pid) for node_id, p in started}
                    recall = _recall(_lookups(url, query), truth)
                    pool.submit(load, url + "/v1/lookup", bodies, 1, 1.0).result()  # warm
                    latency = _load(pool, url, bodies, 1, duration_s)
                    throughput = _load(pool, url, bodies, concurrency, duration_s)
                report["nodes"][str(count)] = {
                    "rss_bytes": rss,
                    "rss_mean_mb": sum(rss.values()) / len(rss) / 2**20,
                    "recall_at_10": recall,
                    "router_p50_ms": latency["p50_ms"],
                    "router_p99_ms": latency["p99_ms"],
                    "router_qps": throughput["qps"],
                    "failures": latency["failures"] + throughput["failures"],
                    "p50_ratio_vs_in_process": latency["p50_ms"] / report["in_process"]["p50_ms"],
                }
                log.info("bench.cluster_nodes_done", nodes=count, **report["nodes"][str(count)])
        report["failover"] = _failover(settings, root, query)
    write_json(out, report)
    log.info("bench.cluster_written", out=str(out))
    return report


def _stored(generation: Any, items: int, dim: int) -> np.ndarray:
    """The indexed vectors by item number (what the exact search compares against)."""
    base = np.zeros((items, dim), dtype=np.float32)
    for n in range(items):
        item = generation.index.get(f"item-{n}")
        base[n] = np.asarray(item.vector, dtype=np.float32)
    return unit_rows(base)
