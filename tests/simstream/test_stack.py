"""The embedded stack: a real Tansu broker and Valkey started by simstream's own code."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer

from simstream.kafka import end_offsets, ensure_topics, partition_count
from simstream.settings import Settings
from simstream.stack.local import LocalStack, local_stack_settings
from simstream.stack.process import ChildService
from simstream.stack.supervision import RestartPolicy
from tests.waiting import wait_for

pytestmark = pytest.mark.services


def _consume(settings: Settings, topic: str, group: str, count: int) -> list[bytes]:
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": settings.kafka_session_timeout_ms,
                "max.poll.interval.ms": settings.kafka_max_poll_interval_ms,
            }
        )
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            values.append(message.value() or b"")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def test_an_idempotent_producer_and_a_consumer_group_resume_after_the_committed_offset(
    settings: Settings,
) -> None:
    topic = settings.topic_items
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    for i in range(10):
        producer.produce(topic, key=f"k{i}", value=f"v{i}".encode())
    assert producer.flush(10) == 0
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = _consume(settings, topic, group, 10)
    assert first == [f"v{i}".encode() for i in range(10)]
    for i in range(10, 15):
        producer.produce(topic, key=f"k{i}", value=f"v{i}".encode())
    producer.flush(10)
    resumed = _consume(settings, topic, group, 5)
    assert resumed == [f"v{i}".encode() for i in range(10, 15)]


def test_topics_are_created_idempotently_and_a_wrong_partition_count_is_an_error(
    settings: Settings,
) -> None:
    topic = settings.topic_items
    ensure_topics(settings, [topic])
    ensure_topics(settings, [topic])
    assert partition_count(settings, topic) == settings.partitions
    with pytest.raises(Exception, match="wrong number of partitions"):
        ensure_topics(settings, [topic], partitions=settings.partitions + 1)


def test_end_offsets_count_every_record_even_where_the_broker_reports_batch_offsets(
    settings: Settings,
) -> None:
    topic = settings.topic_items
    ensure_topics(settings, [topic], partitions=2)
    producer = Producer(settings.kafka_config(**{"linger.ms": 20}))
    for i in range(25):
        producer.produce(topic, value=b"x", partition=i % 2)
    producer.flush(10)
    consumer = Consumer(settings.kafka_config(**{"group.id": "probe", "enable.auto.commit": False}))
    try:
        assert end_offsets(consumer, topic, [0, 1]) == {0: 13, 1: 12}
    finally:
        consumer.close()


def test_valkey_answers_a_set_get_round_trip(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_cache_url)
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"


def _simstream(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simstream.cli.main", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def _stack_env(tmp_path: Path) -> dict[str, str]:
    return local_stack_settings(tmp_path).to_env()


def test_up_services_only_is_healthy_within_ten_seconds_and_sigterm_leaves_no_child(
    tmp_path: Path,
) -> None:
    env = _stack_env(tmp_path)
    started = time.monotonic()
    process = _simstream("up", "--services-only", env=env)
    try:
        wait_for(
            lambda: (
                (tmp_path / "logs" / "valkey.log").exists()
                and len(_children(process.pid)) == 2
                and _answers(int(env["SIMSTREAM_VALKEY_PORT"]))
            ),
            timeout_s=10,
            message="broker and Valkey up",
        )
        assert time.monotonic() - started < 10
        children = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        wait_for(
            lambda: not any(_exists(c) for c in children), timeout_s=5, message="children gone"
        )
    finally:
        if process.poll() is None:
            process.kill()


def test_starting_twice_on_the_same_ports_exits_non_zero_naming_the_port(
    stack: LocalStack, tmp_path: Path
) -> None:
    env = {
        "SIMSTREAM_BROKER_PORT": str(stack.settings.broker_port),
        "SIMSTREAM_VALKEY_PORT": str(stack.settings.valkey_port),
        "SIMSTREAM_DATA_DIR": str(tmp_path),
    }
    process = _simstream("up", "--services-only", env=env)
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert str(stack.settings.broker_port).encode() in output
    assert b"already in use" in output


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def _status(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "stack.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_up_restarts_a_killed_valkey_on_its_port_counts_the_restart_and_keeps_running(
    tmp_path: Path,
) -> None:
    env = _stack_env(tmp_path)
    port = int(env["SIMSTREAM_VALKEY_PORT"])
    process = _simstream("up", "--services-only", env=env)
    try:
        first = wait_for(lambda: _status(tmp_path), timeout_s=15, message="stack status")
        os.kill(first["valkey"]["pid"], signal.SIGKILL)
        restarted = wait_for(
            lambda: _status(tmp_path)["valkey"]["restarts"] == 1 and _status(tmp_path),
            timeout_s=15,
            message="valkey restarted",
        )
        assert restarted["valkey"]["pid"] != first["valkey"]["pid"]
        assert wait_for(lambda: _answers(port), timeout_s=5, message="valkey answers")
        assert process.poll() is None
        assert restarted["broker"] == first["broker"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert b"stack.service_restarted" in output
    assert b"in memory only" in output and b"Apache Kafka" in output


def test_when_the_broker_dies_up_stops_the_stack_and_says_its_in_memory_log_is_lost(
    tmp_path: Path,
) -> None:
    env = _stack_env(tmp_path)
    process = _simstream("up", "--services-only", env=env)
    try:
        first = wait_for(lambda: _status(tmp_path), timeout_s=15, message="stack status")
        os.kill(first["broker"]["pid"], signal.SIGKILL)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    text = output.decode()
    assert "The broker exited with status -9" in text
    assert "in memory only, so every topic" in text
    assert f"The index snapshots in {tmp_path / 'snapshots'}" in text
    assert "Apache Kafka" in text
    assert not _exists(first["valkey"]["pid"])


def test_the_stack_restarts_an_exited_app_child_with_growing_delays(tmp_path: Path) -> None:
    def sleeper(settings: Settings) -> ChildService:
        return ChildService(
            name="sleeper",
            argv=[sys.executable, "-c", "import time; time.sleep(600)"],
            url="none",
            healthy=lambda: True,
        )

    policy = RestartPolicy(first_delay_s=0.2, max_delay_s=5.0, stable_after_s=60.0)
    with LocalStack(
        local_stack_settings(tmp_path), app_services=[sleeper], restart_policy=policy
    ) as stack:
        [child] = [s for s in stack.started if s.name == "sleeper"]
        delays = []
        for restarts in (1, 2):
            assert child.process is not None
            old = child.process.pid
            child.process.kill()
            killed = time.monotonic()
            wait_for(
                functools.partial(_supervised, stack, child, restarts),
                timeout_s=10,
                message=f"restart {restarts}",
            )
            delays.append(time.monotonic() - killed)
            assert child.alive() and child.process.pid != old
        assert _status(tmp_path)["sleeper"]["restarts"] == 2
    assert 0.2 <= delays[0] < delays[1]
    assert delays[1] >= 0.4


def _supervised(stack: LocalStack, child: ChildService, restarts: int) -> bool:
    """One supervision round of ``stack``; whether ``child`` was restarted ``restarts`` times."""
    stack.check()
    return child.restarts == restarts


def test_a_port_left_in_time_wait_by_a_stopped_service_counts_as_free() -> None:
    import socket

    from simstream.stack.process import port_in_use

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        assert port_in_use("127.0.0.1", port)  # listening
        accepted.close()  # the service closes first: its side enters TIME_WAIT
    client.close()

    assert not port_in_use("127.0.0.1", port)
