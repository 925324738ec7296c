"""The items producer and `simstream publish`, against the real embedded broker."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from typer.testing import CliRunner

from producers.config import ProducerConfig
from producers.producer import ItemProducer, producer_config
from simstream.cli.main import app
from simstream.errors import ConfigError, DeliveryError, InvalidEventError
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.stack.process import free_port
from simstream.wire import (
    ArrayPayload,
    ImagePayload,
    ItemEvent,
    Op,
    Payload,
    VectorPayload,
    WriteToken,
)
from tests.waiting import wait_for


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: murmur2 (seed 0x9747b28c), made positive, modulo partitions.

    Written from the algorithm so the test does not trust librdkafka to check itself.
    """
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(key)) & mask
    whole = len(key) - len(key) % 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(key[i : i + 4], "little") * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    tail = key[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_the_reference_partitioner_matches_kafka_test_vectors() -> None:
    """Kafka's own UtilsTest: murmur2("21") = -973932308, murmur2("foobar") = -790332482."""
    assert java_partition(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)
    assert java_partition(b"foobar", 2**31 - 1) == (-790332482 & 0x7FFFFFFF) % (2**31 - 1)


def read_back(settings: Settings, count: int, timeout_s: float = 20.0) -> list[Message]:
    """Every record of the items topic, read from offset 0 of each partition."""
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    consumer.assign(
        [TopicPartition(settings.topic_items, p, 0) for p in range(settings.partitions)]
    )
    records: list[Message] = []

    def enough() -> bool:
        records.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
        return len(records) >= count

    try:
        wait_for(enough, timeout_s, message=f"{count} records in {settings.topic_items}")
    finally:
        consumer.close()
    return records


def sample_payloads(n: int) -> list[Payload]:
    rng = np.random.default_rng(0)
    kinds: list[Payload] = []
    for i in range(n):
        if i % 3 == 0:
            kinds.append(ArrayPayload.from_array(rng.integers(0, 255, (8, 8), dtype=np.uint8)))
        elif i % 3 == 1:
            kinds.append(VectorPayload.from_values(rng.standard_normal(16)))
        else:
            kinds.append(ImagePayload.from_array(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)))
    return kinds


@pytest.fixture
def items_topic(settings: Settings) -> Settings:
    ensure_topics(settings, [settings.topic_items])
    return settings


def unreachable(tmp_path: Path) -> Settings:
    """Settings pointing at a closed port, giving up on each message after 1 s."""
    return Settings.load(
        data_dir=tmp_path,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_client_config={"message.timeout.ms": "1000"},
    )


# --- the producer --------------------------------------------------------------------


def test_an_idempotent_producer_delivers_keyed_events_that_read_back_equal(
    items_topic: Settings,
) -> None:
    settings = items_topic
    events = [
        ItemEvent.upsert(f"item/{i}", payload, label=str(i % 3), metadata={"i": i})
        for i, payload in enumerate(sample_payloads(30))
    ] + [ItemEvent.delete("item/0")]

    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for event in events:
            producer.publish(event)
        summary = producer.flush(10)

    assert (summary.delivered, summary.failed, summary.pending) == (len(events), 0, 0)
    assert summary.ok
    records = read_back(settings, len(events))
    assert len(records) == len(events)
    decoded = [ItemEvent.decode(m.value() or b"") for m in records]
    assert sorted(decoded, key=lambda e: (e.id, e.op)) == sorted(events, key=lambda e: (e.id, e.op))
    for record in records:
        key = record.key()
        assert isinstance(key, bytes)
        assert ItemEvent.decode(record.value() or b"").id == key.decode()
        assert record.partition() == java_partition(key, settings.partitions)
    assert len({m.partition() for m in records}) > 1


def test_the_same_id_always_lands_on_the_same_partition(items_topic: Settings) -> None:
    with ItemProducer(ProducerConfig.from_settings(items_topic)) as producer:
        tokens = [
            producer.publish_sync(ItemEvent.upsert("same", VectorPayload.from_values([i])))
            for i in range(5)
        ]
        producer.publish_sync(ItemEvent.delete("same"))

    assert {t.partition for t in tokens} == {java_partition(b"same", items_topic.partitions)}
    assert [t.offset for t in tokens] == list(range(tokens[0].offset, tokens[0].offset + 5))


def test_publish_sync_returns_the_true_offset_of_the_event(items_topic: Settings) -> None:
    settings = items_topic
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i, payload in enumerate(sample_payloads(12)):
            producer.upsert(f"before/{i}", payload)
        producer.flush(10)
        event = ItemEvent.upsert("target", VectorPayload.from_values([1.0, 2.0]), label="t")
        token = producer.publish_sync(event)

    assert token.topic == settings.topic_items
    consumer = Consumer(settings.kafka_config(**{"group.id": "g", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(token.topic, token.partition, token.offset)])
    try:
        record = wait_for(lambda: next(iter(consumer.consume(1, 0.5)), None), 10)
    finally:
        consumer.close()
    assert record is not None
    assert record.offset() == token.offset
    assert record.key() == b"target"
    assert ItemEvent.decode(record.value() or b"") == event


def test_publishing_together_answers_each_events_true_offset_or_why_it_was_refused(
    items_topic: Settings,
) -> None:
    config = ProducerConfig.from_settings(items_topic)
    too_long = "x" * (config.limits.max_id_chars + 1)
    events = [
        ItemEvent.upsert("together/a", VectorPayload.from_values([1.0])),
        ItemEvent.delete(too_long),
        ItemEvent.upsert("together/b", VectorPayload.from_values([2.0])),
    ]
    with ItemProducer(config) as producer:
        outcomes = producer.publish_all_sync(events)

    first, refused, last = outcomes
    assert isinstance(refused, InvalidEventError)
    assert "characters" in str(refused)
    consumer = Consumer(items_topic.kafka_config(**{"group.id": "g", "enable.auto.commit": False}))
    try:
        for event, token in ((events[0], first), (events[2], last)):
            assert isinstance(token, WriteToken)
            consumer.assign([TopicPartition(token.topic, token.partition, token.offset)])
            record = wait_for(lambda: next(iter(consumer.consume(1, 0.5)), None), 10)
            assert record is not None
            assert ItemEvent.decode(record.value() or b"") == event
    finally:
        consumer.close()


def test_a_full_local_queue_makes_publish_wait_instead_of_failing(
    items_topic: Settings,
) -> None:
    settings = items_topic.model_copy(
        update={"kafka_client_config": {"queue.buffering.max.messages": "3"}}
    )
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i in range(40):
            producer.delete(f"gone/{i}")
        summary = producer.flush(10)

    assert (summary.delivered, summary.failed) == (40, 0)


def test_an_event_over_a_size_limit_is_refused_before_it_is_sent(items_topic: Settings) -> None:
    settings = items_topic.model_copy(update={"max_payload_bytes": 64})
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        with pytest.raises(InvalidEventError, match="at most 64 bytes"):
            producer.upsert("big", VectorPayload.from_values(np.zeros(17)))
        assert producer.summary.delivered + producer.summary.failed == 0


def _small_messages(settings: Settings) -> Settings:
    """``settings`` with the producer's message.max.bytes at 1 MB (Apache Kafka's default)."""
    client = {**settings.kafka_client_config, "message.max.bytes": "1000000"}
    return settings.model_copy(update={"kafka_client_config": client})


def test_an_event_over_the_message_size_is_refused_before_it_is_produced(
    items_topic: Settings,
) -> None:
    settings = _small_messages(items_topic)
    big = ArrayPayload.from_array(np.zeros(375_000, np.float32))  # 1.5 MB
    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        refused = r"'big' is \d+ bytes encoded\. Expected at most 1000000 bytes"
        with pytest.raises(DeliveryError, match=refused):
            producer.upsert("big", big)
        producer.delete("small")
        summary = producer.flush(10)
    assert (summary.delivered, summary.failed) == (1, 1)
    assert "big: " in summary.errors[0]
    assert [ItemEvent.decode(m.value() or b"").id for m in read_back(settings, 1)] == ["small"]


def test_publish_reports_an_event_over_the_message_size_as_failed(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, items_topic: Settings, tmp_path: Path
) -> None:
    point_cli_at(monkeypatch, _small_messages(items_topic))
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.zeros((2, 375_000), np.float32))

    result = cli.invoke(app, ["publish", "--npz", str(rows)])

    assert result.exit_code == 1, result.output
    assert "delivered=0 failed=2 skipped=0" in result.output
    assert "over message.max.bytes" in result.output


def test_delivery_to_an_unreachable_broker_is_counted_as_failed(tmp_path: Path) -> None:
    with ItemProducer(ProducerConfig.from_settings(unreachable(tmp_path))) as producer:
        for i in range(3):
            producer.delete(f"lost/{i}")
        summary = producer.flush(15)

    assert (summary.delivered, summary.failed, summary.pending) == (0, 3, 0)
    assert not summary.ok
    assert summary.errors[0].startswith("lost/0: ")


def test_publish_sync_raises_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    with ItemProducer(ProducerConfig.from_settings(unreachable(tmp_path))) as producer:
        with pytest.raises(DeliveryError, match="'lost' was not delivered"):
            producer.publish_sync(ItemEvent.delete("lost"), timeout_s=15)
        assert producer.summary.failed == 1


def test_settings_may_not_change_the_partitioner(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path, kafka_client_config={"partitioner": "random"})
    with pytest.raises(ConfigError, match=r"Expected 'murmur2_random'\. Received: 'random'"):
        producer_config(ProducerConfig.from_settings(settings))


def test_settings_may_tune_throughput_properties(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path, kafka_client_config={"compression.type": "zstd"})
    config = producer_config(ProducerConfig.from_settings(settings))
    assert config["compression.type"] == "zstd"
    assert (config["enable.idempotence"], config["acks"]) == (True, "all")
    assert config["partitioner"] == "murmur2_random"


# --- the CLI -------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """A runner in an empty folder; the logging set up by the command is undone afterwards."""
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield CliRunner()
    root.handlers[:] = handlers
    root.setLevel(level)


def point_cli_at(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("SIMSTREAM_TOPIC_ITEMS", settings.topic_items)
    monkeypatch.setenv("SIMSTREAM_PARTITIONS", str(settings.partitions))
    monkeypatch.setenv("SIMSTREAM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SIMSTREAM_KAFKA_CLIENT_CONFIG", json.dumps(settings.kafka_client_config))


def test_publish_digits_delivers_50_events_and_prints_a_summary(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    point_cli_at(monkeypatch, settings)

    result = cli.invoke(app, ["publish", "--dataset", "digits", "--limit", "50"])

    assert result.exit_code == 0, result.output
    assert "delivered=50 failed=0 skipped=0" in result.output
    records = read_back(settings, 50)
    events = {e.id: e for e in (ItemEvent.decode(m.value() or b"") for m in records)}
    assert len(events) == 50
    first = events["digits/0"].payload
    assert isinstance(first, ArrayPayload)
    assert (first.shape, first.dtype) == ((8, 8), "uint8")


def test_publish_mnist_reads_the_folder_given_by_mnist_dir(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, settings: Settings, mnist_dir: Path
) -> None:
    point_cli_at(monkeypatch, settings)

    result = cli.invoke(
        app, ["publish", "--dataset", "mnist", "--mnist-dir", str(mnist_dir), "--limit", "20"]
    )

    assert result.exit_code == 0, result.output
    assert "delivered=20 failed=0 skipped=0" in result.output
    ids = {ItemEvent.decode(m.value() or b"").id for m in read_back(settings, 20)}
    assert ids == {f"mnist/t10k/{i}" for i in range(20)}


def test_publish_exits_non_zero_with_a_summary_when_delivery_fails(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_cli_at(monkeypatch, unreachable(tmp_path))

    result = cli.invoke(
        app, ["publish", "--dataset", "digits", "--limit", "3", "--no-create-topics"]
    )

    assert result.exit_code == 1, result.output
    assert "delivered=0 failed=3 skipped=0" in result.output
    assert "failed digits/0: " in result.output


def test_publish_skips_bad_lines_applies_the_prefix_and_publishes_deletes(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path
) -> None:
    point_cli_at(monkeypatch, settings)
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        '{"id": "a", "label": "x", "payload": {"vector": [1, 2]}}\n'
        "{broken\n"
        '{"id": "' + "y" * 300 + '", "payload": {"vector": [1]}}\n'
        '{"id": "b", "op": "delete"}\n'
    )

    result = cli.invoke(
        app, ["publish", "--jsonl", str(lines), "--id-prefix", "t/", "--delete", "old"]
    )

    assert result.exit_code == 0, result.output
    assert "delivered=3 failed=0 skipped=2" in result.output
    assert "skipped line 2: " in result.output
    records = read_back(settings, 3)
    ops = sorted((e.id, e.op) for e in (ItemEvent.decode(m.value() or b"") for m in records))
    assert ops == [("t/a", Op.UPSERT), ("t/b", Op.DELETE), ("t/old", Op.DELETE)]


def test_publish_without_a_source_is_a_usage_error(cli: CliRunner) -> None:
    result = cli.invoke(app, ["publish"])
    assert result.exit_code == 2
    assert "Expected one of --folder" in result.output


def test_publish_with_two_sources_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["publish", "--dataset", "digits", "--folder", str(tmp_path)])
    assert result.exit_code == 2
    assert "Received: --folder, --dataset" in result.output


def test_publish_of_a_missing_file_exits_with_its_reason(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIMSTREAM_DATA_DIR", str(tmp_path))
    result = cli.invoke(app, ["publish", "--jsonl", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1
    assert "Expected a JSON Lines file" in result.output
