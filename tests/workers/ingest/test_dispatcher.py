"""The dispatcher on the real stack: poison ranges, failing ranges, transactions, slow ranges.

Each test runs a real dispatcher, Celery worker (solo, in a thread) and index
node against the embedded broker and Valkey; faults are injected only where
the scenario needs one (a task that always fails).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from celery import Celery
from celery.result import AsyncResult
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import REGISTRY

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import ArrayPayload, ItemEvent, VectorPayload
from tests.waiting import wait_for
from tests.workers.faults import CommittedOffsets, EmbeddingsLog
from tests.workers.ingest.dead_letters import read_dead_letters
from tests.workers.pipeline import vector_for
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher, OffsetRange, dispatch_group, overdue_after
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


def _upsert(item_id: str) -> bytes:
    return ItemEvent.upsert(item_id, VectorPayload.from_values(vector_for(item_id, 0, 16))).encode()


def _produce_to_partition_0(settings: Settings, values: list[tuple[str, bytes]]) -> list[int]:
    """Produce keyed values to partition 0, as a producer in another language might (no
    size checks, a large ``message.max.bytes``); return their offsets."""
    producer = Producer(settings.kafka_config(**{"message.max.bytes": 4_000_000}))
    offsets: list[int] = []

    def delivered(error: object, message: Message) -> None:
        assert error is None, error
        offsets.append(message.offset() or 0)

    for key, value in values:
        producer.produce(
            settings.topic_items, value=value, key=key, partition=0, on_delivery=delivered
        )
    assert producer.flush(30) == 0
    return sorted(offsets)


@contextmanager
def dispatching(
    settings: Settings,
    version: str,
    app: Celery,
    sender: Callable[[Dispatcher, OffsetRange], AsyncResult] | None = None,
) -> Iterator[Dispatcher]:
    """A dispatcher running in a thread until the block ends."""
    stop = threading.Event()
    dispatcher = Dispatcher(IngestConfig.from_settings(settings), version, celery_app=app)
    if sender is not None:
        dispatcher._send = lambda offset_range: sender(dispatcher, offset_range)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The test's settings with the overrides it is parametrized with (``indirect``)."""
    return Settings.load(**{**settings.model_dump(), **getattr(request, "param", {})})


#: No task retries and three dispatcher attempts, so a failing range gives up quickly.
FAILS_FAST = {"task_max_retries": 0, "dispatch_max_attempts": 3}
#: Re-dispatch after 2 s; one range of 8 batches of 0.5 s (about 4 s).
SLOW_RANGES = {
    "dispatch_redispatch_s": 2.0,
    "dispatch_max_wait_s": 2.0,
    "embed_batch_size": 10,
    "fault_embed_batch_delay_s": 0.5,
}


#: Ranges cut 0.3 s after their first event while none waits unstarted, else when the
#: queue drains; each range is one encoder batch that takes 4 s.
BUSY_WORKER = {
    "dispatch_max_wait_s": 0.3,
    "dispatch_busy_max_wait_s": 60.0,
    "dispatch_redispatch_s": 60.0,
    "embed_batch_size": 10,
    "fault_embed_batch_delay_s": 4.0,
}


@pytest.fixture
def node(settings: Settings, encoder_version: str) -> Iterator[IndexNode]:
    """An index node serving the active version, with the ingest topics created."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    index_node = IndexNode(NodeConfig.from_settings(settings))
    index_node.start()
    yield index_node
    index_node.stop()


def _settled(dispatcher: Dispatcher, embeddings: EmbeddingsLog, last: int) -> dict[str, object]:
    """Wait until a range marker covers offset ``last`` of partition 0 and nothing is in
    flight; return the dispatcher's counters."""
    wait_for(lambda: embeddings.poll().covered(0, last), timeout_s=60, message="range closed")
    wait_for(lambda: dispatcher.inflight == 0, message="no range in flight")
    return dispatcher.stats()


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- scenario 1: a poison event -------------------------------------------------------


def test_a_poison_event_too_large_to_dead_letter_whole_does_not_wedge_its_partition(
    settings: Settings, encoder_version: str, celery_worker: Celery, node: IndexNode
) -> None:
    """An invalid 1.5 MB event (its dead letter once exceeded the worker's message.max.bytes)
    followed by 100 good events: all 100 searchable within 60 s, one dead letter."""
    poison = ItemEvent.upsert(
        "poison", ArrayPayload.from_array(np.ones(375_000, np.float32))
    ).encode()
    good = [f"good-{i}" for i in range(100)]
    offsets = _produce_to_partition_0(
        settings, [("poison", poison), *((item_id, _upsert(item_id)) for item_id in good)]
    )
    poison_offset = offsets[0]
    committed = CommittedOffsets(settings, dispatch_group(settings.topic_items, encoder_version))
    try:
        with dispatching(settings, encoder_version, celery_worker):
            generation = node.current()
            wait_for(
                lambda: all(generation.index.get(i) is not None for i in good),
                timeout_s=60,
                message="100 good events after the poison searchable",
            )
            wait_for(lambda: committed.read()[0] > poison_offset, message="commit past the poison")
            wait_for(lambda: node.ready()[0], message="the node ready")
    finally:
        committed.close()
    probe = generation.index.get("good-7")
    assert probe is not None
    assert generation.index.search(probe.vector, k=1).ids[0] == "good-7"
    letters = [letter for letter in read_dead_letters(settings) if letter.offset == poison_offset]
    assert len(letters) == 1, [(x.reason, x.offset) for x in letters]
    assert letters[0].reason == "bad_payload"
    assert letters[0].raw_size == len(poison)
    assert letters[0].raw_sha256 == hashlib.sha256(poison).hexdigest()
    assert letters[0].raw == poison[: len(letters[0].raw)] and letters[0].truncated


# --- scenario 1: a range whose every task fails --------------------------------------


@pytest.mark.parametrize("settings", [FAILS_FAST], indirect=True, ids=["fails-fast"])
def test_a_range_whose_tasks_keep_failing_is_backed_off_and_dead_lettered_after_its_attempts(
    settings: Settings,
    encoder_version: str,
    celery_worker: Celery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("fault: this worker cannot embed or dead-letter")

    # The fault: the task fails outright (its own dead-lettering fails too).
    monkeypatch.setattr("workers.tasks.embedder_for", crash)
    monkeypatch.setattr("workers.ingest.deadletter.dead_letter_range", crash)
    sent: list[float] = []

    def record_send(dispatcher: Dispatcher, offset_range: OffsetRange) -> AsyncResult:
        sent.append(time.monotonic())
        return dispatcher._send_task(offset_range)

    offsets = _produce_to_partition_0(settings, [(f"x-{i}", _upsert(f"x-{i}")) for i in range(3)])
    embeddings = EmbeddingsLog(settings, encoder_version)
    given_up = _metric("simstream_dispatcher_failed_ranges_total", model_version=encoder_version)
    try:
        with dispatching(settings, encoder_version, celery_worker, record_send) as dispatcher:
            stats = _settled(dispatcher, embeddings, offsets[-1])
    finally:
        embeddings.close()
    assert (stats["dispatched"], stats["completed"]) == (3, 1), stats
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps
    letters = [x for x in read_dead_letters(settings) if x.reason == "range_failed"]
    assert len(letters) == 1
    assert "gave up after 3 failed attempts" in letters[0].detail
    assert "fault: this worker cannot embed" in letters[0].detail
    after = _metric("simstream_dispatcher_failed_ranges_total", model_version=encoder_version)
    assert after == given_up + 1


# --- scenario 6: transactions take offsets --------------------------------------------


def test_write_tokens_of_a_transactional_producer_become_visible_and_lag_reaches_zero(
    settings: Settings, encoder_version: str, celery_worker: Celery, node: IndexNode
) -> None:
    """Each committed transaction ends with a control record that takes an offset but is
    never delivered: ranges must cover it, before and after a dispatcher restart."""
    producer = Producer(settings.kafka_config(**{"transactional.id": f"tx-{uuid.uuid4().hex}"}))
    producer.init_transactions(10)

    def transaction(ids: list[str]) -> list[int]:
        offsets: list[int] = []
        producer.begin_transaction()
        for item_id in ids:
            producer.produce(
                settings.topic_items,
                value=_upsert(item_id),
                key=item_id,
                partition=0,
                on_delivery=lambda _, m: offsets.append(m.offset() or 0),
            )
        producer.commit_transaction(10)
        return offsets

    group = dispatch_group(settings.topic_items, encoder_version)
    committed = CommittedOffsets(settings, group)
    embeddings = EmbeddingsLog(settings, encoder_version)
    try:
        first = transaction([f"t-{i}" for i in range(5)])
        generation = node.current()
        with dispatching(settings, encoder_version, celery_worker):
            wait_for(
                lambda: all(generation.visible(0, o) for o in first), message="the first tokens"
            )
            wait_for(lambda: generation.source_lag() == 0, message="lag 0 past the marker")
            wait_for(lambda: committed.read()[0] == first[-1] + 2, message="commit past it")
        # A group committed at the control record (as ranges cut at the last data
        # record left it): the next range must start there, not at the first record.
        _commit(settings, group, first[-1] + 1)
        second = transaction([f"t-{i}" for i in range(5, 10)])
        with dispatching(settings, encoder_version, celery_worker):
            wait_for(
                lambda: all(generation.visible(0, o) for o in second), message="the second tokens"
            )
            wait_for(lambda: generation.source_lag() == 0, message="lag 0 again")
            assert node.ready()[0]
        assert any(start == first[-1] + 1 for start, _ in embeddings.poll().ranges[0])
    finally:
        committed.close()
        embeddings.close()
    assert all(generation.index.get(f"t-{i}") is not None for i in range(10))


def _commit(settings: Settings, group: str, offset: int) -> None:
    consumer = Consumer(settings.kafka_config(**{"group.id": group}))
    try:
        consumer.commit(
            offsets=[TopicPartition(settings.topic_items, 0, offset)], asynchronous=False
        )
    finally:
        consumer.close()


# --- scenario 8: a slow range is not sent again while it runs --------------------------


@pytest.mark.parametrize("settings", [SLOW_RANGES], indirect=True, ids=["slow-ranges"])
def test_a_range_running_longer_than_the_redispatch_time_is_not_sent_again(
    settings: Settings, encoder_version: str, celery_worker: Celery
) -> None:
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    offsets = _produce_to_partition_0(settings, [(f"s-{i}", _upsert(f"s-{i}")) for i in range(80)])
    embeddings = EmbeddingsLog(settings, encoder_version)
    labels = {"model_version": encoder_version, "reason": "overdue"}
    overdue = _metric("simstream_dispatcher_retried_ranges_total", **labels)
    try:
        with dispatching(settings, encoder_version, celery_worker) as dispatcher:
            stats = _settled(dispatcher, embeddings, offsets[-1])
        assert stats["dispatched"] == 1, stats
        assert embeddings.poll().ranges[0] == [(0, 80)]
        assert _metric("simstream_dispatcher_retried_ranges_total", **labels) == overdue
    finally:
        embeddings.close()


# --- ranges grow while the workers are busy --------------------------------------------


@pytest.mark.parametrize("settings", [BUSY_WORKER], indirect=True, ids=["busy-worker"])
def test_events_arriving_while_a_range_waits_unstarted_join_one_range_cut_when_it_starts(
    settings: Settings, encoder_version: str, celery_worker: Celery
) -> None:
    """Three waves 0.6 s apart (twice the 0.3 s range wait) arrive while range B waits
    behind running range A: they make one range, sent when B starts, not three."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    embeddings = EmbeddingsLog(settings, encoder_version)

    def wave(name: str, n: int) -> list[int]:
        return _produce_to_partition_0(
            settings, [(f"{name}-{i}", _upsert(f"{name}-{i}")) for i in range(n)]
        )

    try:
        with dispatching(settings, encoder_version, celery_worker) as dispatcher:
            wave("a", 5)
            wait_for(lambda: dispatcher.dispatched == 1, message="range A sent")
            time.sleep(0.3)  # the solo worker takes A (4 s)
            wave("b", 5)
            wait_for(lambda: dispatcher.dispatched == 2, message="range B sent")
            wait_for(lambda: dispatcher.stats()["queued"] == 1, message="B queued behind A")
            last = 0
            for name in ("c1", "c2", "c3"):
                last = wave(name, 3)[-1]
                time.sleep(0.6)
            during = dispatcher.stats()
            stats = _settled(dispatcher, embeddings, last)
        assert during["dispatched"] == 2 and during["queued"] == 1, during
        assert stats["dispatched"] == 3, stats
        assert embeddings.poll().ranges[0] == [(0, 5), (5, 10), (10, 19)]
    finally:
        embeddings.close()


# --- a commit the broker refuses ------------------------------------------------------


class _CommitRefusedOnce:
    """Fault injection: the first commit fails as during a rebalance; the rest pass."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer, self.refused = consumer, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> object:
        if not self.refused:
            self.refused += 1
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        return self.consumer.commit(offsets=offsets, asynchronous=False)


def test_a_commit_the_broker_refuses_is_tried_again_and_dispatching_goes_on(
    settings: Settings, encoder_version: str, celery_worker: Celery
) -> None:
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    committed = CommittedOffsets(settings, dispatch_group(settings.topic_items, encoder_version))
    stop = threading.Event()
    dispatcher = Dispatcher(
        IngestConfig.from_settings(settings), encoder_version, celery_app=celery_worker
    )
    fault = _CommitRefusedOnce(dispatcher._consumer)
    dispatcher._consumer = fault  # type: ignore[assignment]
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    refused = _metric("simstream_dispatcher_commit_failures_total", model_version=encoder_version)
    thread.start()
    try:
        first = _produce_to_partition_0(settings, [(f"a-{i}", _upsert(f"a-{i}")) for i in range(3)])
        wait_for(lambda: committed.read()[0] == first[-1] + 1, timeout_s=60, message="1st commit")
        assert fault.refused == 1
        later = _produce_to_partition_0(settings, [(f"b-{i}", _upsert(f"b-{i}")) for i in range(3)])
        wait_for(lambda: committed.read()[0] == later[-1] + 1, timeout_s=60, message="2nd commit")
        # The same dispatcher sent the later range, and still runs.
        assert thread.is_alive() and dispatcher.stats()["dispatched"] == 2
    finally:
        stop.set()
        thread.join(30)
        committed.close()
    after = _metric("simstream_dispatcher_commit_failures_total", model_version=encoder_version)
    assert after == refused + 1


def test_each_further_queued_copy_of_a_range_waits_twice_as_long_up_to_sixteen_periods() -> None:
    """Behind a backlog of an hour, at 120 s a period: 5 copies of a range, not 30."""
    assert [overdue_after(120.0, n) for n in (0, 1, 2, 3, 4, 5, 6)] == [
        120.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        1920.0,
    ]
    waited, copies = 0.0, 1
    while waited + overdue_after(120.0, copies) < 3600.0:
        waited += overdue_after(120.0, copies)
        copies += 1
    assert copies == 5
