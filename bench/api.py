"""The API benchmark (``simstream bench api``): HTTP lookups against the index searched directly.

Protocol, one run on one machine:

1. Start an embedded broker and Valkey on free ports; register an encoder over
   ``dim``-d vectors (lookups by vector never call it; the node loads it).
2. Write ``items`` random unit vectors straight into the embeddings log (with
   range markers, as the embed workers would), start an `IndexNode` and wait
   until every item is searchable.
3. Serve `create_app` with the Redis result cache by uvicorn on a free port
   in this process (what ``simstream serve`` runs).
4. A load generator in a *separate process* (so client threads do not compete
   with the server for this process's GIL), each thread with its own keep-alive
   ``http.client`` connection (a lighter client than httpx: on a few cores the
   client's own CPU time otherwise caps the server's QPS), runs each phase for
   ``duration_s``:

   - **uncached**: distinct random query vectors with ``fresh: true``;
   - **cached**: 200 queries, warmed up once, then repeated (hits);
   - **under ingest**: as uncached, while a thread here writes embedding
     records at ``ingest_rate`` per second (the node applies them: the epoch
     moves, shards take write locks).

   Latency (p50/p99) is measured with **one** client thread, so it is service
   time, not queueing; throughput (QPS) with ``concurrency`` threads.
5. **direct**: the same uncached queries searched on the node's `ShardedIndex`
   in this process, no HTTP: one thread for latency, ``concurrency`` for QPS;
   and one thread idling `IDLE_GAP_S` between searches (``direct_idle``), as a
   server's thread does between requests: back to back, the graph stays in the
   core's caches, which a server's search does not find.
6. **HTTP floor**: `bench.http_floor.FixedAnswer`, an app that answers a real
   lookup answer (captured in this run) without doing anything, served by the
   same uvicorn and loaded by the same client with the same bodies: the most
   any app reaches here, one client for latency, ``concurrency`` for QPS.
7. **image**: a second node serving a CNN built like the model benchmark's
   (28×28 grey images), looked up by base64 PNG, uncached and cached, one client
   (`_image_phases`): what a payload-keyed cache hit saves on a real image model.

Latencies are client-side wall times per request; QPS is requests completed
over the phase's wall time. The app's own time per request (from its latency
histogram) is reported too, which separates the HTTP stack from the handler,
and the index search's share of it (``simstream_api_search_seconds``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bench.common import cpu_count, percentiles_ms, unit_rows, write_json
from simstream.log import get_logger

log = get_logger("bench.api")

K = 10
JSON = "application/json"


def load(url: str, bodies: list[bytes], concurrency: int, duration_s: float) -> dict[str, Any]:
    """Send ``bodies`` round-robin to ``url`` from ``concurrency`` threads for ``duration_s``.

    Runs in the load-generator process. Returns latencies (seconds), the number of
    cache hits seen in ``X-Cache`` and the wall time.
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    hits = [0] * concurrency
    failures = [0] * concurrency
    start_at = time.monotonic() + 0.2
    stop_at = start_at + duration_s

    def worker(n: int) -> None:
        headers = {"Content-Type": JSON}
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30.0)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        i = n
        while time.monotonic() < start_at:
            time.sleep(0.001)
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            connection.request("POST", parts.path, body=bodies[i % len(bodies)], headers=headers)
            response = connection.getresponse()
            response.read()
            latencies[n].append(time.perf_counter() - began)
            if response.status != 200:
                failures[n] += 1
            hits[n] += response.getheader("x-cache") == "hit"
            i += concurrency
        connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start_at
    return {
        "latencies": [x for part in latencies for x in part],
        "hits": sum(hits),
        "failures": sum(failures),
        "wall_s": wall,
    }


def _server_time() -> tuple[float, float, float, float]:
    """Sum and count of the app's own time on ``/v1/lookup`` and of its index searches
    (from their histograms)."""
    from prometheus_client import REGISTRY

    labels = {"route": "/v1/lookup", "method": "POST", "status": "200"}
    sample = REGISTRY.get_sample_value
    return (
        sample("simstream_api_request_seconds_sum", labels) or 0.0,
        sample("simstream_api_request_seconds_count", labels) or 0.0,
        sample("simstream_api_search_seconds_sum") or 0.0,
        sample("simstream_api_search_seconds_count") or 0.0,
    )


def _phase(
    client: Any, url: str, bodies: list[bytes], concurrency: int, duration_s: float
) -> dict[str, float]:
    """One load phase; with the app's mean time per lookup, and its index search's
    (``server_search_mean_ms``: 0 when no lookup searched, as cache hits)."""
    before = _server_time()
    result = client.submit(load, url, bodies, concurrency, duration_s).result()
    summary = _summary(result)
    after = _server_time()
    total, count, search_total, searches = (b - a for a, b in zip(before, after, strict=True))
    summary["server_mean_ms"] = 1000 * total / max(1.0, count)
    summary["server_search_mean_ms"] = 1000 * search_total / max(1.0, searches)
    return summary


def _summary(result: dict[str, Any]) -> dict[str, float]:
    latencies = result["latencies"]
    p50, p99 = percentiles_ms(latencies)
    return {
        "requests": len(latencies),
        "qps": len(latencies) / result["wall_s"],
        "p50_ms": p50,
        "p99_ms": p99,
        "hit_ratio": result["hits"] / max(1, len(latencies)),
        "failures": result["failures"],
    }


IDLE_GAP_S = 0.0003
"""Idle time between two searches of the ``direct_idle`` phase: about one HTTP round
trip, during which a serving thread sleeps and its core's caches cool."""


def _direct(
    index: Any, queries: np.ndarray, concurrency: int, duration_s: float, gap_s: float = 0.0
) -> dict[str, float]:
    """The index searched in this process from ``concurrency`` threads, back to back or
    ``gap_s`` apart."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop_at = time.monotonic() + duration_s

    def worker(n: int) -> None:
        i = n
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            index.search(queries[i % len(queries)], K)
            latencies[n].append(time.perf_counter() - began)
            i += concurrency
            if gap_s:
                time.sleep(gap_s)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    flat = [x for part in latencies for x in part]
    p50, p99 = percentiles_ms(flat)
    return {
        "requests": len(flat),
        "qps": len(flat) / (time.monotonic() - started),
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": 1000 * float(np.mean(flat)) if flat else 0.0,
    }


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return unit_rows(rng.standard_normal((n, dim)).astype(np.float32))


class _Feeder:
    """Writes embedding records (upserts + range markers) straight into the embeddings log."""

    def __init__(self, settings: Any, version: str) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.version = version
        self.topic = settings.embeddings_topic(version)
        self.next = dict.fromkeys(range(settings.partitions), 0)
        self.producer = Producer(settings.kafka_config(**{"linger.ms": 5, "acks": "all"}))

    def write(
        self,
        ids: list[str],
        vectors: np.ndarray,
        metadata: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        """Upsert ``ids`` (label ``n % 10``, ``metadata(n)``) and close each partition's range."""
        from simstream.wire import EmbeddingRecord, Op

        partitions = self.settings.partitions
        by_partition: dict[int, list[int]] = {}
        for n in range(len(ids)):
            by_partition.setdefault(n % partitions, []).append(n)
        for partition, rows in by_partition.items():
            start = self.next[partition]
            for offset, n in enumerate(rows, start):
                record = EmbeddingRecord(
                    op=Op.UPSERT,
                    item_id=ids[n],
                    source_offset=offset,
                    model_version=self.version,
                    vector=vectors[n],
                    label=str(n % 10),
                    metadata=metadata(n) if metadata else {},
                    event_time_ms=int(time.time() * 1000),
                )
                self._produce(partition, record.encode())
            end = start + len(rows)
            self._produce(
                partition, EmbeddingRecord.range_marker(start, end, self.version).encode()
            )
            self.next[partition] = end
        self.producer.flush(60)

    def _produce(self, partition: int, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)


class ServedNode(NamedTuple):
    """An index node serving random vectors, as `served_node` yields it.

    Attributes:
        settings: the stack's settings (free ports, a temporary data directory).
        node: the started node.
        generation: its serving generation, holding every item.
        feeder: writes more embedding records into the generation's log.
        build_s: seconds from the first record written to every item searchable.
    """

    settings: Any
    node: Any
    generation: Any
    feeder: _Feeder
    build_s: float


@contextmanager
def served_node(
    items: int,
    dim: int,
    rng: np.random.Generator,
    seed: int,
    prefix: str,
    input_spec: Any = None,
    metadata: Callable[[int], dict[str, Any]] | None = None,
    index_limits: dict[str, int] | None = None,
    encoder: str | dict[str, Any] | None = None,
) -> Iterator[ServedNode]:
    """An embedded broker and Valkey, and an index node holding ``items`` random unit vectors.

    Registers an encoder with ``dim``-d embeddings (``mlp`` over ``dim``-d vectors, or
    ``cnn`` when ``input_spec`` is an image spec; lookups by vector never call it),
    writes the vectors straight into the embeddings log (labels ``n % 10``,
    ``metadata(n)`` when given) and waits until every item is searchable. Stops
    everything on exit.

    Args:
        items: vectors indexed.
        dim: embedding size.
        rng: source of the vectors.
        seed: the encoder's seed.
        prefix: of the temporary data directory.
        input_spec: the model's `InputSpec` (default: ``dim``-d vectors).
        metadata: each item's metadata from its number.
        index_limits: `IndexConfig` fields to override (a scaled-down run's limits).
        encoder: the encoder (a `model.encoders.get` identifier; default ``mlp`` for
            vectors, ``cnn`` for images).
    """
    from dataclasses import replace

    import keras

    from model import encoders
    from model.inputs import InputSpec
    from model.registry import Registry
    from simstream.kafka import ensure_topics
    from simstream.stack.local import LocalStack, local_stack_settings
    from simstream.stack.process import free_port
    from workers.node.config import NodeConfig
    from workers.node.node import IndexNode

    spec = input_spec or InputSpec.vector(dim)
    with tempfile.TemporaryDirectory(prefix=f"simstream-{prefix}-") as tmp:
        suffix = uuid.uuid4().hex[:8]
        settings = local_stack_settings(
            Path(tmp),
            topic_items=f"items-{suffix}",
            topic_embeddings_prefix=f"embeddings-{suffix}",
            snapshot_every_s=3600.0,
            snapshot_every_records=10**9,
            api_port=free_port(),
        )
        stack = LocalStack(settings, services_only=True)
        stack.start()
        node: IndexNode | None = None
        try:
            keras.utils.set_random_seed(seed)
            identifier = encoder or ("mlp" if spec.kind == "vector" else "cnn")
            model, spec = encoders.get(identifier).build(spec, dim, seed=seed)
            version = (
                Registry(settings.registry_dir)
                .register(model, spec, config={"distance": "cosine"}, promote=True)
                .version
            )
            ensure_topics(settings, [settings.topic_items, settings.embeddings_topic(version)])
            feeder = _Feeder(settings, version)
            started = time.perf_counter()
            feeder.write([f"item-{i}" for i in range(items)], _unit(rng, items, dim), metadata)
            config = NodeConfig.from_settings(settings)
            if index_limits:
                config = replace(config, index=config.index.with_(**index_limits))
            node = IndexNode(config, control_interval_s=0.2)
            node.start()
            _wait(lambda: node is not None and node.serving is not None, 120)
            generation = node.current()
            _wait(lambda: len(generation.index) >= items, 600)
            build_s = time.perf_counter() - started
            log.info("bench.node_ready", benchmark=prefix, items=items, seconds=round(build_s, 1))
            yield ServedNode(settings, node, generation, feeder, build_s)
        finally:
            if node is not None:
                node.stop()
            stack.stop()


def run(
    out: Path | str,
    items: int = 20_000,
    dim: int = 64,
    concurrency: int = 4,
    duration_s: float = 5.0,
    ingest_rate: float = 2000.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark, write ``out`` (JSON) and return the figures (see the module docstring)."""
    from workers.api.app import create_app
    from workers.api.server import ThreadedServer
    from workers.cache import CacheConfig, open_result_cache

    rng = np.random.default_rng(seed)
    load_start = os.getloadavg()[0]
    with served_node(items, dim, rng, seed, "bench-api") as served:
        settings, node, generation, feeder, build_s = served
        app = create_app(
            settings, node, cache=open_result_cache(CacheConfig.from_settings(settings))
        )
        url = f"http://127.0.0.1:{settings.api_port}/v1/lookup"
        uncached_q = _unit(rng, 5000, dim)
        cached_q = _unit(rng, 200, dim)
        uncached = [_body(v, fresh=True) for v in uncached_q]
        cached = [_body(v, fresh=False) for v in cached_q]
        context = multiprocessing.get_context("spawn")
        phases: dict[str, dict[str, float]] = {}
        with (
            ThreadedServer(app, "127.0.0.1", settings.api_port),
            ProcessPoolExecutor(1, mp_context=context) as client,
        ):
            client.submit(load, url, cached, 1, 2.0).result()  # warm: spawn, imports, cache
            for name, bodies in (("uncached", uncached), ("cached", cached)):
                phases[name] = _phase(client, url, bodies, 1, duration_s)
                phases[f"{name}_qps"] = _phase(client, url, bodies, concurrency, duration_s)
            # The other query kinds: by id (a vector read from the index) and by a raw
            # array payload (decoded and embedded by the model on a miss).
            for kind, make in (("id", _id_body), ("array", _array_body)):
                picks = rng.integers(0, items, 200)
                hot = [make(int(n), uncached_q[j], fresh=False) for j, n in enumerate(picks)]
                cold = [make(int(n), uncached_q[j], fresh=True) for j, n in enumerate(picks)]
                client.submit(load, url, hot, 1, 1.0).result()  # warm the cache
                phases[f"{kind}_uncached"] = _phase(client, url, cold, 1, duration_s)
                phases[f"{kind}_cached"] = _phase(client, url, hot, 1, duration_s)
            phases.update(_floor_phases(client, url, uncached, concurrency, duration_s))
            phases["direct"] = _direct(generation.index, uncached_q, 1, duration_s)
            phases["direct_qps"] = _direct(generation.index, uncached_q, concurrency, duration_s)
            phases["direct_idle"] = _direct(generation.index, uncached_q, 1, duration_s, IDLE_GAP_S)
            applied_before = generation.applied
            stop = threading.Event()
            ingest = threading.Thread(
                target=_ingest, args=(feeder, rng, dim, ingest_rate, stop), daemon=True
            )
            ingest.start()
            phases["under_ingest"] = _phase(client, url, uncached, 1, duration_s)
            stop.set()
            ingest.join()
            applied = generation.applied - applied_before
            cache_failures = int(app.state.api.cache.stats().get("failures", 0))
            phases.update(_image_phases(client, rng, seed, duration_s))
    report = _report(phases, items, dim, concurrency, duration_s, ingest_rate, applied, build_s)
    report["cache_failures"] = cache_failures
    report["setup"]["load_average_1m"] = {"start": load_start, "end": os.getloadavg()[0]}
    write_json(out, report)
    log.info("bench.api_written", out=str(out))
    return report


def _floor_phases(
    client: Any, url: str, bodies: list[bytes], concurrency: int, duration_s: float
) -> dict[str, dict[str, float]]:
    """The HTTP floor (`bench.http_floor`): a real answer of ``url``, answered by an app
    that does nothing else, under the same server and client as the API."""
    import http.client
    from urllib.parse import urlsplit

    from bench.http_floor import FixedAnswer
    from simstream.stack.process import free_port
    from workers.api.server import ThreadedServer

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30.0)
    connection.request("POST", parts.path, body=bodies[0], headers={"Content-Type": JSON})
    answer = connection.getresponse().read()
    connection.close()
    port = free_port()
    floor_url = f"http://127.0.0.1:{port}{parts.path}"
    with ThreadedServer(FixedAnswer(answer), "127.0.0.1", port):
        client.submit(load, floor_url, bodies, 1, 1.0).result()  # warm the connection path
        return {
            "http_floor": _summary(client.submit(load, floor_url, bodies, 1, duration_s).result()),
            "http_floor_qps": _summary(
                client.submit(load, floor_url, bodies, concurrency, duration_s).result()
            ),
        }


IMAGE_ITEMS = 2000
"""Items of the image node (the encoder's cost per query does not depend on it)."""


def _image_phases(
    client: Any, rng: np.random.Generator, seed: int, duration_s: float
) -> dict[str, dict[str, float]]:
    """Image lookups (base64 PNG, 28×28 grey) against the model benchmark's CNN.

    A node of `IMAGE_ITEMS` random vectors serves an encoder built like the model
    benchmark's (`bench.model.BENCHMARK_CONFIG`: its cost per query is that of
    the trained one); one client, 200 distinct images: ``fresh`` (decoded and
    embedded every time) and cached (warmed once, then hits keyed by the payload).
    """
    from bench.model import BENCHMARK_CONFIG
    from model.inputs import InputSpec
    from workers.api.app import create_app
    from workers.api.server import ThreadedServer
    from workers.cache import CacheConfig, open_result_cache

    spec = InputSpec.image(28, 28, 1)
    with served_node(
        IMAGE_ITEMS, 64, rng, seed, "bench-api-image", spec, encoder=BENCHMARK_CONFIG.encoder
    ) as served:
        settings = served.settings
        app = create_app(
            settings, served.node, cache=open_result_cache(CacheConfig.from_settings(settings))
        )
        url = f"http://127.0.0.1:{settings.api_port}/v1/lookup"
        images = [_png(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(200)]
        hot = [_image_body(text, fresh=False) for text in images]
        cold = [_image_body(text, fresh=True) for text in images]
        with ThreadedServer(app, "127.0.0.1", settings.api_port):
            client.submit(load, url, hot, 1, 2.0).result()  # warm the encoder and the cache
            return {
                "image_uncached": _phase(client, url, cold, 1, duration_s),
                "image_cached": _phase(client, url, hot, 1, duration_s),
            }


def _png(pixels: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _image_body(text: str, fresh: bool) -> bytes:
    return json.dumps({"image": text, "k": K, "fresh": fresh}).encode()


def _report(
    phases: dict[str, dict[str, float]],
    items: int,
    dim: int,
    concurrency: int,
    duration_s: float,
    ingest_rate: float,
    applied: int,
    build_s: float,
) -> dict[str, Any]:
    uncached, cached, direct = phases["uncached"], phases["cached"], phases["direct"]
    ingest = phases["under_ingest"]
    bound = 3 * direct["p99_ms"] + 5
    by_kind = {
        "vector": {"uncached": uncached["p50_ms"], "cached": cached["p50_ms"]},
        **{
            kind: {
                "uncached": phases[f"{kind}_uncached"]["p50_ms"],
                "cached": phases[f"{kind}_cached"]["p50_ms"],
            }
            for kind in ("id", "array", "image")
        },
    }
    over_direct = phases["uncached_qps"]["qps"] / max(phases["direct_qps"]["qps"], 1e-9)
    floor = phases["http_floor_qps"]["qps"]
    over_floor = phases["uncached_qps"]["qps"] / max(floor, 1e-9)
    payload_speedup = by_kind["array"]["uncached"] / max(by_kind["array"]["cached"], 1e-9)
    image_speedup = by_kind["image"]["uncached"] / max(by_kind["image"]["cached"], 1e-9)
    return {
        "benchmark": "api",
        "qps_uncached": round(phases["uncached_qps"]["qps"], 1),
        "qps_cached": round(phases["cached_qps"]["qps"], 1),
        "p50_ms_uncached": round(uncached["p50_ms"], 3),
        "p99_ms_uncached": round(uncached["p99_ms"], 3),
        "p50_ms_cached": round(cached["p50_ms"], 3),
        "p99_ms_cached": round(cached["p99_ms"], 3),
        "direct_qps": round(phases["direct_qps"]["qps"], 1),
        "direct_p50_ms": round(direct["p50_ms"], 3),
        "direct_p99_ms": round(direct["p99_ms"], 3),
        "p50_ms_under_ingest": round(ingest["p50_ms"], 3),
        "p99_ms_under_ingest": round(ingest["p99_ms"], 3),
        "ingest_records_per_s": round(applied / duration_s, 1),
        "server_mean_ms_uncached": round(uncached["server_mean_ms"], 3),
        "server_mean_ms_cached": round(cached["server_mean_ms"], 3),
        "server_mean_ms_uncached_at_concurrency": round(
            phases["uncached_qps"]["server_mean_ms"], 3
        ),
        "server_search_ms_uncached": round(uncached["server_search_mean_ms"], 3),
        "server_search_ms_uncached_at_concurrency": round(
            phases["uncached_qps"]["server_search_mean_ms"], 3
        ),
        "direct_mean_ms": round(direct["mean_ms"], 3),
        "direct_mean_ms_with_idle_gaps": round(phases["direct_idle"]["mean_ms"], 3),
        "p99_ms_uncached_at_concurrency": round(phases["uncached_qps"]["p99_ms"], 3),
        "p99_ms_cached_at_concurrency": round(phases["cached_qps"]["p99_ms"], 3),
        "cache_hit_ratio": round(cached["hit_ratio"], 4),
        "failures": int(sum(p.get("failures", 0) for p in phases.values())),
        "p50_ms_by_kind": {
            kind: {name: round(v, 3) for name, v in figures.items()}
            for kind, figures in by_kind.items()
        },
        "qps_uncached_over_direct": round(over_direct, 3),
        "http_floor_qps": round(floor, 1),
        "http_floor_p50_ms": round(phases["http_floor"]["p50_ms"], 3),
        "http_floor_p99_ms": round(phases["http_floor"]["p99_ms"], 3),
        "qps_uncached_over_http_floor": round(over_floor, 3),
        "http_floor_over_direct": round(floor / max(phases["direct_qps"]["qps"], 1e-9), 3),
        "payload_hit_speedup": round(payload_speedup, 2),
        "image_hit_speedup": round(image_speedup, 2),
        "targets": {
            "uncached_qps_ge_half_direct": over_direct >= 0.5,
            "uncached_qps_ge_half_http_floor": over_floor >= 0.5,
            "cached_p50_below_uncached_every_kind": all(
                f["cached"] < f["uncached"] for f in by_kind.values()
            ),
            "image_hit_ge_5x_faster_than_miss": image_speedup >= 5.0,
            "cached_p50_le_2ms": cached["p50_ms"] <= 2.0,
            "uncached_p99_le_3x_direct_p99_plus_5ms": uncached["p99_ms"] <= bound,
            "uncached_p99_bound_ms": round(bound, 3),
        },
        "setup": {
            "items": items,
            "dim": dim,
            "k": K,
            "space": "cosine",
            "latency_clients": 1,
            "throughput_clients": concurrency,
            "duration_s_per_phase": duration_s,
            "ingest_rate_target": ingest_rate,
            "index_build_s": round(build_s, 1),
            "cpus": cpu_count(),
            "client": "separate process, keep-alive http.client connections, one per thread",
            "http": _http_stack(),
        },
    }


def _ingest(
    feeder: _Feeder, rng: np.random.Generator, dim: int, rate: float, stop: threading.Event
) -> None:
    batch = max(1, int(rate / 10))
    n = 0
    while not stop.is_set():
        began = time.monotonic()
        ids = [f"ingest-{n + i}" for i in range(batch)]
        feeder.write(ids, _unit(rng, batch, dim))
        n += batch
        stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))


def _body(vector: np.ndarray, fresh: bool) -> bytes:
    return json.dumps({"vector": vector.tolist(), "k": K, "fresh": fresh}).encode()


def _id_body(n: int, vector: np.ndarray, fresh: bool) -> bytes:
    return json.dumps({"id": f"item-{n}", "k": K, "fresh": fresh}).encode()


def _array_body(n: int, vector: np.ndarray, fresh: bool) -> bytes:
    return json.dumps({"array": vector.tolist(), "k": K, "fresh": fresh}).encode()


def _wait(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark index did not become ready")
        time.sleep(0.1)


def _http_stack() -> str:
    """What uvicorn's ``auto`` picks here: httptools + uvloop when installed, else h11 + asyncio."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} + {loop}"
