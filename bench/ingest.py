"""`simstream bench ingest`: end-to-end ingest against its physical limits, in one run.

On a fresh embedded stack (Tansu broker + Valkey on free ports), with a real
Celery worker, the dispatcher and the index node in this process:

1. ``encoder_limit``: the encoder alone embedding the same inputs (items/s), in
   the better of the two layouts a worker can run: one process using every core
   (``encoder_limit_one_process``), or one single-threaded process per core side
   by side (``encoder_limit_per_core``);
2. ``insert_limit``: one raw hnswlib index adding the same embeddings (items/s);
3. ``throughput``: items published as fast as possible by a connected producer
   until the index has applied all of them (publish → searchable, items/s);
   ``steady_throughput``: the rate at which the index applied them between 10 %
   and 90 % of the items (`steady_rate`), once the pipeline is full, without
   its fill and drain (the first and the last range's wait and embedding);
4. freshness (event time → searchable) p50/p99 while publishing at half of
   that throughput for ``freshness_seconds``;
5. ``cores_by_role``: the cores each process of the stack kept busy during the
   throughput phase (`bench.cpu_shares`: the encoder workers, the dispatcher,
   the broker, Valkey, and this process, which runs the index node and the
   producer; ``publisher_cores``: the publishing thread's share of it), and
   ``encoder_workers_items_per_cpu_s`` beside
   ``encoder_limit_items_per_cpu_s``: what a CPU-second of a worker embeds in
   the pipeline, and alone.

Both stages share this machine's cores, so the bound for the pipeline is
``pipeline_limit = 1 / (1/encoder_limit + 1/insert_limit)`` and
``efficiency = throughput / pipeline_limit`` (``steady_efficiency`` likewise with
``steady_throughput``). The encoder limits are measured
right before and right after the pipeline phases and the best of each is
taken (``encoder_limits_before_after``), so a machine that other work slowed
during one measurement cannot make the efficiency exceed 1.

Datasets: ``digits`` (scikit-learn's 8×8 digits and a small CNN: the encoder is
nearly free) and ``mnist`` (MNIST test images, 28×28, and the CNN of the model
benchmark, `bench.model.BENCHMARK_CONFIG`, trained briefly on 2,000 of them:
the realistic case, where embedding dominates).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import cpu_shares
from bench.common import write_json
from simstream.errors import DatasetError
from simstream.log import get_logger
from simstream.settings import Settings
from workers.ingest.device import configure_threads, cpu_cores, worker_layout

log = get_logger("bench.ingest")


DATASETS = {
    "digits": "sklearn digits (8x8), repeated",
    "mnist": "MNIST test set (28x28), repeated; the model benchmark's CNN",
}
_MNIST_TRAIN = 2000
ROLES = {
    "encoder workers": "worker --queues embed",
    "dispatcher": " dispatcher ",
    "broker": "tansu",
    "valkey": "valkey-server",
}
"""The stack's processes by a text of their command lines (`bench.cpu_shares`); the
benchmark's own process (the index node and the producer) is ``benchmark``."""


def _images(dataset: str, items: int, mnist_dir: Path | None) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(images, labels, training set)``: uint8 images repeated up to ``items``."""
    from model.datasets import Dataset, load_digits, load_mnist

    if dataset == "mnist":
        data = load_mnist(mnist_dir, split="test")
        images = data.x.reshape(len(data.x), 28, 28)
        n = min(_MNIST_TRAIN, len(data))
        train_set: Dataset = Dataset(
            data.x[:n], data.y[:n], data.class_names, data.input_spec, data.name
        )
        targets = data.y
    else:
        from sklearn.datasets import load_digits as sklearn_digits

        digits = sklearn_digits()
        images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
        targets = digits.target
        train_set = load_digits()
    reps = -(-items // len(images))
    return np.tile(images, (reps, 1, 1))[:items], np.tile(targets, reps)[:items], train_set


def _train_encoder(settings: Settings, epochs: int, dataset: str, train_set: Any) -> str:
    from dataclasses import replace

    from model.registry import Registry
    from model.training import TrainConfig, train

    if dataset == "mnist":
        from bench.model import BENCHMARK_CONFIG

        config = replace(BENCHMARK_CONFIG, epochs=epochs, verbose=0, patience=epochs)
    else:
        config = TrainConfig(
            encoder="cnn", embedding_dim=64, epochs=epochs, verbose=0, patience=epochs
        )
    result = train(train_set, config)
    registry = Registry(settings.registry_dir)
    return registry.register(
        result.model, result.input_spec, config=result.model_config(), promote=True
    ).version


def run(
    out: Path,
    items: int = 20000,
    partitions: int = 4,
    epochs: int = 2,
    freshness_seconds: float = 10.0,
    work_dir: Path | None = None,
    dataset: str = "digits",
    mnist_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write its JSON to ``out``; return the figures.

    ``work_dir`` keeps the stack's data and child logs there (default: a temporary
    directory removed at the end). ``dataset`` is ``digits`` or ``mnist`` (read
    from ``mnist_dir``).
    """
    if dataset not in DATASETS:
        raise DatasetError(
            f"Unknown dataset. Expected one of {sorted(DATASETS)}. Received: {dataset!r}"
        )
    import hnswlib

    from model.registry import Registry
    from producers.config import ProducerConfig
    from producers.producer import ItemProducer
    from simstream.stack.local import LocalStack, local_stack_settings
    from simstream.wire import ArrayPayload, ItemEvent
    from workers.node.config import NodeConfig
    from workers.node.node import IndexNode

    with tempfile.TemporaryDirectory(prefix="simstream-bench-") as scratch:
        tmp = str(work_dir or scratch)
        settings = local_stack_settings(
            Path(tmp),
            partitions=partitions,
            snapshot_every_s=3600.0,
            snapshot_every_records=10**9,
        )
        with LocalStack(settings, services_only=True):
            images, labels, train_set = _images(dataset, items, mnist_dir)
            version = _train_encoder(settings, epochs, dataset, train_set)
            encoder = Registry(settings.registry_dir).load(version)
            inputs = np.stack([encoder.input_spec.to_compact_input(x) for x in images])
            _warm(encoder, inputs, settings.embed_batch_size)

            vectors = encoder.embed(inputs, settings.embed_batch_size)
            limits = [_encoder_limits(settings, version, encoder, inputs, Path(tmp))]

            raw = hnswlib.Index(space=settings.index_space, dim=vectors.shape[1])
            raw.init_index(
                max_elements=items,
                M=settings.index_m,
                ef_construction=settings.index_ef_construction,
            )
            started = time.perf_counter()
            raw.add_items(vectors, np.arange(items))
            insert_limit = items / (time.perf_counter() - started)
            log.info("bench.ingest_limits_measured", when="before", insert_limit=insert_limit)

            children = _pipeline_processes(settings, version)
            try:
                for child in children:
                    child.start(settings.logs_dir, timeout_s=120)
                node = IndexNode(NodeConfig.from_settings(settings))
                node.start()
                try:
                    events = [
                        ItemEvent.upsert(
                            f"item-{i}", ArrayPayload.from_array(images[i]), str(labels[i])
                        )
                        for i in range(items)
                    ]
                    generation = node.current()
                    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
                        _warm_up(producer, events[0])
                        cpu_before = cpu_shares.snapshot(os.getpid())
                        started = time.perf_counter()
                        publishing = time.thread_time()
                        for event in events[1:]:
                            producer.publish(event)
                        publisher_cpu_s = time.thread_time() - publishing
                        progress = _wait_applied(generation, items, timeout_s=600)
                        elapsed = time.perf_counter() - started
                        cpu = cpu_shares.shares(
                            cpu_before, cpu_shares.snapshot(os.getpid()), ROLES, os.getpid()
                        )
                    throughput = (items - 1) / elapsed
                    steady = steady_rate(progress, items)

                    rate = throughput / 2
                    generation.reset_freshness()
                    sent = _publish_at_rate(settings, images, labels, rate, freshness_seconds)
                    _wait_applied(generation, items + sent, timeout_s=300)
                    freshness = generation.freshness()
                finally:
                    node.stop()
            finally:
                for child in reversed(children):
                    child.stop()
            limits.append(_encoder_limits(settings, version, encoder, inputs, Path(tmp)))
    one_process = max(one for one, _ in limits)
    per_core = max(core for _, core in limits)
    encoder_limit = max(one_process, per_core)
    pipeline_limit = 1.0 / (1.0 / encoder_limit + 1.0 / insert_limit)
    result = {
        "items": items,
        "partitions": partitions,
        "model_version": version,
        "dataset": DATASETS[dataset],
        "throughput": throughput,
        "encoder_limit": encoder_limit,
        "encoder_limit_one_process": one_process,
        "encoder_limit_per_core": per_core,
        "encoder_limits_before_after": [
            {"one_process": one, "per_core": core} for one, core in limits
        ],
        "cpu_cores": cpu_cores(),
        "insert_limit": insert_limit,
        "pipeline_limit": pipeline_limit,
        "efficiency": throughput / pipeline_limit,
        "steady_throughput": steady,
        "steady_efficiency": steady / pipeline_limit,
        "cores_by_role": {role: round(used / elapsed, 3) for role, used in sorted(cpu.items())},
        "publisher_cores": round(publisher_cpu_s / elapsed, 3),
        "encoder_workers_items_per_cpu_s": (
            (items - 1) / cpu["encoder workers"] if cpu.get("encoder workers") else None
        ),
        "encoder_limit_items_per_cpu_s": per_core / cpu_cores(),
        "freshness_rate": rate,
        "freshness_items": sent,
        "freshness_p50_s": freshness["p50_s"],
        "freshness_p99_s": freshness["p99_s"],
        "ingest_seconds": elapsed,
    }
    write_json(out, result)
    return result


def _encoder_limits(
    settings: Settings, version: str, encoder: Any, inputs: np.ndarray, scratch: Path
) -> tuple[float, float]:
    """The encoder's items/s in both layouts: ``(one process, one process per core)``.

    Measured before and after the pipeline runs; the report takes the best of
    each, so a limit measured while the machine was less loaded than during the
    pipeline phases can only raise the bound, never flatter the efficiency.
    """
    started = time.perf_counter()
    encoder.embed(inputs, settings.embed_batch_size)
    one_process = len(inputs) / (time.perf_counter() - started)
    per_core = _encoder_limit_per_core(settings, version, inputs, scratch)
    log.info("bench.encoder_limits_measured", one_process=one_process, per_core=per_core)
    return one_process, per_core


def _encoder_limit_per_core(
    settings: Settings, version: str, inputs: np.ndarray, scratch: Path
) -> float:
    """Items/s of one encoder process per core, one CPU thread each, all at once.

    The other layout the worker can run (`workers.ingest.device`); on a few
    cores it beats one process using them all. Processes are spawned, never forked.
    """
    import multiprocessing

    processes = cpu_cores()
    path = scratch / "bench-inputs.npy"
    np.save(path, inputs)
    context = multiprocessing.get_context("spawn")
    barrier, spans = context.Barrier(processes), context.Queue()
    args = (str(settings.registry_dir), version, str(path), settings.embed_batch_size)
    workers = [
        context.Process(target=_embed_timed, args=(*args, barrier, spans)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    timings = [spans.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(30)
    path.unlink()
    started = min(start for start, _ in timings)
    ended = max(end for _, end in timings)
    return processes * len(inputs) / (ended - started)


def _warm(encoder: Any, inputs: np.ndarray, batch_size: int) -> None:
    """Run every batch shape the timed pass will see (a full batch, and the last,
    shorter one), so the limit does not count the backend tracing a new shape."""
    encoder.warmup(batch_size)
    encoder.embed(inputs[-(len(inputs) % batch_size or batch_size) :], batch_size)


def _embed_timed(
    registry_dir: str,
    version: str,
    inputs_path: str,
    batch_size: int,
    barrier: Any,
    spans: Any,
) -> None:
    """In a spawned process: embed the inputs with one CPU thread; put (start, end) wall times."""
    from model.registry import Registry

    configure_threads(1)
    encoder = Registry(registry_dir).load(version)
    inputs = np.load(inputs_path)
    _warm(encoder, inputs, batch_size)
    barrier.wait()
    started = time.time()
    encoder.embed(inputs, batch_size)
    spans.put((started, time.time()))


def _pipeline_processes(settings: Settings, version: str) -> list[Any]:
    """The embed worker and the dispatcher as child processes, as they are deployed."""
    from simstream.stack.local import simstream_command
    from simstream.stack.process import ChildService
    from workers.celery_app import make_celery
    from workers.ingest.config import IngestConfig

    env = settings.to_env(metrics_port=0)
    celery = make_celery(settings)
    processes = worker_layout(IngestConfig.from_settings(settings)).processes
    worker_log = settings.logs_dir / "bench-worker.log"

    def worker_ready() -> bool:
        # Measure only once every encoder process has loaded and warmed its encoder.
        loaded = worker_log.read_text(errors="replace").count("tasks.encoder_loaded")
        return loaded >= processes and bool(celery.control.ping(timeout=0.5))

    dispatcher_log = settings.logs_dir / "bench-dispatcher.log"

    def dispatcher_ready() -> bool:
        # Joining a consumer group takes seconds; measure only once partitions are assigned.
        return "dispatcher.partitions_assigned" in dispatcher_log.read_text(errors="replace")

    return [
        ChildService(
            name="bench-worker",
            argv=simstream_command("worker", "--queues", "embed", "--hostname", "bench@%h"),
            url="celery worker",
            healthy=worker_ready,
            env=env,
        ),
        ChildService(
            name="bench-dispatcher",
            argv=simstream_command("dispatcher", "--model-version", version),
            url="dispatcher",
            healthy=dispatcher_ready,
            env=env,
        ),
    ]


def _warm_up(producer: Any, event: Any) -> None:
    """Publish ``event`` and wait for it: the producer is then connected and holds its
    idempotent producer id, as a long-lived producer's would (a new one takes about
    0.5 s for that: librdkafka asks again for the id only after 500 ms)."""
    producer.publish_sync(event)


def _wait_applied(generation: Any, count: int, timeout_s: float) -> list[tuple[float, int]]:
    """Wait until ``count`` records are applied; return ``(monotonic s, applied)`` samples."""
    deadline = time.monotonic() + timeout_s
    samples: list[tuple[float, int]] = []
    while time.monotonic() < deadline:
        applied = generation.applied
        samples.append((time.monotonic(), applied))
        if applied >= count:
            return samples
        time.sleep(0.02)
    raise TimeoutError(f"only {generation.applied} of {count} records applied in {timeout_s} s")


def steady_rate(
    samples: list[tuple[float, int]], total: int, low: float = 0.1, high: float = 0.9
) -> float:
    """Records applied per second between the first samples at ``low`` and at ``high``
    of ``total``: the pipeline's rate once full, without its fill and drain (the first
    range's wait and embedding, the last one's), which freshness measures.

    Raises:
        ValueError: the samples never reach ``high`` of ``total``, or the two points
            coincide (too few samples).
    """
    first = next((s for s in samples if s[1] >= low * total), None)
    last = next((s for s in samples if s[1] >= high * total), None)
    if first is None or last is None or last[0] <= first[0]:
        raise ValueError(f"Expected samples from {low:.0%} to {high:.0%} of {total} applied")
    return (last[1] - first[1]) / (last[0] - first[0])


def _publish_at_rate(
    settings: Settings, images: np.ndarray, labels: np.ndarray, rate: float, seconds: float
) -> int:
    from producers.config import ProducerConfig
    from producers.producer import ItemProducer
    from simstream.wire import ArrayPayload, ItemEvent

    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        _warm_up(
            producer,
            ItemEvent.upsert("fresh-0", ArrayPayload.from_array(images[0]), str(labels[0])),
        )
        sent = 1
        started = time.perf_counter()
        while (now := time.perf_counter() - started) < seconds:
            due = int(now * rate)
            while sent < due:
                i = sent % len(images)
                producer.publish(
                    ItemEvent.upsert(
                        f"fresh-{sent}", ArrayPayload.from_array(images[i]), str(labels[i])
                    )
                )
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
    return sent
