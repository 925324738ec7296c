"""A retrain run skips a model of your own vectors: it has no encoder to train."""

from __future__ import annotations

import pytest

from model.registry import Registry
from model.vectors import register_vectors
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.workers.retrain.helpers import FAST_RETRAIN, digits, publish_items, with_overrides
from workers.retrain.config import RetrainConfig
from workers.retrain.run import run_retrain

pytestmark = pytest.mark.services


def test_a_run_while_a_vectors_model_is_active_is_skipped_saying_why(settings: Settings) -> None:
    fast = with_overrides(settings, **FAST_RETRAIN)
    ensure_topics(fast, [fast.topic_items, fast.topic_dlq])
    publish_items(fast, digits(range(3)))
    registry = Registry(fast.registry_dir)
    register_vectors(registry, 64, "cosine", promote=True)

    record = run_retrain(RetrainConfig.from_settings(fast), triggered_by="test")

    assert record["decision"] == "skipped"
    assert record["reason"].startswith(
        "the active model v1 indexes your own vectors (registered with "
        "`simstream models register-vectors`): it has no encoder to retrain"
    )
    assert [v.version for v in registry.list()] == ["v1"]
    assert registry.active() == "v1"
