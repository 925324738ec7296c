"""One retrain run on real services: train, evaluate both models, decide, record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from model.registry import Registry
from simstream.cli.main import app as cli
from simstream.errors import ModelIntegrityError, RetrainError
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.workers.retrain.helpers import (
    FAST_RETRAIN,
    digits,
    publish_items,
    train_v1,
    with_overrides,
)
from workers.node.config import NodeConfig
from workers.node.node import IndexNode
from workers.retrain import list_runs
from workers.retrain.config import RetrainConfig
from workers.retrain.coordination import (
    Lease,
    claim_slot,
    coordination_redis,
    retrain_running,
    running_key,
)
from workers.retrain.run import run_retrain
from workers.retrain.runs import append_run

pytestmark = pytest.mark.services


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Settings for tiny training runs, with the items topic created."""
    fast = with_overrides(settings, **FAST_RETRAIN)
    ensure_topics(fast, [fast.topic_items, fast.topic_dlq])
    return fast


def _runs_counted(decision: str) -> float:
    return REGISTRY.get_sample_value("simstream_retrain_runs_total", {"decision": decision}) or 0.0


def test_a_first_run_without_an_active_model_trains_from_scratch_and_promotes(
    fast: Settings,
) -> None:
    publish_items(fast, digits(range(10)))
    promoted_before = _runs_counted("promoted")

    record = run_retrain(RetrainConfig.from_settings(fast), triggered_by="test", task_id="task-1")

    assert record["decision"] == "promoted", record["reason"]
    assert record["mode"] == "scratch"
    assert record["candidate_version"] == "v1" == Registry(fast.registry_dir).active()
    assert record["metrics"]["active"] is None
    assert record["metrics"]["candidate"]["recall@1"] > 0.5
    assert record["data"]["examples"] == 1797 and record["data"]["classes"] == 10
    assert record["data"]["holdout"] + record["data"]["train"] == 1797
    assert sum(record["source_offsets"].values()) == 1797
    runs = list_runs(fast.registry_dir)
    assert [(r["run_id"], r["decision"], r["task_id"]) for r in runs] == [
        (record["run_id"], "promoted", "task-1")
    ]
    assert runs[0]["duration_s"] > 0
    assert _runs_counted("promoted") == promoted_before + 1


def _labelled_and_unlabelled_digits() -> tuple[list[Any], list[Any]]:
    """300 labelled digits and 200 others published without their labels."""
    items = digits(range(10))
    unlabelled = [
        dataclasses.replace(item, id=f"unlabelled/{item.id}", label=None) for item in items[300:500]
    ]
    return items[:300], unlabelled


def test_a_run_with_retrain_ssl_pretrains_on_the_unlabelled_items_first(
    fast: Settings,
) -> None:
    labelled, unlabelled = _labelled_and_unlabelled_digits()
    publish_items(fast, labelled + unlabelled)
    with_ssl = with_overrides(fast, retrain_ssl="vicreg")

    record = run_retrain(RetrainConfig.from_settings(with_ssl), triggered_by="test")

    assert record["decision"] == "promoted", record["reason"]
    assert record["data"]["unlabelled"] == 200 and record["data"]["examples"] == 300
    ssl = record["ssl"]
    assert (ssl["method"], ssl["examples"], ssl["epochs"]) == ("vicreg", 200, 2)
    assert ssl["final_loss"] is not None
    assert record["training"]["epochs"] == 2  # then the supervised step
    assert list_runs(fast.registry_dir)[0]["ssl"] == ssl


def test_a_run_without_retrain_ssl_ignores_the_unlabelled_items(fast: Settings) -> None:
    labelled, unlabelled = _labelled_and_unlabelled_digits()
    publish_items(fast, labelled + unlabelled)

    record = run_retrain(RetrainConfig.from_settings(fast), triggered_by="test")

    assert record["decision"] == "promoted", record["reason"]
    assert record["data"]["unlabelled"] == 0 and record["data"]["examples"] == 300
    assert record["data"]["replay"]["unlabelled"] == 200
    assert "ssl" not in record


def test_a_worse_candidate_is_rejected_and_the_active_model_keeps_serving(
    fast: Settings,
) -> None:
    v1 = train_v1(fast, classes=range(10), steps=30)
    publish_items(fast, digits(range(10)))
    worse = with_overrides(fast, retrain_from_scratch=True, model_epochs=0)
    node = IndexNode(NodeConfig.from_settings(worse), control_interval_s=0.2)
    node.start()
    try:
        record = run_retrain(RetrainConfig.from_settings(worse), triggered_by="test")
        node.reconcile()
        assert node.current().version == v1
        assert node.stats()["reindex"] is None
    finally:
        node.stop()

    assert record["decision"] == "rejected", record["reason"]
    candidate, active = record["metrics"]["candidate"], record["metrics"]["active"]
    assert candidate["recall@1"] < active["recall@1"]
    assert record["gain"] == pytest.approx(candidate["recall@1"] - active["recall@1"])
    registry = Registry(worse.registry_dir)
    assert registry.active() == v1
    rejected = registry.get(record["candidate_version"])
    assert rejected.metrics["retrain"]["decision"] == "reject"
    assert rejected.metrics["retrain"]["active_metrics"] == active
    assert rejected.metrics["recall@1"] == candidate["recall@1"]
    assert list_runs(worse.registry_dir)[0]["decision"] == "rejected"


def test_a_crash_during_training_promotes_nothing_and_frees_the_next_run(
    fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = train_v1(fast, steps=2)
    publish_items(fast, digits(range(10))[:200])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the accelerator fell off the bus")

    monkeypatch.setattr("model.pipeline.train", crash)
    with pytest.raises(RetrainError, match="fell off the bus"):
        run_retrain(RetrainConfig.from_settings(fast), triggered_by="test")

    registry = Registry(fast.registry_dir)
    assert registry.active() == v1
    assert [v.version for v in registry.list()] == [v1]
    run = list_runs(fast.registry_dir)[0]
    assert (run["status"], run["decision"]) == ("failed", "failed")
    assert "fell off the bus" in run["reason"]
    config = RetrainConfig.from_settings(fast)
    assert not retrain_running(coordination_redis(config), config)


def test_a_candidate_that_cannot_be_loaded_back_is_rejected(
    fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = train_v1(fast, steps=2)
    publish_items(fast, digits(range(10))[:300])
    real_load = Registry.load

    def load_only_from_the_registry(self: Registry, version: str | None = None) -> Any:
        if Path(self.root) != fast.registry_dir:
            raise ModelIntegrityError("the archive holds an unsafe layer")
        return real_load(self, version)

    monkeypatch.setattr(Registry, "load", load_only_from_the_registry)
    record = run_retrain(RetrainConfig.from_settings(fast), triggered_by="test")

    assert record["decision"] == "rejected"
    assert "failed to load or embed" in record["reason"]
    assert "unsafe layer" in record["reason"]
    registry = Registry(fast.registry_dir)
    assert [v.version for v in registry.list()] == [v1]
    assert registry.active() == v1


def test_a_second_message_for_a_claimed_period_is_skipped(fast: Settings) -> None:
    first = run_retrain(RetrainConfig.from_settings(fast), "schedule@every-5s:7", task_id="task-a")
    duplicate = run_retrain(
        RetrainConfig.from_settings(fast), "schedule@every-5s:7", task_id="task-b"
    )

    assert first["reason"].startswith("not enough labelled data")
    assert (duplicate["decision"], duplicate["reason"]) == (
        "skipped",
        "period every-5s:7 already has its run",
    )
    assert {r["slot"] for r in list_runs(fast.registry_dir)} == {"every-5s:7"}


def test_a_task_redelivered_after_a_crash_runs_but_a_copy_of_a_completed_one_does_not(
    fast: Settings,
) -> None:
    config = RetrainConfig.from_settings(fast)
    assert claim_slot(coordination_redis(config), config, "every-5s:8", "task-c")  # as beat does
    # Its first delivery died mid-run: a "running" record and no final one.
    crashed = {"run_id": "crashed", "task_id": "task-c", "status": "running", "leased": True}
    append_run(fast.registry_dir, crashed)

    redelivered = run_retrain(config, "schedule@every-5s:8", task_id="task-c")
    copy = run_retrain(config, "schedule@every-5s:8", task_id="task-c")

    assert redelivered["reason"].startswith("not enough labelled data")
    assert copy["decision"] == "skipped"
    assert copy["reason"] == f"task task-c already ran (run {redelivered['run_id']}: skipped)"


def test_only_one_retrain_runs_at_a_time(fast: Settings) -> None:
    config = RetrainConfig.from_settings(fast)
    held = Lease(coordination_redis(config), running_key(config), 30)
    assert held.acquire()
    try:
        record = run_retrain(config, triggered_by="test")
    finally:
        held.release()
    assert (record["decision"], record["reason"]) == ("skipped", "another retrain is running")


def test_simstream_retrain_local_runs_in_process_and_prints_the_decision(
    fast: Settings,
) -> None:
    env = fast.to_env(log_level="WARNING")
    result = CliRunner().invoke(cli, ["retrain", "--local", "--triggered-by", "alice"], env=env)
    assert result.exit_code == 0, result.output
    assert "decision: skipped (not enough labelled data" in result.output
    assert list_runs(fast.registry_dir)[0]["triggered_by"] == "alice"


def test_simstream_retrain_refuses_a_name_with_the_period_marker() -> None:
    result = CliRunner().invoke(cli, ["retrain", "--triggered-by", "a@b"])
    assert result.exit_code == 2


def test_simstream_retrain_wait_sends_the_task_and_prints_the_decision(
    fast: Settings, celery_worker: Celery
) -> None:
    env = fast.to_env(log_level="WARNING")
    result = CliRunner().invoke(cli, ["retrain", "--wait", "--timeout", "60"], env=env)
    assert result.exit_code == 0, result.output
    assert "retrain sent: task " in result.output
    assert "decision: skipped (not enough labelled data" in result.output
    assert list_runs(fast.registry_dir)[0]["triggered_by"] == "manual"
