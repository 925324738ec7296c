"""Helpers of the retrain tests: digits to publish, a briefly trained v1, a digits pipeline."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from producers.config import ProducerConfig
from producers.producer import ItemProducer
from producers.sources import DigitsSource, SourceItem
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from workers.ingest.supervisor import DispatcherSupervisor
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

#: Retraining sized for 2 shared CPU cores: digits, a 16-d CNN, 2 short epochs.
FAST_RETRAIN: dict[str, Any] = {
    "model_epochs": 2,
    "model_embedding_dim": 16,
    "retrain_holdout": 0.25,
    "retrain_promote_margin": 0.0,
    "embed_batch_size": 256,
    "dispatch_max_items": 200,
    "snapshot_every_s": 0.5,
}


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """The test's settings with some values replaced."""
    return Settings.load(**{**settings.model_dump(), **overrides})


def digits(classes: Iterable[int]) -> list[SourceItem]:
    """The digits of ``classes`` as source items (ids ``digits/<i>``, labels ``"0"``..``"9"``)."""
    wanted = {str(c) for c in classes}
    return [item for item in DigitsSource() if item.label in wanted]


def raw(item: SourceItem) -> np.ndarray:
    """The raw payload of a source item (an upsert)."""
    assert item.payload is not None
    return item.payload.to_array()


def publish_items(settings: Settings, items: Iterable[SourceItem]) -> int:
    """Publish upserts of ``items``; return how many were acknowledged."""
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for item in items:
            producer.publish(item.to_event())
        summary = producer.flush(60)
    assert summary.ok, summary
    return summary.delivered


def train_v1(settings: Settings, classes: Iterable[int] = range(5), steps: int = 10) -> str:
    """Train a small CNN briefly on digits of ``classes``, register and promote it."""
    from model import datasets
    from model.registry import Registry
    from model.training import TrainConfig, train

    data = datasets.load_digits()
    subset = data.subset(np.flatnonzero(np.isin(data.y, list(classes))), name="digits 0-4")
    config = TrainConfig(
        encoder="cnn",
        embedding_dim=16,
        epochs=1,
        steps_per_epoch=steps,
        validation_split=0.0,
        verbose=0,
    )
    result = train(subset, config)
    registry = Registry(settings.registry_dir)
    record = registry.register(
        result.model, result.input_spec, config=result.model_config(), promote=True
    )
    return record.version


@contextmanager
def running_pipeline(settings: Settings, node: IndexNode | None = None) -> Iterator[IndexNode]:
    """Dispatcher supervisor (thread) + index node following the registry; needs a worker."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    stop = threading.Event()
    supervisor = DispatcherSupervisor.from_settings(settings, poll_s=0.3)
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    node = node or IndexNode(NodeConfig.from_settings(settings), control_interval_s=0.2)
    node.start()
    try:
        yield node
    finally:
        stop.set()
        thread.join(60)
        node.stop()


def simstream(*args: str) -> list[str]:
    """The argv of a ``simstream`` command run by this interpreter."""
    return [sys.executable, "-m", "simstream.cli.main", *args]
