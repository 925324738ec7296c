"""A retrained, promoted version carries its calibrated threshold, and `/v1/classify` uses it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from model.registry import Registry
from simstream.settings import Settings
from tests.waiting import wait_for
from tests.workers.api.conftest import embed_pending
from tests.workers.retrain.helpers import FAST_RETRAIN, digits, publish_items, with_overrides
from workers.api import create_app
from workers.node.config import NodeConfig
from workers.node.node import IndexNode
from workers.retrain.config import RetrainConfig
from workers.retrain.run import run_retrain

pytestmark = pytest.mark.services


def test_a_promoted_retrained_version_serves_classify_with_its_own_calibrated_threshold(
    settings: Settings,
) -> None:
    fast = with_overrides(settings, **FAST_RETRAIN, classify_threshold=0.5)
    items = digits(range(4))
    publish_items(fast, items)

    record = run_retrain(RetrainConfig.from_settings(fast), triggered_by="test")

    assert record["decision"] == "promoted", record["reason"]
    registry = Registry(fast.registry_dir)
    version = record["candidate_version"]
    calibration = registry.get(version).metrics["calibration"]
    assert calibration == record["metrics"]["candidate"]["calibration"]
    assert 0 < calibration["threshold"] != fast.classify_threshold
    assert calibration["pairs"] == record["data"]["holdout"]
    node = IndexNode(NodeConfig.from_settings(fast), control_interval_s=0.2)
    node.start()
    try:
        wait_for(
            lambda: node.serving is not None and node.serving.version == version,
            30,
            message=f"{version} serving",
        )
        embed_pending(fast, registry.load(version), node)
        with TestClient(create_app(fast, node)) as client:
            response = client.post("/v1/classify", json={"id": items[0].id, "k": 5})
    finally:
        node.stop()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == version
    assert body["threshold_source"] == "model"
    assert body["threshold"] == calibration["threshold"]
