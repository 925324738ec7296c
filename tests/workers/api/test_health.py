"""Readiness means "can answer correctly": a burst of lag is reported, not an outage."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from model.registry import Registry
from producers.config import ProducerConfig
from producers.producer import ItemProducer
from simstream.kafka import ensure_topics
from simstream.stack.local import LocalStack
from simstream.wire import ItemEvent
from tests.waiting import wait_for
from tests.workers.api.conftest import EMBEDDING_DIM, api_settings, embed_pending, register_cnn
from workers.api import create_app
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services

MAX_LAG = 3
BURST = 10


def test_a_node_that_caught_up_once_stays_ready_through_a_burst_and_answers_say_degraded(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = api_settings(
        stack.settings, tmp_path_factory.mktemp("burst"), api_ready_max_lag=MAX_LAG
    )
    version = register_cnn(settings)
    ensure_topics(settings, [settings.topic_items])
    node = IndexNode(NodeConfig.from_settings(settings), control_interval_s=0.2)
    node.start()
    vector = [1.0] + [0.0] * (EMBEDDING_DIM - 1)
    query = {"vector": vector, "k": 1, "fresh": True}
    try:
        with TestClient(create_app(settings, node)) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 30, message="ready")
            assert client.post("/v1/lookup", json=query).json()["degraded"] is False

            with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
                for i in range(BURST):
                    producer.publish(ItemEvent.delete(f"burst-{i}"))
                assert producer.flush(30).ok
            generation = node.current()
            wait_for(lambda: generation.source_lag() > MAX_LAG, 30, message="the burst seen")

            ready = client.get("/readyz")
            lookup = client.post("/v1/lookup", json=query)
            batch = client.post(
                "/v1/lookup/batch", json={"queries": [{"vector": vector}], "fresh": True}
            )
            stats = client.get("/v1/stats").json()

            assert ready.status_code == 200, ready.text
            assert ready.json()["reason"] == (
                f"ok, degraded: generation {version} lags {generation.source_lag()} events"
            )
            assert lookup.status_code == 200, lookup.text
            assert lookup.json()["degraded"] is True
            assert batch.json()["degraded"] is True
            assert (stats["degraded"], stats["source_lag_events"]) == (True, BURST)

            embed_pending(settings, Registry(settings.registry_dir).load(version), node)
            wait_for(lambda: generation.source_lag() == 0, 30, message="caught up again")
            assert client.post("/v1/lookup", json=query).json()["degraded"] is False
            assert client.get("/readyz").json() == {
                "ready": True,
                "reason": "ok",
                "node": settings.cluster_node_id,
                "partitions": list(range(settings.partitions)),
            }
    finally:
        node.stop()


def test_a_node_that_never_caught_up_is_not_ready(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = api_settings(stack.settings, tmp_path_factory.mktemp("behind"), api_ready_max_lag=0)
    register_cnn(settings)
    ensure_topics(settings, [settings.topic_items])
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        producer.publish(ItemEvent.delete("behind-1"))
        assert producer.flush(30).ok
    node = IndexNode(NodeConfig.from_settings(settings), control_interval_s=0.2)
    node.start()
    try:
        wait_for(lambda: node.serving is not None and node.current().source_end, 30)
        generation = node.current()
        with TestClient(create_app(settings, node)) as client:
            response = client.get("/readyz")

        assert response.status_code == 503
        assert response.json()["reason"] == (
            f"generation {generation.version} lags 1 events and has not caught up within 0 yet"
        )
    finally:
        node.stop()
