"""Fixtures for the workers: a registered encoder, a real Celery worker, pipeline parts."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

VECTOR_DIM = 16


def register_encoder(settings: Settings, kind: str = "vector", seed: int = 0) -> str:
    """Register and promote an untrained but real Keras encoder; return its version.

    ``kind="vector"``: an MLP over 16-d float vectors; ``kind="image"``: the small
    CNN over 8×8 grey images. Untrained weights embed deterministically, which
    is all the pipeline tests need.
    """
    import keras

    from model import encoders
    from model.inputs import InputSpec
    from model.registry import Registry

    keras.utils.set_random_seed(seed)
    if kind == "vector":
        spec = InputSpec.vector(VECTOR_DIM)
        model, spec = encoders.get("mlp").build(spec, embedding_dim=8, seed=seed)
    else:
        spec = InputSpec.image(8, 8, 1)
        model, spec = encoders.get("cnn").build(spec, embedding_dim=8, seed=seed)
    registry = Registry(settings.registry_dir)
    return registry.register(model, spec, config={"distance": "cosine"}, promote=True).version


@pytest.fixture
def encoder_version(settings: Settings) -> str:
    """A promoted vector encoder in the test's registry."""
    return register_encoder(settings, "vector")


@pytest.fixture
def celery_worker(settings: Settings) -> Iterator[Celery]:
    """A real Celery worker (pool solo, in a thread) running simstream's tasks."""
    from workers.tasks import configure

    app = configure(settings)
    app.control.purge()
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        shutdown_timeout=30,
        queues=["embed", "train", "default"],
    ):
        yield app
    configure(settings)


@pytest.fixture
def pipeline(
    settings: Settings, encoder_version: str, celery_worker: Celery
) -> Iterator[IndexNode]:
    """Dispatcher thread + Celery worker + index node, all real, for one test."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    stop = threading.Event()
    dispatcher = Dispatcher(
        IngestConfig.from_settings(settings), encoder_version, celery_app=celery_worker
    )
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    node = IndexNode(NodeConfig.from_settings(settings))
    node.start()
    try:
        yield node
    finally:
        stop.set()
        thread.join(30)
        node.stop()
