"""Every process refuses to start when a topic's partition count is not SIMSTREAM_PARTITIONS.

Shards, watermarks, dead letters and embeddings partitions map 1:1 to the
partitions of ``items``: a topic with 3 partitions under settings that say 2
would misroute items, so each entry point stops with both counts named.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simstream.cli.main import app
from simstream.errors import ConfigError, PartitionCountError
from simstream.kafka import check_partitions, ensure_topics, partition_count
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


@pytest.fixture
def two(settings: Settings) -> Settings:
    """The test's settings saying 2 partitions, with ``items`` created with 3."""
    ensure_topics(settings, [settings.topic_items], partitions=3)
    return settings.model_copy(update={"partitions": 2})


@pytest.fixture
def two_dlq(settings: Settings) -> Settings:
    """The test's settings saying 2 partitions, with the dead-letter topic created with 3."""
    ensure_topics(settings, [settings.topic_dlq], partitions=3)
    return settings.model_copy(update={"partitions": 2})


def _env(settings: Settings) -> dict[str, str]:
    return {
        "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SIMSTREAM_TOPIC_ITEMS": settings.topic_items,
        "SIMSTREAM_TOPIC_DLQ": settings.topic_dlq,
        "SIMSTREAM_TOPIC_EMBEDDINGS_PREFIX": settings.topic_embeddings_prefix,
        "SIMSTREAM_PARTITIONS": str(settings.partitions),
        "SIMSTREAM_DATA_DIR": str(settings.data_dir),
        "SIMSTREAM_CELERY_BROKER_URL": settings.celery_broker_url,
        "SIMSTREAM_CELERY_RESULT_BACKEND": settings.celery_result_backend,
        "SIMSTREAM_REDIS_CACHE_URL": settings.redis_cache_url,
        "SIMSTREAM_METRICS_PORT": "0",
    }


def test_the_check_names_the_topic_and_both_counts_and_is_a_config_error(two: Settings) -> None:
    with pytest.raises(PartitionCountError, match=r"Expected 2\. Received: 3") as raised:
        check_partitions(two, [two.topic_items])
    assert isinstance(raised.value, ConfigError)
    assert (raised.value.topic, raised.value.expected, raised.value.actual) == (
        two.topic_items,
        2,
        3,
    )


def test_topics_not_created_yet_pass_and_embeddings_topics_are_found_by_prefix(
    settings: Settings,
) -> None:
    check_partitions(settings, [settings.topic_items, settings.topic_dlq])
    embeddings = settings.embeddings_topic("v7")
    ensure_topics(settings, [embeddings], partitions=settings.partitions + 1)
    with pytest.raises(PartitionCountError, match=embeddings):
        check_partitions(
            settings, [settings.topic_items], prefixes=[f"{settings.topic_embeddings_prefix}."]
        )


@pytest.mark.parametrize("command", ["worker", "dispatcher", "serve"])
def test_each_process_exits_1_with_one_line_naming_both_counts(
    two_dlq: Settings, command: str
) -> None:
    result = CliRunner().invoke(app, [command], env=_env(two_dlq))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert two_dlq.topic_dlq in lines[0] and "Expected 2. Received: 3" in lines[0]


def test_the_index_node_refuses_to_start(two: Settings) -> None:
    node = IndexNode(NodeConfig.from_settings(two))
    with pytest.raises(PartitionCountError, match=r"Expected 2\. Received: 3"):
        node.start()
    assert not node.generations


@pytest.mark.parametrize("command", ["worker", "dispatcher"])
def test_a_process_that_dead_letters_creates_the_dead_letter_topic_with_the_configured_count(
    settings: Settings, command: str, tmp_path: Path
) -> None:
    """Before anything was produced; a first produce would auto-create it with the
    broker's default count, which the next start refuses."""
    three = settings.model_copy(update={"partitions": 3})
    child = Child(
        [sys.executable, "-m", "simstream.cli.main", command],
        _env(three),
        tmp_path / f"{command}.log",
    )
    child.start()
    try:
        wait_for(
            lambda: partition_count(three, three.topic_dlq) > 0 or child.exited(),
            timeout_s=60,
            interval_s=0.5,
            message=f"{command} created {three.topic_dlq}",
        )
        assert partition_count(three, three.topic_dlq) == 3, child.output()
    finally:
        child.kill()
