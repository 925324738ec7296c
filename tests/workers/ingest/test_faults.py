"""Crash tests: SIGKILL of the embed worker or the dispatcher while a range is in flight.

Every embed batch is slowed (``SIMSTREAM_FAULT_EMBED_BATCH_DELAY_S``) so that a
range takes a few tenths of a second; each test waits until the pipeline, seen
from outside, has a range started and not finished, kills, asserts that the kill
interrupted that range, restarts the process, and after recovery requires the
index to equal the expected state exactly: every acknowledged event reflected
once, newest wins, deletes absent. The interrupted range must have been embedded
again (its records appear twice in the embeddings log), which the index absorbs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.faults import (
    FAST_RECOVERY,
    CommittedOffsets,
    EmbeddingsLog,
    ingest_with_kill,
    simstream_argv,
    with_fast_recovery,
)
from tests.workers.pipeline import assert_index_matches, wait_until_caught_up
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher, dispatch_group
from workers.node.config import NodeConfig
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.services]

InFlight = dict[int, list[int]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with quick recovery and slowed embed batches."""
    return with_fast_recovery(settings)


@pytest.fixture
def ingest_topics(settings: Settings, encoder_version: str) -> str:
    """Create ``items`` and its dead-letter topic; return the active encoder version."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    return encoder_version


@pytest.fixture
def embeddings(settings: Settings, ingest_topics: str) -> Iterator[EmbeddingsLog]:
    """The embeddings log of the active version, watched from outside."""
    log = EmbeddingsLog(settings, ingest_topics)
    yield log
    log.close()


def _recovered(
    settings: Settings, node: IndexNode, embeddings: EmbeddingsLog, interrupted: InFlight
) -> IndexGeneration:
    """Wait until the interrupted ranges were embedded again and the node applied the whole log.

    Raises:
        TimeoutError: an interrupted offset was never embedded a second time.
    """

    def embedded_again() -> bool:
        copies = embeddings.poll().copies
        return all(copies[p][o] >= 2 for p, offsets in interrupted.items() for o in offsets)

    wait_for(embedded_again, timeout_s=120, interval_s=0.1, message="interrupted ranges redone")
    generation = node.current()
    wait_until_caught_up(settings, generation, timeout_s=180)

    def applied_everything() -> bool:
        applied = generation.index.next_offsets()
        return all(applied.get(p, 0) >= end for p, end in embeddings.poll().ends.items())

    wait_for(applied_everything, timeout_s=60, interval_s=0.1, message="the log applied")
    return generation


def test_an_embed_worker_killed_mid_range_loses_and_duplicates_nothing(
    settings: Settings, ingest_topics: str, embeddings: EmbeddingsLog, tmp_path: Path
) -> None:
    from workers.tasks import configure

    app = configure(settings)
    app.control.purge()
    # Batches of 0.4 s: a range's last batch outlasts how late the log is read here,
    # even on a loaded machine, so the range seen in flight is still in flight at the kill.
    slowed = with_fast_recovery(settings, fault_embed_batch_delay_s=0.4)
    worker = Child(
        simstream_argv("worker", "--queues", "embed"),
        slowed.to_env(metrics_port=0),
        tmp_path / "worker.log",
    )
    worker.start()
    stop = threading.Event()
    dispatcher = Dispatcher(IngestConfig.from_settings(settings), ingest_topics, celery_app=app)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    node = IndexNode(NodeConfig.from_settings(settings))
    node.start()

    def mid_range() -> InFlight | None:
        """Ranges with records and no marker, once a few ranges have completed."""
        embeddings.poll()
        return embeddings.in_flight() if embeddings.completed() >= 3 else None

    def interrupted(in_flight: InFlight) -> InFlight:
        """The ranges still unfinished once all the dead worker had sent has arrived."""
        time.sleep(0.5)
        embeddings.poll()
        cut = {
            p: offsets for p, offsets in in_flight.items() if not embeddings.covered(p, offsets[0])
        }
        assert cut, f"every range in flight at the kill completed: {in_flight}"
        return cut

    try:
        expected, in_flight = ingest_with_kill(settings, worker, mid_range, interrupted)
        generation = _recovered(settings, node, embeddings, in_flight)
        assert_index_matches(generation.index, expected)
    finally:
        stop.set()
        thread.join(30)
        node.stop()
        worker.stop()


@pytest.mark.parametrize("after_commits", [False, True], ids=["before-any-commit", "after-commits"])
def test_a_dispatcher_killed_with_ranges_in_flight_loses_and_duplicates_nothing(
    settings: Settings,
    ingest_topics: str,
    embeddings: EmbeddingsLog,
    celery_worker: Celery,
    tmp_path: Path,
    after_commits: bool,
) -> None:
    dispatcher = Child(
        simstream_argv("dispatcher", "--model-version", ingest_topics),
        settings.to_env(metrics_port=0),
        tmp_path / "dispatcher.log",
    )
    from workers.tasks import embedder_for

    embedder_for(ingest_topics)  # the worker's encoder is loaded and warm before the first range
    dispatcher.start()
    committed = CommittedOffsets(settings, dispatch_group(settings.topic_items, ingest_topics))
    node = IndexNode(NodeConfig.from_settings(settings))
    node.start()

    def mid_range() -> InFlight | None:
        """Ranges started and unfinished, past the committed offset (none or some committed)."""
        done = committed.read()
        if any(done.values()) != after_commits:
            return None
        sent = embeddings.poll().in_flight()
        # Only ranges in their first two batches: two slowed batches (0.5 s) are still
        # to come before their marker and the commit, more than this check takes to act on.
        early = 2 * FAST_RECOVERY["embed_batch_size"]
        return {
            p: offsets
            for p, offsets in sent.items()
            if offsets[0] >= done[p] and len(offsets) <= early
        } or None

    def interrupted(in_flight: InFlight) -> InFlight:
        """The ranges the dead dispatcher had sent and not committed."""
        done = committed.read()
        cut = {p: offsets for p, offsets in in_flight.items() if done[p] <= offsets[0]}
        assert cut, f"committed past every range in flight: {done}, in flight {in_flight}"
        return cut

    try:
        expected, in_flight = ingest_with_kill(settings, dispatcher, mid_range, interrupted)
        generation = _recovered(settings, node, embeddings, in_flight)
        assert_index_matches(generation.index, expected)
    finally:
        node.stop()
        dispatcher.stop()
        committed.close()
