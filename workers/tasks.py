"""Celery tasks: thin and idempotent; they take topics, offsets and versions, never payloads.

The work itself is done by functions tested without Celery
(`workers.ingest.embedder.RangeEmbedder`, `workers.retrain`). Each worker
process loads an encoder version once, warms it up and keeps it (the two most
recently used versions, `SIMSTREAM_WORKER_MAX_ENCODERS`). ``simstream
worker`` preloads the active version: a solo worker before it takes tasks (no
fork follows), each prefork child right after its fork (the parent never
imports a framework). A prefork child dies with its parent, so killing a
worker kills all of it, and its unacknowledged tasks are delivered again.

Failure path of ``embed_range`` (`failure_kind`): a model that fails
verification is permanent and its range is dead-lettered at once; transient
errors (a version not registered yet, broker or Redis down) are retried with
exponential backoff and jitter for ``task_retry_window_s``; anything else is
retried ``task_max_retries`` times. Then the range is dead-lettered (one entry in
the dead-letter topic naming the range and the reason, and a range marker
flagged ``dead_lettered``) so the dispatcher can move on, and the events stay in
``items`` for a replay.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from simstream.errors import ConfigError, ModelIntegrityError, SimstreamError
from simstream.log import configure_logging, get_logger
from simstream.settings import Settings
from simstream.stack.process import die_with_parent
from workers.celery_app import EMBED_TASK, RETRAIN_TASK, make_celery
from workers.ingest.config import IngestConfig
from workers.ingest.embedder import RangeEmbedder

log = get_logger("tasks")

_lock = threading.Lock()
_app: Celery | None = None
_embedders: OrderedDict[str, RangeEmbedder] = OrderedDict()


def configure(settings: Settings) -> Celery:
    """The worker's Celery app, with simstream's tasks, running them with ``settings``.

    The app is made on the first call (importing this module reads no
    settings). A later call points it at the settings' broker and result
    backend and drops the cached encoders (tests, embedded workers).
    """
    global _app
    with _lock:
        if _app is None:
            _app = make_celery(settings)
            _app.task(name=EMBED_TASK, bind=True, acks_late=True, max_retries=None)(embed_range)
            _app.task(name=RETRAIN_TASK, bind=True, acks_late=True)(retrain)
        else:
            _app.conf.update(
                broker_url=settings.celery_broker_url,
                result_backend=settings.celery_result_backend,
            )
        _app.conf.simstream_settings = settings
        for embedder in _embedders.values():
            embedder.close()
        _embedders.clear()
        return _app


def current_settings() -> Settings:
    """The settings the tasks run with (those of the last `configure`).

    Raises:
        ConfigError: `configure` was not called in this process.
    """
    if _app is None:
        raise ConfigError(
            "The Celery worker app is not configured. Expected a call to "
            "workers.tasks.configure(settings) first. Received: none"
        )
    settings: Settings = _app.conf.simstream_settings
    return settings


def preload_active() -> None:
    """Load and warm the registry's active encoder now, before the first task."""
    from model.registry import Registry

    try:
        version = Registry(current_settings().registry_dir).active()
        if version:
            embedder_for(version)
    except SimstreamError as e:
        log.warning("tasks.encoder_not_preloaded", error=str(e))


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    if _app is None:
        return
    configure_logging(current_settings())
    if _app.conf.get("simstream_preload"):
        die_with_parent(signal.SIGKILL)
        preload_active()


def embedder_for(model_version: str) -> RangeEmbedder:
    """The process-wide embedder of ``model_version``, loading and warming the encoder once.

    At most ``SIMSTREAM_WORKER_MAX_ENCODERS`` (2: the active version and the one a
    re-index embeds) stay loaded: loading another first releases the least recently
    used one, so a worker that saw several promotions does not hold every version.
    A process runs one task at a time (solo or prefork pool), so no task is still
    using an embedder when it is released.
    """
    with _lock:
        settings = current_settings()
        embedder = _embedders.get(model_version)
        if embedder is not None:
            _embedders.move_to_end(model_version)
        else:
            _release_beyond(settings.worker_max_encoders - 1)
            from model.registry import Registry
            from workers.ingest.device import configure_threads, select_device

            if settings.encoder_threads:
                configure_threads(settings.encoder_threads)
            select_device(settings.device)
            encoder = Registry(settings.registry_dir).load(model_version)
            encoder.warmup()
            embedder = RangeEmbedder(IngestConfig.from_settings(settings), encoder)
            _embedders[model_version] = embedder
            log.info("tasks.encoder_loaded", model_version=model_version, pid=os.getpid())
        return embedder


def loaded_versions() -> list[str]:
    """The encoder versions this process holds, least recently used first."""
    with _lock:
        return list(_embedders)


def _release_beyond(keep: int) -> None:
    """Close the least recently used embedders until at most ``keep`` remain."""
    released = False
    while len(_embedders) > keep:
        version, embedder = _embedders.popitem(last=False)
        embedder.close()
        released = True
        log.info("tasks.encoder_released", model_version=version, pid=os.getpid())
    if released:
        gc.collect()  # the encoder's tensors (GPU memory) go with its last reference


def embed_range(
    self: Task,
    topic: str,
    partition: int,
    start: int,
    end: int,
    model_version: str,
    first_failure_at: float | None = None,
) -> dict[str, Any]:
    """Embed source offsets ``[start, end)`` of ``topic``/``partition`` with ``model_version``.

    Task ``simstream.embed_range``, registered by `configure`. While it runs it
    refreshes its ``STARTED`` state (`heartbeat`), which tells the dispatcher not to
    send the range again. A failure is retried or the range dead-lettered as
    `failure_kind` decides; ``first_failure_at`` (epoch s) is carried by retries.
    """
    bound = log.bind(
        task_id=self.request.id,
        partition=partition,
        start=start,
        end=end,
        model_version=model_version,
    )
    config = IngestConfig.from_settings(current_settings())
    try:
        with heartbeat(self, config.dispatch_redispatch_s):
            result = embedder_for(model_version).run(topic, partition, start, end, model_version)
            return result.to_dict()
    except Exception as e:
        kind = failure_kind(e)
        first = first_failure_at or time.time()
        countdown = min(30.0, 2.0**self.request.retries) * (0.5 + random.random())
        if kind == "transient":
            retry = time.time() + countdown - first <= config.task_retry_window_s
        else:
            retry = kind == "unexpected" and self.request.retries < config.task_max_retries
        error = f"{type(e).__name__}: {e}"
        if retry:
            bound.warning(
                "tasks.embed_retrying", error=error, kind=kind, countdown=round(countdown, 2)
            )
            raise self.retry(
                args=self.request.args,
                kwargs={**(self.request.kwargs or {}), "first_failure_at": first},
                exc=e,
                countdown=countdown,
            ) from e
        bound.error(
            "tasks.embed_dead_lettered", error=error, kind=kind, exc_info=kind != "permanent"
        )
        from workers.ingest.deadletter import dead_letter_range

        dead_letter_range(config, topic, partition, start, end, model_version, f"{kind}: {error}")
        return {"partition": partition, "start": start, "end": end, "dead_lettered": True}


def failure_kind(error: BaseException) -> str:
    """How an embed task treats ``error``.

    ``permanent``: a model that failed verification (`ModelIntegrityError`) will
    fail the same way every time; the range is dead-lettered at once.
    ``transient``: any other simstream error (a version not registered yet, an
    unreadable registry file, a broker that did not answer) and connection errors
    of Redis and Kafka; retried with backoff for ``task_retry_window_s``.
    ``unexpected``: anything else (a bug, a record the broker refuses); retried
    ``task_max_retries`` times.
    """
    import redis.exceptions
    from confluent_kafka import KafkaException

    if isinstance(error, ModelIntegrityError):
        return "permanent"
    if isinstance(error, SimstreamError | redis.exceptions.ConnectionError | TimeoutError):
        return "transient"
    if isinstance(error, KafkaException) and error.args and error.args[0].retriable():
        return "transient"
    return "unexpected"


@contextmanager
def heartbeat(task: Task, redispatch_s: float) -> Iterator[None]:
    """Refresh the running task's ``STARTED`` state with the time (``meta["beat"]``) until
    the block ends, a few times per ``redispatch_s``: the dispatcher re-sends a started
    range only when its heartbeat stopped (a dead worker).

    The beats use the task thread's result backend: Celery keeps one backend per
    thread, so asking for it from the beating thread would build a backend and
    open a Redis connection for every task (a seventh of a worker's CPU time on
    MNIST ranges, docs/benchmarks.md "Ingest"). Its Redis client is thread-safe.
    """
    task_id = task.request.id
    if not task_id or task.request.called_directly:
        yield
        return
    meta = {"pid": os.getpid(), "hostname": task.request.hostname}
    interval = min(15.0, max(0.5, redispatch_s / 4))
    stop = threading.Event()
    backend = task.backend

    def beat() -> None:
        while True:
            try:
                backend.store_result(task_id, {**meta, "beat": time.time()}, "STARTED")
            except Exception as e:  # the next beat tries again; the dispatcher tolerates gaps
                log.warning("tasks.heartbeat_failed", task_id=task_id, error=str(e))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="task-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retrain(self: Task, triggered_by: str = "schedule") -> dict[str, Any]:
    """Train a candidate on the labelled items, evaluate, and promote it if it is better.

    Task ``simstream.retrain``, registered by `configure`.
    """
    from workers.retrain import run_retrain
    from workers.retrain.config import RetrainConfig

    config = RetrainConfig.from_settings(current_settings())
    return run_retrain(config, triggered_by=triggered_by, task_id=self.request.id)
