"""`ItemProducer`: publishes `ItemEvent`s to the items topic, idempotently, keyed by id.

Partitioning contract: the key is the item id in UTF-8 and the partitioner is
librdkafka's ``murmur2_random`` (Java-compatible murmur2 of the key, modulo the
partition count; keyless messages, which we never send, go anywhere). That one
mapping decides item → partition → index shard, for every producer in any
language that uses Kafka's default partitioner. Nothing else in simstream
re-derives it: consumers learn an item's partition from the record they read.

Delivery: ``enable.idempotence`` with ``acks=all`` (no duplicates or reordering
from retries within a producer session), lz4 compression, a short linger so
events travel in batches. Every produced event ends as exactly one delivery
report, counted as delivered or failed; `flush` returns the counts. An event
whose encoding is over the client's ``message.max.bytes`` is refused before it
is produced, with a `DeliveryError` that names both sizes, and counted failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Message, Producer

from producers.config import ProducerConfig
from simstream.errors import ConfigError, DeliveryError, InvalidEventError
from simstream.log import get_logger
from simstream.wire import ItemEvent, MetadataValue, Payload, WriteToken

log = get_logger("producer")

#: Properties the partitioning and delivery contracts rest on; settings may not change them.
FIXED_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
}
#: Throughput defaults; ``SIMSTREAM_KAFKA_CLIENT_CONFIG`` may override them.
DEFAULT_CONFIG: dict[str, Any] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 256 * 1024,
    # librdkafka's own log repeats every failed connect; client errors reach
    # `error_cb` instead, logged once per distinct error. Set 7 (with "debug") to diagnose.
    "log_level": 2,
}
_KEPT_ERRORS = 10
_QUEUE_FULL_WAIT_S = 60.0


def producer_config(config: ProducerConfig) -> dict[str, Any]:
    """librdkafka properties of the items producer.

    Precedence: `DEFAULT_CONFIG` < the config's Kafka properties (security,
    client overrides) < `FIXED_CONFIG`. ``message.max.bytes`` admits the
    largest event the config's limits allow.

    Raises:
        ConfigError: the config tries to change a property in `FIXED_CONFIG`.
    """
    limits = config.limits
    properties = {
        **DEFAULT_CONFIG,
        "message.max.bytes": max(1_000_000, limits.max_event_bytes + 1024),
    }
    properties.update(config.kafka)
    for key, wanted in FIXED_CONFIG.items():
        if key in properties and str(properties[key]).lower() != str(wanted).lower():
            raise ConfigError(
                f"Invalid Kafka property {key!r} for the items producer. "
                f"Expected {wanted!r}. Received: {properties[key]!r}"
            )
    properties.update(FIXED_CONFIG)
    return properties


@dataclass(frozen=True)
class DeliverySummary:
    """Delivery reports counted since the producer was created.

    Attributes:
        delivered: events acknowledged by the broker.
        failed: events that will never be acknowledged.
        pending: events still waiting for a report.
        errors: the last few failure messages, oldest first.
    """

    delivered: int
    failed: int
    pending: int
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every event produced so far was acknowledged."""
        return self.failed == 0 and self.pending == 0


class ItemProducer:
    """Publishes item events to ``config.topic_items``.

    Use as a context manager (it flushes on exit) or call `flush` yourself.
    Safe to share between threads.

    Args:
        config: bootstrap servers, security, topic and size limits.
        producer: a ready client (tests); build it with `producer_config` to
            keep the partitioning and delivery contracts.
        flush_timeout_s: how long leaving the context waits for delivery reports.
    """

    def __init__(
        self,
        config: ProducerConfig,
        producer: Producer | None = None,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self.topic = config.topic_items
        self.limits = config.limits
        self.flush_timeout_s = flush_timeout_s
        self._log = log.bind(topic=self.topic)
        properties = producer_config(config)
        self.max_message_bytes = int(properties["message.max.bytes"])
        self._producer = producer or Producer(
            {
                **properties,
                "error_cb": self._on_client_error,
                "logger": logging.getLogger("kafka.producer"),
            }
        )
        self._lock = threading.Lock()
        self._delivered = 0
        self._failed = 0
        self._errors: deque[str] = deque(maxlen=_KEPT_ERRORS)
        self._last_client_error = ("", 0.0)

    # --- publishing ------------------------------------------------------------------

    def upsert(
        self,
        id: str,
        payload: Payload,
        label: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> None:
        """Publish an upsert of item ``id`` (asynchronously; see `publish`)."""
        self.publish(ItemEvent.upsert(id, payload, label, metadata))

    def delete(self, id: str) -> None:
        """Publish a delete of item ``id`` (asynchronously; see `publish`)."""
        self.publish(ItemEvent.delete(id))

    def publish(self, event: ItemEvent) -> None:
        """Queue ``event``; its delivery report is counted later.

        Raises:
            InvalidEventError: the event breaks a size limit (nothing is sent).
            DeliveryError: the event is over ``message.max.bytes``, the client
                refused it or its queue stayed full (counted as failed).
        """
        event.check(self.limits)
        self._produce(event, self._on_delivery)

    def publish_sync(self, event: ItemEvent, timeout_s: float = 10.0) -> WriteToken:
        """Publish ``event`` and wait for its acknowledgement.

        Returns:
            Where it landed: the token of read-your-writes.

        Raises:
            InvalidEventError: the event breaks a size limit (nothing is sent).
            DeliveryError: not acknowledged; after a timeout it may still land later.
        """
        outcome = self.publish_all_sync([event], timeout_s)[0]
        if isinstance(outcome, WriteToken):
            return outcome
        raise outcome

    def publish_all_sync(
        self, events: Sequence[ItemEvent], timeout_s: float = 10.0
    ) -> list[WriteToken | InvalidEventError | DeliveryError]:
        """Publish ``events`` together and wait for every acknowledgement.

        Returns:
            Per event, in order: where it landed, or why it was not published
            (`InvalidEventError`: nothing sent) or not acknowledged (`DeliveryError`:
            after a timeout it may still land later).
        """
        outcomes: list[WriteToken | InvalidEventError | DeliveryError | None] = [None] * len(events)
        lock = threading.Lock()
        waiting = [len(events)]
        done = threading.Event()

        def settle(n: int, outcome: WriteToken | InvalidEventError | DeliveryError) -> None:
            with lock:
                outcomes[n] = outcome
                waiting[0] -= 1
                if not waiting[0]:
                    done.set()

        def on_delivery(n: int, error: RdKafkaError | None, message: Message) -> None:
            self._on_delivery(error, message)
            if error is not None:
                item_id = events[n].id
                settle(n, DeliveryError(f"Item {item_id!r} was not delivered: {error.str()}"))
            else:
                topic, partition = message.topic() or self.topic, message.partition() or 0
                settle(n, WriteToken(topic, partition, message.offset() or 0))

        if not events:
            done.set()
        for n, event in enumerate(events):
            try:
                event.check(self.limits)
                self._produce(event, partial(on_delivery, n))
            except (InvalidEventError, DeliveryError) as e:
                settle(n, e)
        deadline = time.monotonic() + timeout_s
        while not done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._producer.poll(min(remaining, 0.05))
        with lock:
            return [
                DeliveryError(
                    f"Item {event.id!r} was not acknowledged within {timeout_s} s "
                    "(it may still be delivered)"
                )
                if outcome is None
                else outcome
                for event, outcome in zip(events, outcomes, strict=True)
            ]

    def _produce(
        self, event: ItemEvent, on_delivery: Callable[[RdKafkaError | None, Message], None]
    ) -> None:
        value = event.encode()
        # librdkafka counts the key and record overhead too; refuse clearly before it does.
        size = len(value) + len(event.key or b"")
        if size > self.max_message_bytes:
            self._count_failure(event.id, f"{size} bytes over message.max.bytes")
            raise DeliveryError(
                f"Item {event.id!r} is {size} bytes encoded. Expected at most "
                f"{self.max_message_bytes} bytes (the producer's message.max.bytes). "
                "Nothing was sent"
            )
        deadline = time.monotonic() + _QUEUE_FULL_WAIT_S
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=event.key, on_delivery=on_delivery
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                if time.monotonic() > deadline:
                    self._count_failure(event.id, "local queue full")
                    raise DeliveryError(
                        f"Cannot queue item {event.id!r}: the producer queue stayed full for "
                        f"{_QUEUE_FULL_WAIT_S} s"
                    ) from None
                self._producer.poll(0.1)
            except KafkaException as e:
                reason = e.args[0].str() if e.args else str(e)
                self._count_failure(event.id, reason)
                raise DeliveryError(f"Cannot produce item {event.id!r}: {reason}") from e
        self._producer.poll(0)

    # --- delivery reports ------------------------------------------------------------

    def _on_delivery(self, error: RdKafkaError | None, message: Message) -> None:
        if error is None:
            with self._lock:
                self._delivered += 1
            return
        key = message.key()
        item_id = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        self._count_failure(item_id, error.str())

    def _count_failure(self, item_id: str, reason: str) -> None:
        with self._lock:
            self._failed += 1
            failed = self._failed
            self._errors.append(f"{item_id}: {reason}")
        # A broker outage fails every queued event: log the first few, then a sample.
        if failed <= _KEPT_ERRORS or failed % 1000 == 0:
            self._log.warning(
                "producer.event_not_delivered", item_id=item_id, error=reason, failed=failed
            )

    def _on_client_error(self, error: RdKafkaError) -> None:
        if error.fatal():
            self._log.error("producer.fatal_error", error=error.str())
            return
        now = time.monotonic()
        text = error.str()
        # Reconnects repeat the same error many times a second; log each anew once a while.
        if text != self._last_client_error[0] or now - self._last_client_error[1] > 30:
            self._last_client_error = (text, now)
            self._log.warning("producer.client_error", error=text)

    # --- flushing --------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self._producer.poll(timeout_s)

    @property
    def summary(self) -> DeliverySummary:
        """The counts so far, without waiting."""
        with self._lock:
            return DeliverySummary(
                self._delivered, self._failed, len(self._producer), tuple(self._errors)
            )

    def flush(self, timeout_s: float = 30.0) -> DeliverySummary:
        """Wait up to ``timeout_s`` for every delivery report, then summarise."""
        self._producer.flush(timeout_s)
        summary = self.summary
        self._log.info(
            "producer.flushed",
            delivered=summary.delivered,
            failed=summary.failed,
            pending=summary.pending,
        )
        return summary

    def __enter__(self) -> ItemProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if len(self._producer):
            self.flush(self.flush_timeout_s)
