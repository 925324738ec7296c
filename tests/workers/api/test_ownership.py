"""A node of one partition set: it holds, reports and waits for its own partitions only."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.registry import Registry
from simstream.stack.local import LocalStack
from tests.waiting import wait_for
from tests.workers.api.conftest import api_settings, embed_pending, publish_digits, register_cnn
from workers.api import create_app
from workers.index.partitioning import partition_for
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


def test_a_token_of_a_partition_the_node_does_not_hold_is_a_421_not_owner(
    stack: LocalStack, tmp_path: Path
) -> None:
    settings = api_settings(stack.settings, tmp_path, partition_sets=2, node_id="index-1")
    version = register_cnn(settings)
    digits = publish_digits(settings)
    node = IndexNode(NodeConfig.from_settings(settings), control_interval_s=0.2)
    node.start()
    try:
        wait_for(lambda: node.serving is not None, 30, message="a serving generation")
        embed_pending(settings, Registry(settings.registry_dir).load(version), node)
        with TestClient(create_app(settings, node)) as client:
            ready = client.get("/readyz").json()
            stats = client.get("/v1/stats").json()
            own = [i for i in digits.ids if partition_for(i, settings.partitions) == 1]
            query = {"id": own[0], "k": 3}
            held = client.post(
                "/v1/lookup", json={**query, "after": f"{settings.topic_items}.p1.o0"}
            )
            other = client.post(
                "/v1/lookup", json={**query, "after": f"{settings.topic_items}.p0.o0"}
            )
    finally:
        node.stop()

    assert (ready["ready"], ready["node"], ready["partitions"]) == (True, "index-1", [1])
    assert stats["generations"][version]["live"] == len(own)
    assert [s["partition"] for s in stats["generations"][version]["shards"]] == [1]
    assert held.status_code == 200, held.text
    assert other.status_code == 421, other.text
    assert other.json()["code"] == "not_owner"
    assert "holds, one of [1]. Received: partition 0" in other.json()["detail"]
