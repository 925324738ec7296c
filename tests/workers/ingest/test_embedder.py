"""`RangeEmbedder` on the real broker with a real (untrained) Keras encoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from model.registry import Encoder, Registry
from simstream.errors import EncoderVersionError, KafkaError, OffsetOutOfRangeError, RegistryError
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import EmbeddingRecord, ItemEvent, Op, Reason, VectorPayload
from tests.workers.pipeline import read_dead_letters
from workers import metrics
from workers.ingest.config import IngestConfig
from workers.ingest.embedder import RangeEmbedder, RangeResult

pytestmark = pytest.mark.services


@pytest.fixture
def small_batches(settings: Settings, encoder_version: str) -> Settings:
    """Batches of 64, so one range spans several encoder calls."""
    merged = Settings.load(**{**settings.model_dump(), "embed_batch_size": 64})
    ensure_topics(merged, [merged.topic_items, merged.topic_dlq])
    ensure_topics(merged, [merged.embeddings_topic(encoder_version)])
    return merged


def _publish_to_partition_0(settings: Settings, values: list[bytes]) -> None:
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True}))
    for value in values:
        producer.produce(settings.topic_items, value=value, key=b"k", partition=0)
    assert producer.flush(10) == 0


def _upsert(item_id: str) -> bytes:
    seed = int(item_id.rsplit("-", maxsplit=1)[-1])
    vector = np.random.default_rng(seed).normal(size=16).astype(np.float32)
    return ItemEvent.upsert(item_id, VectorPayload.from_values(vector)).encode()


def _embeddings(settings: Settings, version: str, count: int) -> list[EmbeddingRecord]:
    consumer = Consumer(settings.kafka_config(**{"group.id": "embeddings-reader"}))
    consumer.assign([TopicPartition(settings.embeddings_topic(version), 0, 0)])
    records: list[EmbeddingRecord] = []
    for _ in range(100):
        records += [
            EmbeddingRecord.decode(m.value() or b"")
            for m in consumer.consume(1000, 0.2)
            if m.error() is None
        ]
        if len(records) >= count:
            break
    consumer.close()
    return records


def _embed_range(settings: Settings, encoder: Any, end: int) -> RangeResult:
    """Embed offsets ``[0, end)`` of partition 0 with ``encoder``, closing the embedder."""
    embedder = RangeEmbedder(IngestConfig.from_settings(settings), encoder)
    try:
        return embedder.run(settings.topic_items, 0, 0, end, encoder.version)
    finally:
        embedder.close()


def _events() -> list[bytes]:
    """150 upserts, a delete, 100 upserts, junk, 20 upserts, a delete: 273 offsets."""
    return [
        *(_upsert(f"item-{i}") for i in range(150)),
        ItemEvent.delete("item-3").encode(),
        *(_upsert(f"item-{i}") for i in range(150, 250)),
        b"not an event",
        *(_upsert(f"item-{i}") for i in range(250, 270)),
        ItemEvent.delete("item-200").encode(),
    ]


def test_records_leave_in_source_order_across_batches_deletes_and_dead_letters(
    small_batches: Settings, encoder_version: str
) -> None:
    settings = small_batches
    _publish_to_partition_0(settings, _events())
    encoder = Registry(settings.registry_dir).load(encoder_version)
    result = _embed_range(settings, encoder, 273)
    assert (result.upserts, result.deletes, result.dead_letters) == (270, 2, 1)
    records = _embeddings(settings, encoder_version, 274)
    assert len(records) == 274
    *entries, marker = records
    assert marker.op is Op.RANGE and (marker.range_start, marker.range_end) == (0, 273)
    offsets = [r.source_offset for r in entries]
    assert offsets == sorted(offsets) and len(set(offsets)) == 273
    deletes = [(r.item_id, r.source_offset) for r in entries if r.op is Op.DELETE]
    # The junk event went to the dead-letter topic; its key names the item it removes.
    assert deletes == [("item-3", 150), ("k", 251), ("item-200", 272)]
    by_id = {r.item_id: r for r in entries if r.op is Op.UPSERT}
    for item_id in ("item-0", "item-64", "item-149", "item-269"):
        payload = ItemEvent.decode(_upsert(item_id)).payload
        assert payload is not None
        expected = encoder.embed(encoder.input_spec.to_model_input(payload.to_array()))
        vector = by_id[item_id].vector
        assert vector is not None
        np.testing.assert_allclose(vector, expected[0], rtol=1e-5, atol=1e-6)


class _FailsOnce:
    """Fault injection: the first embed call fails as a lost device would."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder, self.failed = encoder, False
        self.version, self.input_spec = encoder.version, encoder.input_spec

    def embed(self, inputs: np.ndarray, batch_size: int = 256) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("device lost")
        return self.encoder.embed(inputs, batch_size)


def test_an_encoder_failure_fails_the_range_and_the_retry_writes_it_whole(
    small_batches: Settings, encoder_version: str
) -> None:
    settings = small_batches
    _publish_to_partition_0(settings, _events())
    embedder = RangeEmbedder(
        IngestConfig.from_settings(settings),
        _FailsOnce(Registry(settings.registry_dir).load(encoder_version)),
    )
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            embedder.run(settings.topic_items, 0, 0, 273, encoder_version)
        result = embedder.run(settings.topic_items, 0, 0, 273, encoder_version)
    finally:
        embedder.close()
    assert (result.upserts, result.deletes, result.dead_letters) == (270, 2, 1)
    records = _embeddings(settings, encoder_version, 274)
    assert records[-1].op is Op.RANGE
    # Nothing of the failed attempt reached the log: its first batch failed first.
    assert len(records) == 274


def test_a_range_for_another_model_version_is_a_registry_error_not_a_kafka_error(
    small_batches: Settings, encoder_version: str
) -> None:
    settings = small_batches
    encoder = Registry(settings.registry_dir).load(encoder_version)
    embedder = RangeEmbedder(IngestConfig.from_settings(settings), encoder)
    try:
        with pytest.raises(EncoderVersionError, match="Encoder mismatch") as raised:
            embedder.run(settings.topic_items, 0, 0, 1, "v999")
    finally:
        embedder.close()
    assert isinstance(raised.value, RegistryError)
    assert not isinstance(raised.value, KafkaError)


class _BadOutputs:
    """Fault injection: the encoder answers NaN for inputs starting with 7, zeros for 9."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.version, self.input_spec = encoder.version, encoder.input_spec

    def embed(self, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
        vectors = np.array(self.encoder.embed(inputs, batch_size))
        vectors[inputs[:, 0] == 7.0] = np.nan
        vectors[inputs[:, 0] == 9.0] = 0.0
        return vectors


def _upsert_starting_with(item_id: str, first: float) -> bytes:
    return ItemEvent.upsert(item_id, VectorPayload.from_values([first] + [0.5] * 15)).encode()


def test_nan_and_zero_embeddings_are_dead_lettered_and_delete_the_previous_version(
    small_batches: Settings, encoder_version: str
) -> None:
    settings = small_batches
    _publish_to_partition_0(
        settings,
        [
            _upsert_starting_with("item-0", 1.0),
            _upsert_starting_with("item-1", 1.0),
            _upsert_starting_with("item-0", 7.0),  # the encoder answers NaN
            _upsert_starting_with("item-1", 9.0),  # the encoder answers the zero vector
            _upsert_starting_with("item-2", 1.0),
        ],
    )
    encoder = _BadOutputs(Registry(settings.registry_dir).load(encoder_version))
    result = _embed_range(settings, encoder, 5)
    assert (result.upserts, result.deletes, result.dead_letters) == (3, 0, 2)
    records = _embeddings(settings, encoder_version, 6)
    assert [(r.op, r.item_id, r.source_offset) for r in records[:-1]] == [
        (Op.UPSERT, "item-0", 0),
        (Op.UPSERT, "item-1", 1),
        (Op.DELETE, "item-0", 2),
        (Op.DELETE, "item-1", 3),
        (Op.UPSERT, "item-2", 4),
    ]
    assert all(np.isfinite(r.vector).all() for r in records if r.vector is not None)
    letters = read_dead_letters(settings, 2)
    assert sorted((x.offset, x.reason) for x in letters) == [
        (2, Reason.NON_FINITE_EMBEDDING),
        (3, Reason.ZERO_EMBEDDING),
    ]
    assert {x.offset: ItemEvent.decode(x.raw).id for x in letters} == {2: "item-0", 3: "item-1"}


class _OffsetGone:
    """Fault injection: the broker answers that the assigned offset is not in its log."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)  # everything but consume is the real consumer

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        error = RdKafkaError(RdKafkaError._AUTO_OFFSET_RESET, "offset 0 out of range [5, 9)")
        return [Message(topic="items", partition=0, offset=0, error=error)]


def test_a_range_the_log_no_longer_holds_is_an_offset_error_not_a_silent_jump(
    small_batches: Settings, encoder_version: str
) -> None:
    settings = small_batches
    encoder = Registry(settings.registry_dir).load(encoder_version)
    consumer = Consumer(settings.kafka_config(**{"group.id": "embedder-test"}))
    embedder = RangeEmbedder(
        IngestConfig.from_settings(settings),
        encoder,
        consumer=_OffsetGone(consumer),  # type: ignore[arg-type]
        read_timeout_s=5.0,
    )
    counter = metrics.OFFSET_OUT_OF_RANGE.labels("embedder")
    before = counter._value.get()
    try:
        with pytest.raises(OffsetOutOfRangeError, match=r"offsets 0\.\.4"):
            embedder.run(settings.topic_items, 0, 0, 5, encoder_version)
    finally:
        embedder.close()
    assert counter._value.get() == before + 1
