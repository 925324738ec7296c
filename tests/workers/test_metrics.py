"""Prometheus metrics: what a prefork worker's children count reaches its scrape, and
counters with known label values exist at zero before anything happened."""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

import pytest

from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.test_tasks import publish_to_partition_0


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.services
@pytest.mark.slow
def test_an_item_embedded_in_a_prefork_child_is_counted_in_the_workers_scrape(
    settings: Settings, encoder_version: str, tmp_path: Path
) -> None:
    from workers.celery_app import EMBED_TASK, make_celery

    port = _free_port()
    publish_to_partition_0(settings, 3)
    celery = make_celery(settings)
    # Tasks another test left in the session broker's queues would be counted too.
    celery.control.purge()
    worker = Child(
        [sys.executable, "-m", "simstream.cli.main", "worker", "--pool", "prefork"],
        settings.to_env(metrics_port=port, worker_processes=1),
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        wait_for(
            lambda: "tasks.encoder_loaded" in worker.output(),
            timeout_s=180,
            message="the child loaded the encoder",
        )
        sent = celery.send_task(EMBED_TASK, args=[settings.topic_items, 0, 0, 3, encoder_version])
        assert sent.get(timeout=120)["upserts"] == 3

        series = f'simstream_embedded_items_total{{model_version="{encoder_version}",op="upsert"}}'

        def counted() -> bool:
            """The scrape counts every upsert the child embedded: ours, and those of
            ranges a killed worker of another test left unacknowledged in the session
            broker (restored to the queue when this worker starts; purge misses them)."""
            ran = sum(int(n) for n in re.findall(r"'upserts': (\d+)", worker.output()))
            return ran >= 3 and f"{series} {float(ran)}" in _scrape(port)

        wait_for(counted, timeout_s=30, message=f"{series} = the upserts embedded, in the scrape")
        directories = list((settings.data_dir / "metrics").iterdir())
        assert len(directories) == 1 and directories[0].name.endswith(f"-{port}")
    finally:
        celery.close()
        worker.stop()


def test_a_workers_metrics_directory_is_emptied_when_it_starts(tmp_path: Path) -> None:
    import os

    from simstream.cli.ingest import multiprocess_metrics

    directory = tmp_path / "worker-host-9100"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"left by a dead process")
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        multiprocess_metrics(directory)
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    finally:
        if before is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = before
    assert list(directory.iterdir()) == []


def test_counters_with_known_label_values_are_exported_at_zero_before_any_event() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from workers import metrics

    registry = CollectorRegistry()
    for counter in (metrics.DLQ_EVENTS, metrics.RETRAIN_RUNS, metrics.CACHE_REQUESTS):
        registry.register(counter)
    try:
        text = generate_latest(registry).decode()
    finally:
        for counter in (metrics.DLQ_EVENTS, metrics.RETRAIN_RUNS, metrics.CACHE_REQUESTS):
            registry.unregister(counter)

    for series in (
        'simstream_dlq_events_total{reason="bad_magic"}',
        'simstream_dlq_events_total{reason="range_failed"}',
        'simstream_retrain_runs_total{decision="rejected"}',
        'simstream_cache_requests_total{result="miss"}',
    ):
        assert re.search(rf"^{re.escape(series)} \d", text, re.M), series
