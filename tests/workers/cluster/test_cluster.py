"""Four index node processes, 2 partition sets × 2 replicas, on the embedded stack.

Each node holds only its set's partitions and announces itself; a retrain-style
promotion of v2 flips the cluster only once every set has v2 caught up: with
both replicas of set 1 paused (SIGSTOP, their records still live and without
v2), the caught-up replicas of set 0 keep serving v1; resumed, set 1 catches up
and every node flips. A monitor reads the records throughout and checks that no
node served v2 before every set had an owner with v2 caught up.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.conftest import register_encoder
from tests.workers.node.node_process import read_stats
from tests.workers.pipeline import Expected, publish
from workers.cluster.membership import ClusterView, Membership, NodeRecord
from workers.cluster.placement import partitions_of
from workers.ingest.supervisor import DispatcherSupervisor

pytestmark = [pytest.mark.slow, pytest.mark.services]

SETS = 2
NODES = 4
ITEMS = 200


class Monitor:
    """Reads every node record every 50 ms and keeps what it saw."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self.seen: list[tuple[NodeRecord, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.append(tuple(self.membership.nodes()))

    def view(self) -> ClusterView:
        return ClusterView(tuple(self.membership.nodes()), SETS)


def _node_settings(settings: Settings, root: Path, n: int) -> dict[str, str]:
    """Node ``index-<n>``'s environment: its own data dir (snapshots, alias), the shared
    registry."""
    data_dir = root / f"index-{n}"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(settings.registry_dir)
    return settings.to_env(node_id=f"index-{n}", data_dir=str(data_dir))


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    """2 sets of the 4 partitions; quick heartbeats; records that outlive a pause."""
    return Settings.load(
        **{
            **settings.model_dump(),
            "partition_sets": SETS,
            "node_heartbeat_s": 0.3,
            "node_ttl_s": 120.0,
            "reindex_grace_s": 0.0,
        }
    )


@pytest.fixture
def supervisor(cluster_settings: Settings, celery_worker: Celery) -> Iterator[None]:
    """The dispatcher supervisor (a thread) feeding the real Celery worker."""
    settings = cluster_settings
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    stop = threading.Event()
    thread = threading.Thread(
        target=DispatcherSupervisor.from_settings(settings, poll_s=0.3).run,
        args=(stop,),
        daemon=True,
    )
    thread.start()
    yield
    stop.set()
    thread.join(60)


def test_four_nodes_hold_their_sets_and_flip_to_v2_only_when_every_set_has_it_caught_up(
    cluster_settings: Settings, supervisor: None, tmp_path: Path
) -> None:
    settings = cluster_settings
    v1 = register_encoder(settings, "vector", seed=0)
    membership = Membership(redis.Redis.from_url(settings.celery_broker_url), settings.topic_items)
    statuses = [tmp_path / f"status-{n}.json" for n in range(NODES)]
    nodes = [
        Child(
            [sys.executable, "-m", "tests.workers.node.node_process", str(statuses[n])],
            _node_settings(settings, tmp_path, n),
            tmp_path / f"index-{n}.log",
        )
        for n in range(NODES)
    ]
    expected = Expected()
    paused: list[Child] = []
    try:
        for node in nodes:
            node.start()
        publish(settings, expected, upserts=[(f"item-{i}", 0) for i in range(ITEMS)])
        with Monitor(membership) as monitor:

            def all_serve(version: str) -> bool:
                records = membership.nodes()
                return len(records) == NODES and all(
                    r.ready and r.serving == version and r.caught_up(version) for r in records
                )

            wait_for(lambda: all_serve(v1), timeout_s=240, interval_s=0.2, message="v1 everywhere")

            # Each node holds only its set's partitions; replicas hold the same items.
            def held(n: int) -> dict[str, Any]:
                """index-<n>'s v1 generation, as its stats say."""
                return dict(read_stats(statuses[n]).get("generations", {}).get(v1) or {})

            def replicas_agree() -> bool:
                live = [int(held(n).get("live", -1)) for n in range(NODES)]
                return live[0] == live[2] and live[1] == live[3] and live[0] + live[1] == ITEMS

            wait_for(replicas_agree, timeout_s=30, message="the stats of every node")
            for n in range(NODES):
                owned = list(partitions_of(n % SETS, SETS, settings.partitions))
                assert [s["partition"] for s in held(n)["shards"]] == owned, f"index-{n}"
            assert len(expected.live) == ITEMS
            records = {r.id: r for r in membership.nodes()}
            assert {i: (r.partition_set, r.partitions) for i, r in records.items()} == {
                f"index-{n}": (n % SETS, partitions_of(n % SETS, SETS, settings.partitions))
                for n in range(NODES)
            }

            # Set 1 paused: its records stay live, without v2.
            paused = [nodes[1], nodes[3]]
            for node in paused:
                assert node.process is not None
                node.process.send_signal(signal.SIGSTOP)
            v2 = register_encoder(settings, "vector", seed=1)

            def set0_caught_up() -> bool:
                return all(r.caught_up(v2) for r in membership.nodes() if r.partition_set == 0)

            wait_for(set0_caught_up, timeout_s=180, interval_s=0.1, message="set 0 has v2")
            caught_at = {r.id: r.updated_at for r in membership.nodes()}

            def announced_again() -> list[NodeRecord]:
                fresh = [r for r in membership.nodes() if r.partition_set == 0]
                again = all(r.updated_at > caught_at[r.id] + 1.0 for r in fresh)
                return fresh if again else []

            later = wait_for(announced_again, timeout_s=30, message="set 0 announced again")
            assert [r.serving for r in later] == [v1, v1], "set 0 flipped before set 1 had v2"
            assert len(membership.nodes()) == NODES, "set 1's records are still live"

            for node in paused:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)
            paused = []
            wait_for(lambda: all_serve(v2), timeout_s=240, interval_s=0.2, message="v2 everywhere")

        first_v2 = next(
            n for n, seen in enumerate(monitor.seen) if any(r.serving == v2 for r in seen)
        )
        assert any(
            ClusterView(seen, SETS).caught_up_everywhere(v2)
            for seen in monitor.seen[: first_v2 + 1]
        ), "a node served v2 before every set had an owner with v2 caught up"
    finally:
        for node in paused:
            if node.process is not None:
                node.process.send_signal(signal.SIGCONT)
        for node in nodes:
            node.stop()
    assert membership.nodes() == [], "every node withdrew on SIGTERM"
