"""A real index node serving 8×8 digits, and the API over it, shared by the API tests.

The node is built once per package: a tiny untrained (but real) Keras CNN is
registered and promoted in a registry under a temporary directory; real item
events (PNG digits from scikit-learn) are published to ``items``; the embed
step is emulated in-process with the workers' own `RangeEmbedder` (no Celery),
which writes the embeddings log the node consumes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from model.registry import Encoder
from producers.config import ProducerConfig
from producers.producer import ItemProducer
from simstream.kafka import end_offsets, ensure_topics
from simstream.settings import Settings
from simstream.stack.local import LocalStack
from simstream.wire import ImagePayload, ItemEvent
from tests.conftest import unique_settings
from tests.waiting import wait_for
from workers.api import create_app
from workers.cache import CacheConfig, RedisResultCache
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

PER_CLASS = 12
EMBEDDING_DIM = 16
CALIBRATED_THRESHOLD = 0.001


@dataclass
class Digits:
    """What the node holds: ids, labels, uint8 images and PNG bytes, by position."""

    ids: list[str]
    labels: list[str]
    images: np.ndarray
    pngs: list[bytes]

    def index_of(self, item_id: str) -> int:
        """Position of an item."""
        return self.ids.index(item_id)


@dataclass
class Served:
    """The node, its settings, encoder version and the digits it serves."""

    settings: Settings
    node: IndexNode
    version: str
    encoder: Encoder
    digits: Digits


def png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def api_settings(base: Settings, data_dir: Path, **overrides: object) -> Settings:
    """Settings on the session stack with unique topics (2 partitions, short waits)."""
    values: dict[str, object] = {
        "partitions": 2,
        "api_write_wait_s": 2.0,
        "snapshot_every_s": 3600.0,
    }
    values.update(overrides)
    return unique_settings(base, data_dir, **values)


def register_cnn(
    settings: Settings,
    distance: str = "cosine",
    calibration: dict[str, float] | None = None,
) -> str:
    """Register and promote a small untrained CNN over 8×8 grey images (16-d output),
    with its distance and calibration (default: cosine, `CALIBRATED_THRESHOLD`)."""
    import keras

    from model import encoders
    from model.inputs import InputSpec
    from model.registry import Registry

    keras.utils.set_random_seed(0)
    builder = encoders.get({"name": "cnn", "filters": [8, 16], "convs_per_block": 1})
    model, spec = builder.build(InputSpec.image(8, 8, 1), EMBEDDING_DIM, seed=0)
    record = Registry(settings.registry_dir).register(
        model,
        spec,
        config={"distance": distance, "embedding_dim": EMBEDDING_DIM},
        metrics={"calibration": calibration or {"threshold": CALIBRATED_THRESHOLD, "f1": 1.0}},
        promote=True,
    )
    return record.version


def publish_digits(settings: Settings) -> Digits:
    """Publish PER_CLASS digits of each class as PNG item events."""
    from model.datasets import load_digits

    data = load_digits()
    picked = np.concatenate([np.flatnonzero(data.y == c)[:PER_CLASS] for c in range(10)])
    images = data.x[picked, :, :, 0]
    labels = [str(int(y)) for y in data.y[picked]]
    ids = [f"digit-{i:04d}" for i in range(len(picked))]
    pngs = [png(image) for image in images]
    # Create the topic first: auto-creation on first produce can lose events on Tansu.
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])  # not auto-created
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i, item_id in enumerate(ids):
            producer.publish(
                ItemEvent.upsert(
                    item_id,
                    ImagePayload(pngs[i]),
                    labels[i],
                    {"parity": "even" if int(labels[i]) % 2 == 0 else "odd", "n": i},
                )
            )
        assert producer.flush(30).ok
    return Digits(ids, labels, images, pngs)


def embed_pending(settings: Settings, encoder: Encoder, node: IndexNode) -> None:
    """Emulate the dispatcher and an embed worker: embed every not yet accounted event of
    the partitions the node holds."""
    from confluent_kafka import Consumer

    from workers.ingest.config import IngestConfig
    from workers.ingest.embedder import RangeEmbedder

    probe = Consumer(settings.kafka_config(**{"group.id": "test-probe"}))
    try:
        ends = end_offsets(probe, settings.topic_items, node.config.owned)
    finally:
        probe.close()
    generation = node.current()
    embedder = RangeEmbedder(IngestConfig.from_settings(settings), encoder)
    try:
        for partition, end in ends.items():
            start = generation.watermarks[partition].next
            if end > start:
                embedder.run(settings.topic_items, partition, start, end, encoder.version)
    finally:
        embedder.close()
    for partition, end in ends.items():
        assert generation.wait_visible(partition, end - 1, 30), f"partition {partition}"


def start_serving(settings: Settings, encoder: Encoder, digits: Digits) -> IndexNode:
    """A started index node serving every published digit (the caller stops it)."""
    node = IndexNode(NodeConfig.from_settings(settings), control_interval_s=0.2)
    node.start()
    try:
        wait_for(lambda: node.serving is not None, 30, message="a serving generation")
        embed_pending(settings, encoder, node)
        wait_for(lambda: len(node.current().index) == len(digits.ids), 30, message="indexed")
    except BaseException:
        node.stop()
        raise
    return node


@pytest.fixture(scope="package")
def served(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A started index node serving every published digit."""
    from model.registry import Registry

    settings = api_settings(stack.settings, tmp_path_factory.mktemp("api-node"))
    version = register_cnn(settings)
    encoder = Registry(settings.registry_dir).load(version)
    digits = publish_digits(settings)
    node = start_serving(settings, encoder, digits)
    try:
        yield Served(settings, node, version, encoder, digits)
    finally:
        node.stop()


@pytest.fixture(scope="package")
def app(served: Served) -> FastAPI:
    """The API over the shared node, with the session Valkey as its cache."""
    return create_app(
        served.settings,
        served.node,
        cache=RedisResultCache(CacheConfig.from_settings(served.settings)),
    )


@pytest.fixture(scope="package")
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTP client of the shared app (lifespan run)."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def patient_client(served: Served) -> Iterator[TestClient]:
    """A second app over the same node whose lookups wait up to 20 s for a write."""
    settings = served.settings.model_copy(update={"api_write_wait_s": 20.0})
    with TestClient(create_app(settings, served.node)) as client:
        yield client
