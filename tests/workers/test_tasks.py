"""Celery tasks: `simstream worker` as deployed (a prefork worker preloads every child,
which die with it), and how ``embed_range`` treats each kind of failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from celery import Celery

from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.conftest import register_encoder
from workers.ingest.device import cpu_cores


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The test's settings with the overrides it is parametrized with (``indirect``)."""
    return Settings.load(**{**settings.model_dump(), **getattr(request, "param", {})})


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.services
@pytest.mark.slow
def test_a_prefork_worker_preloads_each_child_and_they_die_with_it(
    settings: Settings, encoder_version: str, tmp_path: Path
) -> None:
    worker = Child(
        [sys.executable, "-m", "simstream.cli.main", "worker", "--concurrency", "2"],
        settings.to_env(metrics_port=0),
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        wait_for(
            lambda: worker.output().count("tasks.encoder_loaded") >= 2,
            timeout_s=180,
            message="both children loaded the encoder",
        )
        threads = max(1, cpu_cores() // 2)
        assert f"pool prefork, 2 encoder process(es), {threads} CPU thread(s) each" in (
            worker.output()
        )
        assert worker.process is not None
        children = _children(worker.process.pid)
        assert len(children) >= 2
        loaded_in = {
            int(line.split("pid=")[1].split()[0])
            for line in worker.output().splitlines()
            if "tasks.encoder_loaded" in line
        }
        assert loaded_in <= children and os.getpid() not in loaded_in
        worker.kill()
        wait_for(
            lambda: not any(_alive(pid) for pid in children),
            timeout_s=15,
            message="the children died with their parent",
        )
    finally:
        worker.stop()


def test_a_worker_keeps_two_encoder_versions_and_releases_the_least_recently_used(
    settings: Settings,
) -> None:
    from workers import tasks

    versions = [register_encoder(settings, "vector", seed=i) for i in range(3)]
    tasks.configure(settings)
    try:
        first = tasks.embedder_for(versions[0])
        tasks.embedder_for(versions[1])
        assert tasks.embedder_for(versions[0]) is first  # used again: now the most recent
        tasks.embedder_for(versions[2])

        assert tasks.loaded_versions() == [versions[0], versions[2]]
        assert tasks.embedder_for(versions[1]).encoder.version == versions[1]  # loaded again
        assert tasks.loaded_versions() == [versions[2], versions[1]]
    finally:
        tasks.configure(settings)


# --- failure paths of embed_range -----------------------------------------------------


def test_only_a_failed_integrity_check_is_permanent() -> None:
    from confluent_kafka import KafkaError as RdKafkaError
    from confluent_kafka import KafkaException
    from redis.exceptions import ConnectionError as RedisConnectionError

    from simstream.errors import DeliveryError, ModelIntegrityError, RegistryError
    from workers.tasks import failure_kind

    assert failure_kind(ModelIntegrityError("sha256 differs")) == "permanent"
    assert failure_kind(RegistryError("Model version v2 not found")) == "transient"
    assert failure_kind(DeliveryError("not acknowledged")) == "transient"
    assert failure_kind(RedisConnectionError("refused")) == "transient"
    retriable = RdKafkaError(RdKafkaError._TRANSPORT, "down", retriable=True)
    assert failure_kind(KafkaException(retriable)) == "transient"
    too_large = RdKafkaError(RdKafkaError.MSG_SIZE_TOO_LARGE, "too large")
    assert failure_kind(KafkaException(too_large)) == "unexpected"
    assert failure_kind(RuntimeError("a bug")) == "unexpected"


def publish_to_partition_0(settings: Settings, count: int) -> None:
    import numpy as np
    from confluent_kafka import Producer

    from simstream.kafka import ensure_topics
    from simstream.wire import ItemEvent, VectorPayload

    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    ensure_topics(settings, [settings.embeddings_topic("v1")])
    producer = Producer(settings.kafka_config())
    for i in range(count):
        event = ItemEvent.upsert(f"t-{i}", VectorPayload.from_values(np.ones(16) * (i + 1)))
        producer.produce(settings.topic_items, event.encode(), partition=0)
    assert producer.flush(10) == 0


@pytest.mark.services
def test_a_model_version_registered_late_is_waited_for_instead_of_dead_lettered(
    settings: Settings, celery_worker: Celery
) -> None:
    from tests.workers.conftest import register_encoder
    from tests.workers.ingest.dead_letters import read_dead_letters
    from workers.celery_app import EMBED_TASK

    publish_to_partition_0(settings, 5)
    result = celery_worker.send_task(EMBED_TASK, args=[settings.topic_items, 0, 0, 5, "v1"])
    wait_for(lambda: result.state == "RETRY", message="the task retrying without the model")

    register_encoder(settings)  # the shared registry volume catches up

    outcome = result.get(timeout=120)
    assert outcome["upserts"] == 5 and "dead_lettered" not in outcome
    assert read_dead_letters(settings) == []


@pytest.mark.services
@pytest.mark.parametrize("settings", [{"task_max_retries": 2}], indirect=True, ids=["2-retries"])
def test_an_unexpected_error_is_retried_a_bounded_number_of_times_then_dead_lettered(
    settings: Settings, celery_worker: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.workers.faults import EmbeddingsLog
    from tests.workers.ingest.dead_letters import read_dead_letters
    from workers.celery_app import EMBED_TASK

    publish_to_partition_0(settings, 3)
    calls: list[int] = []

    def crash(version: str) -> None:
        calls.append(1)
        raise RuntimeError("fault: a bug in the encoder")

    monkeypatch.setattr("workers.tasks.embedder_for", crash)
    embeddings = EmbeddingsLog(settings, "v1")
    try:
        sent = celery_worker.send_task(EMBED_TASK, args=[settings.topic_items, 0, 0, 3, "v1"])
        outcome = sent.get(60)
        assert outcome["dead_lettered"] is True and len(calls) == 3
        wait_for(lambda: embeddings.poll().covered(0, 2), message="the range closed")
    finally:
        embeddings.close()
    letters = read_dead_letters(settings)
    assert [(x.reason, x.offset) for x in letters] == [("range_failed", 0)]
    assert "unexpected: RuntimeError: fault: a bug in the encoder" in letters[0].detail


@pytest.mark.services
def test_heartbeats_reuse_the_task_threads_result_backend_connection(
    settings: Settings, encoder_version: str, celery_worker: Celery
) -> None:
    """Celery keeps one result backend per thread: beats that asked for it from their own
    thread built a backend and opened a Redis connection for every task."""
    import redis

    from workers.celery_app import EMBED_TASK

    publish_to_partition_0(settings, 6)
    backend = redis.Redis.from_url(settings.celery_result_backend)

    def connections() -> int:
        return int(backend.info("stats")["total_connections_received"])

    def embed(start: int) -> None:
        sent = celery_worker.send_task(
            EMBED_TASK, args=[settings.topic_items, 0, start, start + 1, encoder_version]
        )
        assert sent.get(60)["upserts"] == 1

    embed(0)  # the worker's first task opens what it keeps
    before = connections()
    for start in range(1, 6):
        embed(start)
    opened = connections() - before

    assert opened <= 1, f"{opened} Redis connections opened by 5 tasks"
