"""Celery tasks: thin and idempotent; they take topics, offsets and versions, never payloads.

The work itself is done by functions tested without Celery
(`workers.ingest.embedder.RangeEmbedder`, `workers.retrain`). Each worker
process loads an encoder version once, warms it up and keeps it (the two most
recently used versions, `SIMSTREAM_WORKER_MAX_ENCODERS`). ``simstream
worker`` preloads the active version: a solo worker before it takes tasks (no
fork follows), each prefork child right after its fork (the parent never
imports a framework). A prefork child dies with its parent, so killing a
worker kills all of it, and its unacknowledged tasks are delivered again.

Failure path of ``embed_range``: retries with exponential backoff and jitter;
after ``task_max_retries`` attempts the range is dead-lettered (one entry in
the dead-letter topic naming the range and the reason) so the dispatcher can
move on, and the events stay in ``items`` for a replay.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
from collections import OrderedDict
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from simstream.errors import ConfigError, RegistryError, SimstreamError
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
            _app.task(name=EMBED_TASK, bind=True, acks_late=True)(embed_range)
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
    self: Task, topic: str, partition: int, start: int, end: int, model_version: str
) -> dict[str, Any]:
    """Embed source offsets ``[start, end)`` of ``topic``/``partition`` with ``model_version``.

    Task ``simstream.embed_range``, registered by `configure`.
    """
    bound = log.bind(
        task_id=self.request.id,
        partition=partition,
        start=start,
        end=end,
        model_version=model_version,
    )
    settings = current_settings()
    try:
        return (
            embedder_for(model_version).run(topic, partition, start, end, model_version).to_dict()
        )
    except SimstreamError as e:
        permanent = isinstance(e, RegistryError)
        if not permanent and self.request.retries < settings.task_max_retries:
            countdown = min(30.0, 2.0**self.request.retries) * (0.5 + random.random())
            bound.warning("tasks.embed_retrying", error=str(e), countdown=round(countdown, 2))
            raise self.retry(
                exc=e, countdown=countdown, max_retries=settings.task_max_retries
            ) from e
        bound.error("tasks.embed_dead_lettered", error=str(e))
        from workers.ingest.deadletter import dead_letter_range

        dead_letter_range(
            IngestConfig.from_settings(settings),
            topic,
            partition,
            start,
            end,
            model_version,
            str(e),
        )
        return {"partition": partition, "start": start, "end": end, "dead_lettered": True}


def retrain(self: Task, triggered_by: str = "schedule") -> dict[str, Any]:
    """Train a candidate on the labelled items, evaluate, and promote it if it is better.

    Task ``simstream.retrain``, registered by `configure`.
    """
    from workers.retrain import run_retrain
    from workers.retrain.config import RetrainConfig

    config = RetrainConfig.from_settings(current_settings())
    return run_retrain(config, triggered_by=triggered_by, task_id=self.request.id)
