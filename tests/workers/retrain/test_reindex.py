"""Retraining end to end on the embedded stack, and the blue-green re-index it starts.

v1 is a CNN trained briefly on digits 0–4; items of all ten digits stream in;
the retrain fine-tunes v1 into v2, which wins on the hold-out (digits 5–9 are
new to v1), is promoted, re-indexed from offset 0 and served — while a client
keeps looking items up, each answer from exactly one model version.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from celery import Celery

from model.registry import Registry
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.conftest import register_encoder
from tests.workers.pipeline import (
    Expected,
    assert_index_matches,
    items_end,
    publish,
    wait_until_caught_up,
)
from tests.workers.retrain.helpers import (
    FAST_RETRAIN,
    digits,
    publish_items,
    raw,
    running_pipeline,
    train_v1,
    with_overrides,
)
from workers import metrics
from workers.celery_app import RETRAIN_TASK
from workers.index.config import IndexConfig
from workers.index.snapshot import SnapshotStore
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode
from workers.retrain import list_runs

pytestmark = [pytest.mark.slow, pytest.mark.services]


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return with_overrides(settings, **FAST_RETRAIN)


class LookupClient:
    """Looks items up without pause, as the API does: one serving generation per query."""

    def __init__(self, node: IndexNode, queries: list[np.ndarray]) -> None:
        self.node, self.queries = node, queries
        self.answers: list[tuple[str, list[str]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LookupClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                self._lookup(self.queries[i % len(self.queries)])
            except Exception as e:  # every failure is a finding
                self.errors.append(f"{type(e).__name__}: {e}")

    def _lookup(self, payload: np.ndarray) -> None:
        generation = self.node.current()
        version = generation.version
        query = self.node.encoder(version).embed_payloads([payload])[0]
        hits = generation.index.search(query, k=5)
        if len(hits) != 5:
            raise AssertionError(f"{version}: {len(hits)} neighbours")
        for item_id, distance in zip(hits.ids, hits.distances, strict=True):
            item = generation.index.get(item_id)
            if item is None:
                raise AssertionError(f"{version}: neighbour {item_id} is not in the generation")
            expected = 1.0 - float(np.dot(item.vector, query))
            if abs(expected - distance) > 1e-3:
                raise AssertionError(
                    f"{version}: {item_id} at {distance:.5f}, its vector in that generation "
                    f"gives {expected:.5f}: the query and the index come from different models"
                )
        self.answers.append((version, hits.ids))


def _vectors_made_by(
    node: IndexNode, generation: IndexGeneration, payloads: dict[str, Any]
) -> None:
    ids = sorted(payloads)
    stored = np.stack([generation.index.get(i).vector for i in ids])  # type: ignore[union-attr]
    fresh = node.encoder(generation.version).embed_payloads([payloads[i] for i in ids])
    np.testing.assert_allclose(stored, fresh, atol=1e-4, err_msg=generation.version)


def test_a_retrained_model_is_promoted_reindexed_and_served_without_a_failed_or_mixed_lookup(
    fast: Settings, celery_worker: Celery
) -> None:
    from workers.tasks import configure

    fast = with_overrides(fast, model_epochs=5)  # 5 × 10 steps: enough to learn digits 5-9
    configure(fast)  # the in-process worker runs the retrain with these settings
    v1 = train_v1(fast, classes=range(5), steps=10)
    old, new = digits(range(5)), digits(range(5, 10))
    progress: list[dict[str, Any]] = []
    with running_pipeline(fast) as node:
        publish_items(fast, old)
        wait_for(lambda: node.serving is not None, timeout_s=30, message="v1 serving")
        wait_until_caught_up(fast, node.current(), timeout_s=60)
        publish_items(fast, new)
        wait_until_caught_up(fast, node.current(), timeout_s=60)

        with LookupClient(node, [raw(item) for item in old + new]) as client:
            result = celery_worker.send_task(RETRAIN_TASK, kwargs={"triggered_by": "test"})
            record = result.get(timeout=120)
            v2 = record.get("candidate_version")

            def flipped() -> bool:
                reindex = node.reindex_progress()
                if reindex is not None:
                    progress.append(reindex)
                return node.current().version == v2

            wait_for(flipped, timeout_s=120, interval_s=0.02, message="v2 serving")
            wait_until_caught_up(fast, node.current(), timeout_s=60)
            served = len(client.answers)
            wait_for(lambda: len(client.answers) > served + 20, timeout_s=30)
        v1_generation, v2_generation = node.generations[v1], node.generations[v2]
        payloads = {item.id: raw(item) for item in (old + new)[::17]}
        _vectors_made_by(node, v1_generation, payloads)
        _vectors_made_by(node, v2_generation, payloads)
        final_stats = node.stats()

    assert record["decision"] == "promoted", record["reason"]
    assert record["mode"] == "fine-tune" and record["active_version"] == v1
    candidate, active = record["metrics"]["candidate"], record["metrics"]["active"]
    assert candidate["recall@1"] > active["recall@1"]
    assert candidate["unseen"]["recall@1"] > active["unseen"]["recall@1"], "digits 5-9 improve"
    assert active["seen"]["queries"] > 0 and active["unseen"]["queries"] > 0

    assert client.errors == []
    versions = [version for version, _ in client.answers]
    assert set(versions) == {v1, v2}
    first_v2 = versions.index(v2)
    assert set(versions[first_v2:]) == {v2}, "once v2 serves, no answer comes from v1"
    assert first_v2 > 10, "lookups ran during the retrain and the re-index"

    assert progress and progress[0]["building"] == v2 and progress[0]["serving"] == v1
    done = [p["done"] for p in progress if p["done"] is not None]
    assert done == sorted(done) and all(0 <= d <= 1 for d in done)
    assert final_stats["serving"] == v2 and final_stats["reindex"] is None
    assert v1 in final_stats["retained"]
    assert final_stats["generations"][v2]["live"] == len(old) + len(new)
    assert metrics.REINDEX_PROGRESS._value.get() == 1.0

    registry = Registry(fast.registry_dir)
    assert [v.version for v in registry.list()] == [v1, v2]
    assert registry.active() == v2
    assert registry.get(v2).metrics["retrain"]["decision"] == "promote"
    run = list_runs(fast.registry_dir)[0]
    assert (run["decision"], run["candidate_version"]) == ("promoted", v2)
    assert run["metrics"] == record["metrics"]


def test_a_rollback_flips_the_node_back_to_the_retained_generation(
    fast: Settings, celery_worker: Celery
) -> None:
    ensure_topics(fast, [fast.topic_items, fast.topic_dlq])
    first = digits(range(10))[:300]
    later = digits(range(10))[300:400]
    v1 = register_encoder(fast, "image", seed=0)
    with running_pipeline(fast) as node:
        publish_items(fast, first)
        wait_for(lambda: node.serving is not None, timeout_s=30)
        wait_until_caught_up(fast, node.current(), timeout_s=60)
        v2 = register_encoder(fast, "image", seed=1)
        wait_for(lambda: node.current().version == v2, timeout_s=60, message="v2 serving")
        wait_until_caught_up(fast, node.current(), timeout_s=60)
        assert v1 in node.stats()["retained"]
        publish_items(fast, later)  # v1, retained, does not follow these

        assert Registry(fast.registry_dir).rollback() == v1
        wait_for(lambda: node.current().version == v1, timeout_s=60, message="v1 back")
        wait_until_caught_up(fast, node.current(), timeout_s=60)
        stats = node.stats()
        payloads = {item.id: raw(item) for item in first + later}
        _vectors_made_by(node, node.current(), payloads)

    assert stats["serving"] == v1 and v2 in stats["retained"]
    assert stats["generations"][v1]["live"] == len(first) + len(later)


def test_a_node_killed_in_the_middle_of_a_reindex_finishes_it_after_restart_exactly(
    fast: Settings, celery_worker: Celery, tmp_path: Path
) -> None:
    fast = with_overrides(fast, dispatch_max_items=50, snapshot_every_s=0.3)
    ensure_topics(fast, [fast.topic_items, fast.topic_dlq])
    v1 = register_encoder(fast, "vector", seed=0)
    node = Child(
        [sys.executable, "-m", "tests.workers.node.node_process"],
        fast.to_env(),
        tmp_path / "node.log",
    )
    stop = threading.Event()
    from workers.ingest.supervisor import DispatcherSupervisor

    supervisor = threading.Thread(
        target=DispatcherSupervisor.from_settings(fast, poll_s=0.3).run, args=(stop,), daemon=True
    )
    expected = Expected()
    config = IndexConfig.from_settings(fast, dim=8)
    alias = fast.data_dir / "alias.json"

    def snapshot_marks(version: str) -> dict[int, int]:
        loaded = SnapshotStore.from_settings(fast, version).load_latest_state(config)
        if loaded is None:
            return {}
        marks = loaded.extra.get("watermarks", {})
        return {int(p): int(m.get("next", 0)) for p, m in marks.items()}

    def snapshot_caught_up(version: str) -> bool:
        marks = snapshot_marks(version)
        return bool(marks) and all(marks.get(p, 0) >= end for p, end in items_end(fast).items())

    node.start()
    supervisor.start()
    try:
        publish(fast, expected, upserts=[(f"item-{i}", 0) for i in range(2000)])
        publish(fast, expected, upserts=[(f"item-{i}", 1) for i in range(0, 200)])
        publish(fast, expected, deletes=[f"item-{i}" for i in range(200, 400)])
        wait_for(lambda: snapshot_caught_up(v1), timeout_s=120, interval_s=0.3)

        v2 = register_encoder(fast, "vector", seed=1)
        total = sum(items_end(fast).values())
        wait_for(
            lambda: 0 < sum(snapshot_marks(v2).values()) < total,
            timeout_s=60,
            interval_s=0.05,
            message="a partial v2 snapshot",
        )
        serving_at_kill = alias.read_text()
        node.kill()
        assert f'"{v1}"' in serving_at_kill, "killed in the middle of the re-index"
        publish(fast, expected, upserts=[(f"item-{i}", 2) for i in range(100)])
        time.sleep(0.5)
        node.start()

        wait_for(lambda: f'"{v2}"' in alias.read_text(), timeout_s=120, interval_s=0.2)
        wait_for(lambda: snapshot_caught_up(v2), timeout_s=120, interval_s=0.3)
        node.stop()
        loaded = SnapshotStore.from_settings(fast, v2).load_latest_state(config)
        assert loaded is not None
        assert_index_matches(loaded.index, expected)
        loaded.index.close()
    finally:
        stop.set()
        supervisor.join(60)
        node.stop()
