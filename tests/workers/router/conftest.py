"""A cluster of real index node processes (2 partition sets × 2 replicas) on the embedded
stack, a reference node that holds every partition, and the query router over them.

The digits are published and embedded once (the workers' own `RangeEmbedder`,
in-process); every node process (``simstream serve``) restores nothing and
builds its partitions from the embeddings log, so all of them, and the
reference node, index exactly the same records.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.cluster import node_process_env
from model.registry import Registry
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.stack.local import LocalStack
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.api.conftest import (
    Digits,
    api_settings,
    publish_digits,
    register_cnn,
    start_serving,
)
from tests.workers.pipeline import items_end
from workers.api import create_app
from workers.cache import CacheConfig, RedisResultCache
from workers.cluster.membership import Membership
from workers.ingest.config import IngestConfig
from workers.ingest.embedder import RangeEmbedder
from workers.node.node import IndexNode
from workers.router import create_router_app

PARTITIONS = 4
SETS = 2
REPLICAS = 2


@dataclass
class Node:
    """One index node process of the cluster."""

    id: str
    partition_set: int
    url: str
    child: Child
    registry: Path

    def ready(self) -> bool:
        """Whether it answers ``/readyz`` with 200."""
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Cluster:
    """The node processes, the router over them and a reference node holding everything."""

    settings: Settings
    version: str
    digits: Digits
    nodes: list[Node]
    router: TestClient
    reference: TestClient
    membership: Membership

    def replicas(self, partition_set: int) -> list[Node]:
        """The nodes of one partition set."""
        return [n for n in self.nodes if n.partition_set == partition_set]

    def live(self) -> set[str]:
        """Ids of the nodes whose records are live and ready."""
        return {r.id for r in self.membership.nodes() if r.ready}

    def restart(self, node: Node) -> None:
        """Start a killed node again and wait until the router's view has it ready."""
        node.child.start()
        wait_for(lambda: node.ready() and node.id in self.live(), 120, 0.2, f"{node.id} back")


def embed_everything(settings: Settings, version: str, since: dict[int, int] | None = None) -> None:
    """Emulate the dispatcher and an embed worker: embed every items event from ``since``
    (default: the start) to the end once."""
    encoder = Registry(settings.registry_dir).load(version)
    ensure_topics(settings, [settings.embeddings_topic(version)])
    embedder = RangeEmbedder(IngestConfig.from_settings(settings), encoder)
    try:
        for partition, end in items_end(settings).items():
            start = (since or {}).get(partition, 0)
            if end > start:
                embedder.run(settings.topic_items, partition, start, end, version)
    finally:
        embedder.close()
    _embedded.update(items_end(settings))


_embedded: dict[int, int] = {}


def embed_new(settings: Settings, version: str, everything: bool = False) -> None:
    """Embed what was published since the last `embed_everything` or `embed_new` (or, for
    a new version, ``everything``)."""
    embed_everything(settings, version, None if everything else dict(_embedded))


def _node(settings: Settings, root: Path, index: int, logs: Path) -> Node:
    node_id = f"node-{index}"
    data = root / node_id
    url, env = node_process_env(settings, data, node_id, SETS, log_format="json")
    argv = [sys.executable, "-m", "simstream.cli.main", "serve"]
    return Node(
        node_id, index % SETS, url, Child(argv, env, logs / f"{node_id}.log"), data / "models"
    )


@pytest.fixture(scope="package")
def cluster(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Four node processes (sets 0 and 1, two replicas each), the router, a reference node."""
    root = tmp_path_factory.mktemp("cluster")
    settings = api_settings(
        stack.settings, root / "reference", partitions=PARTITIONS, router_hedge_ms=200.0
    )
    version = register_cnn(settings)
    digits = publish_digits(settings)
    embed_everything(settings, version)
    nodes = [_node(settings, root, i, root) for i in range(SETS * REPLICAS)]
    reference: IndexNode | None = None
    try:
        for node in nodes:
            node.child.start()
        encoder = Registry(settings.registry_dir).load(version)
        # The reference announces itself elsewhere (another Redis database): not a cluster member.
        alone = settings.model_copy(
            update={"celery_broker_url": settings.celery_broker_url.rsplit("/", 1)[0] + "/7"}
        )
        reference = start_serving(alone, encoder, digits)
        membership = Membership.connect(settings.celery_broker_url, settings.topic_items)
        router_settings = settings.model_copy(update={"partition_sets": SETS})
        cache = RedisResultCache(CacheConfig.from_settings(settings))

        def all_ready() -> bool:
            exited = [n.id for n in nodes if n.child.exited()]
            assert not exited, f"{exited} exited: " + nodes[0].child.output()[-3000:]
            return all(n.ready() for n in nodes) and len(
                {r.id for r in membership.nodes() if r.ready}
            ) == len(nodes)

        wait_for(all_ready, 180, 0.5, "every node ready and announced")
        with (
            TestClient(create_router_app(router_settings, cache=cache)) as router,
            TestClient(create_app(alone, reference)) as ref,
        ):
            yield Cluster(settings, version, digits, nodes, router, ref, membership)
    finally:
        for node in nodes:
            node.child.stop()
        if reference is not None:
            reference.stop()
