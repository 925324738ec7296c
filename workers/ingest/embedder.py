"""`RangeEmbedder`: read one offset range of ``items``, embed it, write the embeddings log.

The unit of work of an embed task. It reads ``[start, end)`` of one partition
(``assign`` at ``start``: no consumer group), decodes each event (an invalid
one goes to the dead-letter topic with its reason and source offset), turns
payloads into encoder inputs with the encoder's input spec (images stay uint8,
scaled on the encoder's device), embeds in batches,
and produces `EmbeddingRecord`s to the same partition of
``embeddings.<version>``, closed by a range marker. Model inputs and encoder
outputs are checked: an input with NaN or Inf (``non_finite_input``), an output
with NaN or Inf (``non_finite_embedding``) or a zero output in the ``cosine`` or
``ip`` space (``zero_embedding``) is dead-lettered like an undecodable event.
A dead-lettered event also writes a delete of the item it names (its id, else
its Kafka key) at its source offset: the index never keeps serving a previous
version of an item whose newest event failed (docs/architecture.md, contract 6).
It returns only after the broker acknowledged every record (``flush``), so a
task that reports success never loses output. Running it twice on a range
writes the same records twice; the index applies them idempotently.

The encoder runs on its own thread (the only thread that touches it), so while
it embeds one batch the task thread decodes the next and produces the records
of the previous one; records still leave in source-offset order.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from simstream.errors import (
    DecodeError,
    EncoderVersionError,
    KafkaError,
    OffsetOutOfRangeError,
    PayloadError,
)
from simstream.kafka import EXPLICIT_OFFSETS, out_of_range
from simstream.log import get_logger
from simstream.wire import DeadLetter, EmbeddingRecord, ItemEvent, Op, Reason
from workers import metrics
from workers.ingest.config import IngestConfig
from workers.ingest.deadletter import source_key

log = get_logger("embedder")


class SpecLike(Protocol):
    """Turns a raw payload into one encoder input: uint8 for images, scaled on the
    encoder's device (see `model.inputs.InputSpec.to_compact_input`)."""

    def to_compact_input(self, payload: np.ndarray) -> np.ndarray: ...


class EncoderLike(Protocol):
    """What the embedder needs of an encoder (see `model.registry.Encoder`)."""

    @property
    def version(self) -> str: ...

    @property
    def input_spec(self) -> SpecLike: ...

    def embed(self, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray: ...


@dataclass
class RangeResult:
    """What one embed task did."""

    partition: int
    start: int
    end: int
    upserts: int = 0
    deletes: int = 0
    dead_letters: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts (the Celery task's return value)."""
        return {
            "partition": self.partition,
            "start": self.start,
            "end": self.end,
            "upserts": self.upserts,
            "deletes": self.deletes,
            "dead_letters": self.dead_letters,
            "reasons": self.reasons,
        }


@dataclass
class _Batch:
    """Upserts (event, source offset, raw bytes) whose vectors the encoder thread computes."""

    items: list[tuple[ItemEvent, int, bytes]]
    vectors: Future[np.ndarray]


#: Spaces in which a zero vector has no meaning (no direction, every score 0).
_DIRECTIONAL_SPACES = ("cosine", "ip")


#: What leaves for the embeddings log, in source-offset order.
_Outgoing = _Batch | EmbeddingRecord


class RangeEmbedder:
    """Embeds offset ranges of the items topic with one encoder."""

    def __init__(
        self,
        config: IngestConfig,
        encoder: EncoderLike,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        read_timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        self.encoder = encoder
        metrics.initialise_version(encoder.version)
        self.limits = config.limits
        self.read_timeout_s = read_timeout_s
        self._consumer = consumer or Consumer(
            config.kafka_config(
                **{
                    **EXPLICIT_OFFSETS,
                    "group.id": "simstream-embedder",
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                    "fetch.wait.max.ms": 20,
                }
            )
        )
        self._producer = producer or Producer(
            config.kafka_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    # The task flushes once at the end: lingering would only add latency.
                    "linger.ms": 1,
                    "compression.type": "lz4",
                }
            )
        )
        self._failures: list[str] = []
        self._encoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")

    def run(
        self, topic: str, partition: int, start: int, end: int, model_version: str
    ) -> RangeResult:
        """Embed ``[start, end)`` of ``topic``/``partition`` into ``embeddings.<model_version>``.

        Raises:
            EncoderVersionError: ``model_version`` is not the encoder's version.
            OffsetOutOfRangeError: the log does not hold the range's offsets
                (records removed, or the topic recreated).
            KafkaError: the range could not be read in time or a record was not
                acknowledged (the task retries).
        """
        if model_version != self.encoder.version:
            raise EncoderVersionError(
                f"Encoder mismatch. Expected version {model_version}. "
                f"Received: {self.encoder.version}"
            )
        result = RangeResult(partition, start, end)
        out_topic = self.config.embeddings_topic(model_version)
        bound = log.bind(partition=partition, start=start, end=end, model_version=model_version)
        pending: list[tuple[ItemEvent, int, bytes, np.ndarray]] = []
        outgoing: deque[_Outgoing] = deque()
        started = time.perf_counter()
        messages = self._read(topic, partition, start, end)
        read_s = time.perf_counter() - started
        for message in messages:
            offset = message.offset() or 0
            raw = message.value() or b""
            try:
                event = ItemEvent.decode(raw, self.limits)
                if event.op is Op.DELETE:
                    self._submit(pending, outgoing)
                    outgoing.append(
                        EmbeddingRecord(
                            op=Op.DELETE,
                            item_id=event.id,
                            source_offset=offset,
                            model_version=model_version,
                            event_time_ms=event.event_time_ms,
                        )
                    )
                    result.deletes += 1
                    continue
                assert event.payload is not None
                model_input = self.encoder.input_spec.to_compact_input(event.payload.to_array())
            except DecodeError as e:
                letter = DeadLetter.from_error(e, topic, partition, offset)
                self._submit(pending, outgoing)
                self._reject(letter, self._key_id(message), 0, model_version, result, outgoing)
                continue
            except PayloadError as e:
                letter = DeadLetter(topic, partition, offset, "bad_payload", raw, str(e))
                self._submit(pending, outgoing)
                self._reject(letter, event.id, event.event_time_ms, model_version, result, outgoing)
                continue
            if model_input.dtype.kind == "f" and not np.isfinite(model_input).all():
                letter = DeadLetter(
                    topic,
                    partition,
                    offset,
                    Reason.NON_FINITE_INPUT,
                    raw,
                    f"Expected a model input of finite values. Received: NaN or Inf after "
                    f"converting the {event.payload.kind} payload to "
                    f"{np.asarray(model_input).dtype}",
                )
                self._submit(pending, outgoing)
                self._reject(letter, event.id, event.event_time_ms, model_version, result, outgoing)
                continue
            pending.append((event, offset, raw, model_input))
            if len(pending) >= self.config.embed_batch_size:
                self._submit(pending, outgoing)
                self._send(outgoing, topic, out_topic, partition, model_version, result, False)
        self._submit(pending, outgoing)
        self._send(outgoing, topic, out_topic, partition, model_version, result, True)
        self._produce(out_topic, partition, EmbeddingRecord.range_marker(start, end, model_version))
        self._await_delivery()
        bound.info(
            "embedder.range_embedded",
            read_s=round(read_s, 4),
            total_s=round(time.perf_counter() - started, 4),
            **{k: v for k, v in result.to_dict().items() if k not in ("reasons", "start", "end")},
        )
        return result

    def _read(self, topic: str, partition: int, start: int, end: int) -> list[Message]:
        """Every record of ``[start, end)``; offsets missing from the log are skipped.

        Reading starts at the log start when that is above ``start`` (deleted or
        compacted records) and ends once the consumer's position reaches ``end``,
        also when the last offsets hold no record (a transaction marker).
        """
        tp = TopicPartition(topic, partition)
        low, _ = self._consumer.get_watermark_offsets(tp, timeout=self.read_timeout_s)
        self._consumer.assign([TopicPartition(topic, partition, max(start, low))])
        messages: list[Message] = []
        deadline = time.monotonic() + self.read_timeout_s
        last = max(start, low) - 1
        try:
            while last < end - 1 and self._consumer.position([tp])[0].offset < end:
                if time.monotonic() > deadline:
                    raise KafkaError(
                        f"Timed out reading {topic}[{partition}] offsets {start}..{end - 1}; "
                        f"reached {last}"
                    )
                for message in self._consumer.consume(min(1000, end - 1 - last), 0.2):
                    if out_of_range(message.error()):
                        metrics.OFFSET_OUT_OF_RANGE.labels("embedder").inc()
                        log.error(
                            "embedder.offset_out_of_range",
                            topic=topic,
                            partition=partition,
                            start=start,
                            end=end,
                            error=str(message.error()),
                        )
                        raise OffsetOutOfRangeError(
                            f"Cannot read {topic}[{partition}] offsets {start}..{end - 1}. "
                            f"Expected the log to hold them. Received: {message.error()} "
                            "(records removed, or the topic recreated)"
                        )
                    if message.error() is not None:
                        continue
                    offset = message.offset() or 0
                    if offset >= end:
                        last = end - 1
                        break
                    if offset > last:
                        messages.append(message)
                        last = offset
        finally:
            self._consumer.unassign()
        return messages

    def _submit(
        self, pending: list[tuple[ItemEvent, int, bytes, np.ndarray]], outgoing: deque[_Outgoing]
    ) -> None:
        """Hand the pending upserts to the encoder thread; their records follow in order."""
        if not pending:
            return
        inputs = np.stack([x for *_, x in pending])
        vectors = self._encoder_thread.submit(self._embed, inputs)
        outgoing.append(_Batch([(e, offset, raw) for e, offset, raw, _ in pending], vectors))
        pending.clear()

    def _embed(self, inputs: np.ndarray) -> np.ndarray:
        if self.config.fault_embed_batch_delay_s:
            time.sleep(self.config.fault_embed_batch_delay_s)  # fault injection (tests)
        started = time.perf_counter()
        vectors = self.encoder.embed(inputs, self.config.embed_batch_size)
        metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
        return vectors

    def _send(
        self,
        outgoing: deque[_Outgoing],
        topic: str,
        out_topic: str,
        partition: int,
        model_version: str,
        result: RangeResult,
        wait: bool,
    ) -> None:
        """Produce the outgoing records in order: all of them (``wait``) or up to the
        first batch still being embedded.

        Raises:
            Exception: whatever the encoder raised for a batch (the task retries).
        """
        while outgoing:
            head = outgoing[0]
            if isinstance(head, EmbeddingRecord):
                self._produce(out_topic, partition, head)
            elif wait or head.vectors.done():
                vectors = np.asarray(head.vectors.result(), dtype=np.float32)
                problems = self._check_outputs(vectors)
                embedded = 0
                for (event, offset, raw), vector, problem in zip(
                    head.items, vectors, problems, strict=True
                ):
                    if problem is not None:
                        reason, detail = problem
                        letter = DeadLetter(topic, partition, offset, reason, raw, detail)
                        delete = self._reject(
                            letter, event.id, event.event_time_ms, model_version, result
                        )
                        if delete is not None:
                            self._produce(out_topic, partition, delete)
                        continue
                    embedded += 1
                    self._produce(
                        out_topic,
                        partition,
                        EmbeddingRecord(
                            op=Op.UPSERT,
                            item_id=event.id,
                            source_offset=offset,
                            model_version=model_version,
                            vector=vector,
                            label=event.label,
                            metadata=dict(event.metadata),
                            event_time_ms=event.event_time_ms,
                        ),
                    )
                metrics.EMBEDDED_ITEMS.labels(model_version, "upsert").inc(embedded)
                result.upserts += embedded
            else:
                return
            outgoing.popleft()

    def _check_outputs(self, vectors: np.ndarray) -> list[tuple[Reason, str] | None]:
        """Per encoder output: why it cannot be indexed, or None."""
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0.0), axis=1)
        directional = self.config.index_space in _DIRECTIONAL_SPACES
        problems: list[tuple[Reason, str] | None] = []
        for ok, norm in zip(finite, norms, strict=True):
            if not ok:
                problems.append(
                    (
                        Reason.NON_FINITE_EMBEDDING,
                        "Expected an embedding of finite values. Received: NaN or Inf "
                        f"from encoder {self.encoder.version}",
                    )
                )
            elif directional and norm == 0.0:
                problems.append(
                    (
                        Reason.ZERO_EMBEDDING,
                        f"Expected an embedding with a direction ({self.config.index_space} "
                        f"space). Received: the zero vector from encoder {self.encoder.version}",
                    )
                )
            else:
                problems.append(None)
        return problems

    def _reject(
        self,
        letter: DeadLetter,
        item_id: str | None,
        event_time_ms: int,
        model_version: str,
        result: RangeResult,
        outgoing: deque[_Outgoing] | None = None,
    ) -> EmbeddingRecord | None:
        """Dead-letter an event; the delete of the item it names supersedes a stale version.

        The delete (at the event's source offset) is queued on ``outgoing`` when
        given, and returned; None when the event names no item.
        """
        self._dead_letter(letter, result)
        log.info(
            "embedder.event_dead_lettered",
            partition=letter.partition,
            offset=letter.offset,
            reason=letter.reason,
            item_id=item_id,
        )
        if not item_id:
            return None
        delete = EmbeddingRecord(
            op=Op.DELETE,
            item_id=item_id,
            source_offset=letter.offset,
            model_version=model_version,
            event_time_ms=event_time_ms,
        )
        if outgoing is not None:
            outgoing.append(delete)
        return delete

    def _key_id(self, message: Message) -> str | None:
        """The item id an undecodable event names: its Kafka key, when that can be an id."""
        key = message.key()
        if not key:
            return None
        try:
            text = key.decode()
        except UnicodeDecodeError:
            return None
        return text if len(text) <= self.limits.max_id_chars else None

    def _produce(self, topic: str, partition: int, record: EmbeddingRecord) -> None:
        self._produce_raw(topic, partition, record.item_id.encode() or None, record.encode())

    def _produce_raw(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, partition=partition, on_delivery=self._delivered
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def _delivered(self, error: Any, message: Message) -> None:
        if error is not None:
            self._failures.append(str(error))

    def _dead_letter(self, letter: DeadLetter, result: RangeResult) -> None:
        key = source_key(letter.source_topic, letter.partition, letter.offset).encode()
        self._produce_raw(self.config.topic_dlq, letter.partition, key, letter.encode())
        result.dead_letters += 1
        result.reasons[letter.reason] = result.reasons.get(letter.reason, 0) + 1
        metrics.DLQ_EVENTS.labels(letter.reason).inc()

    def _await_delivery(self) -> None:
        remaining = self._producer.flush(30)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise KafkaError(
                f"Embedding records not acknowledged: {remaining} still queued, "
                f"{len(failures)} failed (first: {failures[:1]})"
            )

    def close(self) -> None:
        """Release the encoder thread and the Kafka clients."""
        self._encoder_thread.shutdown(wait=True)
        self._producer.flush(10)
        self._consumer.close()
