"""Crash tests: SIGKILL of the embed worker, the dispatcher or the index node during ingest.

Each kill happens at several moments; after a restart the index must equal the
expected state exactly: every acknowledged event reflected once, newest wins,
deletes absent. The index node's state is read from its final snapshot.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from celery import Celery

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.ingest.pipeline import (
    Expected,
    assert_index_matches,
    items_end,
    publish,
    wait_until_caught_up,
)
from workers.index.config import IndexConfig
from workers.index.snapshot import SnapshotStore
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.services]

FAST_RECOVERY = {
    "task_visibility_timeout_s": 5,
    "dispatch_redispatch_s": 6.0,
    "snapshot_every_s": 0.5,
    "dispatch_max_items": 100,
}


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """The test's settings with quick redelivery, re-dispatch and snapshots."""
    merged = {**settings.model_dump(), **FAST_RECOVERY}
    return Settings.load(**merged)


def _simstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "simstream.cli.main", *args]


def _ingest_with_kill(
    settings: Settings, child: Child, kill_after_s: float, restart_after_s: float = 1.0
) -> Expected:
    """Publish 3 waves (upserts, updates, deletes) while ``child`` is killed and restarted."""
    expected = Expected()
    done = threading.Event()

    def produce() -> None:
        publish(settings, expected, upserts=[(f"item-{i}", 0) for i in range(1500)])
        publish(settings, expected, upserts=[(f"item-{i}", 1) for i in range(0, 300)])
        publish(settings, expected, deletes=[f"item-{i}" for i in range(300, 600)])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(kill_after_s)
    child.kill()
    time.sleep(restart_after_s)
    child.start()
    producer.join(120)
    assert done.is_set()
    return expected


@pytest.fixture
def ingest_topics(fast: Settings, encoder_version: str) -> str:
    ensure_topics(fast, [fast.topic_items, fast.topic_dlq])
    return encoder_version


@pytest.mark.parametrize("kill_after_s", [0.3, 1.5, 4.0])
def test_a_killed_embed_worker_loses_and_duplicates_nothing(
    fast: Settings, ingest_topics: str, tmp_path: Path, kill_after_s: float
) -> None:
    from workers.tasks import configure

    app = configure(fast)
    app.control.purge()
    worker = Child(
        _simstream("worker", "--queues", "embed"),
        fast.to_env(metrics_port=0),
        tmp_path / "worker.log",
    )
    worker.start()
    stop = threading.Event()
    dispatcher = Dispatcher(IngestConfig.from_settings(fast), ingest_topics, celery_app=app)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    node = IndexNode(NodeConfig.from_settings(fast))
    node.start()
    try:
        expected = _ingest_with_kill(fast, worker, kill_after_s)
        generation = node.current()
        wait_until_caught_up(fast, generation, timeout_s=180)
        assert_index_matches(generation.index, expected)
    finally:
        stop.set()
        thread.join(30)
        node.stop()
        worker.stop()


@pytest.mark.parametrize("kill_after_s", [0.3, 1.5, 4.0])
def test_a_killed_dispatcher_loses_and_duplicates_nothing(
    fast: Settings, ingest_topics: str, celery_worker: Celery, tmp_path: Path, kill_after_s: float
) -> None:
    dispatcher = Child(
        _simstream("dispatcher", "--model-version", ingest_topics),
        fast.to_env(metrics_port=0),
        tmp_path / "dispatcher.log",
    )
    dispatcher.start()
    node = IndexNode(NodeConfig.from_settings(fast))
    node.start()
    try:
        expected = _ingest_with_kill(fast, dispatcher, kill_after_s)
        generation = node.current()
        wait_until_caught_up(fast, generation, timeout_s=180)
        assert_index_matches(generation.index, expected)
    finally:
        node.stop()
        dispatcher.stop()


@pytest.mark.parametrize("kill_after_s", [0.5, 2.0, 5.0])
def test_a_killed_index_node_recovers_from_its_snapshot_and_the_log_exactly(
    fast: Settings, ingest_topics: str, celery_worker: Celery, tmp_path: Path, kill_after_s: float
) -> None:
    node = Child(
        [sys.executable, "-m", "tests.workers.ingest.node_process"],
        fast.to_env(),
        tmp_path / "node.log",
    )
    node.start()
    stop = threading.Event()
    dispatcher = Dispatcher(
        IngestConfig.from_settings(fast), ingest_topics, celery_app=celery_worker
    )
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        expected = _ingest_with_kill(fast, node, kill_after_s)
        ends = items_end(fast)
        store = SnapshotStore.from_settings(fast, ingest_topics)
        config = IndexConfig.from_settings(fast, dim=8)

        def caught_up() -> bool:
            loaded = store.load_latest_state(config)
            if loaded is None:
                return False
            marks = loaded.extra.get("watermarks", {})
            return all(marks.get(str(p), {}).get("next", 0) >= end for p, end in ends.items())

        wait_for(caught_up, timeout_s=180, interval_s=0.5, message="snapshot caught up")
        node.stop()
        loaded = store.load_latest_state(config)
        assert loaded is not None
        assert_index_matches(loaded.index, expected)
    finally:
        stop.set()
        thread.join(30)
        node.stop()
